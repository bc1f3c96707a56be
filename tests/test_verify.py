"""Copy verification of the first results (jiansuo.search.verify, `jiansuo search --verify`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jiansuo.cli import main
from jiansuo.demo import product_photo
from jiansuo.features.local import extract
from jiansuo.search.base import Hit
from jiansuo.search.verify import copy_first, file_features


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A folder of product shots: one T-shirt in two colours, and three other items."""
    from jiansuo.datasets import fashion_mnist

    if not fashion_mnist.available():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    images, labels = fashion_mnist.load("test")
    root = tmp_path_factory.mktemp("shop")
    shirt = int(np.flatnonzero(labels == 0)[0])
    product_photo(images[shirt], (31, 58, 110)).save(root / "shirt-navy.jpg", quality=92)
    product_photo(images[shirt], (150, 40, 40)).save(root / "shirt-red.jpg", quality=92)
    for c in (1, 3, 7):
        item = int(np.flatnonzero(labels == c)[0])
        product_photo(images[item], (31, 58, 110)).save(root / f"item-{c}.jpg", quality=92)
    return root


def small_copy(path, side: int = 72, tmp=None):
    """A thumbnail of a stored photo, recompressed: the copy a shopper re-posts."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    img.thumbnail((side, side))
    out = tmp / f"copy-of-{path.name}"
    img.save(out, quality=40)
    return out


def test_the_copy_among_the_first_results_goes_first(shop, tmp_path):
    stored = file_features(shop)
    query = extract(small_copy(shop / "shirt-navy.jpg", tmp=tmp_path))
    hits = [Hit("shirt-red.jpg", 0.95), Hit("item-1.jpg", 0.94), Hit("shirt-navy.jpg", 0.93), Hit("item-3.jpg", 0.6)]
    assert [h.id for h in copy_first(hits, query, stored)] == ["shirt-navy.jpg", "shirt-red.jpg", "item-1.jpg",
                                                               "item-3.jpg"]
    # Already first, or out of the first k: the order stays.
    assert copy_first(hits[2:] + hits[:2], query, stored) == hits[2:] + hits[:2]
    assert copy_first(hits, query, stored, k=2) == hits
    # Nor from far below the first in similarity.
    far = [hits[0], Hit("shirt-navy.jpg", 0.84)]
    assert copy_first(far, query, stored) == far
    # A photo of another product changes nothing, even of the same shirt in another colour.
    other = extract(small_copy(shop / "item-7.jpg", tmp=tmp_path))
    assert copy_first(hits, other, stored) == hits
    # A stored file that is gone or broken is passed over.
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    broken = file_features(tmp_path)
    assert isinstance(broken("broken.jpg"), str) and broken("missing.jpg") == "file not found"
    assert copy_first([Hit("broken.jpg", 0.9), Hit("missing.jpg", 0.8)], query, broken) == \
        [Hit("broken.jpg", 0.9), Hit("missing.jpg", 0.8)]


def test_cli_search_verify(shop, tmp_path, capsys, monkeypatch):
    from jiansuo.search import verify

    idx = tmp_path / "shop.idx"
    assert main(["index", str(shop), "--index", str(idx), "--no-progress"]) == 0
    queries = [small_copy(shop / name, tmp=tmp_path) for name in ("shirt-navy.jpg", "shirt-red.jpg", "item-3.jpg")]
    checked = []
    monkeypatch.setattr(verify, "copy_first", lambda hits, *a, **kw: checked.append([h.id for h in hits]) or
                        copy_first(hits, *a, **kw))
    capsys.readouterr()
    assert main(["search", *map(str, queries), "--index", str(idx), "--json", "-k", "1", "--verify"]) == 0
    found = [r["results"][0]["id"] for r in json.loads(capsys.readouterr().out)]
    assert found == ["shirt-navy.jpg", "shirt-red.jpg", "item-3.jpg"]
    # Each query's first VERIFY_K plain results (here the whole shop) were checked, though one was asked for.
    stored = min(verify.VERIFY_K, len(list(shop.glob("*.jpg"))))
    assert len(checked) == 3 and all(len(ids) == stored for ids in checked)
    assert main(["search", str(queries[0]), "--index", str(idx), "--verify", "--box", "0,0,1,1"]) == 1
    assert "--verify compares whole photos" in capsys.readouterr().err
