"""Window density as extra evidence: "how dense is this window for this bag" (issue 7).

GANomaly's evidence is how unlike the normal training bags a window is; an operator
also reads how *dense* it is. On SIXray, mean darkness normalised within the scan (with the
same zoomed-out view and context) ranks threat bags better than GANomaly (test bag AUC
0.923) but windows worse (pool (a) window AUC 0.878 against 0.907-0.915). With
``ScoreSpec.params["density_weight"] = w > 0`` each view's evidence becomes

    z_model + w * z_density,

``z_density`` = the window's mean opacity (``1 - transmission``, channel mean; for the
RGB representations exactly the mean-darkness floor) as a robust z-score among the
scan's own scored windows, like :mod:`.scan_norm` does for the model score. With the
zoomed-out view (:mod:`.zoom`) the zoomed window's opacity goes with the zoomed
score. The combination then goes through the spatial context and calibration as
before (:func:`xrayscreen.inference.zoom.evidence`). With w = 0.5 (the X-ray default), three
models on the SIXray test split: window AUC 0.907-0.915 -> 0.913-0.917 on benign bags, threat
bags alarmed on the threat at 5 % of benign bags 59.5-73.0 % -> 75.7-78.4 %, pixel AUROC
0.929-0.933 -> 0.936-0.941; on the project's simulated bags, whose thin blades are no denser
than the clutter, the default model's window AUC fell 0.946 -> 0.927 (``docs/BENCHMARKS.md``,
sixth session).

A scan with fewer than :data:`scan_norm.MIN_WINDOWS` scored windows has no "for this
bag" to speak of: its density term is zero (the model evidence stands alone).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from xrayscreen.imaging.representation import attenuation_ceiling
from xrayscreen.inference import params, scan_norm
from xrayscreen.inference.windows import WindowGrid

KEY = "density_weight"
MAX_WEIGHT = 10.0
#: Smallest per-scan opacity scale (opacity is 0..1; SIXray scans' own robust scale
#: was 0.08-0.33, median 0.17): a nearly uniform scan must not turn a slightly denser
#: window into an alarm.
SCALE_FLOOR = 0.02


def weight_of(spec: Any) -> float:
    """The density weight ``w`` a score spec asks for (0.0 = off).

    Raises:
        ConfigError: for a non-numeric weight or one outside [0, :data:`MAX_WEIGHT`].
    """
    return params.weight(spec, KEY, MAX_WEIGHT)


def enabled(spec: Any) -> bool:
    """Whether the spec adds window density to the model's evidence."""
    return weight_of(spec) > 0.0


def opacity(x: torch.Tensor, representation: str) -> torch.Tensor:
    """Per-pixel opacity ``1 - transmission`` (channel mean) of a model input.

    Args:
        x: ``(..., C, H, W)`` model input in [-1, 1] (:func:`representation.model_input`).
        representation: Its representation name.

    Returns:
        ``(..., H, W)`` float32 in [0, 1]: 0 = air, 1 = opaque.
    """
    ceiling = attenuation_ceiling(representation)
    # T = exp(-(x + 1) / 2 * ceiling); "rgb" holds the display grey level, which is the
    # transmission the rendering shows: T = (x + 1) / 2. In place on one temporary
    # (10x faster on a whole scan than the plain expression's chain of temporaries).
    if ceiling is None:
        t = x.float().add(1.0).mul_(0.5)
    else:
        t = x.float().mul(-0.5 * ceiling).sub_(0.5 * ceiling).exp_()
    c = t.shape[-3]
    return t.sum(dim=-3).mul_(-1.0 / c).add_(1.0)


def window_means(padded: torch.Tensor, grid: WindowGrid, representation: str) -> torch.Tensor:
    """Mean opacity of every window of a grid, from its padded model input.

    Args:
        padded: ``(C, H, W)`` model input padded with air to (at least) the grid's
            padded shape; a strip of whole window rows works the same way.
        grid: The window grid (row-major windows).
        representation: The input's representation.

    Returns:
        ``(rows * cols,)`` float32, on ``padded``'s device.
    """
    op = opacity(padded, representation)[None, None]
    return F.avg_pool2d(op, grid.window, grid.stride)[0, 0, : grid.rows, : grid.cols].flatten()


def normalise(values: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Robust z-score of one scan's window densities among its ``valid`` windows.

    Zero everywhere when fewer than :data:`scan_norm.MIN_WINDOWS` windows are valid.
    """
    return scan_norm.robust_z(values, valid, SCALE_FLOOR, "window densities")
