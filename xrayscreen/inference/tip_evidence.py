"""The projected-threat head's logit as extra window evidence (issue 7).

With ``ScoreSpec.params["tip_weight"] = w > 0`` (and a :class:`~xrayscreen.model.tip_head.TipHead`
in the bundle) each view's evidence becomes

    z_model [+ w_density * z_density] + w * z_head,

``z_head`` = the head's logit for that view as a robust z-score among the scan's own
scored windows (the same "unusual for this bag" reading as every other term), before
the views' combination, the spatial context and the calibration
(:func:`xrayscreen.inference.zoom.evidence`); beside a zoomed-out view the working-scale
view's weight is ``w`` times ``tip_window_share``. The head is trained at training time on
simulated threats projected into the normal training bags, never on a real threat
(``training.tip_head``). Measured in ``docs/BENCHMARKS.md`` (issue 7, ninth session).

A scan with fewer than :data:`scan_norm.MIN_WINDOWS` scored windows gets no head term.

With ``tip_abs_share`` = a > 0 a share ``a`` of the head's weight goes to its logit read
ABSOLUTELY, ``(logit - loc) / scale`` (per view: the median and 1.4826 x MAD of the
logits of the held-out normal training scans' windows, fitted when the score is
calibrated), and ``1 - a`` to the within-scan z (:func:`reading`). The within-scan z
forgets how threat-like a bag's most threat-like window is next to other bags', which is
what a bag-level alarm asks (issue 7, twelfth session).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from xrayscreen.errors import ConfigError
from xrayscreen.inference import params, scan_norm

KEY = "tip_weight"
#: Share of ``tip_weight`` the working-scale view's head gets when the score has a
#: zoomed-out view (that view's head always gets the whole weight); 1 when unset.
WINDOW_SHARE_KEY = "tip_window_share"
#: Side of the grid of encoder-map cells the head reads beside the pooled embedding
#: (:func:`xrayscreen.model.tip_head.head_input`); 0 (unset) = the embedding alone.
CELLS_KEY = "tip_cells"
MAX_CELLS = 8
#: Whether the head also reads each grid cell's maximum (unset = False).
CELL_MAX_KEY = "tip_cell_max"
#: Side of the max-pooled encoder map a convolutional head reads
#: (:class:`xrayscreen.model.tip_head.ConvTipHead`); 0 (unset) = an MLP head.
CONV_KEY = "tip_conv"
MAX_CONV = 16
#: Share of the head's weight on its absolute reading (unset = 0: the within-scan z
#: alone) and its per-view location and scale, fitted on the held-out normal scans
#: (:func:`absolute_reference`).
ABS_SHARE_KEY = "tip_abs_share"
ABS_LOC_KEY = "tip_abs_loc"
ABS_SCALE_KEY = "tip_abs_scale"
MAX_WEIGHT = 10.0
#: Smallest per-scan logit scale: a scan whose windows the head finds all alike must not
#: turn a slightly higher logit into an alarm (the same floor the density term uses).
SCALE_FLOOR = 0.02


def weight_of(spec: Any) -> float:
    """The head's weight ``w`` a score spec asks for (0.0 = off).

    Raises:
        ConfigError: for a non-numeric weight or one outside [0, :data:`MAX_WEIGHT`].
    """
    return params.weight(spec, KEY, MAX_WEIGHT)


def window_share_of(spec: Any) -> float:
    """The share of the head's weight the working-scale view gets beside a zoomed-out
    view (1.0 when unset).

    Raises:
        ConfigError: for a non-numeric share or one outside [0, 1].
    """
    share = params.number(spec, WINDOW_SHARE_KEY, 1.0, "a share in [0, 1]")
    if not 0.0 <= share <= 1.0:  # also rejects NaN
        raise ConfigError(f"{WINDOW_SHARE_KEY} must be in [0, 1], got {share!r}")
    return share


def cells_of(spec: Any) -> int:
    """The grid side the head reads (0 when unset: the pooled embedding alone).

    Raises:
        ConfigError: for a non-integer side or one outside [0, :data:`MAX_CELLS`].
    """
    return _side(spec, CELLS_KEY, MAX_CELLS, "cells")


def _side(spec: Any, key: str, maximum: int, what: str) -> int:
    """``params[key]`` as a whole number in [0, ``maximum``] (0 when unset).

    Raises:
        ConfigError: for a non-integer value or one outside the range.
    """
    side = params.number(spec, key, 0, f"a whole number of {what}")
    if not (0 <= side <= maximum and float(side).is_integer()):
        raise ConfigError(f"{key} must be a whole number in [0, {maximum}], got {side!r}")
    return int(side)


def cell_max_of(spec: Any) -> bool:
    """Whether the head also reads each grid cell's maximum (False when unset).

    Raises:
        ConfigError: for a value that is not a boolean, or one set without a grid.
    """
    value = params.of(spec).get(CELL_MAX_KEY, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{CELL_MAX_KEY} must be true or false, got {value!r}")
    if value and cells_of(spec) == 0:
        raise ConfigError(f"{CELL_MAX_KEY} needs a grid ({CELLS_KEY} > 0)")
    return value


def conv_of(spec: Any) -> int:
    """The side of the pooled encoder map a convolutional head reads (0 when unset: the
    head is an MLP on the embedding and the grid).

    Raises:
        ConfigError: for a non-integer side, one outside [0, :data:`MAX_CONV`], or one
            set together with a grid (the two heads read different inputs).
    """
    conv = _side(spec, CONV_KEY, MAX_CONV, "positions")
    if conv and cells_of(spec):
        raise ConfigError(f"{CONV_KEY} and {CELLS_KEY} are two kinds of head; set one")
    return conv


def abs_share_of(spec: Any) -> float:
    """The share of the head's weight on its absolute reading (0.0 when unset).

    Raises:
        ConfigError: for a non-numeric share or one outside [0, 1].
    """
    share = params.number(spec, ABS_SHARE_KEY, 0.0, "a share in [0, 1]")
    if not 0.0 <= share <= 1.0:  # also rejects NaN
        raise ConfigError(f"{ABS_SHARE_KEY} must be in [0, 1], got {share!r}")
    return share


def reading(logits: torch.Tensor, spec: Any, view: int, valid: torch.Tensor | None) -> torch.Tensor:
    """The head's evidence for one view: its within-scan z (:func:`normalise`) and its
    absolute reading (:func:`absolute`), weighted ``1 - a`` and ``a`` by the spec's
    ``tip_abs_share`` ``a`` (a part with no weight is not computed).

    Raises:
        ConfigError: for non-finite logits or a missing absolute reference.
    """
    a = abs_share_of(spec)
    out = torch.zeros_like(logits, dtype=torch.float32)
    if a < 1.0:
        out = out + (1.0 - a) * normalise(logits, valid)
    if a > 0.0:
        out = out + a * absolute(logits, spec, view, valid)
    return out


def absolute(
    logits: torch.Tensor, spec: Any, view: int, valid: torch.Tensor | None
) -> torch.Tensor:
    """The head's logits of one view read absolutely: ``(logit - loc) / scale`` with the
    spec's fitted reference, 0 outside ``valid``.

    Raises:
        ConfigError: when the reference is missing or malformed (not fitted: a bundle
            that asks for the reading must carry it).
    """
    p = params.of(spec)
    try:
        loc = float(p[ABS_LOC_KEY][view])
        scale = float(p[ABS_SCALE_KEY][view])
    except (KeyError, IndexError, TypeError, ValueError):
        raise ConfigError(
            f"{ABS_SHARE_KEY} needs {ABS_LOC_KEY} and {ABS_SCALE_KEY} for every view "
            "(fitted on held-out scans)"
        ) from None
    if not (math.isfinite(loc) and math.isfinite(scale) and scale > 0):
        raise ConfigError(f"{ABS_LOC_KEY} / {ABS_SCALE_KEY} must be finite, the scale > 0")
    out = (logits.float() - loc) / scale
    return out if valid is None else torch.where(valid.to(out.device), out, torch.zeros_like(out))


def absolute_reference(per_view: list[list[torch.Tensor]]) -> dict[str, list[float]]:
    """The absolute reading's per-view location and scale from held-out normal windows'
    logits (``per_view[v]``: one tensor per scan): median and 1.4826 x MAD, floored at
    :data:`SCALE_FLOOR`.

    Raises:
        ConfigError: for a view without logits.
    """
    loc, scale = [], []
    for parts in per_view:
        x = torch.cat([t.float().flatten() for t in parts]) if parts else torch.zeros(0)
        if not len(x):
            raise ConfigError("the head's absolute reading needs held-out windows to fit on")
        med = float(x.median())
        mad = float((x - med).abs().median()) * 1.4826
        loc.append(round(med, 6))
        scale.append(round(max(mad, SCALE_FLOOR), 6))
    return {ABS_LOC_KEY: loc, ABS_SCALE_KEY: scale}


def enabled(spec: Any) -> bool:
    """Whether the spec adds the projected-threat head's evidence."""
    return weight_of(spec) > 0.0


def normalise(logits: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Robust z-score of one scan's head logits among its ``valid`` windows.

    Zero everywhere when fewer than :data:`scan_norm.MIN_WINDOWS` windows are valid.

    Raises:
        ConfigError: for non-finite logits.
    """
    return scan_norm.robust_z(logits, valid, SCALE_FLOOR, "the projected-threat head's logits")
