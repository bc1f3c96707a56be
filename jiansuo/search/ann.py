"""Approximate nearest-neighbour search over an index folder (``--mode ann``).

A query is projected into the graph's space, the HNSW graph (hnswlib) proposes ``candidates``
images, and those are re-ranked with their exact stored vectors, so every score returned is the
same cosine similarity exact search would report; only the candidate set is approximate.
``ef`` (the graph search's beam width) trades speed for recall.

Filtering (``allowed``): a mask that keeps many images is applied inside the graph search (with more
candidates re-ranked); one so selective that the graph would have to wander far (up to
:data:`EXACT_MASK_MAX` images allowed) is answered exactly over the allowed images.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..index import ann_store
from .auto import ann_threshold, resolve
from .base import Hit, Result, register_mode
from .exact import top_k

#: Graph search beam width (the accuracy/speed knob) and how many candidates are re-ranked exactly.
DEFAULT_EF = 128
DEFAULT_CANDIDATES = 50
#: Masks keeping at most this many images (or this share of the index) are searched exactly.
#: Measured at 100,000 images (bench/site_load.py's catalogue): an exact search costs ~2.3 µs per allowed
#: image (reading its vector from the memory map), a filtered graph search 6.5 ms for 10% of them
#: allowed and 12.7 ms for 3%; they cross near 5,000 allowed images.
EXACT_MASK_MAX = 5_000
#: A filtered graph search re-ranks this many times the candidates (its recall at a third of the
#: catalogue allowed: 0.935 with 50, 0.990 with 100).
FILTERED_CANDIDATES = 2


class AnnSearcher:
    """HNSW candidates re-ranked by exact cosine; the graph is kept in step with the index on each search."""

    def __init__(self, index, *, ef: int | None = None, candidates: int | None = None):
        if ef is not None and ef < 1:
            raise ValueError("ef must be at least 1")
        if candidates is not None and candidates < 1:
            raise ValueError("candidates must be at least 1")
        self.index = index
        self.ef = ef or DEFAULT_EF
        self.candidates = candidates or DEFAULT_CANDIDATES

    def search(self, queries: np.ndarray, k: int, *, min_score: float | None = None,
               allowed: np.ndarray | None = None) -> list[Result]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        graph = ann_store.ensure(self.index)
        with graph.lock:
            n = graph.alive
            subset = None
            if allowed is not None:
                allowed = np.asarray(allowed, dtype=bool)
                if allowed.shape != (n,):
                    raise ValueError(f"allowed mask has {allowed.shape[0]} entries; the index has {n} images")
                subset = graph.order_labels()[allowed]
            fetch = max(self.candidates, k)
            pool = n if subset is None else len(subset)
            if pool == 0 or k <= 0:
                return [Result([], 0) for _ in queries]
            if subset is not None:
                fetch = max(fetch, FILTERED_CANDIDATES * self.candidates)
            if pool <= fetch or (subset is not None and pool <= EXACT_MASK_MAX):
                labels = subset if subset is not None else graph.order_labels()
                return self._exact(graph, queries, labels, k, min_score)
            keep = _label_filter(graph, allowed) if subset is not None else None
            graph.hnsw.set_ef(max(self.ef, fetch))
            try:
                cand, _ = graph.hnsw.knn_query(graph.project(queries), k=fetch, filter=keep)
            except RuntimeError:  # fewer than `fetch` reachable (tiny or heavily filtered graph)
                labels = subset if subset is not None else graph.order_labels()
                return self._exact(graph, queries, labels, k, min_score)
            return self._rerank(graph, queries, cand.astype(np.int64), k, min_score)

    def _rerank(self, graph, queries, cand: np.ndarray, k: int, min_score) -> list[Result]:
        vecs = graph.read_vectors(self.index, cand).reshape(*cand.shape, -1)
        sims = np.einsum("qcd,qd->qc", vecs, queries)
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        results = []
        for labels, row, pick in zip(cand, sims, order):
            hits = [Hit(graph.ids[labels[i]], float(row[i])) for i in pick
                    if min_score is None or row[i] >= min_score]
            results.append(Result(hits, candidates=len(labels)))
        return results

    def _exact(self, graph, queries, labels: np.ndarray, k: int, min_score) -> list[Result]:
        vecs = graph.read_vectors(self.index, labels)
        sims = queries @ vecs.T
        return [Result([Hit(graph.ids[labels[i]], s) for i, s in hits], candidates=len(labels))
                for hits in top_k(sims, k, min_score)]


def _label_filter(graph, allowed: np.ndarray):
    """A callable hnswlib asks per graph node: is its label allowed? Kept per graph for the last few masks
    (the site's filters reuse theirs), since building it walks every label."""
    key = (graph.generation, hashlib.blake2b(np.packbits(allowed).tobytes(), digest_size=16).digest())
    cache = graph.__dict__.setdefault("_filters", {})
    keep = cache.get(key)
    if keep is None:
        by_label = np.zeros(graph.capacity, dtype=bool)
        by_label[graph.order_labels()[allowed]] = True
        keep = by_label.tolist().__getitem__  # a C-level callable: hnswlib calls it per node
        if len(cache) >= 8:
            cache.pop(next(iter(cache)))
        cache[key] = keep
    return keep


@register_mode("ann")
def _ann_factory(index, *, ef: int | None = None, candidates: int | None = None, **_options) -> AnnSearcher:
    return AnnSearcher(index, ef=ef, candidates=candidates)


def info_lines(index) -> list[str]:
    """Lines ``jiansuo info`` prints about the ANN graph (memory per image, whether it is in step)."""
    meta = ann_store.info(index)
    if meta is None:
        threshold = ann_threshold(index.dtype)
        mode = resolve("auto", len(index), index.dtype)
        return [f"ann graph:  none yet (auto mode searches {mode}; from {threshold} images the graph "
                f"is built on first search)"]
    dims = f"{meta['index_dim']}→{meta['graph_dim']}-d PCA" if meta["pca"] else f"{meta['graph_dim']}-d"
    per = meta["bytes_per_image_in_memory"]
    return [
        f"ann graph:  {meta['engine']} HNSW M={meta['M']}, {dims}, {meta['images']} images, "
        f"{'in step' if meta['in_step'] else 'behind the index (caught up on next search)'}",
        f"ann memory: ~{per} bytes/image ({meta['images'] * per / 2**20:.1f} MiB; "
        f"1M images ≈ {per * 1e6 / 2**30:.2f} GiB); {meta['bytes_on_disk'] / 2**20:.1f} MiB on disk",
    ]
