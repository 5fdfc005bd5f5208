import sys
import types

import numpy as np
import pytest
import torch

from xrayscreen import retrain_eval as re_
from xrayscreen.imaging.scan import Scan, ScanKind
from xrayscreen.model.bundle import InputSpec, ModelBundle
from xrayscreen.model.calibration import Calibration
from xrayscreen.model.ganomaly import GANomalyConfig, build_generator
from xrayscreen.retrain_eval import Comparison, ModelEvaluation, evaluate_bundle, threat_peak

CFG = GANomalyConfig(isize=16, nc=3, nz=4, ngf=4, ndf=4)


def _scan(seed, dark_box=None):
    rng = np.random.default_rng(seed)
    img = np.full((48, 64, 3), 240, np.uint8)
    img[8:40, 8:56] = rng.integers(120, 200, (32, 48, 3), dtype=np.uint8)
    if dark_box:
        x0, y0, x1, y1 = dark_box
        img[y0:y1, x0:x1] = 5
    return Scan(img, ScanKind.PSEUDO_COLOUR)


@pytest.fixture
def bundle():
    torch.manual_seed(0)
    b = ModelBundle(config=CFG, generator=build_generator(CFG).eval(), input=InputSpec(window=16))
    b.input.scale = type(b.input.scale)(longer_side=None)
    b.calibration = Calibration.fit(np.random.default_rng(0).random(500))
    return b


def test_bag_far_and_peaks_at_any_threshold(bundle):
    scans = [_scan(i) for i in range(4)]
    ev = evaluate_bundle(bundle, scans, threshold=1.0, stride=8)
    assert ev.n_bags == 4 and len(ev.bag_peaks) == 4
    assert ev.bag_far == pytest.approx(np.mean(np.asarray(ev.bag_peaks) >= 1.0))
    lo = ev.at_threshold(min(ev.bag_peaks) - 1e-6)
    hi = ev.at_threshold(max(ev.bag_peaks) + 1e-6)
    assert lo.bag_far == 1.0 and hi.bag_far == 0.0
    assert ev.detection_rate is None and ev.n_threats == 0
    assert Comparison.from_dict(Comparison(ev, None).to_dict()).new == ev


def test_threat_peak_uses_only_windows_touching_the_box(bundle):
    scan = _scan(1)
    from xrayscreen.inference.engine import ScoringEngine

    res = ScoringEngine(bundle, "cpu").score_scan_sync(scan, stride=8, residual=False)
    inside = threat_peak(res, (20, 20, 24, 24))
    far_away = threat_peak(res, (1000, 1000, 1010, 1010))
    assert far_away == 0.0
    oy, ox = res.window_origins[:, 0], res.window_origins[:, 1]
    touch = (ox < 24) & (ox + 16 > 20) & (oy < 24) & (oy + 16 > 20) & ~res.background
    assert inside == pytest.approx(float(res.window_calibrated[touch].max()))


def test_tip_projection_is_used_when_available(bundle, monkeypatch):
    calls = []

    def project_threat(scan, rng=None, kind="gun"):
        calls.append(kind)
        box = (20, 16, 36, 28)
        x0, y0, x1, y1 = box
        rgb = scan.rgb.copy()
        rgb[y0:y1, x0:x1] = 10
        return types.SimpleNamespace(scan=Scan(rgb, ScanKind.PSEUDO_COLOUR), box=box, kind=kind)

    mod = types.ModuleType("xrayscreen.imaging.tip")
    mod.project_threat = project_threat
    monkeypatch.setitem(sys.modules, "xrayscreen.imaging.tip", mod)
    assert re_.tip_available()
    scans = [_scan(i) for i in range(3)]
    threats = re_.make_threat_bags(scans, seed=0)
    assert len(threats) == 3 and calls == ["gun", "knife", "gun"]
    again = re_.make_threat_bags(scans, seed=0)
    assert [t.scan.sha256 for t in again] == [t.scan.sha256 for t in threats]  # same threats
    ev = evaluate_bundle(bundle, scans, 1.0, threats, stride=8)
    assert ev.n_threats == 3 and ev.tip_available
    assert ev.detection_rate == pytest.approx(np.mean(np.asarray(ev.threat_peaks) >= 1.0))


def test_evaluation_json_roundtrip():
    ev = ModelEvaluation("m", 2.0, 3, 1 / 3, [0.5, 2.5, 1.0], "fp")
    assert ModelEvaluation(**ev.to_dict()) == ev


def _ev(peaks, tpeaks, fp="fp", thr=2.0, mid="m"):
    p, t = np.asarray(peaks, float), np.asarray(tpeaks, float)
    return ModelEvaluation(
        mid, thr, len(p), float((p >= thr).mean()), list(p), fp,
        len(t), float((t >= thr).mean()) if len(t) else None, list(t), True,
    )  # fmt: skip


def test_comparison_difference_is_paired_and_knows_when_it_cannot_compare():
    rng = np.random.default_rng(0)
    bags = rng.normal(0, 1, 40)
    threats = rng.normal(2, 1, 40)
    same = Comparison(_ev(bags, threats), _ev(bags, threats))
    assert same.difference("far") == {"diff": 0.0, "ci": [0.0, 0.0], "n": 40}
    # The new model: no bag alarms (every peak 3 lower), the same threats.
    better = Comparison(_ev(bags - 3.0, threats), _ev(bags, threats))
    d = better.difference("far")
    assert d["diff"] == pytest.approx(-(bags >= 2.0).mean())
    assert d["ci"][1] <= 0.0 and better.difference("det")["diff"] == 0.0
    # One bag of forty differs: the interval holds zero.
    one = bags.copy()
    one[np.argmax(bags < 2.0)] = 5.0
    lo, hi = Comparison(_ev(one, threats), _ev(bags, threats)).difference("far")["ci"]
    assert lo <= 0.0 <= hi
    assert Comparison(_ev(bags, threats), None).difference("far") is None
    assert (
        Comparison(_ev(bags, threats, fp="a"), _ev(bags, threats, fp="b")).difference("far") is None
    )
    assert Comparison(_ev(bags, threats), _ev(bags, threats[:-1])).difference("det") is None
    assert Comparison(_ev(bags, []), _ev(bags, [])).difference("det") is None
    with pytest.raises(ValueError, match="unknown comparison figure"):
        same.difference("auc")


def test_a_head_trained_on_projected_threats_is_recorded(bundle):
    from types import SimpleNamespace

    from xrayscreen.model.bundle import ScoreSpec

    ev = evaluate_bundle(bundle, [_scan(0)], threshold=1.0, stride=8)
    assert ev.tip_trained is False and re_.tip_trained(bundle) is False
    head = SimpleNamespace(tip_head=object(), score=ScoreSpec(params={"tip_weight": 0.5}))
    assert re_.tip_trained(head) is True
    head.score = ScoreSpec(params={})  # a head the score does not use
    assert re_.tip_trained(head) is False
