"""int8 networks (jiansuo.features.quantize): faithful to float32, cached like it, never mixed with it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from jiansuo import config
from jiansuo.cli import main
from jiansuo.features import get_extractor
from jiansuo.features import quantize
from jiansuo.index import IndexError_
from jiansuo.search.folder import FolderStore
from tests.conftest import PHOTO_NAMES, real_photo

QUERIES = ["astronaut", "coffee", "chelsea", "rocket", "clock", "coins"]


@pytest.fixture(scope="module")
def int8():
    return get_extractor(precision="int8")


@pytest.fixture(scope="module")
def fp32():
    return get_extractor(precision="fp32")


def near_copies(name: str):
    img = real_photo(name)
    w, h = img.size
    return [img.crop((w // 12, h // 10, w - w // 9, h - h // 12)).resize((w // 2, h // 2)),
            img.rotate(4, expand=True, fillcolor="white")]


def test_int8_features_agree_with_float32(fp32, int8):
    photos = [real_photo(n) for n in PHOTO_NAMES]
    cosines = np.sum(fp32.embed_images(photos) * int8.embed_images(photos), axis=1)
    assert cosines.min() >= 0.98, dict(zip(PHOTO_NAMES, cosines.round(4)))
    assert int8.describe() == {**fp32.describe(), "precision": "int8", "quantization": quantize.QUANT_VERSION}


def test_int8_finds_the_same_originals_of_near_copies(fp32, int8):
    photos = [real_photo(n) for n in PHOTO_NAMES]
    for ex in (fp32, int8):
        db = ex.embed_images(photos)
        for name in QUERIES:
            sims = ex.embed_images(near_copies(name)) @ db.T
            assert [PHOTO_NAMES[i] for i in sims.argmax(axis=1)] == [name, name], (ex.precision, name)


def test_the_int8_model_is_made_again_when_missing_damaged_or_stale(tmp_path, monkeypatch, extractor):
    shared = config.cache_dir() / "models"
    monkeypatch.setenv("JIANSUO_CACHE", str(tmp_path))
    models = tmp_path / "models"
    models.mkdir()
    for f in shared.glob("efficientnet-lite0-*"):  # the float export as it is: only int8 is made here
        if "int8" not in f.name and "pooled" not in f.name:
            shutil.copy(f, models / f.name)
    first = get_extractor(precision="int8")
    made = sorted(models.glob("efficientnet-lite0-int8-*.onnx"))
    assert len(made) == 1 and json.loads(made[0].with_suffix(".json").read_text())["quant_version"]
    probe = first.embed_images([real_photo("coffee")])
    made[0].unlink()  # missing
    np.testing.assert_allclose(get_extractor(precision="int8").embed_images([real_photo("coffee")]), probe, atol=1e-6)
    made[0].write_bytes(b"not a model")  # damaged
    np.testing.assert_allclose(get_extractor(precision="int8").embed_images([real_photo("coffee")]), probe, atol=1e-6)
    monkeypatch.setattr(quantize, "QUANT_VERSION", quantize.QUANT_VERSION + "-next")  # stale
    get_extractor(precision="int8")
    assert len(list(models.glob("efficientnet-lite0-int8-*.onnx"))) == 2


def test_a_store_of_one_precision_refuses_vectors_of_the_other(tmp_path, catalog, capsys, fp32, int8):
    idx = tmp_path / "c.idx"
    assert main(["index", str(catalog), "--index", str(idx), "--precision", "int8", "--no-progress"]) == 0
    capsys.readouterr()
    with FolderStore.open(idx) as store:
        assert store.model["precision"] == "int8"
        with pytest.raises(IndexError_, match="holds int8 vectors") as refused:
            store.check_model(fp32.describe())
        assert "--precision int8" in str(refused.value) and "--rebuild" in str(refused.value)
        # int8 vectors of another quantisation are refused too (an index from before versions: version 1).
    for n, older in enumerate(({**int8.describe(), "quantization": "0"},
                               {k: v for k, v in int8.describe().items() if k != "quantization"})):
        with FolderStore.open(tmp_path / f"old{n}.idx", model=older) as old:
            with pytest.raises(IndexError_, match="older quantised efficientnet-lite0 network.*re-index"):
                old.check_model(int8.describe())
    # The CLI searches at the index's own precision by itself.
    query = next(catalog.rglob("chelsea.*"))
    assert main(["search", str(query), "--index", str(idx), "--json", "-k", "1"]) == 0
    assert Path(json.loads(capsys.readouterr().out)[0]["results"][0]["id"]).stem == "chelsea"
    # Asking for the other precision on an existing index is a clear error, unless it is rebuilt.
    assert main(["index", str(catalog), "--index", str(idx), "--precision", "fp32", "--no-progress"]) == 1
    assert "holds int8 vectors" in capsys.readouterr().err
    assert main(["index", str(catalog), "--index", str(idx), "--precision", "fp32", "--rebuild", "--no-progress"]) == 0
    with FolderStore.open(idx) as store:
        assert store.model["precision"] == "fp32" and len(store) == 12
