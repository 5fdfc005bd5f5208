"""Threat image projection (TIP): insert a simulated threat into a real scan.

Transmission is multiplicative (Beer-Lambert: attenuations add), so for scans
with energies the threat's own high/low transmissions, computed with the same
beam model as the simulator, simply multiply the scan's. A pseudo-colour
composite has no energies; there the threat is rendered alone over air with the
same false colour and multiplied into the image channel by channel, i.e. added
in the attenuation-like space ``-ln(RGB / 255)`` of the rendering, which is how
a denser object over the bag darkens and tints it on a real scanner's display.

Used for validation (detection rate per threat type on benign bags) and for
operator drills.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from xrayscreen.imaging import physics
from xrayscreen.imaging.material import false_colour
from xrayscreen.imaging.scan import Scan, ScanKind
from xrayscreen.imaging.simulator import (
    DECOYS,
    MATERIAL_NAMES,
    THREATS,
    Box,
    decoy_areal,
    threat_areal,
)

# Without a known pixel pitch, assume the image's longer side spans about 80 cm
# (a cabin bag filling the tunnel view), as the simulator does.
_DEFAULT_FIELD_MM = 800.0
# Centres are drawn among pixels darker than this protocol grey (inside the bag).
_BAG_GREY = 0.92


@dataclass
class TipResult:
    """A scan with a projected threat.

    Attributes:
        scan: The new scan (same kind; ``meta["tip"]`` records what was inserted).
        mask: ``(H, W)`` bool footprint of the threat.
        box: The threat's box (``x1``/``y1`` exclusive).
    """

    scan: Scan
    mask: np.ndarray
    box: Box


def project_threat(
    scan: Scan,
    threat: str = "gun",
    *,
    seed: int,
    position: tuple[float, float] | None = None,
    thickness: float = 1.0,
    clutter: float = 0.0,
) -> TipResult:
    """Insert one simulated threat into ``scan``.

    Args:
        scan: A benign scan of any kind.
        threat: One of :data:`~xrayscreen.imaging.simulator.THREATS`.
        seed: Seeds the threat's shape, orientation and (if not given) position.
        position: Threat centre ``(x, y)`` in pixels; default a random point
            inside the bag (darker than the empty belt) where the threat fits.
        thickness: Scales the threat's areal density (matter in the beam path):
            < 1 a thinner threat (a lighter blade), > 1 a thicker one. The
            polychromatic transmission is recomputed, so colour follows physics.
        clutter: With a random position, draw the centre with probability proportional
            to the bag's opacity (1 - grey) to this power: > 0 puts threats more often
            into the bag's dense contents, where they are hard to see; 0 = any point
            inside the bag alike.

    Returns:
        The new scan with the threat's mask and box.

    Raises:
        ValueError: for an unknown threat name or a thickness that is not > 0.
    """
    if threat not in THREATS:
        raise ValueError(f"unknown threat {threat!r}; known: {', '.join(THREATS)}")
    return _project(scan, threat, threat_areal, "tip", seed, position, thickness, clutter)


def project_decoy(
    scan: Scan,
    decoy: str = "block",
    *,
    seed: int,
    position: tuple[float, float] | None = None,
    thickness: float = 1.0,
    clutter: float = 0.0,
) -> TipResult:
    """Insert one benign dense object (a metal block, a canister with opaque lumps, a
    metal lump: :data:`~xrayscreen.imaging.simulator.DECOYS`) into ``scan``, exactly as
    :func:`project_threat` inserts a threat (``meta["tip_decoy"]`` records it): the
    negatives that teach a threat detector that dark and compact is not a threat.

    Raises:
        ValueError: for an unknown decoy name or a thickness that is not > 0.
    """
    if decoy not in DECOYS:
        raise ValueError(f"unknown decoy {decoy!r}; known: {', '.join(DECOYS)}")
    return _project(scan, decoy, decoy_areal, "tip_decoy", seed, position, thickness, clutter)


def _project(
    scan: Scan,
    kind: str,
    areal_of: Callable[[str, np.random.Generator, float], tuple[np.ndarray, np.ndarray]],
    meta_key: str,
    seed: int,
    position: tuple[float, float] | None,
    thickness: float,
    clutter: float,
) -> TipResult:
    """Project the object ``areal_of(kind, rng, pixel_mm)`` draws into ``scan``."""
    if not np.isfinite(thickness) or thickness <= 0:
        raise ValueError(f"thickness must be a positive number, not {thickness!r}")
    if not np.isfinite(clutter) or clutter < 0:
        raise ValueError(f"clutter must be a number >= 0, not {clutter!r}")
    rng = np.random.default_rng(seed)
    h, w = scan.shape
    pixel_mm = scan.pixel_mm or _DEFAULT_FIELD_MM / max(h, w)
    areal, footprint = areal_of(kind, rng, pixel_mm)
    mus = np.stack([physics.mass_mu(physics.MATERIALS[m].formula) for m in MATERIAL_NAMES])
    t_threat = physics.transmissions(areal * np.float32(thickness), mus)  # (2, th, tw)
    # Exactly 1 off the footprint (the float32 weight sum is 1 - 6e-8), so pixels
    # outside the threat stay bit-identical.
    t_threat = np.where(footprint[None], t_threat, np.float32(1.0))
    th, tw = footprint.shape
    cx, cy = position if position is not None else _pick_centre(scan, rng, th, tw, clutter)
    x0, y0 = int(round(cx - tw / 2)), int(round(cy - th / 2))
    # Clip the threat to the image.
    sx0, sy0 = max(0, -x0), max(0, -y0)
    dx0, dy0 = max(0, x0), max(0, y0)
    dx1, dy1 = min(w, x0 + tw), min(h, y0 + th)
    if dx1 <= dx0 or dy1 <= dy0:
        raise ValueError(f"position {position} puts the object outside the {w}x{h} image")
    src = (slice(sy0, sy0 + dy1 - dy0), slice(sx0, sx0 + dx1 - dx0))
    dst = (slice(dy0, dy1), slice(dx0, dx1))
    mask = np.zeros((h, w), dtype=bool)
    mask[dst] = footprint[src]

    meta = dict(scan.meta)
    what = "threat" if meta_key == "tip" else "decoy"
    meta[meta_key] = {what: kind, "seed": int(seed), "source_sha256": scan.sha256}
    if thickness != 1.0:
        meta[meta_key]["thickness"] = float(thickness)
    if scan.raw is not None:
        raw = scan.raw.copy()
        if raw.shape[0] == 2:
            raw[:, dst[0], dst[1]] *= t_threat[:, src[0], src[1]]
            # Only the threat's box changes colour; re-render just that.
            rgb = scan.rgb.copy()
            rgb[dst] = false_colour(raw[0][dst], raw[1][dst])
        else:  # single energy: the detector sees roughly the high-energy response
            raw[0, dst[0], dst[1]] *= t_threat[0, src[0], src[1]]
            rgb = scan.rgb.copy()
            g = (np.clip(raw[0][dst], 0, 1) * 255.0 + 0.5).astype(np.uint8)
            rgb[dst] = g[:, :, None]
        new = Scan(rgb=rgb, kind=scan.kind, raw=raw, pixel_mm=scan.pixel_mm, meta=meta)
    else:
        overlay = false_colour(t_threat[0], t_threat[1])[src].astype(np.float32) / 255.0
        rgb = scan.rgb.copy()
        region = rgb[dst].astype(np.float32) * overlay
        rgb[dst] = (region + 0.5).astype(np.uint8)
        new = Scan(rgb=rgb, kind=ScanKind.PSEUDO_COLOUR, pixel_mm=scan.pixel_mm, meta=meta)
    ys, xs = np.nonzero(mask)
    box = Box(kind, int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return TipResult(new, mask, box)


def _pick_centre(
    scan: Scan, rng: np.random.Generator, th: int, tw: int, clutter: float = 0.0
) -> tuple[float, float]:
    """A random point inside the bag where the whole threat fits in the image if possible
    (weighted by opacity ** ``clutter`` when ``clutter`` > 0)."""
    h, w = scan.shape
    y_lo, y_hi = th // 2, h - (th - th // 2)
    x_lo, x_hi = tw // 2, w - (tw - tw // 2)
    if y_hi <= y_lo:
        y_lo, y_hi = h // 2, h // 2 + 1
    if x_hi <= x_lo:
        x_lo, x_hi = w // 2, w // 2 + 1
    # Subsample the grey image to keep the candidate list small on big scans.
    step = max(1, int(np.sqrt(h * w / 250_000)))
    grey = scan.rgb[y_lo:y_hi:step, x_lo:x_hi:step].mean(axis=2) / 255.0
    ys, xs = np.nonzero(grey < _BAG_GREY)
    if ys.size == 0:
        return float(rng.integers(x_lo, x_hi)), float(rng.integers(y_lo, y_hi))
    if clutter > 0:
        weight = (1.0 - grey[ys, xs]) ** clutter
        i = int(rng.choice(ys.size, p=weight / weight.sum()))
    else:
        i = int(rng.integers(ys.size))
    return float(x_lo + xs[i] * step), float(y_lo + ys[i] * step)
