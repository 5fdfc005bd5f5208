"""Heat maps kept at the resolution they really have.

A map folded from per-window scores (overlap mean, stride dividing the window) is
constant on every ``stride x stride`` cell of the grid, so it is stored as the
cell map: exactly the same values as the per-pixel map
(:func:`xrayscreen.inference.windows.fold_mean`), 256x less data at stride 16.
Peaks over the whole bag, inside the threat and outside it are computed on cells
(a cell is inside when any of its pixels is), which is exact for the per-pixel
map because every pixel of a cell carries the cell's value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from xrayscreen.inference.windows import WindowGrid, fold_mean


@dataclass
class HeatMap:
    """A heat map as ``cell x cell`` blocks (``cell == 1``: per pixel).

    Attributes:
        values: ``(h, w)`` cell values; cell ``(i, j)`` covers pixels
            ``[i*cell, (i+1)*cell) x [j*cell, (j+1)*cell)`` of the image.
        cell: Cell size in pixels.
        shape: ``(H, W)`` of the image (cells past it are padding).
    """

    values: np.ndarray
    cell: int
    shape: tuple[int, int]

    @property
    def _in_image(self) -> np.ndarray:
        h, w = self.shape
        c = self.cell
        return self.values[: -(-h // c), : -(-w // c)]

    def full(self) -> np.ndarray:
        """The per-pixel ``(H, W)`` map."""
        h, w = self.shape
        v = self._in_image
        if self.cell > 1:
            v = np.repeat(np.repeat(v, self.cell, axis=0), self.cell, axis=1)
        return v[:h, :w]

    def cells_touching(self, mask: np.ndarray) -> np.ndarray:
        """Bool cell map: True where any pixel of the cell is True in ``mask`` ``(H, W)``."""
        c = self.cell
        if c == 1:
            return mask
        h, w = mask.shape
        hc, wc = -(-h // c), -(-w // c)
        pad = np.zeros((hc * c, wc * c), dtype=bool)
        pad[:h, :w] = mask
        return pad.reshape(hc, c, wc, c).any(axis=(1, 3))

    def peak(self) -> float:
        """Highest value anywhere on the image."""
        return float(self._in_image.max())

    def peak_where(self, mask: np.ndarray) -> float | None:
        """Highest value over the pixels where ``mask`` is True (None when none is)."""
        sel = self.cells_touching(mask)
        return float(self._in_image[sel].max()) if sel.any() else None


def cell_mean(scores: np.ndarray, grid: WindowGrid) -> HeatMap:
    """Per-window scores folded by overlap mean, as an exact :class:`HeatMap`.

    Args:
        scores: ``(N,)`` window scores in the grid's row-major order.
        grid: The window grid.
    """
    s, win = grid.stride, grid.window
    if win % s:
        full = fold_mean(torch.from_numpy(np.asarray(scores, np.float64)), grid).numpy()
        return HeatMap(full, 1, (grid.height, grid.width))
    k = win // s
    g = np.asarray(scores, dtype=np.float64).reshape(grid.rows, grid.cols)
    # Cell (i, j) is covered by the windows whose grid positions lie in rows
    # i-k+1..i and cols j-k+1..j: a k x k box sum over the zero-padded grid.
    gp = np.pad(g, k - 1)
    ones = np.pad(np.ones_like(g), k - 1)
    total = _box_sum(gp, k)
    count = _box_sum(ones, k)
    return HeatMap(total / count, s, (grid.height, grid.width))


def _box_sum(a: np.ndarray, k: int) -> np.ndarray:
    """Sums over every ``k x k`` block (valid positions), by an integral image."""
    ii = np.zeros((a.shape[0] + 1, a.shape[1] + 1))
    ii[1:, 1:] = a.cumsum(axis=0).cumsum(axis=1)
    return ii[k:, k:] - ii[:-k, k:] - ii[k:, :-k] + ii[:-k, :-k]


def window_means(full: np.ndarray, grid: WindowGrid) -> np.ndarray:
    """Mean of a per-pixel map over each window of ``grid`` (the part inside the image).

    The "window score read off the heat map": what an operator looking at the overlay
    sees over that window. One integral image, then four lookups per window.

    Args:
        full: ``(H, W)`` per-pixel map of the unpadded image.
        grid: The window grid on that image.

    Returns:
        ``(N,)`` float64, row-major grid order.
    """
    h, w = full.shape
    if (h, w) != (grid.height, grid.width):
        raise ValueError(f"map {full.shape} != grid image {(grid.height, grid.width)}")
    ii = np.zeros((h + 1, w + 1))
    ii[1:, 1:] = np.asarray(full, dtype=np.float64).cumsum(axis=0).cumsum(axis=1)
    org = grid.origins()
    y0, x0 = org[:, 0], org[:, 1]
    y1, x1 = np.minimum(y0 + grid.window, h), np.minimum(x0 + grid.window, w)
    total = ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]
    return total / ((y1 - y0) * (x1 - x0))
