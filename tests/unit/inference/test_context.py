"""Spatial context: the tent-weighted neighbour average, its edges and the engine's use."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from inference_testkit import make_scan

from xrayscreen.errors import ConfigError
from xrayscreen.inference import context
from xrayscreen.inference.engine import ScoringEngine
from xrayscreen.inference.windows import WindowGrid
from xrayscreen.model.bundle import ScoreSpec


def _by_hand(s: np.ndarray, valid: np.ndarray, stride: int, radius: float) -> np.ndarray:
    rows, cols = s.shape
    out = np.empty_like(s)
    for i in range(rows):
        for j in range(cols):
            num = den = 0.0
            for a in range(rows):
                for b in range(cols):
                    w = max(0.0, 1 - abs(a - i) * stride / radius) * max(
                        0.0, 1 - abs(b - j) * stride / radius
                    )
                    num += w * s[a, b] * valid[a, b]
                    den += w * valid[a, b]
            out[i, j] = num / den if den > 1e-6 else s[i, j]
    return out


@pytest.mark.parametrize("radius", [32.0, 64.0, 100.0])
def test_matches_the_formula_and_ignores_invalid_windows(radius):
    grid = WindowGrid(height=64 + 16 * 6, width=64 + 16 * 8, window=64, stride=16)  # 7 x 9
    rng = np.random.default_rng(0)
    s = rng.normal(size=(grid.rows, grid.cols))
    valid = rng.random((grid.rows, grid.cols)) > 0.3
    s_in = s.copy()
    s_in[~valid] = 1e6  # an invalid window's value must never leak into a valid one
    got = context.spread(
        torch.from_numpy(s_in.ravel()).float(), grid, torch.from_numpy(valid.ravel()), radius
    )
    expect = _by_hand(s_in, valid, grid.stride, radius)
    np.testing.assert_allclose(got.numpy().reshape(s.shape)[valid], expect[valid], rtol=1e-5)


def test_constant_stays_constant_and_small_radius_is_identity():
    grid = WindowGrid(200, 300, 64, 16)
    ones = torch.full((len(grid),), 3.0)
    torch.testing.assert_close(context.spread(ones, grid, None, 96.0), ones)
    x = torch.randn(len(grid))
    assert context.spread(x, grid, None, 16.0) is x  # no neighbour within one stride


def test_an_isolated_spike_is_diluted_more_than_a_compact_blob():
    # Why context helps: a threat lights several neighbouring windows, clutter one.
    grid = WindowGrid(64 + 16 * 20, 64 + 16 * 20, 64, 16)
    s = torch.zeros(grid.rows, grid.cols)
    s[3, 3] = 5.0  # isolated
    s[12:16, 12:16] = 5.0  # compact blob
    out = context.spread(s.flatten(), grid, None, 64.0).reshape(s.shape)
    assert out[13, 13] > 2 * out[3, 3]


def test_spec_radius_is_validated():
    assert context.radius_of(ScoreSpec()) == 0.0
    assert context.radius_of(ScoreSpec(params={"context_px": 96})) == 96.0
    for bad in (-1, "wide", float("nan")):
        with pytest.raises(ConfigError):
            context.radius_of(ScoreSpec(params={"context_px": bad}))


def test_engine_applies_context_after_normalisation_over_foreground(stub_bundle):
    from xrayscreen.model.calibration import Calibration

    scan = make_scan(256, 320, seed=2, belt_cols=64)
    stub_bundle.calibration = Calibration.fit(np.linspace(0.0, 0.6, 500))
    plain = ScoringEngine(stub_bundle, "cpu", autocast="off").score_scan_sync(scan, stride=16)
    stub_bundle.score = ScoreSpec(kind=stub_bundle.score.kind, params={"context_px": 64.0})
    ctx = ScoringEngine(stub_bundle, "cpu", autocast="off").score_scan_sync(scan, stride=16)
    fg = ~plain.background
    assert fg.any() and (~fg).any()
    # The window scores are the context average of the plain ones over the foreground;
    # the calibration maps them; background stays at the calibrated minimum.
    expect = context.spread(
        torch.from_numpy(plain.window_scores), plain.grid, torch.from_numpy(fg), 64.0
    ).numpy()
    np.testing.assert_allclose(ctx.window_scores[fg], expect[fg], rtol=1e-5, atol=1e-6)
    cal = stub_bundle.calibration.calibrate(expect[fg].astype(np.float32))
    np.testing.assert_allclose(ctx.window_calibrated[fg], cal, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ctx.window_calibrated[~fg], plain.window_calibrated[~fg])
    assert not np.allclose(ctx.latent_map, plain.latent_map)


def test_self_weight_keeps_part_of_the_own_score():
    grid = WindowGrid(64 + 16 * 10, 64 + 16 * 10, 64, 16)
    x = torch.randn(len(grid), generator=torch.Generator().manual_seed(3))
    ctx = context.spread(x, grid, None, 96.0)
    got = context.apply(ScoreSpec(params={"context_px": 96, "context_self": 0.25}), x, grid)
    torch.testing.assert_close(got, 0.25 * x + 0.75 * ctx)
    assert context.apply(ScoreSpec(params={"context_self": 0.5}), x, grid) is x  # no radius
    for bad in (1.0, -0.1, "half"):
        with pytest.raises(ConfigError):
            context.self_weight_of(ScoreSpec(params={"context_self": bad}))
