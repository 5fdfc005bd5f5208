"""The research probe's line evidence (benchmarks/research/evidence_terms.py, sixteenth
session): a long straight run of unusual windows keeps its level along a line, a lone peak is
diluted, every direction is seen, and windows that are not valid count as the scan median."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from xrayscreen.inference.windows import WindowGrid

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks" / "research"))
from evidence_terms import line_max

GRID = WindowGrid(64 + 9 * 16, 64 + 9 * 16, 64, 16)  # 10 x 10 windows


def _line(points: list[tuple[int, int]], value: float = 1.0) -> np.ndarray:
    s = np.zeros((GRID.rows, GRID.cols))
    for y, x in points:
        s[y, x] = value
    return s.ravel()


@pytest.mark.parametrize(
    "points",
    [
        [(5, x) for x in range(2, 9)],  # horizontal
        [(y, 4) for y in range(1, 8)],  # vertical
        [(k, k) for k in range(1, 8)],  # 45 degrees
        [(k, 8 - k) for k in range(1, 8)],  # 135 degrees
    ],
)
def test_a_straight_run_keeps_its_level_in_every_direction(points):
    assert GRID.rows == GRID.cols == 10
    s = _line(points)
    out = line_max(s, np.ones_like(s, bool), GRID, 3).reshape(GRID.rows, GRID.cols)
    cy, cx = points[3]  # the run's middle window: the whole 7-window line is on the run
    assert out[cy, cx] == pytest.approx(1.0)


def test_a_lone_peak_is_diluted_and_invalid_windows_count_zero():
    s = _line([(5, 5)], 7.0)
    valid = np.ones_like(s, bool)
    out = line_max(s, valid, GRID, 3).reshape(GRID.rows, GRID.cols)
    assert out[5, 5] == pytest.approx(1.0)  # 7 / 7 windows
    run = _line([(5, x) for x in range(2, 9)], 2.0)
    valid = np.ones_like(run, bool)
    valid.reshape(GRID.rows, GRID.cols)[5, 2] = False  # one end of the run not scored
    out = line_max(run, valid, GRID, 3).reshape(GRID.rows, GRID.cols)
    assert out[5, 5] == pytest.approx(2.0 * 6 / 7)


def test_the_ridge_spares_a_wide_band_and_keeps_a_narrow_line():
    grid = WindowGrid(64 + 19 * 16, 64 + 19 * 16, 64, 16)  # 20 x 20: every flank stays inside
    narrow = np.zeros((20, 20))
    narrow[10, :] = 1.0
    wide = np.zeros((20, 20))
    wide[3:18, :] = 1.0  # a band 15 windows wide
    valid = np.ones(400, bool)
    ridge_narrow = line_max(narrow.ravel(), valid, grid, 3, flank=3).reshape(20, 20)
    ridge_wide = line_max(wide.ravel(), valid, grid, 3, flank=3).reshape(20, 20)
    assert ridge_narrow[10, 10] == pytest.approx(1.0)  # empty flanks: the line keeps its mean
    assert ridge_wide[10, 10] == pytest.approx(0.0)  # flanks as high as the line: nothing left
    plain_wide = line_max(wide.ravel(), valid, grid, 3).reshape(20, 20)
    assert plain_wide[10, 10] == pytest.approx(1.0)  # without flanks the band scores as a line
