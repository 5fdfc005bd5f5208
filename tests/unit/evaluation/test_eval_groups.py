"""Rescan groups: the file format, and intervals that resample physical bags."""

from __future__ import annotations

import numpy as np
import pytest

from xrayscreen.errors import ConfigError
from xrayscreen.evaluation import bootstrap
from xrayscreen.evaluation.groups import group_labels, load_groups, parse_groups, straddling


def test_groups_file_format():
    g = parse_groups(
        "# one suitcase, five scans\n"
        "N0000207 N0000208 N0000209\n"
        "\n"
        "P00001, P00002   # re-packed\n"
        "P00009\n"
    )
    assert g == {
        "N0000207": "N0000207",
        "N0000208": "N0000207",
        "N0000209": "N0000207",
        "P00001": "P00001",
        "P00002": "P00001",
        "P00009": "P00009",
    }


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("A B\nC A\n", "line 2: A is already listed on line 1"),
        ("A ../etc/passwd\n", "not a scan name"),
        ("# nothing\n\n", "lists no scan"),
    ],
)
def test_bad_groups_files_are_refused_with_the_line(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_groups(text)


def test_load_groups_reads_a_file_and_refuses_a_missing_one(tmp_path):
    f = tmp_path / "groups.txt"
    f.write_text("a b\n", encoding="utf-8")
    assert load_groups(f) == {"a": "a", "b": "a"}
    with pytest.raises(ConfigError, match="cannot read the groups file"):
        load_groups(tmp_path / "missing.txt")


def test_group_labels_and_straddling_groups():
    g = parse_groups("a b c\nd e\n")
    assert group_labels(["x", "a", "d", "c", "y", "e"], g).tolist() == [0, 1, 2, 1, 3, 2]
    assert group_labels(["a", "b"], None).tolist() == [0, 1]  # no groups: one scan, one bag
    st = straddling(g, {"val": ["a", "d", "e"], "test": ["b", "x"]})
    assert st == [{"group": "a", "splits": {"val": ["a"], "test": ["b"]}}]


def _rescans(values: np.ndarray, k: int, jitter: float = 0.0, seed: int = 0):
    """Every bag scanned ``k`` times (values repeated, optionally jittered), and labels."""
    rng = np.random.default_rng(seed)
    rep = np.repeat(values, k) + jitter * rng.normal(size=len(values) * k)
    return rep, np.repeat(np.arange(len(values)), k)


def test_groups_of_identical_rescans_give_the_bags_own_intervals():
    # Five identical scans of each of 60 benign and 37 threat bags, resampled as groups,
    # are exactly the 60 and 37 bags resampled (same draws); resampled as scans they
    # would pretend to five times the evidence and give narrower intervals.
    rng = np.random.default_rng(1)
    b, t = rng.normal(0, 1, 60), rng.normal(2, 1, 37)
    bags = bootstrap.bag_intervals(b, t, t, (0.05, 0.10))
    (b5, lb), (t5, lt) = _rescans(b, 5), _rescans(t, 5)
    grouped = bootstrap.bag_intervals(b5, t5, t5, (0.05, 0.10), groups=(lb, lt, lt))
    scans = bootstrap.bag_intervals(b5, t5, t5, (0.05, 0.10))
    assert grouped["auc_peak"] == pytest.approx(bags["auc_peak"], abs=1e-12)
    for target in (0.05, 0.10):
        got = grouped["operating"][target]["threat_any_alarm"]
        assert got == pytest.approx(bags["operating"][target]["threat_any_alarm"], abs=1e-12)
        narrow = scans["operating"][target]["threat_any_alarm"]
        assert narrow[1] - narrow[0] < 0.75 * (got[1] - got[0])
    w = lambda iv: iv[1] - iv[0]  # noqa: E731
    assert w(scans["auc_peak"]) < 0.75 * w(grouped["auc_peak"])


def test_singleton_groups_reproduce_the_bag_bootstrap():
    rng = np.random.default_rng(2)
    b, t = rng.normal(0, 1, 40), rng.normal(1.5, 1, 25)
    one = (np.arange(40), np.arange(25), np.arange(25))
    plain = bootstrap.bag_intervals(b, t, t - 0.1, (0.05,))
    grouped = bootstrap.bag_intervals(b, t, t - 0.1, (0.05,), groups=one)
    assert grouped["auc_peak"] == pytest.approx(plain["auc_peak"], abs=1e-12)
    assert grouped["operating"][0.05]["threat_any_alarm"] == pytest.approx(
        plain["operating"][0.05]["threat_any_alarm"], abs=1e-12
    )
    d_plain = bootstrap.paired_difference((b, t, t), (b, t - 0.3, t - 0.3), 0.05)
    d_grouped = bootstrap.paired_difference((b, t, t), (b, t - 0.3, t - 0.3), 0.05, groups=one)
    assert d_grouped["auc_peak"]["diff"] == pytest.approx(d_plain["auc_peak"]["diff"])
    assert d_grouped["auc_peak"]["ci"] == pytest.approx(d_plain["auc_peak"]["ci"], abs=1e-12)
    assert d_grouped["on_threat"]["diff"] == pytest.approx(d_plain["on_threat"]["diff"])
    with pytest.raises(ValueError, match="one group label per bag"):
        bootstrap.bag_intervals(b, t, t, (0.05,), groups=(np.arange(39), one[1], one[2]))


def test_grouped_paired_difference_of_a_score_with_itself_is_zero():
    rng = np.random.default_rng(3)
    (b, lb), (t, lt) = _rescans(rng.normal(0, 1, 20), 3, 0.1), _rescans(rng.normal(2, 1, 15), 2)
    d = bootstrap.paired_difference((b, t, t), (b, t, t), 0.05, groups=(lb, lt, lt))
    assert d["auc_peak"] == {"diff": 0.0, "ci": [0.0, 0.0]}
    assert d["on_threat"] == {"diff": 0.0, "ci": [0.0, 0.0]}


def test_window_auc_interval_resamples_groups_of_bags():
    rng = np.random.default_rng(4)
    pos = [rng.normal(1 + rng.normal(0, 0.7), 1, 20) for _ in range(15)]
    neg = [rng.normal(rng.normal(0, 0.7), 1, 40) for _ in range(25)]
    plain = bootstrap.clustered_auc_interval(pos, neg, same_bags=False)
    one = bootstrap.clustered_auc_interval(
        pos, neg, same_bags=False, pos_groups=np.arange(15), neg_groups=np.arange(25)
    )
    assert one == plain  # a bag its own group: the same draws
    # Each bag's windows duplicated as a second scan of it: grouped = the bags' own
    # interval; as independent bags it narrows.
    pos2, neg2 = pos + pos, neg + neg
    lp, ln = np.r_[np.arange(15), np.arange(15)], np.r_[np.arange(25), np.arange(25)]
    grouped = bootstrap.clustered_auc_interval(
        pos2, neg2, same_bags=False, pos_groups=lp, neg_groups=ln
    )
    scans = bootstrap.clustered_auc_interval(pos2, neg2, same_bags=False)
    assert grouped == pytest.approx(plain, abs=1e-12)
    assert scans[1] - scans[0] < 0.85 * (grouped[1] - grouped[0])
    with pytest.raises(ValueError, match="one group label per bag"):
        bootstrap.clustered_auc_interval(pos, neg, same_bags=False, neg_groups=np.arange(3))
