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


def test_window_means_read_the_map_over_each_window_inside_the_image():
    from xrayscreen.evaluation.heat import window_means

    rng = np.random.default_rng(1)
    grid = WindowGrid(100, 150, 64, 32)  # the last row/col of windows runs past the image
    full = rng.random((100, 150))
    got = window_means(full, grid)
    for n, (y, x) in enumerate(grid.origins()):
        assert np.isclose(got[n], full[y : y + 64, x : x + 64].mean())
    # Constant map -> constant reads; a wrong-size map is refused.
    assert np.allclose(window_means(np.full((100, 150), 2.5), grid), 2.5)
    import pytest

    with pytest.raises(ValueError):
        window_means(full[:, :-1], grid)
