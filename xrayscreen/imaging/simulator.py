"""A physics-based simulator of dual-energy bag scans with pixel-exact ground truth.

Objects are stamped into per-material **areal density** maps (g/cm^2); the scan
is then Beer-Lambert through the shared beam model of
:mod:`xrayscreen.imaging.physics` (polychromatic tube, two-layer detector),
Poisson photon noise and 16-bit quantisation, and rendered by the same
false-colour table as real scans. Everything is drawn from one
``numpy.random.Generator`` seeded by ``seed``, so a seed always gives the same bag.

This is the source of the bundled demo scans and of the default model's
training data: the real data the project develops against is research-licensed
and never shipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from xrayscreen.imaging import physics
from xrayscreen.imaging.material import A_AIR, false_colour
from xrayscreen.imaging.scan import Scan, ScanKind

MATERIAL_NAMES: tuple[str, ...] = tuple(physics.MATERIALS)
_MAT = {name: i for i, name in enumerate(MATERIAL_NAMES)}
THREATS: tuple[str, ...] = ("gun", "knife", "blade")

# Share of a pixel's (high-energy) attenuation a class must carry for the pixel
# to count in that class's ground-truth mask.
DOMINANCE = 0.75
# Thinner than this (A_H) and a pixel is too faint to judge its colour by.
MASK_MIN_ATTENUATION = 0.08
DEFAULT_I0 = (40000.0, 25000.0)  # photons per pixel reaching (high, low) layers unattenuated


class Box(NamedTuple):
    """An axis-aligned box in pixels; ``x1``/``y1`` are exclusive."""

    label: str
    x0: int
    y0: int
    x1: int
    y1: int


@dataclass
class SimulatedBag:
    """A simulated scan and its ground truth.

    Attributes:
        scan: The scan (kind ``SIMULATED``, raw ``(2, H, W)`` high/low transmission).
        masks: Boolean ``(H, W)`` masks: one per material class (``organic``,
            ``mixed``, ``metal``: pixels where that class carries at least
            :data:`DOMINANCE` of the attenuation and is neither faint nor
            impenetrable) and one per threat label present (whole footprint).
        boxes: One box per inserted threat.
        seed: The seed that made it.
    """

    scan: Scan
    masks: dict[str, np.ndarray]
    boxes: list[Box]
    seed: int
    areal: np.ndarray | None = field(default=None, repr=False)


class _Canvas:
    """Per-material areal density maps that objects are stamped into."""

    def __init__(self, h: int, w: int, pixel_mm: float) -> None:
        self.h, self.w, self.px = h, w, pixel_mm
        self.areal = np.zeros((len(MATERIAL_NAMES), h, w), dtype=np.float32)

    def mm(self, v: float) -> float:
        """Millimetres to pixels."""
        return v / self.px

    def stamp(
        self,
        poly: np.ndarray,
        material: str,
        areal: float,
        *,
        profile: str = "flat",
        edge_mm: float = 2.0,
        texture: np.ndarray | float | None = None,
        rng: np.random.Generator | None = None,
        hollow: float = 0.0,
        footprint: np.ndarray | None = None,
    ) -> None:
        """Fill polygon ``poly`` (pixel coords, (N, 2) x/y) with ``areal`` g/cm^2 of ``material``.

        ``profile``: ``"flat"`` (rounded over ``edge_mm``), ``"cyl"`` (circular
        cross-section across the narrow side, for bottles, tubes, cables).
        ``hollow`` in 0..1 removes that fraction of a cylinder's core (tubes,
        bottles' walls are then handled by separate stamps). ``texture``: a
        relative variation amplitude (folds of clothes) drawn from ``rng``.
        ``footprint`` (bool image) is OR-ed with the stamped pixels.
        """
        pts = np.round(np.asarray(poly, dtype=np.float64) * 8).astype(np.int32)
        x0 = max(int(np.floor(pts[:, 0].min() / 8)) - 1, 0)
        y0 = max(int(np.floor(pts[:, 1].min() / 8)) - 1, 0)
        x1 = min(int(np.ceil(pts[:, 0].max() / 8)) + 2, self.w)
        y1 = min(int(np.ceil(pts[:, 1].max() / 8)) + 2, self.h)
        if x1 <= x0 or y1 <= y0:
            return
        local = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        cv2.fillPoly(local, [pts - np.array([x0 * 8, y0 * 8], dtype=np.int32)], 1, cv2.LINE_8, 3)
        if not local.any():
            return
        weight = self._profile(local, profile, edge_mm, hollow)
        if texture is not None and rng is not None and texture:
            weight = weight * (1.0 + float(texture) * _smooth_noise(rng, local.shape, 6))
        self.areal[_MAT[material], y0:y1, x0:x1] += (areal * np.clip(weight, 0, None)).astype(
            np.float32
        )
        if footprint is not None:
            footprint[y0:y1, x0:x1] |= local.astype(bool)

    def _profile(
        self, local: np.ndarray, profile: str, edge_mm: float, hollow: float
    ) -> np.ndarray:
        dist = cv2.distanceTransform(local, cv2.DIST_L2, 3)
        if profile == "cyl":
            dmax = max(float(dist.max()), 1e-3)
            u = np.clip(dist / dmax, 0.0, 1.0)
            w = np.sqrt(np.clip(1.0 - (1.0 - u) ** 2, 0.0, 1.0))
            if hollow > 0:
                inner = np.sqrt(np.clip(hollow**2 - (1.0 - u) ** 2, 0.0, 1.0))
                w = (w - inner) / max(1.0 - np.sqrt(max(1.0 - hollow**2, 0.0)), 1e-3) * 0.5
            return w * local
        edge = max(self.mm(edge_mm), 0.5)
        return np.sqrt(np.clip(dist / edge, 0.0, 1.0)) * local

    def line(
        self,
        pts: np.ndarray,
        material: str,
        areal: float,
        width_mm: float,
        footprint: np.ndarray | None = None,
    ) -> None:
        """A cylindrical strand (cable core or sheath) along the polyline ``pts`` (pixels)."""
        pad = int(self.mm(width_mm)) + 3
        x0 = max(int(pts[:, 0].min()) - pad, 0)
        y0 = max(int(pts[:, 1].min()) - pad, 0)
        x1 = min(int(pts[:, 0].max()) + pad, self.w)
        y1 = min(int(pts[:, 1].max()) + pad, self.h)
        if x1 <= x0 or y1 <= y0:
            return
        local = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        shifted = np.round((pts - np.array([x0, y0])) * 8).astype(np.int32)
        thick = max(int(round(self.mm(width_mm))), 1)
        cv2.polylines(local, [shifted], False, 1, thick, cv2.LINE_8, 3)
        w = self._profile(local, "cyl", 0.0, 0.0)
        self.areal[_MAT[material], y0:y1, x0:x1] += (areal * w).astype(np.float32)
        if footprint is not None:
            footprint[y0:y1, x0:x1] |= local.astype(bool)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise in about -1..1 (bicubic upsampling of a coarse random grid)."""
    coarse = rng.uniform(-1.0, 1.0, size=(cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _rotate(poly: np.ndarray, angle: float, centre: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return poly @ rot.T + np.asarray(centre)


def _rect(w: float, h: float) -> np.ndarray:
    return np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])


def _ellipse(rx: float, ry: float, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([rx * np.cos(t), ry * np.sin(t)], axis=1)


def _blob(rng: np.random.Generator, rx: float, ry: float, n: int = 16) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = 1.0 + 0.18 * rng.standard_normal(n)
    r = np.clip((r + np.roll(r, 1) + np.roll(r, -1)) / 3, 0.6, 1.4)
    return np.stack([rx * r * np.cos(t), ry * r * np.sin(t)], axis=1)


def _rounded_rect(w: float, h: float, r: float) -> np.ndarray:
    pts = []
    for cx, cy, a0 in ((w / 2 - r, h / 2 - r, 0), (-w / 2 + r, h / 2 - r, 90)):
        pts += _arc(cx, cy, r, a0)
    for cx, cy, a0 in ((-w / 2 + r, -h / 2 + r, 180), (w / 2 - r, -h / 2 + r, 270)):
        pts += _arc(cx, cy, r, a0)
    return np.array(pts)


def _arc(cx: float, cy: float, r: float, a0: float) -> list[tuple[float, float]]:
    t = np.radians(np.linspace(a0, a0 + 90, 6))
    return [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in t]


# --- threats -------------------------------------------------------------------------


def _place(
    cv: _Canvas, local_mm: np.ndarray, angle: float, centre: tuple[float, float]
) -> np.ndarray:
    return _rotate(local_mm / cv.px, angle, centre)


def _gun(
    cv: _Canvas, rng: np.random.Generator, centre: tuple[float, float], fp: np.ndarray
) -> None:
    """A handgun silhouette: steel slide and barrel, frame, grip with magazine, trigger guard."""
    length = rng.uniform(165, 215)
    s = length / 190.0
    angle = rng.uniform(0, 2 * np.pi)
    flip = 1.0 if rng.random() < 0.5 else -1.0
    steel = rng.uniform(0.6, 1.1)  # cm of steel through the (hollow) slide
    polymer_frame = rng.random() < 0.5

    def put(poly, material, areal, **kw):
        poly = poly * np.array([1.0, flip])
        cv.stamp(_place(cv, poly * s, angle, centre), material, areal, footprint=fp, **kw)

    # Slide (with the barrel inside) along the top, muzzle at +x.
    put(
        np.array([[-95, -30], [95, -30], [95, -4], [-95, -4]]),
        "iron",
        7.87 * steel,
        edge_mm=3,
    )
    # Frame under the slide, front half.
    frame_mat, frame_areal = ("nylon", 3.0) if polymer_frame else ("iron", 7.87 * 0.8)
    put(np.array([[-60, -4], [80, -4], [80, 8], [-60, 8]]), frame_mat, frame_areal, edge_mm=3)
    # Grip, angled back.
    grip = np.array([[-90, -4], [-45, -4], [-55, 95], [-98, 92]])
    put(grip, frame_mat, frame_areal * 1.2, edge_mm=4)
    # Magazine inside the grip: steel walls and cartridges.
    put(np.array([[-82, 2], [-56, 2], [-63, 88], [-88, 86]]), "iron", 7.87 * 0.35, edge_mm=1)
    put(np.array([[-78, 8], [-60, 8], [-66, 80], [-84, 78]]), "copper", 8.96 * 0.25, edge_mm=1)
    # Trigger guard: a ring below the frame.
    ring = (_ellipse(22, 15, 24) + np.array([-5, 18])) * np.array([1.0, flip]) * s
    ring = np.vstack([ring, ring[:1]])
    cv.line(_place(cv, ring, angle, centre), "iron", 7.87 * 0.5, 4.0, footprint=fp)
    put(np.array([[-24, 6], [-18, 6], [-20, 26], [-26, 25]]), "iron", 7.87 * 0.6, edge_mm=1)


def _knife(
    cv: _Canvas, rng: np.random.Generator, centre: tuple[float, float], fp: np.ndarray
) -> None:
    """A fixed-blade knife: tapered steel blade and an organic or steel handle."""
    blade_len = rng.uniform(110, 200)
    width = rng.uniform(20, 38)
    handle_len = rng.uniform(95, 125)
    angle = rng.uniform(0, 2 * np.pi)
    steel_mm = rng.uniform(1.8, 3.2)
    blade = np.array(
        [
            [0, -width / 2],
            [blade_len * 0.8, -width / 2],
            [blade_len, width * 0.35],
            [blade_len * 0.75, width / 2],
            [0, width / 2],
        ]
    )
    cv.stamp(_place(cv, blade, angle, centre), "iron", 0.787 * steel_mm, edge_mm=0.8, footprint=fp)
    handle = _rounded_rect(handle_len, width * 0.95, 6) + np.array([-handle_len / 2 - 4, 0])
    if rng.random() < 0.7:
        cv.stamp(
            _place(cv, handle, angle, centre), "polyethylene", 2.2, profile="cyl", footprint=fp
        )
        tang = _rect(handle_len * 0.8, width * 0.35) + np.array([-handle_len * 0.45, 0])
        cv.stamp(_place(cv, tang, angle, centre), "iron", 0.787 * steel_mm, footprint=fp)
    else:
        cv.stamp(_place(cv, handle, angle, centre), "iron", 7.87 * 0.9, profile="cyl", footprint=fp)
    guard = _rect(8, width * 1.4) + np.array([-4, 0])
    cv.stamp(_place(cv, guard, angle, centre), "iron", 7.87 * 0.5, footprint=fp)


def _blade(
    cv: _Canvas, rng: np.random.Generator, centre: tuple[float, float], fp: np.ndarray
) -> None:
    """A box cutter: thin trapezoid steel blade in a plastic housing."""
    angle = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(120, 160)
    housing = _rounded_rect(length, 24, 6)
    cv.stamp(_place(cv, housing, angle, centre), "polyethylene", 1.5, footprint=fp)
    blade = np.array([[length * 0.15, -9], [length * 0.6, -9], [length * 0.72, 9], [0, 9]])
    cv.stamp(_place(cv, blade, angle, centre), "iron", 0.787 * 0.6, edge_mm=0.3, footprint=fp)
    cv.stamp(
        _place(cv, _rect(length * 0.5, 10) - np.array([length * 0.2, 0]), angle, centre),
        "iron",
        0.787 * 1.0,
        footprint=fp,
    )


_THREAT_FUNCS = {"gun": _gun, "knife": _knife, "blade": _blade}
THREAT_EXTENT_MM = {"gun": 230.0, "knife": 340.0, "blade": 170.0}


def threat_areal(
    threat: str, rng: np.random.Generator, pixel_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Areal density maps of one threat alone, on a canvas just big enough for it.

    Args:
        threat: One of :data:`THREATS`.
        rng: Random generator (shape, orientation, thickness).
        pixel_mm: Pixel pitch of the target image.

    Returns:
        ``(areal (M, h, w), footprint (h, w) bool)``.

    Raises:
        ValueError: for an unknown threat name.
    """
    if threat not in _THREAT_FUNCS:
        raise ValueError(f"unknown threat {threat!r}; known: {', '.join(THREATS)}")
    return _object_areal(_THREAT_FUNCS[threat], THREAT_EXTENT_MM[threat], rng, pixel_mm)


def decoy_areal(
    decoy: str, rng: np.random.Generator, pixel_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Areal density maps of one benign dense object (:data:`DECOYS`) alone, as
    :func:`threat_areal` makes a threat's.

    Raises:
        ValueError: for an unknown decoy name.
    """
    if decoy not in _DECOY_FUNCS:
        raise ValueError(f"unknown decoy {decoy!r}; known: {', '.join(DECOYS)}")
    return _object_areal(_DECOY_FUNCS[decoy], DECOY_EXTENT_MM[decoy], rng, pixel_mm)


def _object_areal(
    draw: Callable[[_Canvas, np.random.Generator, tuple[float, float], np.ndarray], None],
    extent_mm: float,
    rng: np.random.Generator,
    pixel_mm: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``draw`` stamped at the centre of a canvas ``extent_mm`` wide, cropped to its footprint."""
    side = int(np.ceil(extent_mm / pixel_mm)) + 4
    cv = _Canvas(side, side, pixel_mm)
    fp = np.zeros((side, side), dtype=bool)
    draw(cv, rng, (side / 2, side / 2), fp)
    ys, xs = np.nonzero(fp)
    if ys.size == 0:  # cannot happen with the sizes above, but never return an empty object
        raise ValueError("object rasterised to nothing")
    sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    return cv.areal[:, sl[0], sl[1]].copy(), fp[sl].copy()


# --- decoys: benign dense objects ----------------------------------------------------
# What a threat detector must NOT learn to fire on: compact metal that is as dark as a gun
# (the benign bags that set SIXray's 5 % threshold hold an opaque metal block in a device
# and opaque blobs inside dense cylinders). Used as negatives for the projected-threat head.


def _metal_block(
    cv: _Canvas, rng: np.random.Generator, centre: tuple[float, float], fp: np.ndarray
) -> None:
    """A compact steel part (transformer, motor, lock, weight) in an optional plastic case."""
    w = rng.uniform(25, 90)
    h = w / rng.uniform(1.0, 2.2)  # compact: a blade is 4-10x longer than wide
    angle = rng.uniform(0, np.pi)
    if rng.random() < 0.6:
        case = _rounded_rect(w * 1.5 + 20, h * 1.5 + 20, 8)
        cv.stamp(
            _place(cv, case, angle, centre), "polyethylene", rng.uniform(1.0, 2.5), footprint=fp
        )
    core = _rounded_rect(w, h, min(w, h) * rng.uniform(0.05, 0.4))
    cv.stamp(_place(cv, core, angle, centre), "iron", 7.87 * rng.uniform(0.4, 1.6), footprint=fp)
    if rng.random() < 0.5:  # copper windings or a second part beside it
        coil = _rect(w * 0.6, h * 0.8) + np.array([w * 0.1, 0])
        cv.stamp(
            _place(cv, coil, angle, centre), "copper", 8.96 * rng.uniform(0.1, 0.4), footprint=fp
        )


def _canister(
    cv: _Canvas, rng: np.random.Generator, centre: tuple[float, float], fp: np.ndarray
) -> None:
    """A dense cylinder (thermos, aerosol, torch) with opaque lumps inside."""
    length, d = rng.uniform(110, 220), rng.uniform(45, 80)
    angle = rng.uniform(0, np.pi)
    body = _rounded_rect(length, d, d * 0.3)
    wall = "iron" if rng.random() < 0.5 else "aluminium"
    density = 7.87 if wall == "iron" else 2.7
    cv.stamp(
        _place(cv, body, angle, centre),
        wall,
        density * rng.uniform(0.05, 0.15),
        profile="cyl",
        hollow=0.9,
        footprint=fp,
    )
    cv.stamp(_place(cv, body * 0.92, angle, centre), "water", d / 10.0, profile="cyl", footprint=fp)
    for _ in range(int(rng.integers(1, 4))):
        r = rng.uniform(6, min(20, d * 0.35))
        at = np.array([rng.uniform(-0.35, 0.35) * length, rng.uniform(-0.15, 0.15) * d])
        lump = _blob(rng, r, r * rng.uniform(0.6, 1.0)) + at
        cv.stamp(
            _place(cv, lump, angle, centre), "iron", 7.87 * rng.uniform(0.5, 1.5), footprint=fp
        )


def _lump(
    cv: _Canvas, rng: np.random.Generator, centre: tuple[float, float], fp: np.ndarray
) -> None:
    """An irregular opaque lump of metal (a padlock body, a tool head, a handful of coins)."""
    rx = rng.uniform(15, 45)
    blob = _blob(rng, rx, rx * rng.uniform(0.5, 1.0))
    metal = "iron" if rng.random() < 0.7 else "copper"
    cv.stamp(
        _place(cv, blob, rng.uniform(0, np.pi), centre),
        metal,
        physics.MATERIALS[metal].density * rng.uniform(0.5, 2.0),
        edge_mm=3,
        footprint=fp,
    )


_DECOY_FUNCS = {"block": _metal_block, "canister": _canister, "lump": _lump}
DECOYS: tuple[str, ...] = tuple(_DECOY_FUNCS)
DECOY_EXTENT_MM = {"block": 170.0, "canister": 240.0, "lump": 130.0}


# --- clutter -------------------------------------------------------------------------


def _shell(cv: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """The bag: fabric over the whole footprint, seams, handle, optional trolley frame, zips."""
    h, w = cv.h, cv.w
    mx, my = rng.uniform(0.03, 0.08) * w, rng.uniform(0.04, 0.1) * h
    bw, bh = w - 2 * mx, h - 2 * my
    centre = (w / 2 + rng.uniform(-0.5, 0.5) * mx, h / 2 + rng.uniform(-0.5, 0.5) * my)
    angle = rng.uniform(-0.04, 0.04)
    outline = _rotate(_rounded_rect(bw, bh, min(bw, bh) * 0.08), angle, centre)
    inside = np.zeros((h, w), dtype=bool)
    fabric = rng.choice(["nylon", "polyethylene"])
    cv.stamp(outline, fabric, rng.uniform(0.25, 0.45), edge_mm=15, footprint=inside)
    # Seams/piping: a thicker band along the outline.
    band = cv.mm(12)
    pts = np.round(outline).astype(np.int32)
    seam = np.zeros((h, w), dtype=np.uint8)
    cv2.polylines(seam, [pts], True, 1, max(int(band), 2))
    cv.areal[_MAT[fabric]] += seam.astype(np.float32) * 0.6
    # Zip teeth along two or three sides, a little inside the seam.
    inner = _rotate(_rounded_rect(bw - 2 * band, bh - 2 * band, min(bw, bh) * 0.07), angle, centre)
    n_sides = int(rng.integers(2, 4))
    tooth = max(cv.mm(3.0), 1.5)
    for k in range(n_sides):
        a, b = _side(inner, k)
        n = int(np.hypot(*(b - a)) / (tooth * 1.6))
        for t in np.linspace(0.05, 0.95, max(n, 2)):
            p = a + (b - a) * t
            cv.stamp(
                _rotate(_rect(tooth, tooth * 0.7), angle, tuple(p)),
                "iron",
                0.8,
                edge_mm=0.1,
            )
    # Trolley frame: two aluminium tubes along the long side.
    if rng.random() < 0.55:
        tube_w = cv.mm(rng.uniform(18, 26))
        long_axis_x = bw >= bh
        for f in (0.25, 0.75):
            if long_axis_x:
                poly = _rect(bw * 0.92, tube_w) + np.array([0, (f - 0.5) * bh])
            else:
                poly = _rect(tube_w, bh * 0.92) + np.array([(f - 0.5) * bw, 0])
            cv.stamp(
                _rotate(poly, angle, centre), "aluminium", 2.7 * 1.1, profile="cyl", hollow=0.8
            )
    # Handle: a padded strap near one end.
    hx = centre[0] + rng.uniform(-0.2, 0.2) * bw
    handle = _rect(cv.mm(120), cv.mm(30)) + np.array([hx, centre[1] - bh / 2 + cv.mm(30)])
    cv.stamp(handle, "polyethylene", 1.2, profile="cyl")
    return inside


def _side(poly: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Endpoints of the k-th straight side (top, right, bottom, left) of a rounded rect."""
    xs, ys = poly[:, 0], poly[:, 1]
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    corners = [
        (np.array([x0, y0]), np.array([x1, y0])),
        (np.array([x1, y0]), np.array([x1, y1])),
        (np.array([x1, y1]), np.array([x0, y1])),
        (np.array([x0, y1]), np.array([x0, y0])),
    ]
    return corners[k % 4]


class _Inside:
    """The bag's interior, with cached pixel lists for drawing random positions."""

    def __init__(self, mask: np.ndarray) -> None:
        self.mask = mask
        self._coords: dict[int, tuple[np.ndarray, np.ndarray]] = {}

        self._dist: np.ndarray | None = None

    def coords(self, margin: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixels at least ``margin`` pixels inside the bag."""
        if margin not in self._coords:
            if margin <= 0:
                self._coords[margin] = np.nonzero(self.mask)
            else:
                if self._dist is None:
                    self._dist = cv2.distanceTransform(self.mask.astype(np.uint8), cv2.DIST_L2, 3)
                self._coords[margin] = np.nonzero(self._dist > margin)
        return self._coords[margin]


def _random_point(
    rng: np.random.Generator, inside: _Inside, margin: int = 0
) -> tuple[float, float]:
    ys, xs = inside.coords(margin)
    if ys.size == 0:
        ys, xs = inside.coords(0)
    if ys.size == 0:
        return inside.mask.shape[1] / 2, inside.mask.shape[0] / 2
    i = int(rng.integers(ys.size))
    return float(xs[i]), float(ys[i])


def _clothes(cv: _Canvas, rng: np.random.Generator, inside: _Inside) -> None:
    for _ in range(int(rng.integers(3, 8))):
        c = _random_point(rng, inside)
        rx, ry = cv.mm(rng.uniform(70, 200)), cv.mm(rng.uniform(60, 160))
        poly = _rotate(_blob(rng, rx, ry), rng.uniform(0, np.pi), c)
        mat = rng.choice(["cellulose", "polyethylene", "nylon"])
        cv.stamp(poly, mat, rng.uniform(0.4, 2.5), edge_mm=20, texture=0.45, rng=rng)


def _books(cv: _Canvas, rng: np.random.Generator, inside: _Inside) -> None:
    for _ in range(int(rng.integers(0, 3))):
        c = _random_point(rng, inside)
        poly = _rotate(
            _rect(cv.mm(rng.uniform(130, 170)), cv.mm(rng.uniform(190, 240))),
            rng.uniform(0, np.pi),
            c,
        )
        cv.stamp(poly, "cellulose", rng.uniform(2.0, 5.0), edge_mm=4)


def _bottles(cv: _Canvas, rng: np.random.Generator, inside: _Inside) -> None:
    for _ in range(int(rng.integers(0, 3))):
        c = _random_point(rng, inside)
        angle = rng.uniform(0, np.pi)
        d, length = rng.uniform(55, 80), rng.uniform(150, 240)
        body = _rotate(_rounded_rect(cv.mm(length), cv.mm(d), cv.mm(d * 0.3)), angle, c)
        liquid = rng.choice(["water", "water", "polyethylene"])  # drinks, shampoo/oil
        cv.stamp(body, liquid, 1.0 * d / 10.0, profile="cyl")
        if rng.random() < 0.35:  # glass bottle
            cv.stamp(body, "glass", 2.5 * 0.4, profile="cyl", hollow=0.9)
        else:
            cv.stamp(body, "polyethylene", 0.95 * 0.1, profile="cyl", hollow=0.9)


def _electronics(cv: _Canvas, rng: np.random.Generator, inside: _Inside) -> None:
    # Laptop or tablet: aluminium case, PCB (glass fibre + copper), battery pack, screws.
    if rng.random() < 0.45:
        c = _random_point(rng, inside, margin=int(cv.mm(60)))
        angle = rng.uniform(-0.3, 0.3) + (np.pi / 2 if rng.random() < 0.3 else 0)
        lw, lh = rng.uniform(280, 340), rng.uniform(190, 235)
        cv.stamp(_rotate(_rect(cv.mm(lw), cv.mm(lh)), angle, c), "aluminium", 2.7 * 0.25, edge_mm=6)
        cv.stamp(_rotate(_rect(cv.mm(lw), cv.mm(lh)), angle, c), "polyethylene", 0.6, edge_mm=6)
        pcb = _rect(cv.mm(lw * 0.45), cv.mm(lh * 0.35)) + np.array(
            [cv.mm(-lw * 0.2), cv.mm(-lh * 0.25)]
        )
        cv.stamp(_rotate(pcb, angle, c), "glass", 0.35)
        cv.stamp(_rotate(pcb * 0.9, angle, c), "copper", 0.06)
        batt = _rect(cv.mm(lw * 0.7), cv.mm(lh * 0.22)) + np.array([0, cv.mm(lh * 0.3)])
        cv.stamp(_rotate(batt, angle, c), "aluminium", 1.2)
        cv.stamp(_rotate(batt * 0.95, angle, c), "copper", 0.25)
        for sx in (-0.47, 0.47):
            for sy in (-0.45, 0.45):
                p = _rotate(np.array([[cv.mm(lw * sx), cv.mm(lh * sy)]]), angle, c)[0]
                cv.stamp(
                    _rotate(_ellipse(cv.mm(2.5), cv.mm(2.5), 10), 0, tuple(p)), "iron", 7.87 * 0.4
                )
    # Phone / power bank.
    for _ in range(int(rng.integers(0, 3))):
        c = _random_point(rng, inside)
        angle = rng.uniform(0, np.pi)
        pw, ph = rng.uniform(65, 80), rng.uniform(130, 160)
        cv.stamp(
            _rotate(_rounded_rect(cv.mm(pw), cv.mm(ph), cv.mm(8)), angle, c),
            "glass",
            0.9,
            edge_mm=3,
        )
        cv.stamp(_rotate(_rect(cv.mm(pw * 0.8), cv.mm(ph * 0.5)), angle, c), "aluminium", 1.4)
        cv.stamp(
            _rotate(
                _rect(cv.mm(pw * 0.5), cv.mm(ph * 0.2)) + np.array([0, cv.mm(-ph * 0.3)]), angle, c
            ),
            "copper",
            0.15,
        )
    # Cables: copper core in a plastic sheath, wandering polylines; a charger brick on one end.
    for _ in range(int(rng.integers(0, 4))):
        start = np.array(_random_point(rng, inside))
        steps = rng.normal(0, cv.mm(25), size=(24, 2)).cumsum(axis=0)
        steps = cv2.GaussianBlur(steps.astype(np.float32), (1, 7), 0)
        pts = np.clip(start + steps, 0, [cv.w - 1, cv.h - 1])
        cv.line(pts, "polyethylene", 0.35, rng.uniform(3.5, 6.0))
        cv.line(pts, "copper", 1.0, 1.4)
        if rng.random() < 0.5:
            brick = _rotate(
                _rounded_rect(cv.mm(45), cv.mm(60), cv.mm(6)), rng.uniform(0, np.pi), tuple(pts[-1])
            )
            cv.stamp(brick, "polyethylene", 1.8, edge_mm=4)
            cv.stamp(_rotate(_ellipse(cv.mm(12), cv.mm(12), 16), 0, tuple(pts[-1])), "copper", 1.0)
            cv.stamp(_rotate(_rect(cv.mm(20), cv.mm(28)), 0, tuple(pts[-1])), "iron", 0.8)
    # AA/AAA batteries: steel can around a mixed-material core.
    for _ in range(int(rng.integers(0, 5))):
        c = _random_point(rng, inside)
        body = _rotate(_rect(cv.mm(50), cv.mm(14)), rng.uniform(0, np.pi), c)
        cv.stamp(body, "iron", 7.87 * 0.05, profile="cyl", hollow=0.9)
        cv.stamp(body, "glass", 2.6, profile="cyl")


def _small_metal(cv: _Canvas, rng: np.random.Generator, inside: _Inside) -> None:
    # Coins (copper alloys), keys (steel), a belt buckle.
    for _ in range(int(rng.integers(0, 7))):
        c = _random_point(rng, inside)
        r = cv.mm(rng.uniform(9, 13))
        cv.stamp(
            _rotate(_ellipse(r, r, 24), 0, c), "copper", 8.9 * rng.uniform(0.15, 0.22), edge_mm=0.5
        )
    for _ in range(int(rng.integers(0, 3))):
        c = _random_point(rng, inside)
        key = np.array(
            [[0, -4], [40, -4], [40, 4], [0, 4], [-8, 12], [-24, 12], [-24, -12], [-8, -12]]
        )
        cv.stamp(
            _rotate(key / cv.px, rng.uniform(0, 2 * np.pi), c), "iron", 7.87 * 0.2, edge_mm=0.5
        )
    if rng.random() < 0.3:  # belt buckle: a steel frame
        c = _random_point(rng, inside)
        angle = rng.uniform(0, np.pi)
        for dx, dy, bw, bh in ((0, -17, 55, 6), (0, 17, 55, 6), (-25, 0, 6, 40), (25, 0, 6, 40)):
            bar = _rect(cv.mm(bw), cv.mm(bh)) + np.array([cv.mm(dx), cv.mm(dy)])
            cv.stamp(_rotate(bar, angle, c), "iron", 7.87 * 0.3, edge_mm=1)


def _shoes(cv: _Canvas, rng: np.random.Generator, inside: _Inside) -> None:
    if rng.random() < 0.35:
        c = _random_point(rng, inside)
        angle = rng.uniform(0, np.pi)
        for dx in (-1, 1):
            p = _rotate(np.array([[0.0, dx * cv.mm(55)]]), angle, c)[0]
            sole = _rotate(_ellipse(cv.mm(140), cv.mm(48), 30), angle, tuple(p))
            cv.stamp(sole, "polyethylene", rng.uniform(2.5, 5.0), edge_mm=15, texture=0.3, rng=rng)
            if rng.random() < 0.3:  # steel shank
                shank = _rotate(_rect(cv.mm(90), cv.mm(12)), angle, tuple(p))
                cv.stamp(shank, "iron", 7.87 * 0.15)


def _misc(cv: _Canvas, rng: np.random.Generator, inside: _Inside) -> None:
    """Benign everyday items, some long and metallic (so "long metal" alone is not a threat)."""
    if rng.random() < 0.3:  # folding umbrella: steel shaft and ribs in a nylon sleeve
        c = _random_point(rng, inside)
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(220, 280)
        cv.stamp(_rotate(_rect(cv.mm(length), cv.mm(45)), angle, c), "nylon", 1.2, edge_mm=10)
        cv.stamp(_rotate(_rect(cv.mm(length), cv.mm(9)), angle, c), "iron", 0.5, profile="cyl")
        for k in range(6):
            off = (k - 2.5) * 5.0
            rib = _rect(cv.mm(length * 0.9), cv.mm(1.5)) + np.array([0, cv.mm(off)])
            cv.stamp(_rotate(rib, angle, c), "iron", 0.35)
        handle = _rect(cv.mm(40), cv.mm(30)) + np.array([cv.mm(-length / 2 - 15), 0])
        cv.stamp(_rotate(handle, angle, c), "polyethylene", 2.5, profile="cyl")
    for _ in range(int(rng.integers(0, 3))):  # pens: plastic body, small steel spring/tip
        c = _random_point(rng, inside)
        angle = rng.uniform(0, np.pi)
        cv.stamp(
            _rotate(_rect(cv.mm(140), cv.mm(10)), angle, c), "polyethylene", 0.9, profile="cyl"
        )
        tip = _rect(cv.mm(20), cv.mm(3)) + np.array([cv.mm(60), 0])
        cv.stamp(_rotate(tip, angle, c), "iron", 0.4)
    if rng.random() < 0.25:  # cutlery: a spoon and a fork (steel, thin)
        c = _random_point(rng, inside)
        angle = rng.uniform(0, np.pi)
        for dy in (-15.0, 15.0):
            shift = np.array([0, cv.mm(dy)])
            cv.stamp(_rotate(_rect(cv.mm(130), cv.mm(9)) + shift, angle, c), "iron", 0.2 * 7.87)
            bowl = _ellipse(cv.mm(22), cv.mm(14), 20) + shift + np.array([cv.mm(80), 0])
            cv.stamp(_rotate(bowl, angle, c), "iron", 0.1 * 7.87)
    if rng.random() < 0.25:  # hair dryer: plastic housing, copper coil, small motor
        c = _random_point(rng, inside)
        angle = rng.uniform(0, 2 * np.pi)
        cv.stamp(
            _rotate(_rounded_rect(cv.mm(170), cv.mm(75), cv.mm(30)), angle, c), "polyethylene", 1.6
        )
        coil = _rect(cv.mm(80), cv.mm(40)) + np.array([cv.mm(30), 0])
        cv.stamp(_rotate(coil, angle, c), "copper", 0.25)
        motor = _ellipse(cv.mm(20), cv.mm(20), 20) + np.array([cv.mm(-45), 0])
        cv.stamp(_rotate(motor, angle, c), "iron", 1.6)
        cv.stamp(_rotate(motor * 0.7, angle, c), "copper", 1.2)
        grip = _rect(cv.mm(30), cv.mm(100)) + np.array([cv.mm(-40), cv.mm(70)])
        cv.stamp(_rotate(grip, angle, c), "polyethylene", 2.0, profile="cyl")
    for _ in range(int(rng.integers(0, 3))):  # toiletries: tubes (aluminium) and small bottles
        c = _random_point(rng, inside)
        angle = rng.uniform(0, np.pi)
        if rng.random() < 0.5:
            tube = _rotate(_rect(cv.mm(150), cv.mm(40)), angle, c)
            cv.stamp(tube, "aluminium", 0.08, profile="cyl", hollow=0.95)
            cv.stamp(tube, "water", 1.6, profile="cyl")
        else:
            body = _rotate(_rounded_rect(cv.mm(100), cv.mm(45), cv.mm(12)), angle, c)
            cv.stamp(body, "water", 3.5, profile="cyl")
            cv.stamp(body, "polyethylene", 0.1, profile="cyl", hollow=0.9)


# --- the bag -------------------------------------------------------------------------


def simulate_bag(
    seed: int,
    *,
    size: tuple[int, int] = (600, 800),
    threats: tuple[str, ...] | list[str] = (),
    pixel_mm: float | None = None,
    i0: tuple[float, float] = DEFAULT_I0,
    noise: bool = True,
    keep_areal: bool = False,
) -> SimulatedBag:
    """Simulate one dual-energy bag scan.

    Args:
        seed: Seeds everything; the same arguments give the same bag.
        size: ``(H, W)`` in pixels.
        threats: Threat labels to insert, one object each (see :data:`THREATS`).
        pixel_mm: Pixel pitch; default makes the bag about 75 cm across its long side.
        i0: Unattenuated photon counts per pixel for the (high, low) layers
            (Poisson noise level).
        noise: ``False`` gives the noise-free transmissions (tests, TIP templates).
        keep_areal: Keep the per-material areal density maps on the result.

    Returns:
        The scan with ground-truth masks and threat boxes.

    Raises:
        ValueError: for an unknown threat or a size below 64 pixels.
    """
    h, w = int(size[0]), int(size[1])
    if h < 64 or w < 64:
        raise ValueError(f"size {size} too small for a bag (minimum 64x64)")
    for t in threats:
        if t not in _THREAT_FUNCS:
            raise ValueError(f"unknown threat {t!r}; known: {', '.join(THREATS)}")
    rng = np.random.default_rng(seed)
    px = pixel_mm if pixel_mm else 750.0 / (0.9 * max(h, w))
    cv = _Canvas(h, w, px)
    inside = _Inside(_shell(cv, rng))
    shell = cv.areal.copy()
    _clothes(cv, rng, inside)
    _books(cv, rng, inside)
    _shoes(cv, rng, inside)
    _bottles(cv, rng, inside)
    _electronics(cv, rng, inside)
    _small_metal(cv, rng, inside)
    _misc(cv, rng, inside)
    masks: dict[str, np.ndarray] = {}
    boxes: list[Box] = []
    for t in threats:
        fp = np.zeros((h, w), dtype=bool)
        margin = int(cv.mm(THREAT_EXTENT_MM[t] * 0.4))
        _THREAT_FUNCS[t](cv, rng, _random_point(rng, inside, margin=margin), fp)
        fp &= inside.mask  # contents are clipped to the bag below
        masks[t] = masks.get(t, np.zeros((h, w), dtype=bool)) | fp
        ys, xs = np.nonzero(fp)
        if ys.size:
            boxes.append(Box(t, int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    # Contents stay inside the bag: everything stamped after the shell is clipped to it.
    cv.areal = shell + (cv.areal - shell) * inside.mask[None].astype(np.float32)
    np.clip(cv.areal, 0.0, None, out=cv.areal)
    mus = np.stack([physics.mass_mu(physics.MATERIALS[m].formula) for m in MATERIAL_NAMES])
    b = physics.beam()
    # Only pixels with matter need the polychromatic sum (air is exactly 1).
    occupied = cv.areal.any(axis=0)
    clean = np.ones((2, h, w), dtype=np.float32)
    clean[:, occupied] = physics.transmissions(cv.areal[:, occupied], mus, b)
    masks.update(_material_masks(cv.areal, mus, b, clean[0]))
    raw = _detect(clean, rng, i0) if noise else clean
    rgb = false_colour(raw[0], raw[1])
    scan = Scan(
        rgb=rgb,
        kind=ScanKind.SIMULATED,
        raw=raw,
        pixel_mm=px,
        meta={"simulator_seed": int(seed), "threats": list(threats), "bits": 16, "i0": list(i0)},
    )
    return SimulatedBag(scan, masks, boxes, int(seed), cv.areal if keep_areal else None)


def _detect(clean: np.ndarray, rng: np.random.Generator, i0: tuple[float, float]) -> np.ndarray:
    """Photon noise, then a 16-bit ADC; returns transmissions in 0..1.

    Counts are Poisson; above 50 expected photons the Gaussian approximation
    (mean = variance) is used because it is several times cheaper and
    indistinguishable at that level.
    """
    out = np.empty_like(clean)
    for k in range(2):
        lam = clean[k] * np.float32(i0[k])
        counts = lam + rng.standard_normal(lam.shape, dtype=np.float32) * np.sqrt(lam)
        low = lam < 50.0
        if low.any():
            counts[low] = rng.poisson(lam[low].astype(np.float64))
        out[k] = np.round(np.clip(counts / np.float32(i0[k]), 0.0, 1.0) * 65535.0) / 65535.0
    return out


def _material_masks(
    areal: np.ndarray, mus: np.ndarray, b: physics.Beam, t_high: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-class masks by attenuation share at the high layer's mean energy."""
    mu_eff = mus @ b.w_high  # (M,) effective mass attenuation
    contrib = areal * mu_eff[:, None, None].astype(np.float32)
    total = contrib.sum(axis=0) + 1e-9
    a_high = -np.log(np.clip(t_high, 1e-6, 1.0))
    visible = (a_high > max(MASK_MIN_ATTENUATION, A_AIR)) & (a_high < 5.0)
    out = {}
    for cls in physics.MATERIAL_CLASSES:
        idx = [i for i, m in enumerate(MATERIAL_NAMES) if physics.MATERIALS[m].cls == cls]
        share = contrib[idx].sum(axis=0) / total
        out[cls] = visible & (share >= DOMINANCE)
    return out
