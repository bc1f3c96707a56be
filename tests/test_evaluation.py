"""Retrieval metrics match hand-computed values on a tiny fixed example, through a real index."""

from __future__ import annotations

import numpy as np
import pytest

from jiansuo.evaluation import (
    average_precision,
    evaluate_store,
    format_reports,
    latency_summary,
    mean_average_precision,
    precision_at,
    recall_against,
    relevance,
)
from jiansuo.index import Index, ItemInfo
from jiansuo.search.folder import FolderStore

# Three ranked lists, relevant = True. By hand (AP = mean of precision at each relevant rank):
#   q1: R . R . .   -> (1/1 + 2/3) / 2 = 0.833333
#   q2: . . .       -> 0
#   q3: . R R       -> (1/2 + 2/3) / 2 = 0.583333
RELS = [np.array([1, 0, 1, 0, 0], bool), np.array([0, 0, 0], bool), np.array([0, 1, 1], bool)]


def test_map_precision_and_recall_by_hand():
    assert average_precision(RELS[0]) == pytest.approx(5 / 6)
    assert mean_average_precision(RELS) == pytest.approx((5 / 6 + 0 + 7 / 12) / 3)
    # Cut at 2: q1 keeps only its first hit (AP 1), q3 its first (AP 1/2).
    assert mean_average_precision(RELS, 2) == pytest.approx((1 + 0 + 0.5) / 3)
    assert precision_at(RELS, 2) == pytest.approx((0.5 + 0 + 0.5) / 3)
    # A list shorter than k counts the missing places as misses: q2 and q3 have 3 of 5.
    assert precision_at(RELS, 5) == pytest.approx((2 / 5 + 0 + 2 / 5) / 3)
    assert recall_against([["a", "b", "c"], ["x"]], [["a", "c", "d"], ["y"]], 3) == pytest.approx((2 / 3 + 0) / 2)
    assert relevance([["shoe", "bag"]], ["bag"])[0].tolist() == [False, True]
    lat = latency_summary([0.001, 0.002, 0.003])
    assert lat["mean_ms"] == pytest.approx(2.0) and lat["p50_ms"] == pytest.approx(2.0)


def test_evaluate_store_on_a_hand_built_catalogue(tmp_path):
    # Six unit vectors on a circle; labels chosen so the exact ranking is known by hand.
    angles = np.deg2rad([0, 10, 20, 90, 100, 180])
    vecs = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    ids = ["a/0", "b/10", "a/20", "b/90", "a/100", "b/180"]
    index = Index.create(tmp_path / "t.idx", {"name": "toy", "version": "1", "dim": 2, "preprocessing": ""})
    index.add(vecs, [ItemInfo(i) for i in ids])
    query = np.array([[np.cos(np.deg2rad(5)), np.sin(np.deg2rad(5))]], np.float32)  # label "a"
    # Exact order from 5°: 0°, 10°, 20°, 90°, 100°, 180° -> labels a b a b a b.
    #   AP@6 = (1/1 + 2/3 + 3/5) / 3 = 0.755556;  P@2 = 1/2.
    [report] = evaluate_store(FolderStore(index), query, ["a"], lambda i: i.split("/")[0], [("exact", "exact", {})],
                              map_k=6, k=2)
    assert report.map_at_k == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert report.precision_at_k == pytest.approx(0.5)
    assert report.recall_vs_exact is None and report.candidates == 6
    assert "exact" in format_reports([report], 6, 2)
