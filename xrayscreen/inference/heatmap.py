"""Heat-map rendering for files and reports (the GUI draws its own overlay).

Calibrated maps are in ``-log10`` exceedance units, so one colour scale reads the
same for every model: 0 (ordinary) is transparent, the threshold sits at the
middle of the colour map and twice the threshold saturates.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from xrayscreen.inference.regions import Region

BOX_COLOUR_RGB = (255, 0, 0)


def colourise(heat: np.ndarray, vmax: float, colormap: int = cv2.COLORMAP_TURBO) -> np.ndarray:
    """``(H, W)`` heat -> ``(H, W, 3)`` uint8 RGB through an OpenCV colour map, 0..vmax."""
    scale = 255.0 / max(float(vmax), 1e-12)
    u8 = np.clip(np.asarray(heat, np.float32) * scale, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(u8, colormap), cv2.COLOR_BGR2RGB)


def render_overlay(
    rgb: np.ndarray,
    heat: np.ndarray,
    threshold: float,
    regions: Sequence[Region] = (),
    *,
    max_alpha: float = 0.6,
) -> np.ndarray:
    """Blend a heat map over a scan and draw the alarm boxes.

    Args:
        rgb: ``(H, W, 3)`` uint8 scan rendering.
        heat: ``(H, W)`` heat map at the scan's resolution (calibrated units).
        threshold: Alarm threshold; colours saturate at ``2 * threshold`` and opacity
            grows with the heat up to ``max_alpha`` at the threshold.
        regions: Boxes to draw (original scan pixels).
        max_alpha: Largest heat-map opacity.

    Returns:
        ``(H, W, 3)`` uint8 RGB image.
    """
    if heat.shape != rgb.shape[:2]:
        raise ValueError(f"heat map {heat.shape} does not match the scan {rgb.shape[:2]}")
    t = max(float(threshold), 1e-6)
    colour = colourise(heat, 2.0 * t).astype(np.float32)
    alpha = (np.clip(np.asarray(heat, np.float32) / t, 0.0, 1.0) * max_alpha)[..., None]
    out = rgb.astype(np.float32) * (1.0 - alpha) + colour * alpha
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    thick = max(1, round(max(rgb.shape[:2]) / 400))
    for r in regions:
        cv2.rectangle(out, (r.x0, r.y0), (r.x1 - 1, r.y1 - 1), BOX_COLOUR_RGB, thick)
    return out


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 image."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()
