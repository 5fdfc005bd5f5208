"""Sliding windows: the grid, border padding, the empty-belt rule and the overlap fold.

One grid for training, scoring and evaluation:

* Window origins are ``0, s, 2s, ...`` in both axes. The image is padded at the
  bottom/right with **air** (transmission 1 / white, which is what a scanner sees
  beyond the bag) so the last window ends exactly at the padded edge; every pixel
  is covered and the origins stay on a regular grid, which keeps the overlap fold
  a cheap box filter when the stride divides the window.
* **Empty-belt rule** (documented, shared): a window is background when at least
  ``BELT_FRACTION`` (90 %) of its pixels have protocol grey (mean RGB / 255)
  brighter than ``BELT_GREY`` (0.92). Background windows never reach the model;
  they score as normal (the minimum score) and are left out of evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

BELT_GREY = 0.92
BELT_FRACTION = 0.90


@dataclass(frozen=True)
class WindowGrid:
    """Window origins on an image of ``(height, width)`` (unpadded)."""

    height: int
    width: int
    window: int
    stride: int

    def __post_init__(self) -> None:
        if self.window < 1 or self.stride < 1:
            raise ValueError("window and stride must be positive")
        if self.stride > self.window:
            raise ValueError(f"stride {self.stride} > window {self.window} leaves pixels uncovered")

    @property
    def rows(self) -> int:
        """Number of window rows."""
        return _count(self.height, self.window, self.stride)

    @property
    def cols(self) -> int:
        """Number of window columns."""
        return _count(self.width, self.window, self.stride)

    @property
    def padded_shape(self) -> tuple[int, int]:
        """``(H, W)`` after padding so the last window ends at the edge."""
        return (
            (self.rows - 1) * self.stride + self.window,
            (self.cols - 1) * self.stride + self.window,
        )

    def __len__(self) -> int:
        return self.rows * self.cols

    def origins(self) -> np.ndarray:
        """``(N, 2)`` int array of (y, x) window origins, row-major."""
        ys = np.arange(self.rows) * self.stride
        xs = np.arange(self.cols) * self.stride
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        return np.stack([yy.ravel(), xx.ravel()], axis=1)


def _count(size: int, window: int, stride: int) -> int:
    return 1 if size <= window else 1 + math.ceil((size - window) / stride)


def pad_to_grid(image: torch.Tensor, grid: WindowGrid, value: float) -> torch.Tensor:
    """Pad a ``(..., H, W)`` tensor at the bottom/right to ``grid.padded_shape`` with ``value``."""
    ph, pw = grid.padded_shape
    h, w = image.shape[-2:]
    if (h, w) == (ph, pw):
        return image
    return F.pad(image, (0, pw - w, 0, ph - h), value=value)


def extract_windows(padded: torch.Tensor, grid: WindowGrid) -> torch.Tensor:
    """All windows of a padded ``(C, H, W)`` tensor as a ``(N, C, win, win)`` view-based copy.

    Uses ``Tensor.unfold`` (strided views), so it runs on whatever device the
    tensor lives on without a host round-trip.
    """
    c = padded.shape[0]
    win, s = grid.window, grid.stride
    patches = padded.unfold(1, win, s).unfold(2, win, s)  # (C, rows, cols, win, win)
    return patches.permute(1, 2, 0, 3, 4).reshape(-1, c, win, win)


def belt_mask(grey_padded: torch.Tensor, grid: WindowGrid) -> torch.Tensor:
    """``(N,)`` bool: True where a window is empty belt (see module docstring).

    Args:
        grey_padded: ``(H, W)`` protocol grey in 0..1, padded with 1.0 (air).
        grid: The window grid.
    """
    bright = (grey_padded > BELT_GREY).to(torch.float32)[None, None]
    frac = F.avg_pool2d(bright, grid.window, grid.stride)  # (1, 1, rows, cols)
    return frac.flatten() >= BELT_FRACTION


def fold_mean(scores: torch.Tensor, grid: WindowGrid) -> torch.Tensor:
    """Per-pixel mean of the window scores covering each pixel, ``(H, W)`` (unpadded).

    ``scores`` is ``(rows * cols,)`` for per-window values or ``(rows * cols, win, win)``
    for per-pixel values inside each window (e.g. a reconstruction residual).
    When the stride divides the window, per-window values fold with a box filter
    on the window grid (about 1 ms); otherwise ``F.fold`` is used.
    """
    return _fold(scores, grid, reduce="mean")


def fold_max(scores: torch.Tensor, grid: WindowGrid) -> torch.Tensor:
    """Per-pixel maximum of the per-window scores covering each pixel, ``(H, W)``."""
    return _fold(scores, grid, reduce="max")


def _fold(scores: torch.Tensor, grid: WindowGrid, reduce: str) -> torch.Tensor:
    rows, cols, win, s = grid.rows, grid.cols, grid.window, grid.stride
    ph, pw = grid.padded_shape
    scores = scores.float()
    per_window = scores.dim() == 1
    if per_window and win % s == 0:
        k = win // s
        g = scores.reshape(1, 1, rows, cols)
        # Each s x s cell of the padded image is covered by the k x k windows whose
        # origins lie in the k x k block of grid positions ending at that cell.
        gp = F.pad(g, (k - 1, k - 1, k - 1, k - 1), value=float("-inf") if reduce == "max" else 0.0)
        if reduce == "max":
            cell = F.max_pool2d(gp, k, 1)
        else:
            cell_sum = F.avg_pool2d(gp, k, 1, divisor_override=1)
            ones = F.pad(torch.ones_like(g), (k - 1, k - 1, k - 1, k - 1))
            cell_cnt = F.avg_pool2d(ones, k, 1, divisor_override=1)
            cell = cell_sum / cell_cnt
        # cell has (rows + k - 1, cols + k - 1) cells of s x s pixels = the padded image.
        full = cell.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)[0, 0]
        return full[: grid.height, : grid.width]
    if per_window:
        scores = scores[:, None, None].expand(-1, win, win)
    cols_t = scores.reshape(rows * cols, win * win).T[None]  # (1, win*win, L)
    if reduce == "max":
        # F.fold sums; for max, scatter through unfolded index maps instead.
        out = torch.full((ph * pw,), float("-inf"), device=scores.device)
        idx = torch.arange(ph * pw, device=scores.device, dtype=torch.float32).reshape(1, 1, ph, pw)
        pix = F.unfold(idx, win, stride=s)[0].long()  # (win*win, L)
        out.scatter_reduce_(0, pix.flatten(), cols_t[0].flatten(), reduce="amax")
        full = out.reshape(ph, pw)
    else:
        summed = F.fold(cols_t, (ph, pw), win, stride=s)
        count = F.fold(torch.ones_like(cols_t), (ph, pw), win, stride=s)
        full = (summed / count)[0, 0]
    return full[: grid.height, : grid.width]
