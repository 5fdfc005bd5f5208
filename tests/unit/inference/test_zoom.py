"""Zoomed-out view: parameters, the windows it cuts, the score mix and the engine's use."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from inference_testkit import make_scan, run_to_end

from xrayscreen.errors import ConfigError
from xrayscreen.imaging.representation import model_input, resize
from xrayscreen.imaging.scan import Scan
from xrayscreen.inference import context, scan_norm, zoom
from xrayscreen.inference.engine import ScoringEngine, air_value
from xrayscreen.inference.windows import WindowGrid
from xrayscreen.model.bundle import ScoreSpec


def test_spec_parameters_are_validated():
    assert zoom.factor_of(ScoreSpec()) == 1.0 and not zoom.enabled(ScoreSpec())
    assert zoom.enabled(ScoreSpec(params={"zoom": 2}))
    assert zoom.weight_of(ScoreSpec(params={"zoom": 2})) == zoom.DEFAULT_WEIGHT
    for bad in (0.5, 9, "far", float("nan")):
        with pytest.raises(ConfigError, match="zoom"):
            zoom.factor_of(ScoreSpec(params={"zoom": bad}))
    for bad in (0, -0.1, 1.5, "half", float("nan")):
        with pytest.raises(ConfigError, match="zoom_weight"):
            zoom.weight_of(ScoreSpec(params={"zoom": 2, "zoom_weight": bad}))


def test_zoomed_windows_are_centred_crops_of_the_shrunk_scan():
    # 96 x 128 shrinks to exactly 48 x 64: the window at (y, x) is centred on
    # (y + 16, x + 16), i.e. (y / 2 + 8, x / 2 + 8) of the small image, so its
    # 32 px zoomed window starts at (y / 2 - 8, x / 2 - 8), air outside the scan.
    scan = make_scan(96, 128, seed=4)
    grid = WindowGrid(96, 128, 32, 16)
    air = torch.tensor(air_value("rgb"))
    view = zoom.ZoomedView(scan, grid, 2.0, "rgb", air)
    small = model_input(Scan(rgb=resize(scan.rgb, 0.5), kind=scan.kind), "rgb")
    assert small.shape == (3, 48, 64)
    padded = np.empty((3, 48 + 64, 64 + 64), np.float32)
    padded[:] = air.numpy()[:, None, None]
    padded[:, 32:80, 32:96] = small
    idx = torch.arange(len(grid))
    got = view.windows(idx).numpy()
    assert got.shape == (len(grid), 3, 32, 32)
    for i in idx.tolist():
        r, q = divmod(i, grid.cols)
        y, x = 32 + r * 8 - 8, 32 + q * 8 - 8
        np.testing.assert_array_equal(got[i], padded[:, y : y + 32, x : x + 32])
    assert (got[0][:, :8, :] == air.numpy()[:, None, None]).all()  # above the scan: air


def test_evidence_is_the_mix_of_the_normalised_views_then_the_context():
    grid = WindowGrid(64 + 16 * 9, 64 + 16 * 11, 64, 16)
    gen = torch.Generator().manual_seed(5)
    raw, raw_z = torch.rand(len(grid), generator=gen), torch.rand(len(grid), generator=gen) * 9
    valid = torch.rand(len(grid), generator=gen) > 0.2
    base = {"scan_norm": "robust_z", "context_px": 96.0}
    plain = ScoreSpec(params=base)
    spec = ScoreSpec(params={**base, "zoom": 2.0, "zoom_mix": "mean", "zoom_weight": 0.25})
    expect_plain = context.apply(plain, scan_norm.normalise(plain, raw, valid), grid, valid)
    torch.testing.assert_close(zoom.evidence(plain, raw, None, grid, valid), expect_plain)
    mixed = 0.75 * scan_norm.normalise(spec, raw, valid) + 0.25 * scan_norm.normalise(
        spec, raw_z, valid
    )
    torch.testing.assert_close(
        zoom.evidence(spec, raw, raw_z, grid, valid), context.apply(spec, mixed, grid, valid)
    )
    # The default mix: the larger of the two normalised views, window by window.
    spec_max = ScoreSpec(params={**base, "zoom": 2.0})
    assert zoom.mix_of(spec_max) == "max"
    larger = torch.maximum(
        scan_norm.normalise(spec_max, raw, valid), scan_norm.normalise(spec_max, raw_z, valid)
    )
    torch.testing.assert_close(
        zoom.evidence(spec_max, raw, raw_z, grid, valid),
        context.apply(spec_max, larger, grid, valid),
    )
    with pytest.raises(ConfigError, match="zoom_mix"):
        zoom.evidence(ScoreSpec(params={"zoom": 2, "zoom_mix": "sum"}), raw, raw_z, grid, valid)


def test_zoomed_view_has_its_own_fallback_statistics():
    spec = ScoreSpec(params={"ref_median": 1.0, "ref_scale": 2.0, "ref_median_zoom": 5.0})
    z = zoom.zoom_spec(spec)
    assert z.params["ref_median"] == 5.0 and "ref_scale" not in z.params
    assert spec.params["ref_median"] == 1.0  # the bundle's own spec is untouched


def test_engine_scores_both_views_and_mixes_them(stub_bundle):
    scan = make_scan(256, 320, seed=2, belt_cols=64)
    stub_bundle.score = ScoreSpec(
        kind=stub_bundle.score.kind,
        params={"scan_norm": "robust_z", "zoom": 2.0},
    )
    eng = ScoringEngine(stub_bundle, "cpu", autocast="off", batch=37)
    reports, r = run_to_end(eng.score_scan(scan, stride=16, progress_every=0.0))
    fg = ~r.background
    assert fg.any() and (~fg).any()
    n = int(fg.sum())
    assert r.timings["n_scored"] == n and r.timings["n_forwards"] == 2 * n
    assert reports[-1].done == reports[-1].total == 2 * n
    assert all(p.partial is None or not p.partial.complete for p in reports)
    idx = torch.nonzero(torch.from_numpy(fg)).flatten()
    view = zoom.ZoomedView(
        scan, r.grid, 2.0, "rgb", torch.tensor(air_value("rgb")), torch.device("cpu")
    )
    direct = eng.score_windows(view.windows(idx), residual=False).latent.numpy()
    np.testing.assert_allclose(r.raw_zoom_scores[fg], direct, rtol=1e-5, atol=1e-6)
    expect = zoom.evidence(
        stub_bundle.score,
        torch.from_numpy(r.raw_scores),
        torch.from_numpy(r.raw_zoom_scores),
        r.grid,
        torch.from_numpy(fg),
    ).numpy()
    np.testing.assert_allclose(r.window_scores[fg], expect[fg], rtol=1e-5, atol=1e-6)
    # The zoomed view changes the evidence: not the plain engine's scores.
    stub_bundle.score = ScoreSpec(kind=stub_bundle.score.kind, params={"scan_norm": "robust_z"})
    plain = ScoringEngine(stub_bundle, "cpu", autocast="off").score_scan_sync(scan, stride=16)
    assert plain.raw_zoom_scores is None
    np.testing.assert_allclose(plain.raw_scores[fg], r.raw_scores[fg], rtol=1e-5, atol=1e-6)
    assert not np.allclose(plain.window_scores[fg], r.window_scores[fg])


def test_engine_refuses_a_malformed_zoom(stub_bundle):
    stub_bundle.score = ScoreSpec(params={"zoom": 2.0, "zoom_weight": 3})
    with pytest.raises(ConfigError, match="zoom_weight"):
        ScoringEngine(stub_bundle, "cpu")
    stub_bundle.score = ScoreSpec(params={"zoom": 2.0, "zoom_mix": "median"})
    with pytest.raises(ConfigError, match="zoom_mix"):
        ScoringEngine(stub_bundle, "cpu")


def test_cancel_with_the_zoomed_view_returns_none(stub_bundle):
    scan = make_scan(256, 320, seed=2)
    stub_bundle.score = ScoreSpec(params={"zoom": 2.0})
    eng = ScoringEngine(stub_bundle, "cpu", autocast="off", batch=16)
    state = {"done": 0}

    def cancel() -> bool:
        return state["done"] > len(WindowGrid(256, 320, 64, 16))  # half-way through

    gen = eng.score_scan(scan, stride=16, cancel=cancel, progress_every=None)
    while True:
        try:
            state["done"] = next(gen).done
        except StopIteration as stop:
            assert stop.value is None
            break


def test_zoomed_view_of_raw_dual_energy_and_of_a_tiny_scan():
    rng = np.random.default_rng(1)
    raw = rng.uniform(0.2, 1.0, (2, 120, 160)).astype(np.float32)
    scan = Scan(rgb=np.zeros((120, 160, 3), np.uint8), kind=make_scan(8, 8).kind, raw=raw)
    grid = WindowGrid(120, 160, 64, 16)
    air = torch.tensor(air_value("log_attenuation"))
    w = zoom.ZoomedView(scan, grid, 2.0, "log_attenuation", air).windows(torch.arange(len(grid)))
    assert w.shape == (len(grid), 2, 64, 64) and torch.isfinite(w).all()
    tiny = make_scan(3, 5)  # smaller than a window: one window, air around the scan
    g = WindowGrid(3, 5, 64, 16)
    t = zoom.ZoomedView(tiny, g, 2.0, "rgb", torch.tensor(air_value("rgb"))).windows(
        torch.arange(len(g))
    )
    assert t.shape == (1, 3, 64, 64)
