"""VGG16 (ImageNet) extractors: the original system's 512-d feature (``vgg16``) and 4096-d fc7 (``vgg16-fc7``).

``vgg16`` reproduces the original ``index.py``: Keras ``VGG16(include_top=False, pooling='max')``
on ``load_img(path, target_size=(224, 224))`` + ``preprocess_input`` (caffe mode), i.e. conv5 →
global max pool → 512-d, then L2-normalised. ``vgg16-fc7`` is the second fully connected layer
after its ReLU (the layer the hashing design re-ranks with).

ImageNet weights cannot be fetched at run time, so they come from a file the user names
(``weights=`` / ``--weights``, else ``$JIANSUO_VGG16_WEIGHTS``), in one of two layouts, detected
from the file:

- Keras ``vgg16_weights_tf_dim_ordering_tf_kernels(_notop).h5`` (HDF5, read with h5py: root attr
  ``layer_names``, per layer group attr ``weight_names`` naming the datasets; conv kernels HWIO,
  dense kernels (in, out), fc1's input in channels-last flatten order);
- torchvision ``vgg16-397923af.pth`` (a state dict: ``features.N.weight`` OIHW,
  ``classifier.N.weight`` (out, in), fc1's input in channels-first flatten order).

Both are converted to one PyTorch network, exported once to ONNX (cached per weights file) and run
with ONNX Runtime.

Preprocessing is the original's whatever the file: the whole image squashed to 224×224 with
nearest-neighbour resampling (no aspect preservation, no crop) from a full-size decode, then caffe
mode (BGR, minus the ImageNet mean, 0..255); checked bit for bit against Keras's own ``load_img`` +
``preprocess_input`` by ``bench/extract.py``. Only files the original mishandled differ: jiansuo's
``load_image`` applies EXIF orientation and composites transparency on white, where ``load_img``
ignored the one and dropped the other. torchvision's weights were trained on other inputs
(RGB, 0..1, mean/std), and fed caffe-mode values they would silently give poor features, so for
them the exported graph starts with the exact per-channel conversion between the two.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .. import config
from .base import Extractor, ModelError, l2_normalize, register, to_chw
from .onnx_cache import cached_onnx, file_identity, ort_session

WEIGHTS_ENV = "JIANSUO_VGG16_WEIGHTS"
KERAS_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
)
KERAS_FULL_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
    "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
)
TORCHVISION_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"

#: (name, in_channels, out_channels) of the 13 conv layers, in order; a 2×2 max pool follows
#: the last conv of each block.
CONV_LAYERS: tuple[tuple[str, int, int], ...] = (
    ("block1_conv1", 3, 64), ("block1_conv2", 64, 64),
    ("block2_conv1", 64, 128), ("block2_conv2", 128, 128),
    ("block3_conv1", 128, 256), ("block3_conv2", 256, 256), ("block3_conv3", 256, 256),
    ("block4_conv1", 256, 512), ("block4_conv2", 512, 512), ("block4_conv3", 512, 512),
    ("block5_conv1", 512, 512), ("block5_conv2", 512, 512), ("block5_conv3", 512, 512),
)
_POOL_AFTER = {"block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"}
#: (name, in_features, out_features) of the fully connected layers used here (predictions is not).
FC_LAYERS: tuple[tuple[str, int, int], ...] = (("fc1", 7 * 7 * 512, 4096), ("fc2", 4096, 4096))

# torchvision's vgg16: indices of the convs in `features` and of the linears in `classifier`.
_TV_CONV = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_TV_FC = (0, 3)

# Caffe-mode mean, in BGR order as Keras's preprocess_input subtracts it.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)

KERAS, TORCHVISION = "keras", "torchvision"


@dataclass
class VGG16Weights:
    """VGG16 weights: conv kernels in PyTorch layout (O, I, 3, 3); fc1/fc2 as the file holds them.

    The fully connected kernels are kept in the file's own orientation, because transposing
    fc1's 411 MB costs seconds: Keras's are (in, out) with fc1 reading an (H, W, C) flatten,
    torchvision's (out, in) with fc1 reading a (C, H, W) flatten. :func:`build_torch` follows
    ``layout`` to use them as they are.
    """

    layout: str  # KERAS or TORCHVISION: the file it came from, which fixes fc and input conventions
    conv: list[tuple[np.ndarray, np.ndarray]]
    fc: list[tuple[np.ndarray, np.ndarray]] | None  # fc1, fc2; None for a notop file


# ----------------------------------------------------------------------------- weights files


def resolve_weights(weights: str | os.PathLike | None) -> Path:
    """The weights file to use: ``weights``, else ``$JIANSUO_VGG16_WEIGHTS``; a clear error if neither exists."""
    chosen = weights or config.vgg16_weights()
    if not chosen:
        raise ModelError(
            "the VGG16 models need ImageNet weights, which are not bundled. Download one of\n"
            f"  {KERAS_NOTOP_URL}  (Keras, conv layers only: enough for vgg16)\n"
            f"  {KERAS_FULL_URL}  (Keras, with the fc layers: needed for vgg16-fc7)\n"
            f"  {TORCHVISION_URL}  (torchvision, full)\n"
            f"and pass it with --weights FILE or the environment variable {WEIGHTS_ENV}=FILE."
        )
    path = Path(chosen).expanduser()
    if not path.is_file():
        raise ModelError(f"VGG16 weights file not found: {path}")
    return path


def detect_layout(path: str | os.PathLike) -> str:
    """``"keras"`` for an HDF5 file, ``"torchvision"`` for a PyTorch checkpoint; ModelError otherwise."""
    import h5py

    if h5py.is_hdf5(path):
        return KERAS
    with open(path, "rb") as fh:
        head = fh.read(8)
    # torch.save writes a zip archive (PK..) since 1.6, a pickle stream (0x80 = PROTO) before.
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return TORCHVISION
    raise ModelError(
        f"{path}: not a VGG16 weights file (expected a Keras .h5 or a torchvision .pth state dict)"
    )


def load_weights(path: str | os.PathLike, *, need_fc: bool = False) -> VGG16Weights:
    """Read a Keras (.h5) or torchvision (.pth) VGG16 weights file into PyTorch layout.

    ``need_fc``: the caller needs fc1/fc2, so a conv-only (notop) file is an error.
    """
    layout = detect_layout(path)
    weights = _read_keras(path) if layout == KERAS else _read_torchvision(path)
    if need_fc and weights.fc is None:
        hint = (f"use the full file vgg16_weights_tf_dim_ordering_tf_kernels.h5 ({KERAS_FULL_URL})"
                if layout == KERAS else f"use the full torchvision file ({TORCHVISION_URL})")
        raise ModelError(
            f"{path} holds only the convolutional layers (a 'notop' file), but vgg16-fc7 needs the "
            f"fully connected layers fc1 and fc2: {hint}"
        )
    return weights


def _attr_list(group, name: str) -> list[str]:
    """A list-of-strings attribute as Keras writes it: bytes or str, possibly split into name0, name1, ...

    (Keras splits attributes larger than HDF5's 64 KB object-header limit into numbered chunks.)
    """
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks, i = [], 0
        while f"{name}{i}" in group.attrs:
            chunks.append(group.attrs[f"{name}{i}"])
            i += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for chunk in chunks for v in np.atleast_1d(chunk)]


def _read_keras(path: str | os.PathLike) -> VGG16Weights:
    import h5py

    with h5py.File(path, "r") as f:
        # save_weights() writes the layers at the root; model.save() puts them under model_weights.
        root = f if "layer_names" in f.attrs or "layer_names0" in f.attrs else f.get("model_weights")
        layer_names = _attr_list(root, "layer_names") if root is not None else []
        if not layer_names:
            raise ModelError(
                f"{path}: an HDF5 file, but not Keras weights (no 'layer_names' attribute). "
                "Expected vgg16_weights_tf_dim_ordering_tf_kernels(_notop).h5."
            )
        # Like Keras's own loader, go by order, not by name: the layers that have weights, in order.
        layers = []
        for lname in layer_names:
            group = root[lname]
            arrays = [np.asarray(group[w], dtype=np.float32) for w in _attr_list(group, "weight_names")]
            if arrays:
                layers.append((lname, arrays))
    convs = [(n, a) for n, a in layers if any(x.ndim == 4 for x in a)]
    dense = [(n, a) for n, a in layers if not any(x.ndim == 4 for x in a)]
    if len(convs) != len(CONV_LAYERS):
        raise ModelError(f"{path}: {len(convs)} convolution layers, VGG16 has {len(CONV_LAYERS)}")

    conv = []
    for (lname, arrays), (name, cin, cout) in zip(convs, CONV_LAYERS):
        kernel, bias = _kernel_and_bias(path, lname, arrays)
        if kernel.shape != (3, 3, cin, cout) or bias.shape != (cout,):
            raise ModelError(
                f"{path}: layer {lname} has kernel {kernel.shape}, VGG16's {name} needs (3, 3, {cin}, {cout}) "
                "(a channels-last 'tf_dim_ordering_tf_kernels' file)"
            )
        conv.append((np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)), bias))  # HWIO -> OIHW

    fc = None
    if dense:
        if len(dense) < len(FC_LAYERS):
            raise ModelError(f"{path}: {len(dense)} dense layers, VGG16's top has fc1, fc2, predictions")
        fc = []
        for (lname, arrays), (name, fin, fout) in zip(dense, FC_LAYERS):
            kernel, bias = _kernel_and_bias(path, lname, arrays)
            if kernel.shape != (fin, fout) or bias.shape != (fout,):
                raise ModelError(f"{path}: layer {lname} has kernel {kernel.shape}, VGG16's {name} needs ({fin}, {fout})")
            fc.append((kernel, bias))
    return VGG16Weights(KERAS, conv, fc)


def _kernel_and_bias(path, lname: str, arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if len(arrays) != 2:
        raise ModelError(f"{path}: layer {lname} has {len(arrays)} weight arrays, expected kernel and bias")
    kernel, bias = sorted(arrays, key=lambda a: -a.ndim)  # the 1-d one is the bias, whatever its name
    return kernel, bias


def _read_torchvision(path: str | os.PathLike) -> VGG16Weights:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt zip/pickle raises a variety of errors
        raise ModelError(f"{path}: cannot read as a PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{path}: a PyTorch file, but not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel

    def pair(prefix: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            return (state[f"{prefix}.weight"].float().numpy(), state[f"{prefix}.bias"].float().numpy())
        except KeyError:
            raise ModelError(
                f"{path}: no {prefix}.weight/.bias; expected torchvision's vgg16 state dict (vgg16-397923af.pth)"
            ) from None

    conv = []
    for idx, (name, cin, cout) in zip(_TV_CONV, CONV_LAYERS):
        kernel, bias = pair(f"features.{idx}")
        if kernel.shape != (cout, cin, 3, 3) or bias.shape != (cout,):
            raise ModelError(f"{path}: features.{idx}.weight is {tuple(kernel.shape)}, VGG16 needs ({cout}, {cin}, 3, 3)")
        conv.append((np.ascontiguousarray(kernel), bias))
    fc = None
    if "classifier.0.weight" in state:
        fc = []
        for idx, (name, fin, fout) in zip(_TV_FC, FC_LAYERS):
            kernel, bias = pair(f"classifier.{idx}")
            if kernel.shape != (fout, fin) or bias.shape != (fout,):
                raise ModelError(f"{path}: classifier.{idx}.weight is {tuple(kernel.shape)}, VGG16 needs ({fout}, {fin})")
            fc.append((kernel, bias))
    return VGG16Weights(TORCHVISION, conv, fc)


# ----------------------------------------------------------------------------- network


def build_torch(weights: VGG16Weights, head: str):
    """The PyTorch network: ``head="conv5max"`` → (B, 512) global max of conv5; ``"fc7"`` → (B, 4096)."""
    import torch
    from torch import nn

    layers: list[nn.Module] = []
    for (name, cin, cout), (kernel, bias) in zip(CONV_LAYERS, weights.conv):
        conv = nn.Conv2d(cin, cout, 3, padding=1)  # Keras 'same' padding = 1 for a 3×3 kernel
        conv.weight.data = torch.from_numpy(kernel)
        conv.bias.data = torch.from_numpy(bias)
        layers += [conv, nn.ReLU(inplace=True)]
        if name in _POOL_AFTER:
            layers.append(nn.MaxPool2d(2, 2))
    features = nn.Sequential(*layers)

    if weights.layout == TORCHVISION:
        features = nn.Sequential(_caffe_to_torchvision(), *features)

    if head == "conv5max":
        class Conv5Max(nn.Module):
            def __init__(self):
                super().__init__()
                self.features = features

            def forward(self, x):
                return torch.amax(self.features(x), dim=(2, 3))

        return Conv5Max()

    if weights.fc is None:
        raise ModelError("vgg16-fc7 needs the fully connected layers (a full, not 'notop', weights file)")
    keras = weights.layout == KERAS

    class Dense(nn.Module):
        def __init__(self, kernel: np.ndarray, bias: np.ndarray):
            super().__init__()
            self.kernel = nn.Parameter(torch.from_numpy(kernel), requires_grad=False)
            self.bias = nn.Parameter(torch.from_numpy(bias), requires_grad=False)

        def forward(self, x):
            # Keras kernels are (in, out); torchvision's (out, in), i.e. nn.Linear's.
            return x @ self.kernel + self.bias if keras else torch.nn.functional.linear(x, self.kernel, self.bias)

    class FC7(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = features
            self.fc1, self.fc2 = (Dense(k, b) for k, b in weights.fc)

        def forward(self, x):
            fmap = self.features(x)
            if keras:  # Keras's Flatten ran on channels-last (B, 7, 7, 512)
                fmap = fmap.permute(0, 2, 3, 1)
            x = torch.relu(self.fc1(fmap.flatten(1)))
            return torch.relu(self.fc2(x))

    return FC7()


def _caffe_to_torchvision():
    """A module: caffe-mode input (BGR, minus mean, 0..255) → torchvision's ((RGB/255 - mean) / std)."""
    import torch
    from torch import nn

    class CaffeToTorchvision(nn.Module):
        def __init__(self):
            super().__init__()
            rgb_mean = torch.tensor(CAFFE_MEAN_BGR[::-1]).view(1, 3, 1, 1)
            self.register_buffer("offset", rgb_mean - 255 * torch.tensor(TORCHVISION_MEAN).view(1, 3, 1, 1))
            self.register_buffer("scale", 1 / (255 * torch.tensor(TORCHVISION_STD).view(1, 3, 1, 1)))

        def forward(self, x):
            return (x[:, [2, 1, 0]] + self.offset) * self.scale

    return CaffeToTorchvision()


# ----------------------------------------------------------------------------- extractors


class VGG16(Extractor):
    """VGG16 conv5 → global max pool → 512-d: the original system's feature."""

    name = "vgg16"
    version = "1"
    dim = 512
    input_size = 224
    head = "conv5max"

    def __init__(self, weights: str | os.PathLike | None = None, precision: str = "fp32"):
        self.weights = resolve_weights(weights)
        self.layout = detect_layout(self.weights)
        self.precision = precision
        need_fc = self.head == "fc7"
        self.onnx_path = cached_onnx(
            self.name, f"{self.layout}|{self.head}|{file_identity(self.weights)}",
            lambda: build_torch(load_weights(self.weights, need_fc=need_fc), self.head),
            self.input_size,
        )
        if precision == "int8":
            from .quantize import int8_onnx

            self.onnx_path = int8_onnx(self.name, self.onnx_path, self.preprocess)
        self.session = ort_session(self.onnx_path)

    @property
    def draft_size(self) -> int:
        # 0 = no JPEG draft decoding: the original decoded at full size before its nearest-neighbour
        # resize, and nearest sampling of a reduced-scale decode gives visibly different pixels.
        # VGG16 inference (~15 GFLOP/image) dwarfs the few ms a full decode costs.
        return 0

    @classmethod
    def preprocessing(cls) -> str:
        return f"squashed to 224x224 (nearest, full decode), caffe mode: BGR minus {list(CAFFE_MEAN_BGR)}"

    def preprocess(self, img: Image.Image) -> np.ndarray:
        # keras load_img(target_size=(224, 224)) = PIL resize with NEAREST, aspect not kept.
        img = img.resize((self.input_size, self.input_size), Image.NEAREST)
        chw = to_chw(img, CAFFE_MEAN_BGR[::-1], (1.0, 1.0, 1.0))
        return np.ascontiguousarray(chw[::-1])  # RGB -> BGR, as preprocess_input does

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        (out,) = self.session.run(None, {"input": np.ascontiguousarray(batch, dtype=np.float32)})
        return l2_normalize(out)


class VGG16FC7(VGG16):
    """VGG16 fc7 (second fully connected layer, after its ReLU): 4096-d."""

    name = "vgg16-fc7"
    dim = 4096
    head = "fc7"


register(VGG16)
register(VGG16FC7)
