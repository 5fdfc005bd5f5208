"""Per-scan score normalisation: "how unusual is this window *for this bag*".

On the SIXray dev split (issue 7, ``docs/BENCHMARKS.md``) a learned window score's level
moved with the scan as a whole -- its source, its resampling, how full the bag is --
and that offset, not the threat, dominated the comparison between bags. Expressing
each window's score as a robust z-score among the scan's own scored windows,

    z = (s - median_scan(s)) / (IQR_scan(s) / 1.349),

removes the offset: window AUC of the same model rose from 0.67 to 0.83 on benign bags
and held at 0.89-0.90 inside threat bags (val split). Background (empty-belt) windows
are never part of the statistics. A scan with fewer than :data:`MIN_WINDOWS` scored
windows has too few to estimate them; it uses the typical held-out normal scan's
median and scale, stored with the model at calibration (``ref_median``,
``ref_scale``).

The bundle's ``ScoreSpec.params["scan_norm"]`` selects the method (``"none"`` or
``"robust_z"``); calibration, the engine and evaluation all apply it through
:func:`normalise`, so thresholds mean the same everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from xrayscreen.errors import ConfigError

METHODS = ("none", "robust_z")
MIN_WINDOWS = 16
#: Smallest per-scan scale, as a fraction of the typical held-out scan's
#: (``ScoreSpec.params["scale_floor"]`` overrides it).
DEFAULT_SCALE_FLOOR = 0.05
_IQR_TO_SIGMA = 1.349


def method_of(spec: Any) -> str:
    """The scan normalisation a score spec asks for (``"none"`` when unset)."""
    m = str((getattr(spec, "params", None) or {}).get("scan_norm", "none"))
    if m not in METHODS:
        raise ConfigError(f"unknown scan normalisation {m!r}; known: {METHODS}")
    return m


def robust_stats(values: torch.Tensor) -> tuple[float, float]:
    """Median and robust scale (IQR / 1.349: the SD for normal data) of ``values``."""
    q = torch.quantile(values.double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    q1, med, q3 = (float(v) for v in q)
    return med, (q3 - q1) / _IQR_TO_SIGMA


def robust_z(
    values: torch.Tensor, valid: torch.Tensor | None, floor: float, what: str
) -> torch.Tensor:
    """Robust z-score of one scan's per-window values among its ``valid`` windows, with
    the scale floored at ``floor`` (evidence terms beside the model's: window density,
    the projected-threat head's logits).

    Zero everywhere when fewer than :data:`MIN_WINDOWS` windows are valid.

    Raises:
        ConfigError: ``"<what> are not finite"`` for non-finite statistics.
    """
    vals = values if valid is None else values[valid]
    if vals.numel() < MIN_WINDOWS:
        return torch.zeros_like(values, dtype=torch.float32)
    med, scale = robust_stats(vals.detach().float().cpu())
    scale = max(scale, floor)
    if not (np.isfinite(med) and np.isfinite(scale)):
        raise ConfigError(f"{what} are not finite")
    return ((values.float() - med) / scale).float()


def normalise(spec: Any, raw: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Apply the spec's scan normalisation to one scan's window scores.

    Args:
        spec: The bundle's ``ScoreSpec``.
        raw: ``(N,)`` window scores of ONE scan (any device).
        valid: ``(N,)`` bool, the windows the statistics come from (scored, not
            background); ``None`` = all.

    Returns:
        ``(N,)`` float32 normalised scores (a copy; ``raw`` itself when the method is
        ``"none"``). Entries outside ``valid`` are transformed the same way.
    """
    method = method_of(spec)
    if method == "none":
        return raw
    vals = raw if valid is None else raw[valid]
    params = getattr(spec, "params", {}) or {}
    if vals.numel() >= MIN_WINDOWS:
        med, scale = robust_stats(vals.detach().float().cpu())
    else:
        med = float(params.get("ref_median", 0.0))
        scale = float(params.get("ref_scale", 1.0))
    ref = float(params.get("ref_scale", 0.0))
    # A flat scan (all windows alike) must not blow up: floor the scale at a fraction
    # of the typical normal scan's, or an absolute epsilon without one.
    floor = float(params.get("scale_floor", DEFAULT_SCALE_FLOOR))
    scale = max(scale, floor * ref if ref > 0 else 0.0, 1e-9)
    return ((raw.float() - med) / scale).float()


def reference(per_scan: Sequence[np.ndarray]) -> dict[str, float]:
    """Typical (median over scans) per-scan median and scale of held-out normal scans'
    RAW scores, the fallback for scans with too few windows. When no scan has
    :data:`MIN_WINDOWS` windows (tiny pictures), the pooled windows of all scans stand in.

    Raises:
        ConfigError: with fewer than 2 windows in all.
    """
    meds, scales = [], []
    for s in per_scan:
        if len(s) >= MIN_WINDOWS:
            med, scale = robust_stats(torch.as_tensor(np.asarray(s, dtype=np.float64)))
            meds.append(med)
            scales.append(scale)
    if not meds:
        pooled = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s in per_scan] or [[]])
        if pooled.size < 2:
            raise ConfigError("scan normalisation needs at least 2 held-out normal windows")
        med, scale = robust_stats(torch.as_tensor(pooled))
        meds, scales = [med], [scale]
    return {"ref_median": float(np.median(meds)), "ref_scale": float(np.median(scales))}
