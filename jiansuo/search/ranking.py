"""One ranking for both things a shopper means by a photo: this very product, and products like it.

Measured by bench/quality.py. Query expansion (αQE, Radenović, Tolias & Chum: the query plus its
nearest stored vectors weighted by similarity^α) ranks products of the same kind much better
(category mAP@R 0.38 → 0.41 over framed max-pooled features, 0.48 with database-side augmentation),
but used alone it pushes the photographed item itself down (re-listing top-1 0.99 → 0.93). So the
ranking has two stages:

1. the nearest stored photo, and any at least :data:`SAME_SCORE` similar (a re-listing, a
   re-upload), by the plain feature, in that order: the item itself first, as exact search has it;
2. every other result by the expanded query (``intent="similar"`` ranks everything this way), or,
   when the store has a supervised hash layer that measurably ranked held-out photos of the
   catalogue's categories better (:func:`learned_ranking_helps`), by that layer's learnt feature,
   re-ranking the plain search's top results (:data:`LEARNED_POOL`, or 4 per result asked for).

Re-listing and copy detection keep the plain ranking's figures; category mAP@R rises from 0.38 to
0.41 (αQE) or 0.75 (a layer trained on the categories). Database-side augmentation is not used: it
would add a second set of vectors and a second ANN graph to keep in step with every add and remove
for +0.07 mAP@R (bench/quality.py reports what an update would cost). Scores stay the plain cosine
similarity, whatever the order, so thresholds mean the same everywhere.

Every stage goes through the :class:`~jiansuo.search.store.VectorStore` interface, so the ranking is
the same on an index folder and on PostgreSQL.
"""

from __future__ import annotations

import numpy as np

from typing import Callable

from ..features.base import l2_normalize
from .base import Hit, Result
from .store import Allowed, VectorStore
from .verify import VERIFY_K

INTENTS = ("both", "same", "similar")
#: αQE: the query plus its QE_N nearest stored vectors, each weighted by its similarity to the power QE_ALPHA.
QE_N, QE_ALPHA = 10, 3.0
#: A result at least this similar to the query keeps its place at the top (the same product re-listed
#: or re-uploaded): the site's "very similar" threshold, calibrated by bench/similarity.py (91% of
#: same-product pairs reach it, 0.01% of other pairs).
SAME_SCORE = 0.88
#: Plain results a learnt feature re-ranks: at least this many, and 4 per result asked for (beyond
#: them it would need an index of its own).
LEARNED_POOL = 200


def rank(store: VectorStore, queries: np.ndarray, k: int = 10, *, intent: str = "both", mode: str = "auto",
         allowed: Allowed = None, min_score: float | None = None,
         verify: Callable[[int, list[Hit]], list[Hit]] | None = None, **options) -> list[Result]:
    """The ``k`` best stored images for each query vector, ranked for ``intent``.

    ``both`` (default): the item itself (and near-copies) first, then products like it; ``same``: the
    plain nearest-neighbour ranking; ``similar``: products like it, by the expanded query. ``mode``,
    ``allowed`` and ``options`` are the store's (:meth:`VectorStore.search`); scores are cosine
    similarities to the query, and ``min_score`` drops weaker results. ``verify(n, hits)`` may
    re-order query ``n``'s plain results before they are used (at least :data:`.verify.VERIFY_K` of
    them; :func:`.verify.copy_first` puts the query's own picture first).
    """
    if intent not in INTENTS:
        raise ValueError(f"unknown intent {intent!r}; choose one of: {', '.join(INTENTS)}")
    queries = l2_normalize(np.atleast_2d(queries))
    if k <= 0 or len(queries) == 0:
        return [Result([], 0, store.resolve_mode(mode)) for _ in queries]
    layer = store.hash_layer() if intent != "same" else None
    learned = layer if layer is not None and learned_ranking_helps(layer) else None
    depth = k if intent == "same" else max(k, QE_N, max(LEARNED_POOL, 4 * k) if learned is not None else 0)
    if verify is not None:
        depth = max(depth, VERIFY_K)
    plain = store.search(queries, depth, mode=mode, allowed=allowed, **options)
    if verify is not None:
        plain = [Result(verify(n, r.hits), r.candidates, r.mode) for n, r in enumerate(plain)]
    if intent == "same":
        return [_cut(r.hits, r, k, min_score) for r in plain]
    if learned is not None:
        similar = _learned_order(store, learned, queries, plain)
    else:
        similar = _expanded_search(store, queries, plain, k, mode, allowed, options)
    out = []
    for q_result, order in zip(plain, similar):
        top = q_result.hits[:1] + [h for h in q_result.hits[1:] if h.score >= SAME_SCORE] if intent == "both" else []
        taken = {h.id for h in top}
        out.append(_cut(top + [h for h in order if h.id not in taken], q_result, k, min_score))
    return out


def learned_ranking_helps(layer) -> bool:
    """True when ``layer`` is a supervised layer whose training found its learnt feature ranks held-out
    photos better than the expanded query does (see :func:`jiansuo.hashing.train.train_supervised`)."""
    return layer.kind == "supervised" and layer.info.get("similar_ranking") == "learned"


def expand(queries: np.ndarray, neighbours: np.ndarray, similarities: np.ndarray) -> np.ndarray:
    """αQE: each query (Q, D) plus its neighbours (Q, n, D) weighted by similarity^α (Q, n), re-normalised."""
    weights = np.clip(similarities, 0.0, None) ** QE_ALPHA
    return l2_normalize(queries + np.einsum("qn,qnd->qd", weights, neighbours))


def _expanded_search(store, queries, plain, k, mode, allowed, options) -> list[list[Hit]]:
    """Each query's results by its expanded query, scored by the plain cosine."""
    top_ids = [[h.id for h in r.hits[:QE_N]] for r in plain]
    vectors = _vectors(store, [i for ids in top_ids for i in ids])
    expanded = np.stack([
        expand(q[None], np.stack([vectors[i] for i in ids])[None], np.array([[h.score for h in r.hits[:QE_N]]]))[0]
        if ids else q for q, ids, r in zip(queries, top_ids, plain)])
    # The plain top (up to 1 + near-copies) may reappear in this list; ask for that many more.
    extra = [1 + sum(h.score >= SAME_SCORE for h in r.hits[1:]) for r in plain]
    second = store.search(expanded, k + max(extra), mode=mode, allowed=allowed, **options)
    found = _vectors(store, [h.id for r in second for h in r.hits])
    return [[Hit(h.id, float(found[h.id] @ q)) for h in r.hits] for q, r in zip(queries, second)]


def _learned_order(store, layer, queries, plain) -> list[list[Hit]]:
    """Each query's plain results re-ordered by the layer's learnt feature (scores stay the plain cosine)."""
    vectors = _vectors(store, list({h.id for r in plain for h in r.hits}))
    out = []
    for q, r in zip(queries, plain):
        if not r.hits:
            out.append([])
            continue
        feats = layer.rerank_features(np.stack([vectors[h.id] for h in r.hits]))
        sims = feats @ layer.rerank_features(q[None])[0]
        out.append([r.hits[i] for i in np.argsort(-sims, kind="stable")])
    return out


def _vectors(store: VectorStore, ids: list[str]) -> dict[str, np.ndarray]:
    unique = list(dict.fromkeys(ids))
    return dict(zip(unique, store.get(unique))) if unique else {}


def _cut(hits: list[Hit], plain: Result, k: int, min_score: float | None) -> Result:
    if min_score is not None:
        hits = [h for h in hits if h.score >= min_score]
    return Result(hits[:k], plain.candidates, plain.mode)
