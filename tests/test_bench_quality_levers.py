"""The lever prototypes of bench/quality_levers.py that stay in the benchmark: the label-free post-processing.

(Object framing moved into the core: tests/test_framing.py.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import quality_levers as lv  # noqa: E402



def test_query_expansion_and_dba():
    rng = np.random.default_rng(0)
    centres = lv.l2n(rng.normal(size=(5, 64)))
    db = lv.l2n(np.repeat(centres, 20, axis=0) + 0.3 * rng.normal(size=(100, 64)))
    q = lv.l2n(centres + 0.3 * rng.normal(size=(5, 64)))
    aug = lv.database_side_augmentation(db, k=3)
    assert aug.shape == db.shape and np.allclose(np.linalg.norm(aug, axis=1), 1, atol=1e-5)
    # augmented vectors move towards their cluster
    assert np.mean(np.sum(aug * np.repeat(centres, 20, axis=0), 1)) > np.mean(np.sum(db * np.repeat(centres, 20, axis=0), 1))
    qe = lv.alpha_query_expansion(q, db, n=5)
    assert np.all(np.sum(qe * centres, 1) > np.sum(q * centres, 1))
    assert np.allclose(lv.alpha_query_expansion(q, db, n=0), q)


def test_two_intent_ranking_puts_the_nearest_item_first():
    same = np.array([[0.9, 0.5, 0.7, 0.1]])
    similar = np.array([[0.2, 0.9, 0.8, 0.3]])
    order = np.argsort(-lv.two_intent_scores(same, similar), axis=1)[0]
    assert list(order) == [0, 1, 2, 3]
    order = np.argsort(-lv.two_intent_scores(same, similar, threshold=0.6), axis=1)[0]
    assert list(order) == [0, 2, 1, 3]


def test_pca_whitening_shapes():
    rng = np.random.default_rng(1)
    x = lv.l2n(rng.normal(size=(300, 32)))
    w = lv.pca_whitening(x, dim=16)
    y = w(x)
    assert y.shape == (300, 16) and np.allclose(np.linalg.norm(y, axis=1), 1, atol=1e-5)
