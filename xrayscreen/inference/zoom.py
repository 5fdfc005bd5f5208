"""Zoomed-out view: every window also scored on the scan shrunk ``zoom`` times (issue 7).

A 64 px window at the working scale sees a part of a gun or a blade; the window of
the same size centred on the same point of the scan shrunk twice sees the object and
what surrounds it (a 128 px square at the working scale). Benign clutter that is
unusual at one scale is often ordinary at the other; a large threat is unusual at
both, and a small one at least at the working scale. The same network, feature memory
and score kind score both views; each is normalised within the scan (:mod:`.scan_norm`)
and the two are combined -- by default the larger of the two (``zoom_mix="max"``: a
window is as unusual as its more unusual view), or a weighted mean
``(1 - w) * z_window + w * z_zoomed`` (``zoom_mix="mean"``) -- before the spatial
context (:mod:`.context`) and the calibration. With the max of the working-scale and the
2x-shrunk view, three trained models' window AUC on SIXray benign bags rose from
0.888-0.896 to 0.909-0.919 on the val split and from 0.886-0.895 to 0.908-0.915 on the test
split (inside threat bags 0.928-0.935 to 0.940-0.942 on test), and the detection rate at 1 %
window false alarms on benign bags by 0.03-0.07; on the project's simulated bags (small
blades) it was neutral on pool (a) (``docs/BENCHMARKS.md``, fifth session).

The bundle's ``ScoreSpec.params`` carry ``zoom`` (the shrink factor, > 1; absent or
1 = off), ``zoom_mix``, ``zoom_weight`` (``w``, for the mean) and the zoomed view's own
fallback statistics for tiny scans (``ref_median_zoom``, ``ref_scale_zoom``;
:func:`scan_norm.reference`).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xrayscreen.errors import ConfigError
from xrayscreen.imaging.representation import (
    RGB_REPRESENTATIONS,
    model_input,
    model_input_from_rgb,
    resize,
)
from xrayscreen.imaging.scan import Scan
from xrayscreen.inference import context, density, params, scan_norm, tip_evidence
from xrayscreen.inference.windows import WindowGrid

DEFAULT_WEIGHT = 0.5
MIXES = ("max", "mean")
DEFAULT_MIX = "max"
MAX_ZOOM = 8.0


def factor_of(spec: Any) -> float:
    """The shrink factor a score spec asks for (1.0 = no zoomed view).

    Raises:
        ConfigError: for a non-numeric factor or one outside [1, :data:`MAX_ZOOM`].
    """
    z = params.number(spec, "zoom", 1.0)
    if not 1.0 <= z <= MAX_ZOOM:  # also rejects NaN
        raise ConfigError(f"zoom must be in [1, {MAX_ZOOM:g}], got {params.of(spec)['zoom']!r}")
    return z


def enabled(spec: Any) -> bool:
    """Whether the spec scores a zoomed-out view too."""
    return factor_of(spec) > 1.0


def weight_of(spec: Any) -> float:
    """Weight ``w`` of the zoomed view in a ``"mean"`` mix (default :data:`DEFAULT_WEIGHT`).

    Raises:
        ConfigError: for a weight outside (0, 1].
    """
    w = params.number(spec, "zoom_weight", DEFAULT_WEIGHT)
    if not 0.0 < w <= 1.0:
        raise ConfigError(f"zoom_weight must be in (0, 1], got {params.of(spec)['zoom_weight']!r}")
    return w


def mix_of(spec: Any) -> str:
    """How the two views are combined: ``"max"`` (the larger of the two normalised
    scores; the default) or ``"mean"`` (weighted by :func:`weight_of`).

    Raises:
        ConfigError: for another name.
    """
    m = str(params.of(spec).get("zoom_mix", DEFAULT_MIX))
    if m not in MIXES:
        raise ConfigError(f"zoom_mix must be one of {MIXES}, got {m!r}")
    return m


def zoom_spec(spec: Any) -> Any:
    """A copy of ``spec`` whose scan-normalisation fallback statistics are the zoomed
    view's (``ref_median_zoom`` / ``ref_scale_zoom``), for :func:`scan_norm.normalise`."""
    own = dict(params.of(spec))
    for key in ("ref_median", "ref_scale"):
        if f"{key}_zoom" in own:
            own[key] = own[f"{key}_zoom"]
        else:
            own.pop(key, None)
    out = copy.copy(spec)
    out.params = own
    return out


def evidence(
    spec: Any,
    raw: torch.Tensor,
    raw_zoom: torch.Tensor | None,
    grid: WindowGrid,
    valid: torch.Tensor | None,
    dens: torch.Tensor | None = None,
    dens_zoom: torch.Tensor | None = None,
    head: torch.Tensor | None = None,
    head_zoom: torch.Tensor | None = None,
) -> torch.Tensor:
    """One scan's window evidence from raw scores: per-scan normalisation of each view,
    plus its weighted density z-score when the spec asks for it (:mod:`.density`) and
    its weighted projected-threat head z-score (:mod:`.tip_evidence`), the views' combination (:func:`mix_of`) when there is a zoomed view, then the
    spatial context. The engine, the evaluation and the calibration all go through
    here, so a threshold means the same everywhere.

    Args:
        spec: The bundle's ``ScoreSpec``.
        raw: ``(N,)`` raw window scores.
        raw_zoom: ``(N,)`` raw scores of the zoomed-out windows, or ``None``.
        grid: The scan's window grid.
        valid: ``(N,)`` bool, scored non-background windows (``None`` = all).
        dens: ``(N,)`` window mean opacity (:func:`density.window_means`); needed when
            the spec has a density weight.
        dens_zoom: ``(N,)`` the zoomed-out windows' mean opacity
            (:meth:`ZoomedView.densities`); needed with a zoomed view and a density weight.
        head: ``(N,)`` the projected-threat head's logit of each window (its working-scale
            column); needed when the spec has a ``tip_weight``.
        head_zoom: ``(N,)`` the zoomed-out windows' logits (the head's zoomed column);
            needed with a zoomed view and a ``tip_weight``.

    Raises:
        ConfigError: when the spec's density or head weight needs inputs that are missing.
    """
    w_dens = density.weight_of(spec)
    w_tip = tip_evidence.weight_of(spec)
    s = scan_norm.normalise(spec, raw, valid)
    if w_dens:
        if dens is None or (raw_zoom is not None and dens_zoom is None):
            raise ConfigError("this model's score adds window density: densities are missing")
        s = s + w_dens * density.normalise(dens.to(s.device), valid)
    if w_tip:
        if head is None or (raw_zoom is not None and head_zoom is None):
            raise ConfigError(
                "this model's score adds its projected-threat head: the head's logits are missing"
            )
        share = tip_evidence.window_share_of(spec) if raw_zoom is not None else 1.0
        s = s + w_tip * share * tip_evidence.reading(head.to(s.device), spec, 0, valid)
    if raw_zoom is not None:
        sz = scan_norm.normalise(zoom_spec(spec), raw_zoom.to(s.device), valid)
        if w_dens:
            sz = sz + w_dens * density.normalise(dens_zoom.to(s.device), valid)
        if w_tip:
            sz = sz + w_tip * tip_evidence.reading(head_zoom.to(s.device), spec, 1, valid)
        if mix_of(spec) == "max":
            s = torch.maximum(s, sz)
        else:
            w = weight_of(spec)
            s = (1.0 - w) * s + w * sz
    return context.apply(spec, s, grid, valid)


class ZoomedView:
    """The windows of a scan's zoomed-out view, one per window of the working grid.

    The scan (already at the working scale) is shrunk ``factor`` times with the same
    resize the working scale uses, converted to the model input once, padded with the
    representation's air, and kept on ``device``; :meth:`windows` gathers, for grid
    windows ``idx``, the window of the grid's size centred on the same scan point.

    Args:
        work: The scan at the working scale.
        grid: Its window grid.
        factor: Shrink factor (> 1).
        representation: The bundle's model input representation.
        air: ``(C,)`` air value of the representation.
        device: Where the view lives.
    """

    def __init__(
        self,
        work: Scan,
        grid: WindowGrid,
        factor: float,
        representation: str,
        air: torch.Tensor,
        device: torch.device | str = "cpu",
    ) -> None:
        if factor <= 1.0:
            raise ConfigError(f"a zoomed-out view needs a factor > 1, got {factor}")
        small_rgb = resize(work.rgb, 1.0 / factor)
        if representation in RGB_REPRESENTATIONS:
            # uint8 up, converted on the device (a quarter of the bytes of float32)
            rgb = torch.from_numpy(np.ascontiguousarray(small_rgb)).to(device)
            x = model_input_from_rgb(rgb, representation)
        else:  # raw energies: shrunk and converted on the host
            raw = None
            if work.raw is not None:
                raw = np.moveaxis(resize(np.moveaxis(work.raw, 0, -1), 1.0 / factor), -1, 0)
            small = Scan(rgb=small_rgb, kind=work.kind, raw=raw, sha256="zoom")
            x = torch.from_numpy(model_input(small, representation, None)).to(device)
        c, hc, wc = x.shape
        win = grid.window
        self.pad = win
        padded = air.to(device, x.dtype)[:, None, None].expand(c, hc + 2 * win, wc + 2 * win)
        self.padded = padded.clone()
        self.padded[:, win : win + hc, win : win + wc] = x
        self.grid = grid
        self.ry = hc / max(grid.height, 1)
        self.rx = wc / max(grid.width, 1)
        self._ar = torch.arange(win, device=device)
        self._integral: torch.Tensor | None = None
        self.representation = representation

    def _origins(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-left corners in :attr:`padded` of the zoomed windows of grid windows ``idx``."""
        g = self.grid
        idx = idx.to(self.padded.device)
        half = g.window / 2.0
        r = torch.div(idx, g.cols, rounding_mode="floor")
        q = idx % g.cols
        ys = torch.round((r * g.stride + half) * self.ry).long() - g.window // 2 + self.pad
        xs = torch.round((q * g.stride + half) * self.rx).long() - g.window // 2 + self.pad
        return ys, xs

    def windows(self, idx: torch.Tensor) -> torch.Tensor:
        """``(n, C, win, win)`` zoomed-out windows of grid windows ``idx`` (row-major)."""
        ys, xs = self._origins(idx)
        yy = (ys[:, None] + self._ar)[:, :, None]
        xx = (xs[:, None] + self._ar)[:, None, :]
        return self.padded[:, yy, xx].permute(1, 0, 2, 3)

    def densities(self, idx: torch.Tensor) -> torch.Tensor:
        """``(n,)`` mean opacity (:func:`density.opacity`) of the zoomed-out windows of
        grid windows ``idx``: box sums of one integral image of the view, no gather."""
        if self._integral is None:
            op = density.opacity(self.padded, self.representation).double()
            self._integral = F.pad(op.cumsum(0).cumsum(1), (1, 0, 1, 0))
        ys, xs = self._origins(idx)
        w = self.grid.window
        ii = self._integral
        total = ii[ys + w, xs + w] - ii[ys, xs + w] - ii[ys + w, xs] + ii[ys, xs]
        return (total / float(w * w)).float()
