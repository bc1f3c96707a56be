"""``--mode hash``: coarse-to-fine search with the index's trained hash layer (Lin et al. 2015).

Coarse: the query's K-bit code is compared with every catalogue code by popcount (``K/64`` machine
words per image: about 2 ms per million 128-bit codes here, as fast as FAISS's binary flat index and
faster than its hash-bucket indexes at this size, see ``bench/hashing.py``), and the Hamming ball
around the query grows one bit at a time until it holds enough candidates. Fine: the candidates, and
only they, are re-ranked by cosine similarity of the layer's re-rank feature (a trained feature for a
supervised layer, the stored feature for ITQ). With ``rerank=False`` the ranking is by Hamming
distance alone (ties in catalogue order), scored by the cosine of the ±1 codes, ``1 - 2d/K``.

``Result.candidates`` is the number of catalogue images whose feature was compared with the query's
in the fine step (for Hamming ranking alone: the images taken from the Hamming ball).
"""

from __future__ import annotations

import numpy as np

from ..features.base import l2_normalize
from .base import Hit, Result, register_mode
from .exact import scores, top_k

#: Default candidate pool: the largest of MIN_CANDIDATES, CANDIDATES_PER_RESULT per requested result,
#: and POOL_SHARE of the catalogue. With ITQ 128-bit codes this keeps 99.6% of the exact top 10 on
#: Fashion-MNIST (1,000 of 60,000 examined) and 98% at a million images (5,000 examined, 0.5%).
CANDIDATES_PER_RESULT = 2
MIN_CANDIDATES = 1000
POOL_SHARE = 0.005


def pool_size(k: int, n: int, candidates: int | None = None) -> int:
    """How many candidates the coarse step gathers for ``k`` results out of ``n`` images."""
    if candidates is None:
        candidates = max(MIN_CANDIDATES, CANDIDATES_PER_RESULT * k, int(np.ceil(POOL_SHARE * n)))
    return min(max(candidates, k), n)


def coarse_to_fine(
    dist: np.ndarray, k: int, pool: int, features: np.ndarray | None, query_feature: np.ndarray | None,
    *, bits: int, min_score: float | None = None, max_radius: int | None = None,
) -> tuple[list[tuple[int, float]], int]:
    """One query: ((row, score) best first, number of candidates) from its Hamming distances ``dist``.

    The Hamming ball grows until it holds ``pool`` rows (or reaches ``max_radius``); the nearest
    ``pool`` rows of it, in (distance, row) order, are the candidates. With ``features`` (the
    catalogue's re-rank features, rows aligned with ``dist``), candidates are re-ranked by cosine
    with ``query_feature``; with None, Hamming order is the answer. Rows whose distance exceeds
    ``bits`` (blocked by a filter) are never candidates.
    """
    from ..hashing.codes import within_radius

    rows, _ = within_radius(dist, pool, max_radius=min(bits if max_radius is None else max_radius, bits))
    rows = rows[:pool]
    if features is None:
        code_cosines = 1.0 - 2.0 * dist[rows[:k]].astype(np.float32) / bits
        hits = [(int(r), float(s)) for r, s in zip(rows[:k], code_cosines) if min_score is None or s >= min_score]
        return hits, len(rows)
    query = np.asarray(query_feature, dtype=np.float32)[None]
    if len(rows) == len(features):  # every image is a candidate: score in place rather than gather a copy
        return top_k(scores(features, query), k, min_score)[0], len(rows)
    # numpy's own loop, not BLAS: for a few thousand rows, waking BLAS's threads on a busy machine
    # costs more (p95 ~12 ms against ~1.4 ms here) than the product.
    sims = np.einsum("ij,j->i", features[rows].astype(np.float32, copy=False), query[0])[None]
    return [(int(rows[i]), s) for i, s in top_k(sims, k, min_score)[0]], len(rows)


class HashSearcher:
    """Coarse-to-fine search over an index that has a trained hash layer."""

    def __init__(self, index, *, rerank: bool = True, candidates: int | None = None,
                 max_radius: int | None = None):
        from ..hashing.store import index_codes

        self.index = index
        self.state = index_codes(index)
        self.rerank = rerank
        self.candidates = candidates
        self.max_radius = max_radius

    def search(self, queries: np.ndarray, k: int, *, min_score: float | None = None,
               allowed: np.ndarray | None = None) -> list[Result]:
        st = self.state
        layer = st.layer
        queries = np.atleast_2d(queries)
        q_codes, q_feats = layer.encode(queries)
        features = None
        if self.rerank:
            if q_feats is None:  # re-rank by the stored feature itself
                q_feats, features = l2_normalize(queries), self.index.vectors()[1]
            else:
                features = st.rerank
        blocked = None if allowed is None else ~np.asarray(allowed, dtype=bool)
        # Hamming ranking alone needs exactly the k nearest codes.
        pool = pool_size(k, len(st.ids), self.candidates if self.rerank else k)
        results = []
        for n, q_code in enumerate(q_codes):
            if not st.ids or k < 1:
                results.append(Result([], 0))
                continue
            dist = st.table.distances(q_code)
            if blocked is not None:
                dist = dist.astype(np.uint16)
                dist[blocked] = layer.bits + 1
            hits, examined = coarse_to_fine(dist, k, pool, features, None if q_feats is None else q_feats[n],
                                            bits=layer.bits, min_score=min_score, max_radius=self.max_radius)
            results.append(Result([Hit(st.ids[r], s) for r, s in hits], candidates=examined))
        return results


@register_mode("hash")
def _factory(index, *, rerank: bool = True, candidates: int | None = None, max_radius: int | None = None,
             **options) -> HashSearcher:
    if options:
        raise ValueError(f"--mode hash does not take {', '.join(sorted(options))} (it takes candidates, "
                         "max_radius, rerank)")
    if candidates is not None and candidates < 1:
        raise ValueError("candidates must be at least 1")
    return HashSearcher(index, rerank=rerank, candidates=candidates, max_radius=max_radius)
