"""A suggested box around the catalogue product in a shopper's photo (``--auto-box``, API ``box=auto``).

A shopper's photo often shows the product in a room, on a person or on a shelf; embedding the whole
photo mixes the product with its surroundings. The box is found by region-level matching: windows of
four sizes slid over the photo are embedded in one batch, each is scored by its best similarity in
the catalogue, and the best three are refined (grown, shrunk, shifted). The box is kept only if it
matches the catalogue better than the whole photo (by :data:`MIN_GAIN`), so a photo that is the
product (a scene, or a product on a backdrop, which :mod:`jiansuo.framing` crops anyway) is searched
whole, as without auto-box. No extra weights: the extractor the index uses, about 60 inferences in a
few batches.

Photos with a near-uniform backdrop are not skipped: a product pasted on a flat wallpaper is framed
with the wallpaper's pattern around it, and the windows still find it (measured: skipping them lost
a tenth of the shopper photos).

``bench/auto_box.py`` measures it against the whole photo and a hand-drawn box. The network's own
channel-mean activation map, cut around its peak, was tried first on the same photos and got about
half of what the hand box gets (it lights up on a textured room as much as on the product).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image

from .images import Box

#: What a user types for a suggested box (API ``box=auto``).
AUTO = "auto"
#: Window sides, as shares of the photo's longer side (products photographed at 25–80% of it).
SIDES = (0.3, 0.45, 0.6, 0.8)
#: Step between windows, as a share of their side.
STRIDE = 0.5
#: How many of the best windows are refined.
REFINE_TOP = 3
#: The refinement of the best window: (scale, shift x, shift y), shifts as shares of its size.
REFINE = ((0.75, 0, 0), (1.3, 0, 0), (1, -0.25, 0), (1, 0.25, 0), (1, 0, -0.25), (1, 0, 0.25))

#: How much better than the whole photo the best window must match to be kept: a photo that is the
#: product has windows within a few thousandths of it, which only noise puts ahead.
MIN_GAIN = 0.01

#: vectors (n, dim) → the best catalogue similarity of each, (n,)
BestScores = Callable[[np.ndarray], np.ndarray]


def suggest_box(extractor, img: Image.Image, best_scores: BestScores, whole: np.ndarray | None = None) -> Box | None:
    """The part of ``img`` that matches the catalogue best, or None to search the photo whole.

    ``best_scores`` gives each vector's top similarity in the catalogue searched; ``whole`` is the whole
    photo's vector when the caller has it already."""
    if whole is None:
        whole = _embed(extractor, img, [None])[0]
    boxes = candidate_boxes(*img.size)
    scores = best_scores(_embed(extractor, img, boxes))
    # A window on the product gains much from a tighter fit, one on the room little: refine the best few.
    refined = [r for j in np.argsort(-scores)[:REFINE_TOP] for r in refinements(boxes[int(j)])]
    if refined:
        boxes = boxes + refined
        scores = np.concatenate([scores, best_scores(_embed(extractor, img, refined))])
    j = int(np.argmax(scores))
    return boxes[j] if scores[j] >= float(best_scores(whole[None])[0]) + MIN_GAIN else None


def catalogue_scores(store, **search) -> BestScores:
    """:data:`BestScores` from a :class:`~jiansuo.search.store.VectorStore` (``search``: its search
    options, e.g. ``allowed``); -1 for a vector with no result."""
    def best(vectors: np.ndarray) -> np.ndarray:
        results = store.search(vectors, 1, **search)
        return np.array([r.hits[0].score if r.hits else -1.0 for r in results], dtype=np.float32)

    return best


def candidate_boxes(width: int, height: int) -> list[Box]:
    """Windows of each of :data:`SIDES` (squares in pixels, clipped to the photo) covering the photo."""
    longer = max(width, height)
    out = []
    for side in SIDES:
        bw, bh = min(1.0, side * longer / width), min(1.0, side * longer / height)
        nx, ny = _steps(bw), _steps(bh)
        for i in range(nx):
            for j in range(ny):
                x0 = 0.0 if nx == 1 else i * (1 - bw) / (nx - 1)
                y0 = 0.0 if ny == 1 else j * (1 - bh) / (ny - 1)
                out.append(Box(x0, y0, min(1.0, x0 + bw), min(1.0, y0 + bh)))
    return out


def refinements(box: Box) -> list[Box]:
    """``box`` grown, shrunk and shifted by :data:`REFINE`, clipped to the photo."""
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    w, h = box.x1 - box.x0, box.y1 - box.y0
    out = []
    for scale, dx, dy in REFINE:
        x, y, hw, hh = cx + dx * w, cy + dy * h, w * scale / 2, h * scale / 2
        x0, y0, x1, y1 = max(0.0, x - hw), max(0.0, y - hh), min(1.0, x + hw), min(1.0, y + hh)
        if x1 - x0 > 0.02 and y1 - y0 > 0.02:
            out.append(Box(x0, y0, x1, y1))
    return out


def _steps(extent: float) -> int:
    """How many windows of ``extent`` (a share of the side) cover it at :data:`STRIDE`."""
    if extent >= 1.0:
        return 1
    return int(np.ceil((1 - extent) / (extent * STRIDE) - 1e-9)) + 1


def _embed(extractor, img: Image.Image, boxes: list[Box | None]) -> np.ndarray:
    return extractor.embed_batch(np.stack([extractor.preprocess(b.crop(img) if b else img) for b in boxes]))
