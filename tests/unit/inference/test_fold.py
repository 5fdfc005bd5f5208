"""Folds for any stride (separable) against brute force, and coverage counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xrayscreen.inference.windows import WindowGrid, coverage_counts, fold_separable


def _brute(scores: np.ndarray, grid: WindowGrid, reduce: str) -> np.ndarray:
    ph, pw = grid.padded_shape
    tot, cnt, mx = np.zeros((ph, pw)), np.zeros((ph, pw)), np.full((ph, pw), -np.inf)
    for s, (y, x) in zip(scores, grid.origins()):
        sl = np.s_[y : y + grid.window, x : x + grid.window]
        tot[sl] += s
        cnt[sl] += 1
        mx[sl] = np.maximum(mx[sl], s)
    out = tot / cnt if reduce == "mean" else mx
    return out[: grid.height, : grid.width]


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 90),
    w=st.integers(1, 90),
    win=st.sampled_from([8, 16]),
    stride=st.integers(1, 16),
    reduce=st.sampled_from(["mean", "max"]),
)
def test_fold_separable_equals_brute_force(h, w, win, stride, reduce):
    stride = min(stride, win)
    grid = WindowGrid(h, w, win, stride)
    scores = np.random.default_rng(h * 100 + w).random(len(grid)).astype(np.float32)
    got = fold_separable(torch.from_numpy(scores), grid, reduce).numpy()
    np.testing.assert_allclose(got, _brute(scores, grid, reduce), rtol=1e-5, atol=1e-6)


def test_coverage_counts():
    grid = WindowGrid(70, 40, 64, 16)
    c = coverage_counts(grid).numpy()
    # Rows 0 (0..63) and 1 (16..79): y=0 -> 1, y=63 -> 2, y=69 -> 1; one column (40 < 64).
    assert c[0, 0] == 1 and c[63, 0] == 2 and c[69, 0] == 1 and c[20, 39] == 2
    assert c.shape == (70, 40)


def test_fold_separable_rejects_unknown_reduce():
    with pytest.raises(ValueError):
        fold_separable(torch.zeros(1), WindowGrid(8, 8, 8, 8), "median")
