"""The search ranking (jiansuo.search.ranking) with the real model: the same product first, then products like it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from jiansuo.datasets import fashion_mnist
from jiansuo.demo import product_photo
from jiansuo.hashing.train import train_judged
from jiansuo.index import ItemInfo
from jiansuo.search.folder import FolderStore
from jiansuo.search.ranking import SAME_SCORE, rank

pytestmark = pytest.mark.skipif(not fashion_mnist.available(), reason="needs Debian's dataset-fashion-mnist")

MODEL = None  # the real extractor's description, set by the fixture


def listing(item: Image.Image, canvas: tuple[int, int], scale: float, at: tuple[float, float],
            angle: float = 0.0, tint: tuple[float, float, float] = (1.0, 1.0, 1.0), quality: int = 90) -> Image.Image:
    """A shop's photo of ``item``: on a white canvas of its own size, at ``scale`` of it, placed at ``at``
    (fractions of the free room), turned by ``angle`` degrees, colour-shifted, JPEG-compressed."""
    w, h = canvas
    side = round(scale * min(w, h))
    obj = item.resize((side, side), Image.BICUBIC).rotate(angle, expand=True, fillcolor="white")
    photo = Image.new("RGB", canvas, "white")
    photo.paste(obj, (round(at[0] * (w - obj.width)), round(at[1] * (h - obj.height))))
    arr = np.clip(np.asarray(photo, np.float32) * np.asarray(tint, np.float32), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


@pytest.fixture(scope="module")
def shots():
    """60 Fashion-MNIST products (6 of each class) as product shots, with their class."""
    images, labels = fashion_mnist.load("test")
    rng = np.random.default_rng(3)
    picks = np.concatenate([rng.choice(np.flatnonzero(labels == c), 6, replace=False) for c in range(10)])
    colours = [(31, 58, 110), (170, 30, 45), (96, 108, 40), (176, 128, 72), (20, 120, 120), (100, 50, 110)]
    return [(product_photo(images[i], colours[n % len(colours)]), int(labels[i])) for n, i in enumerate(picks)]


@pytest.fixture
def catalogue(tmp_path, extractor, shots):
    """A store of the 60 products, each listed by one shop (a tall canvas, the item at 80%, centred)."""
    store = FolderStore.open(tmp_path / "c.idx", model=extractor.describe())
    photos = [listing(img, (600, 800), 0.8, (0.5, 0.5)) for img, _ in shots]
    store.add([ItemInfo(f"{label}/{n:02d}.jpg") for n, (_, label) in enumerate(shots)], extractor.embed_images(photos))
    yield store
    store.close()


def test_a_re_listing_by_another_shop_finds_the_original_first(catalogue, extractor, shots):
    rng = np.random.default_rng(0)
    picks = rng.choice(len(shots), 12, replace=False)
    queries = [listing(shots[i][0], (900, 600), rng.uniform(0.6, 0.9), tuple(rng.uniform(0, 1, 2)),
                       angle=rng.uniform(-4, 4), tint=tuple(rng.uniform(0.95, 1.05, 3)), quality=int(rng.integers(60, 86)))
               for i in picks]
    results = rank(catalogue, extractor.embed_images(queries), 5)
    found = [r.hits[0].id for r in results]
    assert found == [f"{shots[i][1]}/{i:02d}.jpg" for i in picks]


def test_the_default_ranking_puts_the_item_first_then_products_like_it(catalogue, extractor, shots):
    query = extractor.embed_images([listing(shots[7][0], (700, 700), 0.7, (0.3, 0.6))])
    plain = rank(catalogue, query, 20, intent="same")[0].hits
    both = rank(catalogue, query, 20)[0].hits
    similar = rank(catalogue, query, 20, intent="similar")[0].hits
    assert both[0] == plain[0] and plain[0].id == f"{shots[7][1]}/07.jpg"
    assert [h.score for h in plain] == sorted((h.score for h in plain), reverse=True)
    vectors = dict(zip(catalogue.ids(), catalogue.get(catalogue.ids())))
    for h in both + similar:  # scores are the plain cosine whatever the order
        assert h.score == pytest.approx(float(vectors[h.id] @ query[0]), abs=1e-5)
    near_copies = [h for h in plain[1:] if h.score >= SAME_SCORE]  # keep their place, as the item itself
    assert both[1:1 + len(near_copies)] == near_copies
    rest = [h for h in similar if h.id not in {x.id for x in both[:1 + len(near_copies)]}]
    assert both[1 + len(near_copies):] == rest[:19 - len(near_copies)]
    with pytest.raises(ValueError, match="intent"):
        rank(catalogue, query, 5, intent="everything")


def test_the_ranking_follows_adds_and_removes(catalogue, extractor, shots):
    query = extractor.embed_images([listing(shots[20][0], (640, 480), 0.75, (0.5, 0.5))])
    before = rank(catalogue, query, 10)[0].hits
    gone = [h.id for h in before[:4]]
    catalogue.remove(gone)
    after = rank(catalogue, query, 10)[0].hits
    assert not {h.id for h in after} & set(gone) and len(after) == 10
    # A new listing of the very product: found first at once, with no step to rerun.
    catalogue.add([ItemInfo("new/listing.jpg")], extractor.embed_images([listing(shots[20][0], (500, 500), 0.9, (0, 0))]))
    assert rank(catalogue, query, 3)[0].hits[0].id == "new/listing.jpg"
    assert rank(catalogue, query, 3, allowed=[i for i in catalogue.ids() if i != "new/listing.jpg"])[0].hits[0].id \
        != "new/listing.jpg"


def test_a_layer_trained_on_labels_ranks_only_when_it_helped(tmp_path, extractor, catalogue, shots):
    vectors = catalogue.get(catalogue.ids())
    labels = [i.split("/")[0] for i in catalogue.ids()]
    layer = train_judged(vectors, labels, 16, epochs=30, progress=False)
    judged = layer.info["judgement"]
    assert layer.info["judged_on"] == 10 and set(judged) == {"plain", "expanded", "learned"}
    better = all(judged["learned"]["map100"] >= judged[o]["map100"] + 0.01 and
                 judged["learned"]["p10"] >= judged[o]["p10"] for o in ("plain", "expanded"))
    assert layer.info["similar_ranking"] == ("learned" if better else "expanded")
    query = extractor.embed_images([listing(shots[33][0], (700, 500), 0.8, (0.5, 0.5))])
    expanded = rank(catalogue, query, 10)[0].hits
    for ranking in ("learned", "expanded"):
        layer.info["similar_ranking"] = ranking
        catalogue.set_hash_layer(layer)
        hits = rank(catalogue, query, 10)[0].hits
        assert hits[0] == expanded[0]  # the item itself stays first either way
        if ranking == "expanded":
            assert hits == expanded
        else:
            feats = layer.rerank_features(catalogue.get([h.id for h in hits[1:]]))
            sims = feats @ layer.rerank_features(query)[0]
            assert list(sims) == sorted(sims, reverse=True)  # the rest by the learnt feature
