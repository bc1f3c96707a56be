"""Unsupervised codes: Iterative Quantization (Gong & Lazebnik, CVPR 2011) on PCA-reduced features.

PCA keeps the K directions of largest variance; ITQ then finds the rotation of that K-d space that
minimises the quantisation error ``||sign(VR) - VR||``, alternating between the codes and the
rotation (an orthogonal Procrustes problem solved by one K×K SVD per iteration).
"""

from __future__ import annotations

import numpy as np

from .layer import HashLayer


#: Features ITQ is fitted on at most: PCA and the rotation settle long before.
ITQ_SAMPLE = 100_000


def train_itq(features: np.ndarray, bits: int = 128, *, iterations: int = 50, seed: int = 0,
              max_samples: int = ITQ_SAMPLE, rerank: str = "input") -> HashLayer:
    """An ITQ :class:`HashLayer` of ``bits`` bits fitted on ``features`` (N, D); needs N > bits and D ≥ bits.

    At most ``max_samples`` rows (a seeded sample) are used: PCA and the rotation settle long before.
    Candidates are re-ranked by the stored feature (``rerank="input"``) or the rotated projection
    (``"latent"``).
    """
    x = np.asarray(features, dtype=np.float32)
    n, dim = x.shape
    if bits < 8 or bits % 8:
        raise ValueError(f"bits must be a positive multiple of 8, got {bits}")
    if bits > dim:
        raise ValueError(f"ITQ needs at most as many bits as feature dimensions ({dim}), got {bits}")
    if n <= bits:
        raise ValueError(f"ITQ needs more images than bits: {n} images for {bits} bits")
    rng = np.random.default_rng(seed)
    if n > max_samples:
        x = x[np.sort(rng.choice(n, max_samples, replace=False))]
    mean = x.mean(axis=0)
    xc = (x - mean).astype(np.float64)
    # Top-K eigenvectors of the covariance (D×D, cheap for D ≤ a few thousand).
    evals, evecs = np.linalg.eigh(xc.T @ xc / len(xc))
    pca = evecs[:, np.argsort(evals)[::-1][:bits]]
    v = xc @ pca
    rotation, _ = np.linalg.qr(rng.standard_normal((bits, bits)))
    for _ in range(iterations):
        b = np.where(v @ rotation >= 0, 1.0, -1.0)
        s, _, wt = np.linalg.svd(b.T @ v)
        rotation = wt.T @ s.T
    error = float(np.mean((np.where(v @ rotation >= 0, 1.0, -1.0) - v @ rotation) ** 2))
    return HashLayer(
        "itq", bits, {"mean": mean, "proj": (pca @ rotation).astype(np.float32)},
        {"rerank": rerank, "trained_on": int(len(x)), "iterations": iterations,
         "quantization_error": round(error, 6)},
    )
