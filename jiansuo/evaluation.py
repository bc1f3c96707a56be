"""Retrieval quality: mAP@K, precision@K, recall against exact search, and query latency.

Definitions follow the deep-hashing literature (Lin et al. 2015, and the code most papers share):

- a retrieved image is *relevant* when it has the query's label;
- AP@K of one query = mean over the relevant positions i ≤ K of precision@i, i.e. it is normalised
  by the number of relevant images *retrieved in the top K* (0 when none is); mAP@K is the mean
  over queries;
- precision@K = share of relevant images among the top K;
- recall@K against a reference (exact search) = share of the reference's top K that the evaluated
  search also returns in its top K.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Hashable, Sequence

import numpy as np


def relevance(ranked_labels: Sequence[Sequence[Hashable]], query_labels: Sequence[Hashable]) -> list[np.ndarray]:
    """Per query, a bool array: is the i-th result's label the query's label."""
    return [np.array([lab == q for lab in ranked], dtype=bool) for ranked, q in zip(ranked_labels, query_labels)]


def average_precision(rel: np.ndarray, k: int | None = None) -> float:
    """AP@k of one ranked list given as bools (relevant or not), normalised by relevant retrieved."""
    rel = np.asarray(rel, dtype=bool)[:k]
    hits = np.flatnonzero(rel)
    if len(hits) == 0:
        return 0.0
    precision_at_hits = np.arange(1, len(hits) + 1) / (hits + 1)
    return float(precision_at_hits.mean())


def mean_average_precision(rels: Sequence[np.ndarray], k: int | None = None) -> float:
    """mAP@k over queries (see :func:`average_precision`)."""
    return float(np.mean([average_precision(r, k) for r in rels])) if len(rels) else 0.0


def precision_at(rels: Sequence[np.ndarray], k: int) -> float:
    """Mean precision@k; a list shorter than k counts its missing places as not relevant."""
    return float(np.mean([np.count_nonzero(np.asarray(r, dtype=bool)[:k]) / k for r in rels])) if len(rels) else 0.0


def recall_against(results: Sequence[Sequence[Hashable]], reference: Sequence[Sequence[Hashable]], k: int) -> float:
    """Mean share of each reference top-k found in the matching result's top-k."""
    shares = []
    for got, want in zip(results, reference):
        want = list(want)[:k]
        if want:
            shares.append(len(set(list(got)[:k]) & set(want)) / len(want))
    return float(np.mean(shares)) if shares else 0.0


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Mean, median and 95th percentile of per-query times, in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if ms.size == 0:
        return {"mean_ms": 0.0, "p50_ms": 0.0, "p95_ms": 0.0}
    return {"mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95))}


@dataclass
class ModeReport:
    """Quality and speed of one search mode on one labelled query set."""

    mode: str
    map_at_k: float
    precision_at_k: float
    recall_vs_exact: float | None
    candidates: float
    latency: dict[str, float] = field(default_factory=dict)
    options: dict = field(default_factory=dict)

    def as_dict(self, map_k: int, k: int) -> dict:
        return {"mode": self.mode, "options": self.options, f"map@{map_k}": self.map_at_k,
                f"precision@{k}": self.precision_at_k, f"recall@{k}_vs_exact": self.recall_vs_exact,
                "mean_candidates": self.candidates, **self.latency}


def evaluate_search(
    search: Callable[[np.ndarray, int], list],
    queries: np.ndarray,
    query_labels: Sequence[Hashable],
    label_of: Callable[[str], Hashable],
    *,
    map_k: int = 1000,
    k: int = 10,
    reference: Sequence[Sequence[str]] | None = None,
    mode: str = "",
    options: dict | None = None,
) -> tuple[ModeReport, list[list[str]]]:
    """Run ``search(query_matrix, top_k) -> [Result]`` query by query and score it.

    Returns the report and every query's top-``k`` ids (to serve as the reference for other modes).
    Latency and the number of candidates examined come from single-query calls with ``top_k = k``,
    as a user searches; mAP uses one ranked list of ``map_k`` results per query.
    """
    queries = np.atleast_2d(queries)
    ranked = search(queries, max(map_k, k))
    ids = [[h.id for h in r.hits] for r in ranked]
    rels = relevance([[label_of(i) for i in row] for row in ids], query_labels)
    times, examined = [], []
    for q in queries:
        t0 = time.perf_counter()
        res = search(q[None], k)
        times.append(time.perf_counter() - t0)
        examined.append(res[0].candidates)
    top = [row[:k] for row in ids]
    report = ModeReport(
        mode=mode, map_at_k=mean_average_precision(rels, map_k), precision_at_k=precision_at(rels, k),
        recall_vs_exact=recall_against(top, reference, k) if reference is not None else None,
        candidates=float(np.mean(examined)) if examined else 0.0,
        latency=latency_summary(times), options=dict(options or {}),
    )
    return report, top


def evaluate_store(
    store,
    queries: np.ndarray,
    query_labels: Sequence[Hashable],
    label_of: Callable[[str], Hashable],
    modes: Sequence[tuple[str, str, dict]],
    *,
    map_k: int = 1000,
    k: int = 10,
) -> list[ModeReport]:
    """Score each ``(name, mode, options)`` of ``modes`` on ``store`` (a VectorStore) with labelled query vectors.

    The first mode is the reference that the others' recall@k is measured against (put ``exact``
    first). ``label_of(id)`` gives a catalogue image's label (None: relevant to no query).
    """
    reports: list[ModeReport] = []
    reference = None
    for name, mode, options in modes:
        def run(q: np.ndarray, top: int, mode=mode, options=options) -> list:
            return store.search(q, top, mode=mode, **options)

        report, top = evaluate_search(run, queries, query_labels, label_of, map_k=map_k, k=k,
                                      reference=reference, mode=name, options=options)
        reports.append(report)
        if reference is None:
            reference = top
    return reports


def format_reports(reports: Sequence[ModeReport], map_k: int, k: int) -> str:
    """A plain-text table of :func:`evaluate_store` results."""
    head = f"{'mode':<24} {'mAP@' + str(map_k):>9} {'P@' + str(k):>7} {'recall@' + str(k):>10} " \
           f"{'candidates':>11} {'ms/query':>9} {'p95 ms':>8}"
    lines = [head, "-" * len(head)]
    for r in reports:
        recall = "ref" if r.recall_vs_exact is None else f"{r.recall_vs_exact:.3f}"
        lines.append(f"{r.mode:<24} {r.map_at_k:>9.4f} {r.precision_at_k:>7.4f} {recall:>10} "
                     f"{r.candidates:>11.0f} {r.latency.get('mean_ms', 0):>9.2f} {r.latency.get('p95_ms', 0):>8.2f}")
    return "\n".join(lines)
