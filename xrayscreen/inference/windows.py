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


def pad_with_air(x: torch.Tensor, grid: WindowGrid, air: torch.Tensor) -> torch.Tensor:
    """Pad ``(C, h, w)`` bottom/right to the grid's padded shape with per-channel ``air``
    (``(C,)``); ``x`` itself when it already has that shape."""
    ph, pw = grid.padded_shape
    c, h, w = x.shape
    if (h, w) == (ph, pw):
        return x
    out = air.to(x.device, x.dtype)[:, None, None].expand(c, ph, pw).clone()
    out[:, :h, :w] = x
    return out


def gather_windows(padded: torch.Tensor, grid: WindowGrid, idx: torch.Tensor) -> torch.Tensor:
    """Windows ``idx`` (row-major grid indices) of a padded ``(C, H, W)`` image as
    ``(n, C, win, win)``: one copy of just those windows, not of the whole grid."""
    win, s = grid.window, grid.stride
    view = padded.unfold(1, win, s).unfold(2, win, s)  # (C, rows, cols, win, win)
    return view[:, idx // grid.cols, idx % grid.cols].permute(1, 0, 2, 3)


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


def axis_counts(
    grid: WindowGrid, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H,)`` and ``(W,)`` float32: window rows covering each pixel row, window
    columns covering each pixel column. Their outer product is the coverage count."""
    cy = _axis_counts(grid.rows, grid.stride, grid.window, grid.height, device)
    cx = _axis_counts(grid.cols, grid.stride, grid.window, grid.width, device)
    return cy, cx


def coverage_counts(grid: WindowGrid, device: torch.device | str | None = None) -> torch.Tensor:
    """``(H, W)`` float32: how many windows cover each pixel of the unpadded image.

    The count is separable (rows covering y times columns covering x), so it costs
    two 1-D passes, whatever the stride.
    """
    cy, cx = axis_counts(grid, device)
    return cy[:, None] * cx[None, :]


def _axis_range(n: int, s: int, win: int, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    # Window i covers [i*s, i*s + win); pixel p is covered by i in [lo, hi].
    p = torch.arange(length, device=device)
    lo = torch.div(p - win + s, s, rounding_mode="floor").clamp(min=0)  # ceil((p-win+1)/s)
    hi = torch.div(p, s, rounding_mode="floor").clamp(max=n - 1)
    return lo, hi


def _axis_counts(n: int, s: int, win: int, length: int, device) -> torch.Tensor:
    lo, hi = _axis_range(n, s, win, length, device)
    return (hi - lo + 1).to(torch.float32)


def fold_separable(scores: torch.Tensor, grid: WindowGrid, reduce: str = "mean") -> torch.Tensor:
    """Per-pixel mean or max of per-window scores for ANY stride, in ``O(H * W)`` memory.

    Rectangular coverage makes the reduction separable: first over the window rows
    covering each pixel row, then over the window columns covering each pixel
    column (``ceil(win / stride)`` gathers per axis). Used when the stride does not
    divide the window, where :func:`fold_mean`'s ``F.fold`` path would need
    ``N * win**2`` memory.

    Args:
        scores: ``(rows * cols,)`` per-window values.
        grid: The window grid.
        reduce: ``"mean"`` or ``"max"``.

    Returns:
        ``(H, W)`` float32 map of the unpadded image.
    """
    if reduce not in ("mean", "max"):
        raise ValueError(f"reduce must be 'mean' or 'max', got {reduce!r}")
    dev = scores.device
    v = scores.float().reshape(grid.rows, grid.cols)
    # float64 sums keep the mean exact to float32 precision on huge grids.
    acc_dtype = torch.float64 if (reduce == "mean" and dev.type == "cpu") else torch.float32
    v = v.to(acc_dtype)
    k = -(-grid.window // grid.stride)
    fill = float("-inf") if reduce == "max" else 0.0

    def along(vals: torch.Tensor, n: int, length: int, dim: int) -> torch.Tensor:
        lo, hi = _axis_range(n, grid.stride, grid.window, length, dev)
        out = None
        for j in range(k):
            idx = lo + j
            part = vals.index_select(dim, idx.clamp(max=n - 1))
            valid = (idx <= hi).reshape((-1, 1) if dim == 0 else (1, -1))
            part = torch.where(valid, part, torch.full((), fill, dtype=part.dtype, device=dev))
            if out is None:
                out = part
            elif reduce == "max":
                out = torch.maximum(out, part)
            else:
                out = out + part
        return out

    rows_done = along(v, grid.rows, grid.height, 0)  # (H, cols)
    full = along(rows_done, grid.cols, grid.width, 1)  # (H, W)
    if reduce == "mean":
        full = full / coverage_counts(grid, dev).to(full.dtype)
    return full.to(torch.float32)
