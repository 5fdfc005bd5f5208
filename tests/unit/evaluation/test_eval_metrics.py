"""Ranking metrics against known answers."""

from __future__ import annotations

import numpy as np
import pytest

from xrayscreen.evaluation.metrics import detection_at_far, roc_auc, roc_curve


def test_perfect_random_inverted():
    rng = np.random.default_rng(0)
    pos, neg = rng.uniform(1, 2, 500), rng.uniform(0, 1, 800)
    assert roc_auc(pos, neg) == 1.0
    assert roc_auc(-pos, -neg) == 0.0
    a, b = rng.normal(size=5000), rng.normal(size=5000)
    assert roc_auc(a, b) == pytest.approx(0.5, abs=0.02)


def test_ties_count_half():
    assert roc_auc(np.ones(3), np.ones(7)) == 0.5
    # pairs: (1 vs 0) win, (1 vs 1) tie, (2 vs 0) win, (2 vs 1) win -> 3.5 / 4
    assert roc_auc(np.array([1.0, 2.0]), np.array([0.0, 1.0])) == pytest.approx(0.875)


def test_matches_pairwise_definition():
    rng = np.random.default_rng(1)
    pos = rng.integers(0, 5, 40).astype(float)
    neg = rng.integers(0, 5, 60).astype(float)
    want = ((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean()
    assert roc_auc(pos, neg) == pytest.approx(want)


def test_curve_area_equals_auc():
    rng = np.random.default_rng(2)
    pos = rng.normal(1, 1, 300).round(1)
    neg = rng.normal(0, 1, 400).round(1)
    c = roc_curve(pos, neg)
    assert c.fpr[0] == 0 and c.tpr[-1] == 1 and c.fpr[-1] == 1
    assert np.trapezoid(c.tpr, c.fpr) == pytest.approx(roc_auc(pos, neg))


def test_detection_at_far():
    neg = np.arange(1000, dtype=float)  # 1 % = the 10 highest (990..999)
    pos = np.array([989.0, 989.5, 1000.0, 5.0])
    d = detection_at_far(pos, neg, 0.01)
    assert d.threshold == 989.0 and d.far == 0.01
    assert d.detection == 0.5  # 989.5 and 1000 are strictly above
    # Ties at the threshold never push the false-alarm rate over the budget.
    d = detection_at_far(np.array([1.0]), np.ones(100), 0.01)
    assert d.far == 0.0 and d.detection == 0.0


def test_empty_side_is_nan_and_nan_scores_refused():
    assert np.isnan(roc_auc(np.zeros(0), np.ones(3)))
    with pytest.raises(ValueError):
        roc_auc(np.array([np.nan]), np.ones(3))
