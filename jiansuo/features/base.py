"""The one interface every feature extractor implements, and the registry that names them."""

from __future__ import annotations

import functools
import os
from abc import ABC, abstractmethod
from typing import Iterable, Sequence

import numpy as np
from PIL import Image


class ModelError(RuntimeError):
    """A model cannot be built or loaded (missing weights file, wrong layout, ...)."""


class Extractor(ABC):
    """Turns images into L2-normalised float32 feature vectors.

    Decoding and :meth:`preprocess` are pure CPU work with no model state, so the indexing
    pipeline runs them in threads while :meth:`embed_batch` runs the network.
    """

    #: Registry name, stored in the index; a query must use the same one.
    name: str = ""
    #: Bumped whenever weights handling or preprocessing changes the vectors.
    version: str = "1"
    #: Feature dimension.
    dim: int = 0
    #: Side of the square network input.
    input_size: int = 224
    #: "fp32", or "int8" for the statically quantised network (:mod:`.quantize`); part of the identity.
    precision: str = "fp32"
    #: The precision used when none is asked for: int8 only where bench/quality.py, bench/int8.py and
    #: the hashing figures show it loses nothing that matters (efficientnet-lite0).
    default_precision: str = "fp32"

    @abstractmethod
    def preprocess(self, img: Image.Image) -> np.ndarray:
        """RGB image → network input, float32 array of shape (3, input_size, input_size)."""

    @abstractmethod
    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 inputs → (B, dim) float32 L2-normalised features."""

    def describe(self) -> dict:
        """What the index records about this extractor, so a mismatch can be detected."""
        return self.description(self.precision)

    @classmethod
    def description(cls, precision: str = "fp32") -> dict:
        """:meth:`describe` of an instance of this class with that precision, without building one.

        An int8 network also records its quantisation's version: int8 vectors of two versions differ
        as much as int8 and fp32 ones do."""
        out = {
            "name": cls.name,
            "version": cls.version,
            "dim": cls.dim,
            "input_size": cls.input_size,
            "preprocessing": cls.preprocessing(),
            "precision": precision,
        }
        if precision == "int8":
            from .quantize import QUANT_VERSION

            out["quantization"] = QUANT_VERSION
        return out

    @classmethod
    def preprocessing(cls) -> str:
        """Human-readable description of :meth:`preprocess` (stored in the index)."""
        return ""

    @property
    def draft_size(self) -> int:
        """JPEGs may be decoded at reduced scale down to this many pixels a side."""
        return self.input_size

    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """Embed already-decoded RGB images (convenience for queries and tests)."""
        out = []
        for start in range(0, len(images), batch_size):
            chunk = np.stack([self.preprocess(im) for im in images[start : start + batch_size]])
            out.append(self.embed_batch(chunk))
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(out)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation in float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, eps)


# name -> Extractor subclass, built as cls(weights=...)
_REGISTRY: dict[str, type[Extractor]] = {}

DEFAULT_MODEL = "efficientnet-lite0"
#: Network precisions an extractor may run at (see :mod:`.quantize`).
PRECISIONS = ("fp32", "int8")


def register(cls: type[Extractor]) -> type[Extractor]:
    """Class decorator: make an extractor available under its ``name`` (for ``--model``)."""
    _REGISTRY[cls.name] = cls
    return cls


def model_class(name: str) -> type[Extractor]:
    """The extractor class registered as ``name`` (no weights are loaded)."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}") from None


def available_models() -> list[str]:
    """Names accepted by :func:`get_extractor`."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_extractor(name: str = DEFAULT_MODEL, *, weights: str | os.PathLike | None = None,
                  precision: str | None = None) -> Extractor:
    """Build the extractor called ``name``; ``weights`` names a weights file where the model needs one,
    ``precision`` is "fp32" or "int8" (default: the model's ``default_precision``)."""
    cls = model_class(name)
    precision = precision or cls.default_precision
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    return cls(weights=weights, precision=precision)


_CACHE: dict[tuple[str, str | None, str | None], Extractor] = {}


def cached_extractor(name: str = DEFAULT_MODEL, *, weights: str | os.PathLike | None = None,
                     precision: str | None = None) -> Extractor:
    """Like :func:`get_extractor`, but one instance per process (a server loads its model once)."""
    key = (name, os.fspath(weights) if weights else None, precision or model_class(name).default_precision)
    if key not in _CACHE:
        _CACHE[key] = get_extractor(name, weights=weights, precision=precision)
    return _CACHE[key]


def _load_builtin() -> None:
    # Imported lazily so `jiansuo --help` does not pay for torch/onnxruntime.
    from . import efficientnet, vgg16  # noqa: F401


def to_chw(img: Image.Image, mean: Iterable[float], std: Iterable[float]) -> np.ndarray:
    """HWC uint8 RGB image → CHW float32, ``(x - mean) / std`` per channel (values on 0..255)."""
    table = _normalisation_table(tuple(float(m) for m in mean), tuple(float(s) for s in std))
    pixels = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)  # (3, H, W) view
    # A 256-entry table per channel: one gather instead of three float passes over the image.
    return np.stack([table[c][pixels[c]] for c in range(3)])


@functools.lru_cache(maxsize=8)
def _normalisation_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    levels = np.arange(256, dtype=np.float32)
    return np.stack([(levels - np.float32(m)) / np.float32(s) for m, s in zip(mean, std)])
