"""Local features: do two photos show the same picture? ORB keypoints matched, then RANSAC geometry.

A global CNN vector says "looks alike"; two listings of different products in the same style (two
white T-shirts on white) can be as close as a photo and its cropped, re-encoded copy. A copy keeps
the picture's corners and edges in place up to one geometric transform, which two different
photos never share: so a pair is checked by matching ORB descriptors (binary, no weights to ship)
and counting the matches one affine transform explains (RANSAC). Look-alikes get a handful of
chance inliers; copies get tens to hundreds.

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
#: Inliers must span a box of at least this share of the frame in both images.
MIN_SPREAD = 0.04
#: A matched keypoint counts only if the colours around it (5×5 mean) differ by at most this much
#: per channel: keypoints are found in grey, so two colourings of one drawing match in shape alone.
COLOUR_TOL = 48


@dataclass(frozen=True)
class LocalFeatures:
    """ORB keypoint positions ((n, 2) float32, in the resized image), their descriptors ((n, 32) uint8)
    and the mean colour around each ((n, 3) int16)."""

    points: np.ndarray
    descriptors: np.ndarray
    colours: np.ndarray

    def __len__(self) -> int:
        return len(self.points)


def _cv2():
    import cv2

    cv2.setNumThreads(1)  # pairs are verified one per worker thread; OpenCV's own threads would fight them
    return cv2


def extract(source: str | os.PathLike | bytes, *, side: int = SIDE, n_features: int = N_FEATURES) -> LocalFeatures:
    """ORB features of one image file (or its bytes). Raises :class:`jiansuo.images.ImageError` if unreadable."""
    cv2 = _cv2()
    rgb = load_image(source, draft_size=side)
    img = rgb.convert("L")
    scale = side / max(img.size)
    gray = np.asarray(img)
    # Local contrast equalised: flat photos (wallpapers, studio shots) then give keypoints too; more
    # copies of them were verified with it on bench/duplicates.py's set.
    gray = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(gray)
    colour = np.asarray(rgb.convert("RGB"))
    if scale != 1:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        gray = cv2.resize(gray, size, interpolation=interpolation)
        colour = cv2.resize(colour, size, interpolation=interpolation)
    orb = cv2.ORB_create(nfeatures=n_features, fastThreshold=10, edgeThreshold=15, patchSize=15)
    keypoints, descriptors = orb.detectAndCompute(gray, None)
    if descriptors is None or not keypoints:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8), np.zeros((0, 3), np.int16))
    points = np.array([k.pt for k in keypoints], dtype=np.float32)
    blurred = cv2.blur(colour, (5, 5))
    xy = np.clip(np.rint(points).astype(int), 0, [colour.shape[1] - 1, colour.shape[0] - 1])
    return LocalFeatures(points, descriptors, blurred[xy[:, 1], xy[:, 0]].astype(np.int16))


def inliers(a: LocalFeatures, b: LocalFeatures) -> int:
    """How many ORB matches between ``a`` and ``b`` one plausible affine transform explains; see :func:`match`."""
    return match(a, b)[0]


def match(a: LocalFeatures, b: LocalFeatures) -> tuple[int, int]:
    """How many ORB matches between ``a`` and ``b`` one plausible affine transform explains (RANSAC).

    Matches are ratio-tested and one-to-one. The transform must be one a copy can undergo: no mirror,
    a scale within :data:`MAX_SCALE` either way and near-uniform (:data:`MAX_STRETCH`); and its
    inliers must spread over at least :data:`MIN_SPREAD` of both images (chance matches between
    look-alikes bunch up on one edge or texture). An inlier must also keep its colour
    (:data:`COLOUR_TOL`). Otherwise, and when there are too few matches to fit one, 0. Returns
    (inliers, matches tried). Repeatable (RANSAC is seeded).
    """
    if len(a) < 3 or len(b) < 3:
        return 0, 0
    cv2 = _cv2()
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    best: dict[int, tuple[float, int]] = {}  # b's keypoint -> (distance, a's keypoint): one-to-one
    for m in matcher.knnMatch(a.descriptors, b.descriptors, k=2):
        if len(m) == 2 and m[0].distance < RATIO * m[1].distance:
            if m[0].trainIdx not in best or m[0].distance < best[m[0].trainIdx][0]:
                best[m[0].trainIdx] = (m[0].distance, m[0].queryIdx)
    if len(best) < 4:
        return 0, len(best)
    src = a.points[[q for _, q in best.values()]]
    dst = b.points[list(best)]
    cv2.setRNGSeed(0)
    # Affine (not a similarity): a resized copy may be stretched a little; not a homography: with 8
    # degrees of freedom chance matches between different photos fit one too easily.
    transform, mask = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=REPROJ_PX,
                                           maxIters=2000, confidence=0.995)
    if transform is None or mask is None:
        return 0, len(best)
    s = np.linalg.svd(transform[:, :2], compute_uv=False)
    if (np.linalg.det(transform[:, :2]) <= 0 or s[1] < 1 / MAX_SCALE or s[0] > MAX_SCALE
            or s[0] > MAX_STRETCH * s[1]):
        return 0, len(best)
    a_idx = np.array([q for _, q in best.values()])
    b_idx = np.array(list(best))
    same_colour = np.abs(a.colours[a_idx] - b.colours[b_idx]).max(axis=1) <= COLOUR_TOL
    keep = mask.ravel().astype(bool) & same_colour
    if _spread(src[keep]) < MIN_SPREAD or _spread(dst[keep]) < MIN_SPREAD:
        return 0, len(best)
    return int(keep.sum()), len(best)


def _spread(points: np.ndarray) -> float:
    """Area of the points' bounding box as a share of the SIDE × SIDE frame."""
    if len(points) < 2:
        return 0.0
    w, h = points.max(axis=0) - points.min(axis=0)
    return float(w * h) / (SIDE * SIDE)
