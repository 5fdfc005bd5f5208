"""Per-scan score normalisation: the formula, its fallbacks, and that the engine applies
it over exactly the scored (non-background) windows of a scan."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from inference_testkit import make_scan

from xrayscreen.errors import ConfigError
from xrayscreen.inference import scan_norm
from xrayscreen.inference.engine import ScoringEngine
from xrayscreen.model.bundle import ScoreSpec


def spec(**params) -> ScoreSpec:
    return ScoreSpec(kind="latent", params=params)


def test_robust_z_by_hand():
    raw = torch.arange(40, dtype=torch.float32)  # median 19.5, q1 9.75, q3 29.25
    got = scan_norm.normalise(spec(scan_norm="robust_z"), raw)
    expect = (raw - 19.5) / ((29.25 - 9.75) / 1.349)
    torch.testing.assert_close(got, expect)


def test_statistics_come_from_valid_windows_only():
    raw = torch.cat([torch.arange(20, dtype=torch.float32), torch.full((20,), 1e6)])
    valid = torch.arange(40) < 20
    got = scan_norm.normalise(spec(scan_norm="robust_z"), raw, valid)
    q1, med, q3 = np.percentile(np.arange(20), [25, 50, 75])
    torch.testing.assert_close(got[:20], (raw[:20] - med) / ((q3 - q1) / 1.349))


def test_offset_and_scale_of_a_scan_cancel():
    rng = torch.Generator().manual_seed(0)
    raw = torch.randn(200, generator=rng)
    s = spec(scan_norm="robust_z")
    a = scan_norm.normalise(s, raw)
    b = scan_norm.normalise(s, 3.0 * raw + 7.0)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_none_is_the_identity_and_unknown_is_refused():
    raw = torch.rand(30)
    assert scan_norm.normalise(spec(), raw) is raw
    with pytest.raises(ConfigError, match="scan normalisation"):
        scan_norm.normalise(spec(scan_norm="zscore"), raw)


def test_tiny_scans_use_the_reference_and_flat_scans_do_not_explode():
    s = spec(scan_norm="robust_z", ref_median=2.0, ref_scale=0.5)
    few = torch.tensor([2.0, 3.0, 4.0])  # < MIN_WINDOWS: reference statistics
    torch.testing.assert_close(scan_norm.normalise(s, few), torch.tensor([0.0, 2.0, 4.0]))
    flat = torch.full((50,), 5.0)
    flat[0] = 5.5  # IQR 0: the scale is floored at 5 % of the reference scale
    out = scan_norm.normalise(s, flat)
    assert torch.isfinite(out).all() and float(out[0]) == pytest.approx(0.5 / 0.025)
    # A research setting raises the floor (here to half the reference scale).
    raised = scan_norm.normalise(spec(**s.params, scale_floor=0.5), flat)
    assert float(raised[0]) == pytest.approx(0.5 / 0.25)


def test_reference_is_the_median_over_scans():
    scans = [np.arange(20.0) + k for k in range(5)] + [np.arange(3.0)]  # last: too small
    ref = scan_norm.reference(scans)
    assert ref["ref_median"] == pytest.approx(9.5 + 2)
    assert ref["ref_scale"] == pytest.approx(9.5 / 1.349)
    # No scan big enough: the pooled windows of all scans stand in.
    pooled = scan_norm.reference([np.arange(3.0), np.arange(3.0, 6.0)])
    assert pooled["ref_median"] == pytest.approx(2.5)
    assert pooled["ref_scale"] == pytest.approx((3.75 - 1.25) / 1.349)
    with pytest.raises(ConfigError):
        scan_norm.reference([np.arange(1.0)])


def test_engine_normalises_over_the_scored_windows(stub_bundle):
    scan = make_scan(256, 320, seed=2, belt_cols=64)
    plain = ScoringEngine(stub_bundle, "cpu", autocast="off").score_scan_sync(scan, stride=32)
    stub_bundle.score = ScoreSpec(kind="latent", params={"scan_norm": "robust_z"})
    normed = ScoringEngine(stub_bundle, "cpu", autocast="off").score_scan_sync(scan, stride=32)
    fg = ~plain.background
    assert 0 < int(plain.background.sum()) and fg.sum() >= scan_norm.MIN_WINDOWS
    q1, med, q3 = np.percentile(plain.window_scores[fg].astype(np.float64), [25, 50, 75])
    expect = (plain.window_scores[fg] - med) / ((q3 - q1) / 1.349)
    np.testing.assert_allclose(normed.window_scores[fg], expect, rtol=1e-4, atol=1e-4)
    # The map is built from the normalised scores: its ranking follows them.
    assert np.median(normed.window_scores[fg]) == pytest.approx(0.0, abs=1e-5)


def test_evaluation_scorer_normalises_the_bundles_own_kind_only(tiny_bundle, tmp_path):
    import cv2

    from xrayscreen.evaluation.dataset import ProtocolSettings, prepare_scan
    from xrayscreen.evaluation.scorers import ModelScorer
    from xrayscreen.imaging.representation import WorkingScale
    from xrayscreen.model.bundle import InputSpec

    tiny_bundle.input = InputSpec(scale=WorkingScale(longer_side=256))
    tiny_bundle.score = ScoreSpec(kind="latent", params={"scan_norm": "robust_z"})
    rgb = np.random.default_rng(1).integers(0, 200, (192, 256, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "bag.png"), rgb[:, :, ::-1])
    settings = ProtocolSettings(longer_side=256, window=64, stride=32)
    prepared = prepare_scan(tmp_path / "bag.png", "benign", None, ("gun",), settings)
    ev = ModelScorer(tiny_bundle, ["latent", "residual"], protocol_longer_side=256)
    ev._autocast = False
    got = ev.score(prepared)
    eng = ScoringEngine(tiny_bundle, "cpu", autocast="off").score_scan_sync(
        prepared.scan, stride=32
    )
    # (BN folded in the engine, not in the scorer: fp32 rounding, amplified by 1 / scale)
    np.testing.assert_allclose(got["latent"].window, eng.window_scores, atol=5e-3)
    assert np.median(got["latent"].window) == pytest.approx(0.0, abs=1e-4)
    assert got["residual"].window.min() > 0  # other kinds stay raw
