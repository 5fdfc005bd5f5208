"""Cell heat maps equal the per-pixel overlap fold, and their peaks are exact."""

from __future__ import annotations

import numpy as np
import torch

from xrayscreen.evaluation.heat import cell_mean
from xrayscreen.inference.windows import WindowGrid, fold_mean


def test_cell_map_equals_fold_mean_and_peaks_are_exact():
    rng = np.random.default_rng(0)
    for h, w, stride in ((200, 330, 16), (64, 64, 16), (97, 150, 32), (100, 120, 24)):
        grid = WindowGrid(h, w, 64, stride)
        scores = rng.random(len(grid))
        hm = cell_mean(scores, grid)
        ref = fold_mean(torch.from_numpy(scores), grid).numpy()
        assert hm.full().shape == (h, w)
        assert np.allclose(hm.full(), ref, atol=1e-9)
        assert np.isclose(hm.peak(), ref.max())
        mask = np.zeros((h, w), bool)
        mask[10:37, 50:61] = True
        assert np.isclose(hm.peak_where(mask), ref[mask].max())
        assert np.isclose(hm.peak_where(~mask), ref[~mask].max())
        assert hm.peak_where(np.zeros((h, w), bool)) is None
