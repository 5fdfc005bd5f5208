"""The evaluation pass on small generated data with known answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from xrayscreen.evaluation.annotations import AnnotationSource
from xrayscreen.evaluation.dataset import prepare_dataset
from xrayscreen.evaluation.runner import evaluate
from xrayscreen.evaluation.scorers import FloorScorer, FunctionScorer

H, W = 240, 320  # longer side 320 -> resized to 800 (factor 2.5)


def _bag(rng, dark: float) -> np.ndarray:
    """A grey bag on white belt (most windows are belt: keeps the tests fast)."""
    img = np.full((H, W, 3), 250, np.uint8)
    img[60:180, 80:260] = rng.integers(90, 160, (120, 180, 3), dtype=np.uint8)
    return img


def make_folder(tmp_path, n_benign=3, n_threat=3, seed=0):
    rng = np.random.default_rng(seed)
    normal, threat, labels = tmp_path / "normal", tmp_path / "threat", tmp_path / "labels"
    for d in (normal, threat, labels):
        d.mkdir()
    (labels / "classes.txt").write_text("gun\nknife\n")
    for i in range(n_benign):
        cv2.imwrite(str(normal / f"N{i}.png"), _bag(rng, 0)[:, :, ::-1])
    for i in range(n_threat):
        img = _bag(rng, 0)
        img[90:150, 120:200] = 10  # the threat: a black rectangle
        cv2.imwrite(str(threat / f"P{i}.png"), img[:, :, ::-1])
        cls = i % 2
        cx, cy, bw, bh = 160 / W, 120 / H, 80 / W, 60 / H
        (labels / f"P{i}.txt").write_text(f"{cls} {cx} {cy} {bw} {bh}\n")
    return normal, threat, labels


@pytest.fixture
def dataset(tmp_path):
    normal, threat, labels = make_folder(tmp_path)
    return prepare_dataset(
        sorted(normal.iterdir()), sorted(threat.iterdir()), AnnotationSource(labels), progress=False
    )


def _truth_scorer(name, sign=1.0):
    def fn(scan):
        # +1 on anomalous windows, 0 elsewhere: separates perfectly.
        return sign * (scan.labels.label == 1).astype(float)

    return FunctionScorer(name, fn)


def test_perfect_random_inverted(dataset):
    rng = np.random.default_rng(0)
    scorers = [
        _truth_scorer("perfect"),
        _truth_scorer("inverted", -1.0),
        FunctionScorer("random", lambda s: rng.random(len(s.grid))),
    ]
    ev = evaluate(dataset, scorers, progress=False)
    k = ev.summary["kinds"]
    for pool in ("a", "b"):
        assert k["perfect"]["window"][pool]["all"]["auc"] == 1.0
        assert k["perfect"]["window"][pool]["all"]["detection_at_far"] == 1.0
        assert k["inverted"]["window"][pool]["all"]["auc"] == 0.0
        assert k["random"]["window"][pool]["all"]["auc"] == pytest.approx(0.5, abs=0.05)
    assert set(k["perfect"]["window"]["a"]) == {"all", "gun", "knife"}
    # The threat-on-threat alarm: perfect scorer's peak lies on the threat in every bag.
    ops = k["perfect"]["bag"]["operating"]
    assert ops[0]["benign_alarmed"] == 0.0 and ops[0]["threat_alarm_on_threat"] == 1.0
    assert k["perfect"]["bag"]["auc_peak"] == 1.0
    # Bag-resampled intervals sit beside every bag figure and hold the point figure.
    assert k["perfect"]["bag"]["auc_peak_ci"] == [1.0, 1.0]
    assert ops[0]["ci"]["threat_alarm_on_threat"] == [1.0, 1.0]
    assert k["perfect"]["bag"]["ci"]["unit"] == "bag"
    # Window AUCs carry bag-resampled intervals too (perfect: exactly 1).
    assert k["perfect"]["window"]["a"]["all"]["auc_ci"] == [1.0, 1.0]
    lo, hi = k["random"]["window"]["b"]["all"]["auc_ci"]
    assert lo <= k["random"]["window"]["b"]["all"]["auc"] <= hi
    for op in k["random"]["bag"]["operating"]:
        lo, hi = op["ci"]["threat_any_alarm"]
        assert lo <= op["threat_any_alarm"] <= hi


def test_pools_are_kept_apart(dataset):
    # Score 1 on benign bags, 0 on every window of threat bags except anomalous ones (2):
    # pool (a) negatives all score 1 (< 2), pool (b) negatives 0: both perfect. A scorer
    # that confused the pools would mix them.
    def fn(scan):
        if scan.kind == "benign":
            return np.ones(len(scan.grid))
        return np.where(scan.labels.label == 1, 2.0, 0.0)

    def fn_b(scan):  # positives 1, benign 2, threat-free 0 -> AUC (a) 0, (b) 1
        if scan.kind == "benign":
            return np.full(len(scan.grid), 2.0)
        return np.where(scan.labels.label == 1, 1.0, 0.0)

    ev = evaluate(dataset, [FunctionScorer("x", fn), FunctionScorer("y", fn_b)], progress=False)
    y = ev.summary["kinds"]["y"]["window"]
    assert y["a"]["all"]["auc"] == 0.0 and y["b"]["all"]["auc"] == 1.0
    counts = ev.summary["counts"]["windows"]["negatives"]
    n_benign = sum(s.labels.negatives.sum() for s in dataset.scans if s.kind == "benign")
    n_threat_free = sum(s.labels.negatives.sum() for s in dataset.scans if s.kind == "threat")
    assert counts == {"a": n_benign, "b": n_threat_free}


def test_learned_scores_are_compared_with_the_floors_on_the_same_bags(dataset):
    scorers = [FloorScorer(), _truth_scorer("perfect")]
    k = evaluate(dataset, scorers, progress=False).summary["kinds"]
    vs = k["perfect"]["bag"]["vs_floors"]
    assert set(vs) == {"max_density", "mean_darkness", "edge_density", "blue_fraction"}
    for d in vs.values():
        lo, hi = d["on_threat"]["ci"]
        assert lo <= d["on_threat"]["diff"] <= hi and d["target_benign_alarm"] == 0.05
    assert "vs_floors" not in k["max_density"]["bag"]  # floors are not compared with floors


def test_floors_on_generated_bags(dataset):
    ev = evaluate(dataset, [FloorScorer()], progress=False)
    k = ev.summary["kinds"]
    # The threat is the darkest thing in its bag: max density separates it (pool b).
    assert k["max_density"]["window"]["b"]["all"]["auc"] > 0.9
    assert k["max_density"]["bag"]["auc_peak"] == 1.0
    # Belt windows are on neither side: every counted window touches the bag.
    assert all(s.labels.belt.any() for s in dataset.scans)


def test_scans_are_resized_to_the_protocol_scale(dataset):
    s = dataset.scans[0]
    assert max(s.shape) == 800 and s.shape == (600, 800)
    box = dataset.of_kind("threat")[0].annotation.boxes[0]
    assert (box.x0, box.y0, box.x1, box.y1) == pytest.approx((300, 225, 500, 375))


def test_corrupt_scan_is_skipped_and_unannotated_threat_counts_at_bag_level(tmp_path):
    normal, threat, labels = make_folder(tmp_path, n_benign=2, n_threat=2)
    (normal / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    img = cv2.imread(str(threat / "P0.png"))
    cv2.imwrite(str(threat / "P9.png"), img)  # no label file
    ds = prepare_dataset(
        sorted(normal.iterdir()), sorted(threat.iterdir()), AnnotationSource(labels), progress=False
    )
    assert [k.path.name for k in ds.skipped] == ["broken.png"]
    ev = evaluate(ds, [FloorScorer()], progress=False)
    bags = ev.summary["counts"]["bags"]
    assert bags == {"benign": 2, "threat": 3, "threat_annotated": 2, "threat_bag_level_only": 1}
    assert ev.summary["kinds"]["max_density"]["bag"]["n_threat"] == 3
    assert ev.summary["kinds"]["max_density"]["bag"]["n_threat_localisable"] == 2


def test_two_models_side_by_side_need_distinct_kind_names(dataset):
    from xrayscreen.evaluation.scorers import Prefixed

    a, b = _truth_scorer("score"), _truth_scorer("score", -1.0)
    with pytest.raises(ValueError, match="produced by two scorers"):
        evaluate(dataset, [a, b], progress=False)
    ev = evaluate(dataset, [Prefixed(a, "m1:"), Prefixed(b, "m2:")], progress=False)
    k = ev.summary["kinds"]
    assert k["m1:score"]["window"]["a"]["all"]["auc"] == 1.0
    assert k["m2:score"]["window"]["a"]["all"]["auc"] == 0.0


def test_heat_windows_add_a_heat_read_row_per_kind(dataset):
    ev = evaluate(dataset, [_truth_scorer("perfect")], progress=False, heat_windows=True)
    k = ev.summary["kinds"]
    assert set(k) == {"perfect", "perfect@heat"}
    # Reading the overlap-averaged map blurs the 0/1 score into fractions (windows next
    # to the threat read part of it) yet still ranks the threat first; bag figures are
    # the parent's (same heat map).
    heat_b = k["perfect@heat"]["window"]["b"]["all"]
    assert heat_b["auc"] > 0.9
    assert 0.0 < heat_b["threshold_at_far"] < 1.0
    assert k["perfect"]["window"]["b"]["all"]["threshold_at_far"] in (0.0, 1.0)
    assert k["perfect@heat"]["bag"]["auc_peak"] == k["perfect"]["bag"]["auc_peak"]
    assert k["perfect@heat"]["pixel"] is None
    assert "vs_floors" not in k["perfect@heat"]["bag"]  # same bag figures: compared once
    assert k["perfect@heat"]["window"]["a"]["all"]["auc_ci"] is None  # kept short
    plain = evaluate(dataset, [_truth_scorer("perfect")], progress=False)
    assert set(plain.summary["kinds"]) == {"perfect"}


def test_the_models_default_threshold_gets_its_own_operating_point(dataset):
    sc = _truth_scorer("perfect")
    sc.default_threshold = 0.5  # what EngineScorer takes from the bundle's calibration
    ev = evaluate(dataset, [sc, _truth_scorer("other")], progress=False)
    d = ev.summary["kinds"]["perfect"]["bag"]["at_default_threshold"]
    assert d == {
        "threshold": 0.5,
        "benign_alarmed": 0.0,
        "threat_alarm_on_threat": 1.0,
        "threat_any_alarm": 1.0,
    }
    assert "at_default_threshold" not in ev.summary["kinds"]["other"]["bag"]


def test_bag_alarms_are_broken_down_by_what_the_bag_holds(dataset, tmp_path):
    from xrayscreen.evaluation.report import build_report, render_markdown
    from xrayscreen.evaluation.runner import bag_contents

    assert bag_contents({"knife", "gun"}) == "gun + knife" and bag_contents(set()) == "unlabelled"

    def fn(scan):  # fires on the threat of the gun bags only (P0, P2; P1 holds a knife)
        hit = scan.kind == "threat" and scan.name != "P1"
        return np.where((scan.labels.label == 1) & hit, 1.0, 0.0)

    ev = evaluate(dataset, [FunctionScorer("guns_only", fn)], progress=False)
    ops = ev.summary["kinds"]["guns_only"]["bag"]["operating"]
    assert ops[0]["target_benign_alarm"] == 0.0
    assert ops[0]["on_threat_by_contents"] == {
        "gun": {"bags": 2, "alarmed_on_threat": 2},
        "knife": {"bags": 1, "alarmed_on_threat": 0},
    }
    assert ops[0]["threat_alarm_on_threat"] == pytest.approx(2 / 3, abs=1e-4)
    md = render_markdown(build_report(ev, dataset, model=None, extra_settings={"far": 0.01}))
    assert "by what they hold" in md and "| 0.0 % | 2 / 2 | 0 / 1 |" in md
