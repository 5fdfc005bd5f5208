"""Bag-resampled bootstrap intervals of the bag-level figures."""

from __future__ import annotations

import numpy as np
import pytest

from xrayscreen.evaluation import bootstrap
from xrayscreen.evaluation.metrics import roc_auc

TARGETS = (0.0, 0.05, 0.10)


def _point(benign, threat, target):
    """The runner's point rule: the floor(target * n)-th highest benign peak, alarm above it."""
    desc = np.sort(benign)[::-1]
    thr = desc[min(int(np.floor(target * len(benign) + 1e-9)), len(desc) - 1)]
    return float((threat > thr).mean())


def _sample(seed=1, nb=60, nt=37, shift=2.0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, nb), rng.normal(shift, 1, nt)


def test_intervals_hold_the_point_figures_and_are_reproducible():
    b, t = _sample()
    ci = bootstrap.bag_intervals(b, t, t - 0.1, TARGETS)
    lo, hi = ci["auc_peak"]
    assert lo <= roc_auc(t, b) <= hi and hi - lo > 0.01
    for target in TARGETS:
        for key, pos in (("threat_any_alarm", t), ("threat_alarm_on_threat", t - 0.1)):
            lo, hi = ci["operating"][target][key]
            assert lo <= _point(b, pos, target) <= hi
    assert bootstrap.bag_intervals(b, t, t - 0.1, TARGETS) == ci  # seeded
    assert bootstrap.bag_intervals(b, t, t - 0.1, TARGETS, seed=1) != ci


def test_ties_count_half_in_the_resampled_auc():
    # Every resample of all-equal peaks is all ties: AUC exactly 0.5, as Mann-Whitney.
    b = np.zeros(10)
    t = np.zeros(5)
    ci = bootstrap.bag_intervals(b, t, t, TARGETS, resamples=50)
    assert ci["auc_peak"] == [0.5, 0.5]


def test_more_bags_give_narrower_intervals():
    small = bootstrap.bag_intervals(*_sample(nb=60, nt=37), np.zeros(0), (0.05,))
    large = bootstrap.bag_intervals(*_sample(nb=2000, nt=1200), np.zeros(0), (0.05,))
    w_small = np.diff(small["operating"][0.05]["threat_any_alarm"])[0]
    w_large = np.diff(large["operating"][0.05]["threat_any_alarm"])[0]
    assert w_large < 0.5 * w_small
    assert small["operating"][0.05]["threat_alarm_on_threat"] is None  # no localisable bag


def test_perfect_separation_is_certain_and_empty_inputs_give_none():
    b, t = np.linspace(0, 1, 20), np.linspace(2, 3, 10)
    ci = bootstrap.bag_intervals(b, t, t, TARGETS)
    assert ci["auc_peak"] == [1.0, 1.0]
    assert ci["operating"][0.0]["threat_any_alarm"] == [1.0, 1.0]
    none = bootstrap.bag_intervals(np.zeros(0), t, t, TARGETS)
    assert none["auc_peak"] is None and none["operating"] == {}
    no_threat = bootstrap.bag_intervals(b, np.zeros(0), np.zeros(0), TARGETS)
    assert no_threat["auc_peak"] is None
    assert no_threat["operating"][0.05] == {
        "threat_alarm_on_threat": None,
        "threat_any_alarm": None,
    }


@pytest.mark.parametrize("kw", [{"resamples": 0}, {"level": 1.0}, {"level": 0.0}])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError):
        bootstrap.bag_intervals(np.ones(3), np.ones(3), np.ones(3), TARGETS, **kw)


def test_paired_difference_of_a_score_with_itself_is_exactly_zero():
    b, t = _sample()
    d = bootstrap.paired_difference((b, t, t), (b, t, t), 0.05)
    assert d["auc_peak"] == {"diff": 0.0, "ci": [0.0, 0.0]}
    assert d["on_threat"] == {"diff": 0.0, "ci": [0.0, 0.0]}


def test_paired_difference_sees_a_gap_that_separate_intervals_cannot():
    # Score a = score b plus a small lift on every threat bag: the separate intervals
    # overlap, the paired one excludes 0.
    b, t = _sample(shift=1.5)
    lifted = t + 0.6
    d = bootstrap.paired_difference((b, lifted, lifted), (b, t, t), 0.05)
    assert d["on_threat"]["diff"] == pytest.approx(_point(b, lifted, 0.05) - _point(b, t, 0.05))
    assert d["on_threat"]["ci"][0] > 0 and d["auc_peak"]["ci"][0] > 0
    sep_a = bootstrap.bag_intervals(b, lifted, lifted, (0.05,))["operating"][0.05]
    sep_b = bootstrap.bag_intervals(b, t, t, (0.05,))["operating"][0.05]
    assert sep_a["threat_any_alarm"][0] < sep_b["threat_any_alarm"][1]  # they overlap


def test_paired_difference_refuses_unpaired_inputs_and_handles_empty_ones():
    b, t = _sample()
    with pytest.raises(ValueError, match="same bags"):
        bootstrap.paired_difference((b, t, t), (b[:-1], t, t), 0.05)
    e = np.zeros(0)
    assert bootstrap.paired_difference((e, t, t), (e, t, t), 0.05)["on_threat"] is None
    d = bootstrap.paired_difference((b, t, e), (b, t, e), 0.05)
    assert d["on_threat"] is None and d["auc_peak"] is not None


def test_paired_rate_difference_counts_only_the_items_that_differ():
    a = np.array([1, 1, 0, 0, 1, 0, 0, 0, 0, 0] * 3, bool)
    same = bootstrap.paired_rate_difference(a, a)
    assert same == {"diff": 0.0, "ci": [0.0, 0.0], "n": 30}
    b = a.copy()
    b[[0, 1, 4]] = False  # three items alarm only with a
    d = bootstrap.paired_rate_difference(a, b)
    assert d["diff"] == pytest.approx(0.1) and d["ci"][0] >= 0.0 and d["ci"][1] > 0.1
    one = a.copy()
    one[2] = True  # a single item differs: the interval holds 0
    lo, hi = bootstrap.paired_rate_difference(a, one)["ci"]
    assert lo <= 0 <= hi
    assert bootstrap.paired_rate_difference(np.zeros(0, bool), np.zeros(0, bool)) is None
    with pytest.raises(ValueError, match="same items"):
        bootstrap.paired_rate_difference(a, a[:-1])


def _bags(rng, n_bags, n_win, shift, bag_sd):
    """Windows of ``n_bags`` bags, each bag with its own offset (windows of a bag alike)."""
    return [rng.normal(shift + rng.normal(0, bag_sd), 1.0, n_win) for _ in range(n_bags)]


def test_clustered_auc_interval_holds_the_auc_and_widens_with_bag_effects():
    rng = np.random.default_rng(3)
    pos, neg = _bags(rng, 30, 20, 1.0, 0.0), _bags(rng, 40, 50, 0.0, 0.0)
    auc = roc_auc(np.concatenate(pos), np.concatenate(neg))
    lo, hi = bootstrap.clustered_auc_interval(pos, neg, same_bags=False)
    assert lo <= auc <= hi
    # The same number of windows, but bags that differ from each other: a wider interval
    # (resampling windows would not see it).
    pos_b, neg_b = _bags(rng, 30, 20, 1.0, 1.0), _bags(rng, 40, 50, 0.0, 1.0)
    lo_b, hi_b = bootstrap.clustered_auc_interval(pos_b, neg_b, same_bags=False)
    assert hi_b - lo_b > 1.5 * (hi - lo)
    assert bootstrap.clustered_auc_interval(pos, neg, same_bags=False) == [lo, hi]  # seeded


def test_clustered_auc_interval_pool_b_and_edge_cases():
    rng = np.random.default_rng(4)
    pos, neg = _bags(rng, 12, 10, 2.0, 0.5), _bags(rng, 12, 30, 0.0, 0.5)
    lo, hi = bootstrap.clustered_auc_interval(pos, neg, same_bags=True)
    assert lo <= roc_auc(np.concatenate(pos), np.concatenate(neg)) <= hi
    perfect = bootstrap.clustered_auc_interval([np.ones(3)] * 4, [np.zeros(5)] * 4, same_bags=True)
    assert perfect == [1.0, 1.0]
    ties = bootstrap.clustered_auc_interval([np.ones(3)] * 4, [np.ones(5)] * 4, same_bags=False)
    assert ties == [0.5, 0.5]
    assert bootstrap.clustered_auc_interval([np.zeros(0)], [np.zeros(5)], same_bags=False) is None
    with pytest.raises(ValueError, match="one negative array per positive"):
        bootstrap.clustered_auc_interval(pos, neg[:-1], same_bags=True)
