"""Scoring engine: heat maps against hand-computed overlap averages, borders, strips,
cancellation, OOM fallback, background skipping, calibration, real bundles."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from inference_testkit import StubGenerator, make_scan, run_to_end, window_mean_score

from xrayscreen.inference.engine import (
    ScoringEngine,
    air_value,
    score_scan,
    score_scan_sync,
)
from xrayscreen.inference.windows import BELT_FRACTION, BELT_GREY, WindowGrid
from xrayscreen.model.calibration import Calibration
from xrayscreen.model.score import score_windows as reference_score_windows

torch.set_num_threads(2)


def reference_maps(rgb: np.ndarray, stride: int, win: int = 64):
    """Hand computation with explicit loops: pad with air, score every window with the
    stub's function (background windows 0), average / max over covering windows."""
    h, w = rgb.shape[:2]
    grid = WindowGrid(h, w, win, stride)
    ph, pw = grid.padded_shape
    x = np.ones((ph, pw, 3))
    x[:h, :w] = rgb / 255.0 * 2.0 - 1.0
    grey = np.ones((ph, pw))
    grey[:h, :w] = rgb.astype(np.float32).mean(axis=2) / 255.0
    total = np.zeros((ph, pw))
    count = np.zeros((ph, pw))
    peak = np.full((ph, pw), -np.inf)
    scores = []
    for y, xo in grid.origins():
        g = grey[y : y + win, xo : xo + win]
        bg = (g > BELT_GREY).mean() >= BELT_FRACTION
        s = 0.0 if bg else window_mean_score(x[y : y + win, xo : xo + win])
        scores.append(s)
        total[y : y + win, xo : xo + win] += s
        count[y : y + win, xo : xo + win] += 1
        peak[y : y + win, xo : xo + win] = np.maximum(peak[y : y + win, xo : xo + win], s)
    return np.array(scores), (total / count)[:h, :w], peak[:h, :w]


@pytest.mark.parametrize("stride", [16, 24, 32])
def test_heat_map_equals_hand_computed_overlap_average(stub_bundle, stride):
    scan = make_scan(150, 203, belt_cols=70)
    eng = ScoringEngine(stub_bundle, "cpu", autocast="off", batch=16)
    res = eng.score_scan_sync(scan, stride=stride)
    ref_scores, ref_mean, _ = reference_maps(scan.rgb, stride)
    assert res.latent_map.shape == (150, 203)  # borders covered, no crop
    assert np.isfinite(res.latent_map).all()
    np.testing.assert_allclose(res.window_scores, ref_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.latent_map, ref_mean, rtol=1e-5, atol=1e-6)
    # Not trivially constant: the belt on the left is lower than the bag.
    assert res.latent_map[:, :20].mean() < res.latent_map[:, -20:].mean()


@pytest.mark.parametrize("stride", [16, 24])
def test_max_fold_equals_hand_computed_max(stub_bundle, stride):
    scan = make_scan(130, 170, seed=3)
    res = ScoringEngine(stub_bundle, "cpu", autocast="off").score_scan_sync(
        scan, stride=stride, reduce="max"
    )
    _, _, ref_max = reference_maps(scan.rgb, stride)
    np.testing.assert_allclose(res.latent_map, ref_max, rtol=1e-5, atol=1e-6)


def test_bottom_right_border_pixels_covered_by_padded_windows(stub_bundle):
    scan = make_scan(70, 90, seed=1)  # 6 and 26 px past the first window
    res = ScoringEngine(stub_bundle, "cpu", autocast="off").score_scan_sync(scan, stride=32)
    assert res.grid.rows == 2 and res.grid.cols == 2
    # The bottom-right pixel is covered by the last window only.
    assert res.latent_map[-1, -1] == pytest.approx(res.window_calibrated[-1], rel=1e-6)
    assert res.residual_map is not None and res.residual_map.shape == (70, 90)


def test_residual_map_is_overlap_average_of_abs_input(stub_bundle):
    # The stub reconstructs 0, so |x - x_hat| = |x| averaged over channels, and every
    # window sees the same pixel value: the folded map is just |x| channel-mean.
    scan = make_scan(100, 120, seed=2)
    res = ScoringEngine(stub_bundle, "cpu", autocast="off").score_scan_sync(scan, stride=16)
    x = scan.rgb / 255.0 * 2.0 - 1.0
    np.testing.assert_allclose(res.residual_map, np.abs(x).mean(axis=2), atol=1e-5)


def test_strips_give_the_same_maps_as_one_pass(tiny_bundle):
    scan = make_scan(300, 260, seed=4, belt_cols=40)
    eng = ScoringEngine(tiny_bundle, "cpu", autocast="off", batch=32)
    one = eng.score_scan_sync(scan, stride=16)
    n_strips_cols = one.grid.cols
    strips = eng.score_scan_sync(scan, stride=16, strip_windows=2 * n_strips_cols)
    assert one.grid.rows > 4  # really several strips
    np.testing.assert_allclose(strips.window_scores, one.window_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(strips.latent_map, one.latent_map, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(strips.residual_map, one.residual_map, rtol=1e-5, atol=1e-6)
    # One window row per strip (and a non-dividing stride) as well.
    a = eng.score_scan_sync(scan, stride=24)
    b = eng.score_scan_sync(scan, stride=24, strip_windows=1)
    np.testing.assert_allclose(b.latent_map, a.latent_map, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.residual_map, a.residual_map, rtol=1e-5, atol=1e-6)


def test_background_windows_never_reach_the_model(stub_bundle):
    scan = make_scan(128, 256, belt_cols=128)
    stub_bundle.calibration = Calibration.fit(np.linspace(0.0, 1.0, 500))
    res = ScoringEngine(stub_bundle, "cpu", autocast="off").score_scan_sync(scan, stride=16)
    n_bg = int(res.background.sum())
    assert 0 < n_bg < len(res.background)
    assert StubGenerator.seen == len(res.background) - n_bg
    assert res.n_scored == StubGenerator.seen
    # Background windows score the calibrated minimum.
    assert np.all(res.window_calibrated[res.background] == 0.0)
    assert res.window_calibrated[~res.background].min() >= 0.0


def test_calibrated_scores_follow_the_bundle_calibration(stub_bundle):
    cal = Calibration.fit(np.random.default_rng(0).uniform(0.0, 0.5, 2000))
    stub_bundle.calibration = cal
    res = ScoringEngine(stub_bundle, "cpu", autocast="off").score_scan_sync(
        make_scan(100, 100), stride=16
    )
    fg = ~res.background
    expected = cal.calibrate(res.window_scores[fg].astype(np.float64))
    np.testing.assert_allclose(res.window_calibrated[fg], expected, rtol=1e-4, atol=1e-4)
    assert res.default_threshold == cal.default_threshold


def test_cancellation_stops_within_one_batch(stub_bundle):
    scan = make_scan(200, 200)
    eng = ScoringEngine(stub_bundle, "cpu", autocast="off", batch=4)
    cancel = threading.Event()
    gen = eng.score_scan(scan, stride=16, cancel=cancel, progress_every=None)
    first = next(gen)
    assert first.done == 0 and first.total > 8
    progress = next(gen)  # one batch scored
    assert progress.done == 4
    cancel.set()
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value is None
    assert StubGenerator.seen == 4


def test_cancellation_by_callable_before_any_batch(stub_bundle):
    res = score_scan_sync(make_scan(100, 100), stub_bundle, "cpu", cancel=lambda: True)
    assert res is None
    assert StubGenerator.seen == 0


def test_out_of_memory_halves_the_batch_and_completes(stub_bundle):
    scan = make_scan(200, 300, seed=5)
    ref = ScoringEngine(stub_bundle, "cpu", autocast="off", batch=64).score_scan_sync(scan)
    eng = ScoringEngine(stub_bundle, "cpu", autocast="off", batch=64)
    attempts = []

    def fault(n: int) -> None:
        attempts.append(n)
        if n > 8:
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")

    eng.fault = fault
    res = eng.score_scan_sync(scan)
    assert attempts[:4] == [64, 32, 16, 8]
    assert eng.batch == 8
    np.testing.assert_allclose(res.latent_map, ref.latent_map, rtol=1e-6)
    np.testing.assert_allclose(res.window_scores, ref.window_scores, rtol=1e-6)


def test_other_runtime_errors_are_not_swallowed(stub_bundle):
    eng = ScoringEngine(stub_bundle, "cpu", batch=16)

    def fault(n: int) -> None:
        raise RuntimeError("shape mismatch")

    eng.fault = fault
    with pytest.raises(RuntimeError, match="shape mismatch"):
        eng.score_scan_sync(make_scan(100, 100))


def test_progress_reports_and_partial_maps(stub_bundle):
    gen = score_scan(make_scan(160, 160), stub_bundle, "cpu", batch=8, progress_every=0.0)
    reports, result = run_to_end(gen)
    dones = [r.done for r in reports]
    assert dones == sorted(dones) and dones[-1] == reports[-1].total == result.n_scored
    partials = [r.partial for r in reports if r.partial is not None]
    assert partials and not partials[0].complete and partials[0].residual_map is None
    assert partials[0].latent_map.shape == result.latent_map.shape
    assert result.complete and result.timings["n_scored"] == result.n_scored


def test_engine_matches_reference_scores_on_a_real_bundle(tiny_bundle):
    """BN folding and channels-last change nothing (fp32); bf16 stays close."""
    torch.manual_seed(1)
    x = torch.rand(40, 3, 64, 64) * 2 - 1
    ref = reference_score_windows(tiny_bundle.generator, x)
    fp32 = ScoringEngine(tiny_bundle, "cpu", autocast="off", batch=16).score_windows(x)
    torch.testing.assert_close(fp32.latent, ref, rtol=1e-4, atol=1e-5)
    with torch.inference_mode():
        x_hat = tiny_bundle.generator(x).x_hat
    torch.testing.assert_close(fp32.residual, (x - x_hat).abs().mean(1), rtol=1e-4, atol=1e-4)
    bf16 = ScoringEngine(tiny_bundle, "cpu", autocast="bf16", batch=16).score_windows(x)
    rel = (bf16.latent - ref).abs() / ref.abs().clamp_min(1e-6)
    assert float(rel.median()) < 0.05
    # The bundle's own generator is left alone (not fused, still on CPU, eval).
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in tiny_bundle.generator.modules())


def test_working_scale_and_map_at_scan_resolution(tiny_bundle):
    from xrayscreen.imaging.representation import WorkingScale

    tiny_bundle.input.scale = WorkingScale(longer_side=200)
    scan = make_scan(150, 400, seed=6)
    res = ScoringEngine(tiny_bundle, "cpu").score_scan_sync(scan, stride=32)
    assert res.latent_map.shape == (75, 200)
    assert res.scale_factor == pytest.approx(0.5)
    assert res.map_at_scan_resolution("latent").shape == (150, 400)
    assert res.map_at_scan_resolution("residual").shape == (150, 400)
    assert res.summary()["n_scored"] == res.n_scored
    with pytest.raises(ValueError):
        res.map_at_scan_resolution("nope")


def test_air_padding_value_per_representation():
    assert air_value("rgb") == (1.0, 1.0, 1.0)
    assert air_value("rgb_attenuation") == pytest.approx((-1.0, -1.0, -1.0))
    assert air_value("log_attenuation") == pytest.approx((-1.0, -1.0))


@pytest.mark.slow
def test_compiled_engine_matches_eager_without_recompiling(tiny_bundle):
    """torch.compile path: padded static batches give the same maps as eager."""
    scan = make_scan(150, 200, seed=8, belt_cols=30)
    eager = ScoringEngine(tiny_bundle, "cpu", autocast="off", batch=32).score_scan_sync(scan)
    comp = ScoringEngine(tiny_bundle, "cpu", autocast="off", batch=32, compile=True)
    res = comp.score_scan_sync(scan)  # last batch is partial: padded, not recompiled
    np.testing.assert_allclose(res.latent_map, eager.latent_map, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res.residual_map, eager.residual_map, rtol=1e-4, atol=1e-5)
    assert comp.windows_seen == res.n_scored


def test_whole_kernel_convs_become_matmuls_and_stay_exact(tiny_bundle):
    from xrayscreen.inference.engine import _ConvAsLinear, _LinearAsConvTranspose

    eng = ScoringEngine(tiny_bundle, "cpu", autocast="off")
    kinds = {type(m) for m in eng.generator.modules()}
    assert _ConvAsLinear in kinds and _LinearAsConvTranspose in kinds
    x = torch.rand(6, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        ref = tiny_bundle.generator(x)
        got = eng.generator(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got.z, ref.z, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.z_hat, ref.z_hat, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.x_hat, ref.x_hat, rtol=1e-4, atol=1e-5)
