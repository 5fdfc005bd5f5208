"""Heat-map overlay image: quantise once per map, recolour per threshold.

Moving the threshold must redraw within a frame, so the expensive part (turning
the float map into 8-bit levels) happens once per heat map; a threshold, opacity
or colour-map change only rebuilds a 256-entry ARGB table and does one table
lookup per pixel at the working scale (the map is scaled up on screen by the
graphics item, not by us).
"""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QImage, QPixmap

# Overlay pixels beyond this many are not worth drawing: heat maps are built from
# windows at a stride of >= 8 px, so a coarser overlay loses no detail.
MAX_OVERLAY_PIXELS = 500_000
COLOUR_MAPS = ("inferno", "magma", "turbo", "jet", "hot", "viridis")
# Below the threshold the heat stays visible but faint, so operators see context
# without it competing with the alarm.
BELOW_THRESHOLD_ALPHA = 0.30


def colour_table(name: str) -> np.ndarray:
    """``(256, 3)`` uint8 RGB of a matplotlib colour map (``inferno`` if unknown)."""
    from matplotlib import colormaps

    cmap = colormaps[name] if name in colormaps else colormaps["inferno"]
    return (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)


class HeatOverlay:
    """Holds one quantised heat map and renders it for any threshold/opacity/colour map.

    Args:
        heat: ``(H, W)`` float heat map in calibrated units (working scale).
        top: Value mapped to the top colour; defaults to the map's maximum.
        thresholded: The map is in the threshold's (calibrated) units, so levels at
            or above the threshold are drawn opaque. False for maps in other units
            (the raw residual), which are drawn with a plain opacity ramp.
    """

    def __init__(
        self, heat: np.ndarray, top: float | None = None, thresholded: bool = True
    ) -> None:
        self.thresholded = thresholded
        heat = np.asarray(heat, dtype=np.float32)
        finite = heat[np.isfinite(heat)]
        hi = float(top if top is not None else (finite.max() if finite.size else 1.0))
        self.top = max(hi, 1e-6)
        heat = np.nan_to_num(heat, nan=0.0, posinf=self.top, neginf=0.0)
        k = int(np.ceil(np.sqrt(heat.size / MAX_OVERLAY_PIXELS)))
        if k > 1:  # the graphics item stretches the overlay back over the scan
            heat = reduce_max(heat, k)
        self.shape = heat.shape
        levels = heat * (255.0 / self.top)
        self.levels = np.ascontiguousarray(np.clip(levels, 0, 255).astype(np.uint8))
        self._cmap_name = ""
        self._cmap = np.zeros((256, 3), np.uint8)

    def level_of(self, value: float) -> int:
        """The 0..255 level a calibrated value falls on (values above ``top`` -> 256)."""
        if value > self.top:
            return 256
        return int(np.ceil(max(value, 0.0) * 255.0 / self.top))

    def table(self, threshold: float, opacity: float, colour_map: str) -> np.ndarray:
        """``(256,)`` uint32 premultiplied ARGB for each level."""
        if colour_map != self._cmap_name:
            self._cmap, self._cmap_name = colour_table(colour_map), colour_map
        ramp = np.linspace(0.0, 1.0, 256)
        if self.thresholded:
            alpha = np.where(
                np.arange(256) >= self.level_of(threshold), 1.0, BELOW_THRESHOLD_ALPHA * ramp
            )
        else:
            alpha = np.sqrt(ramp)
        alpha = alpha * float(np.clip(opacity, 0.0, 1.0))
        a = (alpha * 255.0 + 0.5).astype(np.uint32)
        rgb = (self._cmap.astype(np.float64) * alpha[:, None] + 0.5).astype(np.uint32)
        return (a << 24) | (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]

    def argb(self, threshold: float, opacity: float, colour_map: str) -> np.ndarray:
        """``(H, W)`` uint32 premultiplied ARGB image."""
        return self.table(threshold, opacity, colour_map)[self.levels]

    def pixmap(self, threshold: float, opacity: float, colour_map: str) -> QPixmap:
        """The overlay as a pixmap at the heat map's own resolution."""
        img = self.argb(threshold, opacity, colour_map)
        h, w = img.shape
        qimg = QImage(img.data, w, h, 4 * w, QImage.Format.Format_ARGB32_Premultiplied)
        return QPixmap.fromImage(qimg)  # copies, so ``img`` may be freed afterwards


def reduce_max(a: np.ndarray, k: int) -> np.ndarray:
    """Max over ``k x k`` blocks (edges padded with the minimum), keeping every peak."""
    h, w = a.shape
    ph, pw = -h % k, -w % k
    if ph or pw:
        a = np.pad(a, ((0, ph), (0, pw)), constant_values=float(a.min()))
    return a.reshape(a.shape[0] // k, k, a.shape[1] // k, k).max(axis=(1, 3))
