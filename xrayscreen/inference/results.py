"""Typed results of the scoring engine (host-side numpy, no torch tensors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch

from xrayscreen.inference.windows import WindowGrid


class WindowOutputs(NamedTuple):
    """Scores of a batch of windows (tensors on the engine's device).

    Attributes:
        latent: ``(N,)`` float32 raw score per the bundle's ``ScoreSpec`` (the name is
            historical: for ``kind="residual"`` bundles it is the residual score).
        residual: ``(N, w, w)`` float32 ``|x - x_hat|`` averaged over channels, or
            ``None`` when not requested.
        head: ``(N, V)`` float32 logits of the bundle's projected-threat head, one
            column per view (:data:`xrayscreen.model.tip_head.VIEWS`), or ``None`` when
            the bundle's score does not use one.
    """

    latent: torch.Tensor
    residual: torch.Tensor | None
    head: torch.Tensor | None = None


@dataclass
class ScanResult:
    """Everything the engine computed for one scan.

    Maps are at the WORKING scale (the bundle's pixel scale); use
    :meth:`map_at_scan_resolution` for the original scan's pixel grid.

    Attributes:
        window_origins: ``(N, 2)`` int (y, x) window origins at working scale.
        window_scores: ``(N,)`` float32 uncalibrated scores of the bundle's score kind,
            after its per-scan normalisation (:mod:`~xrayscreen.inference.scan_norm`)
            and spatial context (:mod:`~xrayscreen.inference.context`) when it has
            them; background windows: the
            calibration's lowest normal score, or 0 without calibration (not
            meaningful: use ``background``).
        window_calibrated: ``(N,)`` float32 calibrated scores (``-log10`` of the
            normal-window exceedance; equal to the raw scores when the bundle has no
            calibration). Background windows get the minimum (0 with calibration).
        background: ``(N,)`` bool, True for empty-belt windows (never scored).
        latent_map: ``(H, W)`` float32 calibrated score per pixel (mean, or max, of
            the windows covering it, see ``reduce``).
        residual_map: ``(H, W)`` float32 RAW reconstruction residual ``|x - x_hat|``
            (model-input units, 0..2) averaged over covering windows, always the mean
            (the bundle calibrates only its window score). ``None`` in partial
            results and when residuals were not requested.
        scale_factor: Working / original pixel scale (e.g. 800 / 1000 = 0.8).
        grid: The window grid at working scale.
        scan_shape: ``(H0, W0)`` of the original scan.
        model_id: Id of the bundle that scored the scan.
        device: Device the scoring ran on (``"cpu"``, ``"cuda:0"``).
        reduce: ``"mean"`` or ``"max"`` (how ``latent_map`` was folded).
        default_threshold: The bundle's default threshold in calibrated units, if any.
        timings: Seconds per stage plus ``windows_per_s`` (scored windows per second
            of forward time) and counts.
        complete: False for the partial results yielded while scoring.
        raw_scores: ``(N,)`` float32 raw window scores of the bundle's score kind
            (before per-scan normalisation and context); ``None`` in partial results.
        raw_zoom_scores: The same for the zoomed-out view (:mod:`.zoom`), or ``None``
            when the bundle has none.
        raw_density: ``(N,)`` float32 window mean opacity (:mod:`.density`) when the
            bundle's score adds window density, else ``None``.
        raw_density_zoom: The same for the zoomed-out windows.
        raw_head: ``(N,)`` float32 logits of the projected-threat head (working-scale
            column) when the bundle's score adds it (:mod:`.tip_evidence`), else ``None``.
        raw_head_zoom: The zoomed-out windows' logits (the head's zoomed column).
    """

    window_origins: np.ndarray
    window_scores: np.ndarray
    window_calibrated: np.ndarray
    background: np.ndarray
    latent_map: np.ndarray
    residual_map: np.ndarray | None
    scale_factor: float
    grid: WindowGrid
    scan_shape: tuple[int, int]
    model_id: str
    device: str
    reduce: str = "mean"
    default_threshold: float | None = None
    timings: dict[str, Any] = field(default_factory=dict)
    complete: bool = True
    raw_scores: np.ndarray | None = None
    raw_zoom_scores: np.ndarray | None = None
    raw_density: np.ndarray | None = None
    raw_density_zoom: np.ndarray | None = None
    raw_head: np.ndarray | None = None
    raw_head_zoom: np.ndarray | None = None

    @property
    def n_scored(self) -> int:
        """Windows that went through the model."""
        return int((~self.background).sum())

    @property
    def peak(self) -> float:
        """Highest calibrated window score (the bag-level score)."""
        return float(self.window_calibrated.max()) if self.window_calibrated.size else 0.0

    def map_at_scan_resolution(self, kind: str = "latent") -> np.ndarray:
        """A map resized to the original scan's ``(H0, W0)`` (bilinear), for overlays.

        Args:
            kind: ``"latent"`` or ``"residual"``.

        Raises:
            ValueError: unknown kind, or a residual map that was not computed.
        """
        if kind == "latent":
            m = self.latent_map
        elif kind == "residual":
            if self.residual_map is None:
                raise ValueError("this result has no residual map (partial result?)")
            m = self.residual_map
        else:
            raise ValueError(f"kind must be 'latent' or 'residual', got {kind!r}")
        h0, w0 = self.scan_shape
        if m.shape == (h0, w0):
            return m
        return cv2.resize(m, (w0, h0), interpolation=cv2.INTER_LINEAR)

    def summary(self) -> dict[str, Any]:
        """JSON-able per-scan summary (no arrays)."""
        return {
            "model_id": self.model_id,
            "device": self.device,
            "scan_shape": list(self.scan_shape),
            "working_shape": [self.grid.height, self.grid.width],
            "scale_factor": self.scale_factor,
            "window": self.grid.window,
            "stride": self.grid.stride,
            "n_windows": len(self.grid),
            "n_scored": self.n_scored,
            "peak": self.peak,
            "reduce": self.reduce,
            "default_threshold": self.default_threshold,
            "timings": dict(self.timings),
        }


class ScoreProgress(NamedTuple):
    """One progress report of :func:`score_scan`.

    Attributes:
        done: Windows scored so far (foreground windows only).
        total: Windows the model has to score (background windows excluded).
        partial: A partial :class:`ScanResult` (unscored windows at the minimum),
            emitted at most every ``progress_every`` seconds, else ``None``.
    """

    done: int
    total: int
    partial: ScanResult | None
