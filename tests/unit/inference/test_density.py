"""Window density evidence: opacity per representation, window means, the per-scan
z-score, its place in the evidence, and the engine's use of it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from inference_testkit import make_scan

from xrayscreen.errors import ConfigError
from xrayscreen.evaluation.floors import floor_scores
from xrayscreen.imaging.representation import model_input
from xrayscreen.imaging.scan import Scan, ScanKind
from xrayscreen.inference import context, density, scan_norm, zoom
from xrayscreen.inference.engine import ScoringEngine, air_value
from xrayscreen.inference.windows import WindowGrid, pad_to_grid
from xrayscreen.model.bundle import ScoreSpec


def test_weight_is_validated():
    assert density.weight_of(ScoreSpec()) == 0.0 and not density.enabled(ScoreSpec())
    assert density.weight_of(ScoreSpec(params={"density_weight": "1.5"})) == 1.5
    for bad in (-0.1, 11, "dense", float("nan"), None):
        with pytest.raises(ConfigError, match="density_weight"):
            density.weight_of(ScoreSpec(params={"density_weight": bad}))


@pytest.mark.parametrize("representation", ["rgb", "rgb_attenuation"])
def test_opacity_inverts_the_representation(representation):
    # Grey levels 255 (air), 128, 1: opacity 1 - g / 255 in both RGB representations
    # (-log is clipped at 1/255, the darkest 8-bit level).
    rgb = np.array([[[255] * 3, [128] * 3, [1] * 3]], np.uint8)
    x = torch.from_numpy(model_input(Scan(rgb=rgb, kind=ScanKind.PSEUDO_COLOUR), representation))
    got = density.opacity(x, representation).numpy()[0]
    np.testing.assert_allclose(got, 1.0 - np.array([255, 128, 1]) / 255.0, atol=1e-5)
    air = torch.tensor(air_value(representation))[:, None, None]
    assert float(density.opacity(air, representation)) == pytest.approx(0.0, abs=1e-6)


def test_opacity_of_raw_dual_energy_is_one_minus_transmission():
    raw = np.array([[[1.0, 0.5, 0.01]], [[1.0, 0.25, 0.02]]], np.float32)  # (2, 1, 3)
    scan = Scan(rgb=np.full((1, 3, 3), 200, np.uint8), kind=ScanKind.DUAL_ENERGY, raw=raw)
    x = torch.from_numpy(model_input(scan, "log_attenuation"))
    got = density.opacity(x, "log_attenuation").numpy()[0]
    np.testing.assert_allclose(got, 1.0 - raw.mean(axis=0)[0], atol=1e-5)
    with pytest.raises(ConfigError, match="representation"):
        density.opacity(x, "xray_magic")


def test_window_means_are_the_mean_darkness_floor_for_rgb():
    scan = make_scan(200, 232, seed=7, belt_cols=40)
    grid = WindowGrid(200, 232, 64, 16)
    x = torch.from_numpy(model_input(scan, "rgb_attenuation"))
    padded = pad_to_grid(x, grid, air_value("rgb_attenuation")[0])
    got = density.window_means(padded, grid, "rgb_attenuation").numpy()
    rgb = torch.from_numpy(scan.rgb).permute(2, 0, 1).float() / 255.0
    floor = floor_scores(pad_to_grid(rgb, grid, 1.0), grid)["mean_darkness"]
    assert got.shape == (len(grid),)
    np.testing.assert_allclose(got, floor, atol=2e-3)


def test_normalise_is_a_floored_robust_z_and_zero_on_tiny_scans():
    gen = torch.Generator().manual_seed(1)
    v = torch.rand(200, generator=gen)
    valid = torch.rand(200, generator=gen) > 0.3
    q1, med, q3 = torch.quantile(v[valid].double(), torch.tensor([0.25, 0.5, 0.75]).double())
    expect = (v - med) / ((q3 - q1) / 1.349)
    torch.testing.assert_close(density.normalise(v, valid), expect.float(), rtol=1e-5, atol=1e-5)
    # A nearly uniform scan: the scale floor keeps a slightly denser window ordinary.
    flat = torch.full((100,), 0.3)
    flat[7] = 0.31
    assert float(density.normalise(flat, None)[7]) == pytest.approx(0.01 / density.SCALE_FLOOR)
    # Too few windows to say what is dense for this bag: no density evidence at all.
    few = torch.zeros(200, dtype=torch.bool)
    few[: scan_norm.MIN_WINDOWS - 1] = True
    assert not density.normalise(v, few).any()


def test_evidence_adds_each_views_density_before_the_mix():
    grid = WindowGrid(64 + 16 * 9, 64 + 16 * 11, 64, 16)
    gen = torch.Generator().manual_seed(3)
    raw, raw_z, d, dz = (torch.rand(len(grid), generator=gen) for _ in range(4))
    valid = torch.rand(len(grid), generator=gen) > 0.2
    spec = ScoreSpec(
        params={"scan_norm": "robust_z", "context_px": 96.0, "zoom": 2.0, "density_weight": 1.5}
    )
    zs = zoom.zoom_spec(spec)
    fine = scan_norm.normalise(spec, raw, valid) + 1.5 * density.normalise(d, valid)
    zoomed = scan_norm.normalise(zs, raw_z, valid) + 1.5 * density.normalise(dz, valid)
    expect = context.apply(spec, torch.maximum(fine, zoomed), grid, valid)
    torch.testing.assert_close(zoom.evidence(spec, raw, raw_z, grid, valid, d, dz), expect)
    # Without the zoomed view, the window's own density only.
    plain = ScoreSpec(params={"scan_norm": "robust_z", "density_weight": 1.5})
    torch.testing.assert_close(zoom.evidence(plain, raw, None, grid, valid, d), fine)
    with pytest.raises(ConfigError, match="densities are missing"):
        zoom.evidence(spec, raw, raw_z, grid, valid, d)
    with pytest.raises(ConfigError, match="densities are missing"):
        zoom.evidence(plain, raw, None, grid, valid)


def test_zoomed_view_densities_are_the_means_of_its_windows():
    scan = make_scan(96, 128, seed=4)
    grid = WindowGrid(96, 128, 32, 16)
    rep = "rgb_attenuation"
    view = zoom.ZoomedView(scan, grid, 2.0, rep, torch.tensor(air_value(rep)))
    idx = torch.arange(len(grid))
    expect = density.opacity(view.windows(idx), rep).mean(dim=(1, 2))
    torch.testing.assert_close(view.densities(idx), expect, rtol=1e-5, atol=1e-6)


def test_engine_adds_density_to_both_views(stub_bundle):
    scan = make_scan(256, 320, seed=2, belt_cols=64)
    spec = {"scan_norm": "robust_z", "zoom": 2.0}
    stub_bundle.score = ScoreSpec(kind=stub_bundle.score.kind, params=spec)
    plain = ScoringEngine(stub_bundle, "cpu", autocast="off").score_scan_sync(scan, stride=16)
    assert plain.raw_density is None
    stub_bundle.score = ScoreSpec(
        kind=stub_bundle.score.kind, params={**spec, "density_weight": 1.0}
    )
    # Small strips: every strip's window densities land in their rows.
    eng = ScoringEngine(stub_bundle, "cpu", autocast="off", batch=29)
    r = eng.score_scan_sync(scan, stride=16, strip_windows=40)
    fg = ~r.background
    x = torch.from_numpy(model_input(scan, "rgb"))
    padded = pad_to_grid(x, r.grid, 1.0)
    np.testing.assert_allclose(
        r.raw_density, density.window_means(padded, r.grid, "rgb").numpy(), atol=1e-5
    )
    view = zoom.ZoomedView(scan, r.grid, 2.0, "rgb", torch.tensor(air_value("rgb")))
    idx = torch.nonzero(torch.from_numpy(fg)).flatten()
    np.testing.assert_allclose(r.raw_density_zoom[fg], view.densities(idx).numpy(), atol=1e-5)
    np.testing.assert_allclose(r.raw_scores[fg], plain.raw_scores[fg], rtol=1e-5, atol=1e-6)
    expect = zoom.evidence(
        stub_bundle.score,
        *(torch.from_numpy(a) for a in (r.raw_scores, r.raw_zoom_scores)),
        r.grid,
        torch.from_numpy(fg),
        *(torch.from_numpy(a) for a in (r.raw_density, r.raw_density_zoom)),
    ).numpy()
    np.testing.assert_allclose(r.window_scores[fg], expect[fg], rtol=1e-5, atol=1e-5)
    assert not np.allclose(r.window_scores[fg], plain.window_scores[fg])


def test_engine_refuses_a_malformed_density_weight(stub_bundle):
    stub_bundle.score = ScoreSpec(params={"scan_norm": "robust_z", "density_weight": -1})
    with pytest.raises(ConfigError, match="density_weight"):
        ScoringEngine(stub_bundle, "cpu")
