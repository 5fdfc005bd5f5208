"""Display modes and the enhancement controls operators expect.

:func:`render` is called on every slider move, so everything per-scan that does
not depend on the controls (material classes, quantised attenuation, hue and
saturation, grey levels) is computed once and cached; a render is then a few
table look-ups (``cv2.LUT`` / fancy indexing) and one colour-space conversion.

Modes work on every scan kind. Dual-energy scans use their energies; for
pseudo-colour composites (SIXray-style RGB exports) the material class is read
from the hue (orange organic, green mixed, blue metal) and attenuation from the
brightness (``-ln`` of the largest channel), which is what a scanner encoded
there; single-energy scans have no material information, so the stripping modes
are not offered for them (see :func:`available_modes`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from xrayscreen.errors import ConfigError
from xrayscreen.imaging import material
from xrayscreen.imaging.scan import Scan

MODES: list[str] = [
    "false_colour",
    "high",
    "low",
    "grey",
    "organic",
    "inorganic",
    "metal",
    "high_pen",
    "low_pen",
    "negative",
    "edges",
]

MODE_LABELS = {
    "false_colour": "False colour",
    "high": "High energy",
    "low": "Low energy",
    "grey": "Greyscale",
    "organic": "Organic only",
    "inorganic": "Inorganic only",
    "metal": "Metal only",
    "high_pen": "High penetration",
    "low_pen": "Low penetration",
    "negative": "Negative",
    "edges": "Edge enhancement",
}

_STRIP_MODES = ("organic", "inorganic", "metal")
_KEEP = {
    "organic": (material.CLASS_ORGANIC,),
    "inorganic": (material.CLASS_MIXED, material.CLASS_METAL),
    "metal": (material.CLASS_METAL, material.CLASS_IMPENETRABLE),
}
# Attenuation (-ln I) is quantised into this many steps over 0.._A_TOP for the LUTs.
_A_STEPS = 1024
_A_TOP = 8.0
# Penetration windows over the attenuation -ln(I_H): high penetration looks
# through dense objects; low penetration spreads thin, light objects.
_WINDOWS = {"high_pen": (1.2, 6.0), "low_pen": (0.0, 1.2)}
# Stripped-away material stays as a faint grey ghost so the bag keeps its shape.
_GHOST = 0.3


@dataclass
class _Derived:
    """Control-independent per-scan data."""

    grey: np.ndarray  # (H, W) uint8 protocol grey
    high: np.ndarray  # (H, W) uint8 high-energy (or best available) transmission
    low: np.ndarray  # (H, W) uint8 low-energy (or best available) transmission
    a_index: np.ndarray  # (H, W) uint16 quantised attenuation
    hsv: np.ndarray  # (H, W, 3) uint8 HSV (OpenCV: H 0..179) of the false colour
    classes: np.ndarray | None  # (H, W) uint8 material classes, None when unknown
    ghost: np.ndarray | None = None  # (H, W, 3) faded grey for the stripping modes


_CACHE: OrderedDict[tuple[int, str], _Derived] = OrderedDict()
_CACHE_SIZE = 4
_CACHE_LOCK = threading.Lock()  # render may be called from GUI worker threads


def available_modes(scan: Scan) -> list[str]:
    """Modes that make sense for ``scan`` (stripping needs material information)."""
    if scan.raw is not None and scan.raw.shape[0] == 1:
        return [m for m in MODES if m not in _STRIP_MODES]
    return list(MODES)


def render(
    scan: Scan,
    mode: str = "false_colour",
    *,
    brightness: float = 0.0,
    contrast: float = 1.0,
    gamma: float = 1.0,
) -> np.ndarray:
    """Render ``scan`` for display.

    Args:
        scan: Any scan.
        mode: One of :data:`MODES`. Stripping modes on a single-energy scan
            (no material information) fall back to greyscale.
        brightness: Added to the 0..1 intensity after contrast (-1..1).
        contrast: Gain around mid-grey (> 0; 1 = unchanged).
        gamma: Display gamma (> 0; > 1 brightens mid-tones).

    Returns:
        ``(H, W, 3)`` uint8 RGB.

    Raises:
        ConfigError: for an unknown mode or non-positive contrast/gamma.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown display mode {mode!r}; known: {', '.join(MODES)}")
    if not (contrast > 0 and gamma > 0) or not np.isfinite([brightness, contrast, gamma]).all():
        raise ConfigError(f"contrast and gamma must be positive numbers (got {contrast}, {gamma})")
    img = _render_mode(scan, mode)
    if brightness == 0.0 and contrast == 1.0 and gamma == 1.0:
        return img
    return cv2.LUT(img, tone_lut(brightness, contrast, gamma))


def tone_lut(brightness: float, contrast: float, gamma: float) -> np.ndarray:
    """The 256-entry uint8 table applying gamma, then contrast, then brightness."""
    v = np.arange(256, dtype=np.float64) / 255.0
    v = v ** (1.0 / gamma)
    v = (v - 0.5) * contrast + 0.5 + brightness
    return (np.clip(v, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _render_mode(scan: Scan, mode: str) -> np.ndarray:
    if mode == "false_colour":
        return scan.rgb
    if mode == "negative":
        return cv2.bitwise_not(scan.rgb)
    if mode == "edges":
        return _edges(scan.rgb)
    d = derived(scan)
    if mode in ("grey", "high", "low"):
        g = {"grey": d.grey, "high": d.high, "low": d.low}[mode]
        return cv2.merge([g, g, g])
    if mode in _WINDOWS:
        return _penetration(d, *_WINDOWS[mode])
    # Stripping.
    if d.classes is None:
        return cv2.merge([d.grey, d.grey, d.grey])
    keep_lut = np.zeros(256, dtype=np.uint8)
    keep_lut[list(_KEEP[mode])] = 255
    mask = cv2.LUT(d.classes, keep_lut)
    out = _ghost(d).copy()
    cv2.copyTo(scan.rgb, mask, out)
    return out


def _ghost(d: _Derived) -> np.ndarray:
    """Stripped-away background: the grey image faded towards white (cached)."""
    if d.ghost is None:
        lut = (255 - (255 - np.arange(256)) * _GHOST + 0.5).astype(np.uint8)
        g = cv2.LUT(d.grey, lut)
        d.ghost = cv2.merge([g, g, g])
    return d.ghost


def _edges(rgb: np.ndarray) -> np.ndarray:
    """Unsharp masking: adds 1.5x the detail above a 2-pixel Gaussian blur."""
    blur = cv2.GaussianBlur(rgb, (0, 0), 2.0)
    return cv2.addWeighted(rgb, 2.5, blur, -1.5, 0)


def _penetration(d: _Derived, a0: float, a1: float) -> np.ndarray:
    """Keep hue and saturation; brightness from attenuation windowed to ``[a0, a1]``."""
    a = np.linspace(0.0, _A_TOP, _A_STEPS)
    v_lut = (np.clip(1.0 - (a - a0) / (a1 - a0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    # Air stays white (no hue); beyond the window's far end everything is black.
    hsv = d.hsv.copy()
    hsv[:, :, 2] = v_lut[d.a_index]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def derived(scan: Scan) -> _Derived:
    """Cached control-independent data for ``scan`` (the last few scans are kept)."""
    key = (id(scan), scan.sha256)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit.grey.shape == scan.shape:
            _CACHE.move_to_end(key)
            return hit
    d = _compute(scan)
    with _CACHE_LOCK:
        _CACHE[key] = d
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return d


def _to_u8(t: np.ndarray) -> np.ndarray:
    return (np.clip(t, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _a_index(a: np.ndarray) -> np.ndarray:
    idx = np.clip(a, 0.0, _A_TOP) * ((_A_STEPS - 1) / _A_TOP) + 0.5
    return idx.astype(np.uint16)


def _compute(scan: Scan) -> _Derived:
    rgb = scan.rgb
    grey = rgb.mean(axis=2).astype(np.float32)
    grey_u8 = (grey + 0.5).astype(np.uint8)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    if scan.raw is not None and scan.raw.shape[0] == 2:
        high, low = scan.raw[0], scan.raw[1]
        att = material.attenuation(high, low)
        return _Derived(
            grey_u8,
            _to_u8(high),
            _to_u8(low),
            _a_index(att.a_high),
            hsv,
            material.material_classes(high, low),
        )
    if scan.raw is not None:
        t = scan.raw[0]
        a = -np.log(np.clip(t, 1e-6, 1.0))
        u8 = _to_u8(t)
        return _Derived(grey_u8, u8, u8, _a_index(a), hsv, None)
    # Pseudo-colour: brightness (largest channel) tracks the high-energy
    # transmission; the low-energy image is approximated by the mean (colour
    # channels other than the brightest are darker where the low energy was
    # absorbed more).
    vmax = rgb.max(axis=2)
    a = -np.log(np.clip(vmax.astype(np.float32) / 255.0, 1.0 / 255.0, 1.0))
    return _Derived(grey_u8, vmax, grey_u8, _a_index(a), hsv, classes_from_hue(hsv))


def classes_from_hue(hsv: np.ndarray) -> np.ndarray:
    """Material classes of a pseudo-colour rendering from OpenCV HSV (H 0..179).

    Orange/yellow (hue < 65 deg) organic, green/cyan (65-170 deg) mixed, blue and
    violet (170-300 deg) metal; nearly black pixels impenetrable; unsaturated
    bright pixels air.
    """
    h = hsv[:, :, 0].astype(np.int16) * 2  # degrees
    s, v = hsv[:, :, 1], hsv[:, :, 2]
    out = np.full(h.shape, material.CLASS_ORGANIC, dtype=np.uint8)
    out[(h >= 65) & (h < 170)] = material.CLASS_MIXED
    out[(h >= 170) & (h < 300)] = material.CLASS_METAL
    out[(s < 40) & (v > 200)] = material.CLASS_AIR
    out[v < 40] = material.CLASS_IMPENETRABLE
    return out
