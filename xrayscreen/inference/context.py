"""Spatial context: a window's evidence averaged with its neighbours' (issue 7).

A threat is a compact object usually larger than one window, so the windows around
a threat window are unusual too; an isolated unusual window in a benign bag is more
often clutter. Averaging each window's (per-scan normalised) score with its neighbours',
weighted by a tent that falls to zero at ``radius`` pixels (working scale),

    c_i = sum_j w(d_ij) s_j / sum_j w(d_ij),  w = (1 - |dy|/r)+ (1 - |dx|/r)+,

over the scored, non-background windows ``j`` (empty belt never dilutes the
evidence), raised window AUC on the SIXray val split by 0.03-0.05 on both normal
pools (``docs/BENCHMARKS.md``). The tent with ``r = window`` is what the overlap-mean
heat map already does to the pixels; ``context_px`` widens it for the window scores
themselves. The separable kernel runs on the window grid (rows x cols), on the
scores' device, in well under a millisecond for a bag.

The bundle's ``ScoreSpec.params["context_px"]`` (0 or absent: off) sets the radius;
the engine and evaluation apply it through :func:`apply` after the per-scan
normalisation and before calibration, and the calibration is fitted on held-out
normal scans scored the same way (``training/calibrate.py``), so thresholds keep
their meaning.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from xrayscreen.errors import ConfigError
from xrayscreen.inference import params
from xrayscreen.inference.windows import WindowGrid


def radius_of(spec: Any) -> float:
    """The context radius in working-scale pixels a score spec asks for (0 = off).

    Raises:
        ConfigError: for a negative or non-numeric radius.
    """
    r = params.number(spec, "context_px", 0, "a number of pixels")
    if not r >= 0:  # also rejects NaN
        raise ConfigError(f"context_px must be >= 0, got {params.of(spec)['context_px']!r}")
    return r


def tent_weights(radius: float, stride: int, device: Any = None) -> torch.Tensor:
    """1-D tent ``(1 - |k*stride| / radius)+`` for the integer grid offsets it covers."""
    reach = int((radius - 1e-9) // stride) if radius > 0 else 0
    k = torch.arange(-reach, reach + 1, device=device, dtype=torch.float32)
    return (1.0 - (k * stride).abs() / radius).clamp_min(0) if radius > 0 else k.new_ones(1)


def spread(
    scores: torch.Tensor, grid: WindowGrid, valid: torch.Tensor | None, radius: float
) -> torch.Tensor:
    """Tent-weighted mean of each window's score over the valid windows around it.

    Args:
        scores: ``(rows * cols,)`` window scores (row-major grid order).
        grid: The window grid the scores belong to.
        valid: ``(rows * cols,)`` bool, the windows whose scores count (scored, not
            background); ``None`` = all.
        radius: Tent radius in pixels; ``<= grid.stride`` leaves the scores as they are.

    Returns:
        ``(rows * cols,)`` float32; windows with no valid neighbour keep their score.
    """
    if radius <= grid.stride:
        return scores
    w = tent_weights(radius, grid.stride, scores.device)
    n = len(w)
    s = scores.float().reshape(1, 1, grid.rows, grid.cols)
    m = (
        torch.ones_like(s)
        if valid is None
        else valid.to(device=scores.device, dtype=torch.float32).reshape(s.shape)
    )
    ky, kx = w.reshape(1, 1, n, 1), w.reshape(1, 1, 1, n)
    pad = n // 2

    def conv(t: torch.Tensor) -> torch.Tensor:
        t = F.conv2d(F.pad(t, (0, 0, pad, pad)), ky)
        return F.conv2d(F.pad(t, (pad, pad, 0, 0)), kx)

    num = conv(s * m)
    den = conv(m)
    out = torch.where(den > 1e-6, num / den.clamp_min(1e-6), s)
    return out.reshape(-1)


def self_weight_of(spec: Any) -> float:
    """Weight kept on a window's own score, ``params["context_self"]`` in [0, 1) (default 0).

    Raises:
        ConfigError: outside [0, 1).
    """
    w = params.number(spec, "context_self", 0.0, "a number in [0, 1)")
    if not 0.0 <= w < 1.0:
        raise ConfigError(
            f"context_self must be in [0, 1), got {params.of(spec)['context_self']!r}"
        )
    return w


def apply(
    spec: Any, scores: torch.Tensor, grid: WindowGrid, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """The spec's spatial context on one scan's window scores (identity when off).

    With ``context_self`` = w the result is ``w * own + (1 - w) * context``: a small,
    compact object keeps part of its own evidence instead of being averaged away.
    """
    radius = radius_of(spec)
    out = spread(scores, grid, valid, radius)
    w = self_weight_of(spec)
    if w > 0 and out is not scores:
        out = w * scores.float() + (1.0 - w) * out
    return out
