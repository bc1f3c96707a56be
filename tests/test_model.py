"""The default model: real ImageNet weights converted correctly, cached ONNX export, normalised output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jiansuo.features import ModelError, available_models, get_extractor, model_class
from tests.conftest import real_photo

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug
ROCKET_CLASSES = {657, 744, 812}  # missile, projectile, space shuttle


def test_weights_classify_real_photos(extractor):
    assert extractor.classify(real_photo("chelsea")).argmax() in CAT_CLASSES
    assert extractor.classify(real_photo("coffee")).argmax() in COFFEE_CLASSES
    # The launch tower dominates the padded rocket photo (top-1 "drilling platform"); the rocket
    # itself must still be among the top five.
    assert set(np.argsort(extractor.classify(real_photo("rocket")))[-5:]) & ROCKET_CLASSES


def test_features_are_normalised_and_deterministic(extractor):
    imgs = [real_photo("astronaut"), real_photo("coffee")]
    a = extractor.embed_images(imgs)
    b = extractor.embed_images(imgs[::-1])[::-1]
    assert a.shape == (2, 1280) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-5)  # batch order does not matter
    assert a[0] @ a[1] < 0.8  # different photos are not the same vector


def test_onnx_cache_rebuilt_when_corrupt(tmp_path, monkeypatch):
    monkeypatch.setenv("JIANSUO_CACHE", str(tmp_path))
    first = get_extractor("efficientnet-lite0", precision="fp32")
    [onnx_file] = list((tmp_path / "models").glob("*.onnx"))
    meta = json.loads(onnx_file.with_suffix(".json").read_text())
    assert len(meta["sha256"]) == 64
    onnx_file.write_bytes(b"garbage")  # a half-written or corrupted cache file
    second = get_extractor("efficientnet-lite0", precision="fp32")
    img = [real_photo("chelsea")]
    np.testing.assert_allclose(first.embed_images(img), second.embed_images(img), atol=1e-5)
    assert onnx_file.stat().st_size > 1_000_000


def test_registry():
    assert {"efficientnet-lite0", "vgg16", "vgg16-fc7"} <= set(available_models())
    assert model_class("efficientnet-lite0").description()["dim"] == 1280
    with pytest.raises(ModelError, match="unknown model"):
        get_extractor("resnet-9000")
