"""VGG16 weight loaders and extractors, on weight files this test writes itself (no downloads).

One set of deterministic random weights is written in the layouts the product reads (Keras full
and notop .h5, torchvision .pth with and without the classifier). Every layout is checked against
an independent NumPy forward pass written in Keras's own channels-last convention (HWIO kernels,
(H, W, C) flatten before fc1).
"""

from __future__ import annotations

import os
import shutil

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from jiansuo.features.base import ModelError, get_extractor, model_class
from jiansuo.features.quantize import QUANT_VERSION
from jiansuo.features.vgg16 import WEIGHTS_ENV, build_torch, load_weights

# VGG16 ("configuration D"): conv widths, "M" = 2×2 max pool. Written out here, independently of
# the product's layer table, so a wrong table there is caught.
CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
CONV_NAMES = [f"block{b}_conv{i}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for i in range(1, n + 1)]
DENSE = [("fc1", 7 * 7 * 512, 4096), ("fc2", 4096, 4096), ("predictions", 4096, 1000)]
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)


# ----------------------------------------------------------------------------- weight files


def _random_weights(seed: int, with_top: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Keras-convention arrays: conv kernels (3, 3, in, out), dense kernels (in, out).

    He-scaled so activations neither vanish nor explode through 13 layers. The dense layers are
    1% non-zero (generating 138M random floats is slow); every fc1 unit still sees ~250 inputs
    from all over the (H, W, C) grid, so a wrong flatten order cannot go unnoticed.
    """
    rng = np.random.default_rng(seed)
    out, cin = {}, 3
    widths = [c for c in CFG if c != "M"]
    for name, cout in zip(CONV_NAMES, widths):
        k = rng.standard_normal((3, 3, cin, cout), dtype=np.float32) * np.float32(np.sqrt(2 / (9 * cin)))
        out[name] = (k, rng.standard_normal(cout, dtype=np.float32) * np.float32(0.1))
        cin = cout
    if with_top:
        for name, fin, fout in DENSE:
            nnz = fin * fout // 100
            k = np.zeros((fin, fout), dtype=np.float32)
            k[rng.integers(0, fin, nnz), rng.integers(0, fout, nnz)] = rng.standard_normal(nnz, dtype=np.float32)
            k *= np.float32(np.sqrt(2 / (fin / 100)))
            out[name] = (k, rng.standard_normal(fout, dtype=np.float32) * np.float32(0.1))
    return out


def _write_keras(path, weights, *, style: str) -> None:
    """A Keras save_weights() HDF5 file.

    style="keras3": str attributes, datasets "<layer>/kernel" (what Keras 3's legacy h5 writer does);
    style="release": bytes attributes, datasets "<layer>_W_1:0" / "<layer>_b_1:0" (the 2016 release files).
    """
    has_top = "fc1" in weights
    names, convs, block = ["input_1"], iter(CONV_NAMES), 1
    for c in CFG:
        if c == "M":
            names.append(f"block{block}_pool")
            block += 1
        else:
            names.append(next(convs))
    if has_top:
        names += ["flatten", "fc1", "fc2", "predictions"]

    def encode(strings):
        return [s.encode() for s in strings] if style == "release" else list(strings)

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = encode(names)
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = "3.15.1" if style == "keras3" else "1.1.0"
        for name in names:
            g = f.create_group(name)
            if name not in weights:
                g.attrs["weight_names"] = np.zeros(0)  # what Keras writes for a layer without weights
                continue
            kernel, bias = weights[name]
            wnames = ([f"{name}/kernel", f"{name}/bias"] if style == "keras3"
                      else [f"{name}_W_1:0", f"{name}_b_1:0"])
            g.attrs["weight_names"] = encode(wnames)
            for wname, arr in zip(wnames, (kernel, bias)):
                g.create_dataset(wname, data=arr)


def _write_torchvision(path, weights) -> None:
    """torchvision's vgg16 state dict (features.N / classifier.N, OIHW and (out, in))."""
    state, idx = {}, 0
    convs = iter(CONV_NAMES)
    for c in CFG:
        if c == "M":
            idx += 1
            continue
        k, b = weights[next(convs)]
        state[f"features.{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))
        state[f"features.{idx}.bias"] = torch.from_numpy(b)
        idx += 2  # conv, relu
    if "fc1" in weights:
        # fc1's inputs: row r of the Keras kernel is flatten position (h, w, c); torch flattens
        # (c, h, w). hwc_row[c, h, w] = the Keras row of that torch input.
        hwc_row = np.arange(7 * 7 * 512).reshape(7, 7, 512).transpose(2, 0, 1).ravel()
        k1, b1 = weights["fc1"]
        mats = {0: (k1[hwc_row], b1), 3: weights["fc2"], 6: weights["predictions"]}
        for i, (k, b) in mats.items():
            # (in, out) -> (out, in) as a transposed view: torch.save keeps the strides, and
            # skipping the copy of 411 MB keeps the test fast; loading gives the same values.
            state[f"classifier.{i}.weight"] = torch.from_numpy(k).t()
            state[f"classifier.{i}.bias"] = torch.from_numpy(b)
    torch.save(state, path)


@pytest.fixture(scope="session", autouse=True)
def _private_model_cache(tmp_path_factory):
    """Exports go to a fresh cache folder, so no stale export from another run is ever reused."""
    cache = tmp_path_factory.mktemp("jcache")
    mp = pytest.MonkeyPatch()
    mp.setenv("JIANSUO_CACHE", str(cache))
    mp.delenv(WEIGHTS_ENV, raising=False)
    yield
    mp.undo()
    shutil.rmtree(cache)  # the fc7 exports are 0.5 GB each


@pytest.fixture(scope="session")
def weights():
    return _random_weights(seed=16)


@pytest.fixture(scope="session")
def files(tmp_path_factory, weights):
    folder = tmp_path_factory.mktemp("vgg16-weights")
    paths = {
        "keras_full": folder / "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
        "keras_notop": folder / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "torchvision": folder / "vgg16-397923af.pth",
        "torchvision_notop": folder / "vgg16-features-only.pth",
    }
    conv_only = {k: v for k, v in weights.items() if k.startswith("block")}
    _write_keras(paths["keras_full"], weights, style="keras3")
    _write_keras(paths["keras_notop"], conv_only, style="release")
    _write_torchvision(paths["torchvision"], weights)
    _write_torchvision(paths["torchvision_notop"], conv_only)
    yield paths
    shutil.rmtree(folder)  # 1.2 GB: not worth keeping in pytest's retained temp folders


@pytest.fixture(scope="session")
def photos():
    return [Image.fromarray(data.chelsea()), Image.fromarray(data.astronaut())]


# ----------------------------------------------------------------------------- reference


def _caffe_input(img: Image.Image) -> np.ndarray:
    """keras load_img(target_size=(224, 224)) + preprocess_input(mode='caffe'), as (224, 224, 3) BGR."""
    rgb = np.asarray(img.resize((224, 224), Image.NEAREST), dtype=np.float32)
    bgr = np.stack([rgb[..., 2], rgb[..., 1], rgb[..., 0]], axis=-1)
    return bgr - CAFFE_MEAN_BGR


def _reference(weights, x_nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """VGG16 forward in NumPy, channels-last as Keras computes it: (conv5 global max, fc7)."""
    a = x_nhwc.astype(np.float32)
    convs = iter(CONV_NAMES)
    for c in CFG:
        n, h, w, ch = a.shape
        if c == "M":
            a = a.reshape(n, h // 2, 2, w // 2, 2, ch).max(axis=(2, 4))
            continue
        kernel, bias = weights[next(convs)]
        padded = np.pad(a, ((0, 0), (1, 1), (1, 1), (0, 0)))
        out = np.tile(bias, (n * h * w, 1))
        for dy in range(3):
            for dx in range(3):  # 'same' 3×3 correlation: shifted window × kernel tap, summed
                out += padded[:, dy:dy + h, dx:dx + w, :].reshape(-1, ch) @ kernel[dy, dx]
        a = np.maximum(out, 0).reshape(n, h, w, c)
    conv5max = a.max(axis=(1, 2))
    flat = a.reshape(len(a), -1)  # Keras Flatten on (7, 7, 512): (h, w, c) order
    fc1 = np.maximum(flat @ weights["fc1"][0] + weights["fc1"][1], 0)
    fc7 = np.maximum(fc1 @ weights["fc2"][0] + weights["fc2"][1], 0)
    return conv5max, fc7


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ----------------------------------------------------------------------------- tests


def test_keras_weights_match_reference_forward(files, weights, photos):
    x = np.stack([_caffe_input(p) for p in photos])
    conv5max, fc7 = _reference(weights, x)
    assert (conv5max > 0).mean() > 0.5 and (fc7 > 0).mean() > 0.1, "random weights must give live activations"

    vgg = get_extractor("vgg16", weights=files["keras_full"])
    assert vgg.dim == 512
    np.testing.assert_allclose(vgg.embed_images(photos), _unit(conv5max), atol=2e-5)

    fc = get_extractor("vgg16-fc7", weights=files["keras_full"])
    assert fc.dim == 4096
    feats7 = fc.embed_images(photos)
    np.testing.assert_allclose(feats7, _unit(fc7), atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(feats7, axis=1), 1.0, atol=1e-5)


def test_keras_notop_file_gives_the_same_features(files, photos):
    full = get_extractor("vgg16", weights=files["keras_full"]).embed_images(photos)
    notop = get_extractor("vgg16", weights=files["keras_notop"]).embed_images(photos)
    np.testing.assert_allclose(notop, full, atol=1e-6)


def test_torchvision_weights_match_reference_on_torchvision_inputs(files, weights, photos):
    """Same weights as a .pth: the network must compute the same function, fed the inputs
    torchvision's weights expect. The extractor still takes caffe-mode input (one preprocessing
    for the model), and converts it inside the graph."""
    rgb = np.stack([np.asarray(p.resize((224, 224), Image.NEAREST), dtype=np.float32) / 255 for p in photos])
    tv_input = (rgb - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    conv5max, fc7 = _reference(weights, tv_input)

    vgg = get_extractor("vgg16", weights=files["torchvision"])
    np.testing.assert_allclose(vgg.embed_images(photos), _unit(conv5max), atol=2e-5)

    # fc7 through the PyTorch network the export is made from: a second 0.5 GB ONNX export and
    # session would double this file's run time; the export itself is covered by the Keras test.
    net = build_torch(load_weights(files["torchvision"], need_fc=True), "fc7")
    caffe = torch.from_numpy(np.stack([_caffe_input(p).transpose(2, 0, 1) for p in photos]))
    with torch.no_grad():
        got = net(caffe).numpy()
    np.testing.assert_allclose(_unit(got), _unit(fc7), atol=2e-5)


def test_notop_files_hold_the_same_conv_weights(files):
    for full, notop in (("keras_full", "keras_notop"), ("torchvision", "torchvision_notop")):
        a, b = load_weights(files[full]), load_weights(files[notop])
        assert a.fc is not None and b.fc is None
        for (ka, ba), (kb, bb) in zip(a.conv, b.conv, strict=True):
            np.testing.assert_array_equal(ka, kb)
            np.testing.assert_array_equal(ba, bb)


def test_preprocessing_is_keras_load_img_and_caffe_mode(files, photos):
    vgg = get_extractor("vgg16", weights=files["keras_notop"])
    for photo in photos:
        got = vgg.preprocess(photo)
        assert got.shape == (3, 224, 224) and got.dtype == np.float32
        np.testing.assert_array_equal(got, _caffe_input(photo).transpose(2, 0, 1))
    # The aspect ratio is not kept and nothing is cropped: the 451×300 photo's corners survive.
    chelsea = np.asarray(photos[0], dtype=np.float32)
    np.testing.assert_array_equal(vgg.preprocess(photos[0])[:, 0, 0], chelsea[0, 0, ::-1] - CAFFE_MEAN_BGR)

    # What the index records is known without weights (import-h5 describes the model that way).
    described = model_class("vgg16").description()
    assert described == vgg.describe()
    assert described["dim"] == 512 and "caffe" in described["preprocessing"]
    assert model_class("vgg16-fc7").description()["dim"] == 4096


def test_no_weights_file_says_where_to_get_one():
    with pytest.raises(ModelError) as err:
        get_extractor("vgg16")
    msg = str(err.value)
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in msg
    assert "download.pytorch.org/models/vgg16-397923af.pth" in msg
    assert "--weights" in msg and WEIGHTS_ENV in msg


def test_weights_from_environment_variable(files, photos, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(files["keras_notop"]))
    from_env = get_extractor("vgg16").embed_images(photos[:1])
    named = get_extractor("vgg16", weights=files["keras_notop"]).embed_images(photos[:1])
    np.testing.assert_array_equal(from_env, named)


def test_notop_file_for_fc7_is_a_clear_error(files):
    for key in ("keras_notop", "torchvision_notop"):
        with pytest.raises(ModelError, match="notop.*fc1 and fc2"):
            get_extractor("vgg16-fc7", weights=files[key])


def test_bad_weights_files_are_clear_errors(tmp_path, weights):
    with pytest.raises(ModelError, match="not found"):
        get_extractor("vgg16", weights=tmp_path / "missing.h5")

    text = tmp_path / "weights.h5"
    text.write_text("not weights")
    with pytest.raises(ModelError, match="not a VGG16 weights file"):
        get_extractor("vgg16", weights=text)

    other_h5 = tmp_path / "featureCNN.h5"
    with h5py.File(other_h5, "w") as f:
        f["dataset_1"] = np.zeros((2, 512), dtype=np.float32)
    with pytest.raises(ModelError, match="not Keras weights"):
        get_extractor("vgg16", weights=other_h5)

    other_pth = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, other_pth)
    with pytest.raises(ModelError, match="features.0.weight"):
        get_extractor("vgg16", weights=other_pth)

    # A Keras file whose kernels have the wrong shapes (Theano's channels-first ordering).
    conv_only = {k: v for k, v in weights.items() if k.startswith("block")}
    kernel, bias = conv_only["block1_conv1"]
    conv_only["block1_conv1"] = (np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)), bias)
    theano = tmp_path / "vgg16_weights_th_dim_ordering_th_kernels_notop.h5"
    _write_keras(theano, conv_only, style="release")
    with pytest.raises(ModelError, match="block1_conv1.*channels-last"):
        get_extractor("vgg16", weights=theano)


def test_replacing_the_weights_file_rebuilds_the_export(tmp_path, photos):
    path = tmp_path / "vgg16_notop.h5"
    _write_keras(path, _random_weights(seed=1, with_top=False), style="keras3")
    first = get_extractor("vgg16", weights=path).embed_images(photos[:1])
    stat = os.stat(path)
    _write_keras(path, _random_weights(seed=2, with_top=False), style="keras3")
    # Same size; make sure the mtime moves even on a filesystem with coarse timestamps.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    second = get_extractor("vgg16", weights=path).embed_images(photos[:1])
    assert float((first @ second.T)[0, 0]) < 0.999


def test_vgg16_int8_stays_close_to_float32(files, photos):
    """The original system's feature in int8 (an option): cosine to float32 on real photos."""
    fp32 = get_extractor("vgg16", weights=files["keras_notop"])
    int8 = get_extractor("vgg16", weights=files["keras_notop"], precision="int8")
    assert int8.describe() == {**fp32.describe(), "precision": "int8", "quantization": QUANT_VERSION}
    more = [Image.fromarray(data.coffee()), Image.fromarray(data.rocket())]
    cosines = np.sum(fp32.embed_images(photos + more) * int8.embed_images(photos + more), axis=1)
    assert cosines.min() >= 0.98, cosines
