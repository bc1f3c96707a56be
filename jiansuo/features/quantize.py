"""int8 networks: an extractor's float ONNX graph statically quantised by ONNX Runtime, made once and cached.

Static QDQ quantisation: weights int8 per output channel on 7 bits (``reduce_range``), activations uint8
with ranges calibrated (min/max) on real photos run through the extractor's own preprocessing. The
calibration photos are scikit-image's bundled real photographs (never the data sets kept for independent
evaluation), each whole and, as product shots, cropped and pasted on white, grey and pale backdrops: the
two kinds of photo a catalogue and its shoppers send. Pooling and the classifier stay in float:
quantising them saves nothing and adds error. The 7-bit weights are for x86 CPUs without VNNI (AVX2,
AVX-512F): there ONNX Runtime's u8×s8 kernels add pairs of products in 16 bits, which full-range weights
overflow (int8 vs fp32 cosine down to 0.955 on real photos); with 7 bits the same model is right on
every CPU. ``bench/int8.py`` measures the fidelity per layer and overall, and the speed;
``bench/quality.py`` the retrieval figures.

The result is cached beside the float graph (:func:`~.onnx_cache.cached_model_file`: checked by its
SHA-256, made again when missing, damaged or stale), keyed by the float graph's checksum, the
calibration set's version and the settings here.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from .base import ModelError
from .onnx_cache import cached_model_file, sha256_file

#: Bump when the calibration photos, the settings or the float-kept operators change.
QUANT_VERSION = "2"  # 2: 7-bit weights
#: Operators left in float: pooling and the classifier cost nothing, and their int8 forms lose detail.
FLOAT_OPS = ("ReduceMax", "ReduceMean", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "MatMul")
#: The scikit-image photos used (bundled in its wheel: no download).
CALIBRATION_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
                      "retina", "colorwheel", "camera", "coins", "clock", "moon", "cat", "page",
                      "text", "logo", "brick", "grass", "gravel")
_BACKDROPS = ((255, 255, 255), (236, 236, 234), (245, 240, 232), (228, 233, 240))


def calibration_images(per_photo: int = 3, seed: int = 0) -> list[Image.Image]:
    """The calibration photos: each real photo whole, plus ``per_photo`` crops of it as product shots."""
    try:
        from skimage import data
    except ImportError as exc:
        raise ModelError("int8 models are calibrated on scikit-image's bundled photos: "
                         "pip install scikit-image (or use --precision fp32)") from exc
    rng = np.random.default_rng(seed)
    out = []
    for name in CALIBRATION_PHOTOS:
        loader = getattr(data, name, None)
        if loader is None:
            continue
        arr = np.asarray(loader())
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        img = Image.fromarray(arr[..., :3].astype(np.uint8)).convert("RGB")
        out.append(img)
        w, h = img.size
        for _ in range(per_photo):
            cw, ch = int(w * rng.uniform(0.3, 0.7)), int(h * rng.uniform(0.3, 0.7))
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            crop = img.crop((x, y, x + cw, y + ch))
            side = int(max(cw, ch) * rng.uniform(1.2, 1.8))
            canvas = Image.new("RGB", (side, int(side * rng.uniform(0.75, 1.33))),
                               _BACKDROPS[int(rng.integers(len(_BACKDROPS)))])
            canvas.paste(crop, ((canvas.width - cw) // 2, (canvas.height - ch) // 2))
            out.append(canvas)
    return out


def int8_onnx(name: str, float_path: Path, preprocess: Callable[[Image.Image], np.ndarray],
              *, keep_float: Iterable[str] = ()) -> Path:
    """The cached int8 version of ``float_path``, calibrated with ``preprocess`` (the extractor's own);
    nodes whose names start with one of ``keep_float`` stay in float (the layers that lose fidelity)."""
    keep = tuple(sorted(keep_float))
    key = f"{sha256_file(float_path)}|{QUANT_VERSION}|{FLOAT_OPS}|{keep}"
    return cached_model_file(f"{name}-int8", key, lambda dest: quantize(float_path, dest, preprocess, keep),
                             {"float_sha256": sha256_file(float_path), "quant_version": QUANT_VERSION,
                              "keep_float": list(keep)})


def quantize(float_path: Path, dest: Path, preprocess: Callable[[Image.Image], np.ndarray],
             keep_float: Iterable[str] = ()) -> None:
    """Write the int8 QDQ graph of ``float_path`` to ``dest`` (atomically); nodes whose names start with
    one of ``keep_float`` stay in float, as do the :data:`FLOAT_OPS`."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ..atomic import atomic_path

    tensors = [preprocess(img)[None] for img in calibration_images()]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(tensors)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"input": x}

    with tempfile.TemporaryDirectory(prefix="jiansuo-int8-") as tmp, atomic_path(dest) as out, \
            warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # ONNX Runtime's advice on pre-processing, already done here
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(float_path), str(pre))
        nodes = onnx.load(str(pre)).graph.node
        prefixes = tuple(keep_float)
        exclude = sorted(n.name for n in nodes if n.op_type in FLOAT_OPS or (prefixes and n.name.startswith(prefixes)))
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                        reduce_range=True)
