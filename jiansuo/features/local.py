"""Local features: do two photos show the same picture? ORB keypoints and RANSAC align them, pixels decide.

A global CNN vector says "looks alike"; two listings of different products in the same style (two
white T-shirts on white, two colourings of one drawing, two ice creams on one cone) can be as close
as a photo and its cropped, re-encoded copy. A copy is the same picture up to one geometric
transform, so a pair is checked in two steps:

1. align: either the frames themselves (a re-encoded or resized copy keeps the picture's aspect), or
   one affine transform fitted by RANSAC to matched ORB keypoints (binary, no weights to ship), or,
   when there are too few keypoints for that (a crop of a flat wallpaper, gradient or studio
   backdrop), the place and scale where one picture best correlates with a part of the other;
2. compare: the first image warped onto the second, both small and blurred (JPEG blocks and
   resampling differ, the picture does not), and the share of the overlap whose colours differ
   counted. A copy differs only where a watermark was added; a different product differs where it
   differs, even when most of its keypoints match (the shared cone, card or backdrop).

Images are brought to a common size first (:data:`SIDE` on the longer side, small ones enlarged),
so a 64-pixel thumbnail and its 1,600-pixel original have keypoints at comparable scales.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..images import load_image

#: Longer side images are resized to before keypoints are found.
SIDE = 480
#: Keypoints kept per image (ORB's strongest by its Harris score).
N_FEATURES = 1000
#: Lowe's ratio test: a match is kept when its best descriptor distance is below this share of the second best.
RATIO = 0.8
#: A match is an inlier when the transform puts its keypoint within this many pixels (of SIDE) of its partner.
REPROJ_PX = 6.0
#: Largest scale between a copy and its original (a crop to 40% of a side, or the reverse) and the
#: largest ratio of its two axes' scales (a resize that does not keep the aspect).
MAX_SCALE = 2.5
MAX_STRETCH = 1.5
#: Fewest keypoint matches an affine alignment must explain to be tried.
MIN_INLIERS = 8
#: Longer side of the image kept for the pixel comparison, and the blur applied to both (pixels of it).
THUMB = 120
BLUR = 1.2
#: A pixel of the overlap disagrees when a colour channel differs by more than this (0-255).
PIXEL_TOL = 25
#: Frames are aligned as they are when their aspects differ by at most this factor.
FRAME_ASPECT = 1.11
#: The overlap compared must cover at least this share of the smaller picture.
MIN_OVERLAP = 0.15
#: Placing a picture within another (a crop without keypoints): scales tried from the largest that
#: fits down to 1 / MAX_SCALE, this factor apart, on thumbs reduced by PLACE_COARSE; then the best
#: refined at full thumb size within PLACE_REFINE steps of 1% either way.
PLACE_STEP = 1.06
PLACE_COARSE = 2
PLACE_REFINE = 2
#: A placement is compared only where it correlates at least this well: a blank part of a picture
#: (a white backdrop) correlates with nothing, and would otherwise agree with any mostly white crop.
PLACE_MIN_CORRELATION = 0.8
#: Nor is a picture this plain placed (the standard deviation of its grey thumb, 0-255): a blank crop
#: correlates perfectly with every blank area, so its place says nothing.
PLACE_MIN_CONTRAST = 4.0


@dataclass(frozen=True)
class LocalFeatures:
    """One image's ORB keypoint positions ((n, 2) float32, in its frame: the image resized to SIDE on
    the longer side), their descriptors ((n, 32) uint8), and the frame itself at THUMB on the longer
    side ((h, w, 3) uint8, blurred) for the pixel comparison."""

    points: np.ndarray
    descriptors: np.ndarray
    thumb: np.ndarray

    def __len__(self) -> int:
        return len(self.points)

    @property
    def frame(self) -> tuple[float, float]:
        """Width and height of the frame the points are in."""
        h, w = self.thumb.shape[:2]
        return w * SIDE / THUMB, h * SIDE / THUMB


@dataclass(frozen=True)
class Comparison:
    """How two images compare: the share of their overlap whose colours differ once aligned (1.0 when
    no alignment was found) and the keypoint inliers of the affine alignment (0 when the frames alone
    aligned them, or none was found)."""

    disagreement: float
    inliers: int


def _cv2():
    import cv2

    cv2.setNumThreads(1)  # pairs are verified one per worker thread; OpenCV's own threads would fight them
    return cv2


def extract(source: str | os.PathLike | bytes, *, n_features: int = N_FEATURES) -> LocalFeatures:
    """Local features of one image file (or its bytes). Raises :class:`jiansuo.images.ImageError` if unreadable."""
    cv2 = _cv2()
    rgb = np.asarray(load_image(source, draft_size=SIDE).convert("RGB"))
    h, w = rgb.shape[:2]
    scale = SIDE / max(h, w)
    if scale != 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    h, w = rgb.shape[:2]
    thumb = cv2.resize(rgb, (max(1, round(w * THUMB / SIDE)), max(1, round(h * THUMB / SIDE))),
                       interpolation=cv2.INTER_AREA)
    thumb = cv2.GaussianBlur(thumb, (0, 0), BLUR)
    # Local contrast equalised: flat photos (wallpapers, studio shots) then give keypoints too; more
    # copies of them were verified with it on bench/duplicates.py's set.
    gray = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    orb = cv2.ORB_create(nfeatures=n_features, fastThreshold=10, edgeThreshold=15, patchSize=15)
    keypoints, descriptors = orb.detectAndCompute(gray, None)
    if descriptors is None or not keypoints:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8), thumb)
    return LocalFeatures(np.array([k.pt for k in keypoints], dtype=np.float32), descriptors, thumb)


def compare(a: LocalFeatures, b: LocalFeatures, *, enough: float = 0.0) -> Comparison:
    """Align ``a`` onto ``b`` and return the lower disagreement found: by their frames when their
    aspects agree, then (unless that already came to ``enough`` or less) by keypoints (:func:`affine`,
    when it explains at least :data:`MIN_INLIERS` matches), and when the keypoints give no alignment,
    by placing either picture within the other (:func:`placement`)."""
    (wa, ha), (wb, hb) = a.frame, b.frame
    best = Comparison(1.0, 0)
    if max(wa / ha, wb / hb) <= FRAME_ASPECT * min(wa / ha, wb / hb):
        best = Comparison(disagreement(a, b, np.array([[wb / wa, 0, 0], [0, hb / ha, 0]])), 0)
    if best.disagreement > enough:
        transform, inliers = affine(a, b)
        if transform is not None and inliers >= MIN_INLIERS:
            fitted = disagreement(a, b, transform)
            if fitted < best.disagreement:
                best = Comparison(fitted, inliers)
        else:
            best = _placed(a, b, best, placement(a, b))
            if best.disagreement > enough:
                best = _placed(a, b, best, _inverse(placement(b, a)))
    return best


def _placed(a: LocalFeatures, b: LocalFeatures, best: Comparison, transform: np.ndarray | None) -> Comparison:
    """``best``, or the placement ``transform`` (``a``'s frame to ``b``'s) when it disagrees less."""
    if transform is None:
        return best
    return min(best, Comparison(disagreement(a, b, transform), 0), key=lambda c: c.disagreement)


def placement(a: LocalFeatures, b: LocalFeatures) -> np.ndarray | None:
    """The transform (2×3, ``a``'s frame to ``b``'s: a scale and a shift) that puts ``a`` where it
    correlates best with a part of ``b``, as a crop of ``b`` would lie; None when ``a`` cannot be
    ``b``'s crop (it would have to shrink by more than :data:`MAX_SCALE`) or correlates nowhere
    (:data:`PLACE_MIN_CORRELATION`), or is too plain to place (:data:`PLACE_MIN_CONTRAST`).

    For pictures with too few keypoints to fit :func:`affine` to; normalised cross-correlation of the
    grey thumbs, coarse to fine (:data:`PLACE_STEP`, :data:`PLACE_COARSE`, :data:`PLACE_REFINE`). The
    pixel comparison, not the correlation, then says whether it is a copy.
    """
    cv2 = _cv2()
    ga, gb = (cv2.cvtColor(x.thumb, cv2.COLOR_RGB2GRAY) for x in (a, b))
    (ha, wa), (hb, wb) = ga.shape, gb.shape
    largest = min(wb / wa, hb / ha)
    if largest < 1 / MAX_SCALE or ga.std() < PLACE_MIN_CONTRAST:
        return None
    scales = largest / PLACE_STEP ** np.arange(int(np.log(largest * MAX_SCALE) / np.log(PLACE_STEP)) + 1)
    shrink = [cv2.resize(g, (max(1, g.shape[1] // PLACE_COARSE), max(1, g.shape[0] // PLACE_COARSE)),
                         interpolation=cv2.INTER_AREA) for g in (ga, gb)]
    coarse = _best_place(shrink[0], shrink[1], scales)
    if coarse is None:
        return None
    fine = _best_place(ga, gb, [s for s in coarse[1] * 1.01 ** np.arange(-PLACE_REFINE, PLACE_REFINE + 1)
                                if s <= largest])
    if fine is None or fine[0] < PLACE_MIN_CORRELATION:
        return None
    _, _, (sx, sy), (x, y) = fine
    return np.array([[sx, 0, x * SIDE / THUMB], [0, sy, y * SIDE / THUMB]])


def _best_place(small: np.ndarray, large: np.ndarray, scales) -> tuple | None:
    """(correlation, scale, (x scale, y scale) as rounded, (x, y) in ``large``) of the best placement
    of ``small`` resized by one of ``scales`` within ``large``; None when none fits."""
    cv2 = _cv2()
    h, w = small.shape
    best = None
    for s in scales:
        tw, th = round(w * s), round(h * s)
        if tw < 6 or th < 6 or tw > large.shape[1] or th > large.shape[0]:
            continue
        fit = cv2.matchTemplate(large, cv2.resize(small, (tw, th), interpolation=cv2.INTER_AREA),
                                cv2.TM_CCOEFF_NORMED)
        _, score, _, at = cv2.minMaxLoc(fit)
        if best is None or score > best[0]:
            best = (score, s, (tw / w, th / h), at)
    return best


def _inverse(transform: np.ndarray | None) -> np.ndarray | None:
    return None if transform is None else _cv2().invertAffineTransform(transform)


def affine(a: LocalFeatures, b: LocalFeatures) -> tuple[np.ndarray | None, int]:
    """The affine transform (2×3, from ``a``'s frame to ``b``'s) that RANSAC fits to their ORB matches,
    and how many matches it explains; (None, 0) when there are too few or it is not one a copy undergoes.

    Matches are ratio-tested and one-to-one. The transform must be one a copy can undergo: no mirror,
    a scale within :data:`MAX_SCALE` either way and near-uniform (:data:`MAX_STRETCH`). Repeatable
    (RANSAC is seeded).
    """
    if len(a) < 3 or len(b) < 3:
        return None, 0
    cv2 = _cv2()
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    best: dict[int, tuple[float, int]] = {}  # b's keypoint -> (distance, a's keypoint): one-to-one
    for m in matcher.knnMatch(a.descriptors, b.descriptors, k=2):
        if len(m) == 2 and m[0].distance < RATIO * m[1].distance:
            if m[0].trainIdx not in best or m[0].distance < best[m[0].trainIdx][0]:
                best[m[0].trainIdx] = (m[0].distance, m[0].queryIdx)
    if len(best) < 4:
        return None, 0
    src = a.points[[q for _, q in best.values()]]
    dst = b.points[list(best)]
    cv2.setRNGSeed(0)
    # Affine (not a similarity): a resized copy may be stretched a little; not a homography: with 8
    # degrees of freedom chance matches between different photos fit one too easily.
    transform, mask = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=REPROJ_PX,
                                           maxIters=2000, confidence=0.995)
    if transform is None or mask is None:
        return None, 0
    s = np.linalg.svd(transform[:, :2], compute_uv=False)
    if (np.linalg.det(transform[:, :2]) <= 0 or s[1] < 1 / MAX_SCALE or s[0] > MAX_SCALE
            or s[0] > MAX_STRETCH * s[1]):
        return None, 0
    return transform, int(mask.sum())


def disagreement(a: LocalFeatures, b: LocalFeatures, transform: np.ndarray) -> float:
    """Share of the overlap of ``a`` warped by ``transform`` (its frame to ``b``'s) and ``b`` where a
    colour channel differs by more than :data:`PIXEL_TOL`; 1.0 when the overlap covers less than
    :data:`MIN_OVERLAP` of the smaller picture."""
    cv2 = _cv2()
    t = np.array(transform, dtype=np.float64)
    t[:, 2] *= THUMB / SIDE   # the thumbs are both THUMB / SIDE of their frames: only the shift rescales
    hb, wb = b.thumb.shape[:2]
    warped = cv2.warpAffine(a.thumb, t, (wb, hb), flags=cv2.INTER_LINEAR)
    inside = cv2.warpAffine(np.ones(a.thumb.shape[:2], np.uint8), t, (wb, hb), flags=cv2.INTER_NEAREST)
    inside = cv2.erode(inside, np.ones((5, 5), np.uint8)).astype(bool)   # edges mix in the border fill
    smaller = min(hb * wb, a.thumb.shape[0] * a.thumb.shape[1] * abs(np.linalg.det(t[:, :2])))
    if inside.sum() < MIN_OVERLAP * smaller:
        return 1.0
    diff = np.abs(warped.astype(np.int16) - b.thumb.astype(np.int16)).max(axis=2)
    return float((diff[inside] > PIXEL_TOL).mean())
