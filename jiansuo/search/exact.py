"""Exact cosine search: one matrix product over all (L2-normalised) vectors, then a partial sort."""

from __future__ import annotations

import numpy as np

from .base import Hit, Result, register_mode

# Rows per block when the matrix is float16: numpy has no fast float16 product, so blocks are
# widened to float32 a few MB at a time instead of copying the whole matrix.
_F16_BLOCK = 16384


def scores(matrix: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Cosine similarities (Q, N) between normalised ``queries`` (Q, D) and ``matrix`` rows (N, D)."""
    queries = np.asarray(queries, dtype=np.float32)
    if matrix.dtype == np.float32:
        return queries @ matrix.T
    out = np.empty((queries.shape[0], matrix.shape[0]), dtype=np.float32)
    for start in range(0, matrix.shape[0], _F16_BLOCK):
        block = matrix[start : start + _F16_BLOCK].astype(np.float32)
        out[:, start : start + len(block)] = queries @ block.T
    return out


def top_k(sims: np.ndarray, k: int, min_score: float | None = None) -> list[list[tuple[int, float]]]:
    """Best ``k`` (row, score) pairs per query row of ``sims``, highest first, ties by row number."""
    results = []
    n = sims.shape[1]
    k = min(k, n)
    for row in sims:
        if k <= 0:
            results.append([])
            continue
        part = np.argpartition(-row, k - 1)[:k] if k < n else np.arange(n)
        order = part[np.lexsort((part, -row[part]))]
        hits = [(int(i), float(row[i])) for i in order if min_score is None or row[i] >= min_score]
        results.append([h for h in hits if np.isfinite(h[1])])
    return results


class ExactSearcher:
    """Brute-force cosine search over an index's vectors (the reference every other mode is measured against)."""

    def __init__(self, index):
        self.index = index

    def search(self, queries: np.ndarray, k: int, *, min_score: float | None = None,
               allowed: np.ndarray | None = None) -> list[Result]:
        ids, matrix = self.index.vectors()
        sims = scores(matrix, queries)
        if allowed is not None:
            sims[:, ~np.asarray(allowed, dtype=bool)] = -np.inf
        return [Result([Hit(ids[i], s) for i, s in hits], candidates=len(ids))
                for hits in top_k(sims, k, min_score)]


@register_mode("exact")
def _factory(index, **_options) -> ExactSearcher:
    return ExactSearcher(index)
