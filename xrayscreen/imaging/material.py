"""Dual-energy material rendering: attenuations, the ratio R and the false-colour table.

The table (``resources/colour_table.npz``) is built from physics by
:mod:`xrayscreen.imaging.build_colour_table`; this module only looks cells up, so
rendering needs numpy and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from xrayscreen.errors import ScanError

# Below this attenuation a pixel is air (R is pure noise there); T floor for logs.
A_AIR = 0.02
_T_FLOOR = 1e-6

CLASS_AIR, CLASS_ORGANIC, CLASS_MIXED, CLASS_METAL, CLASS_IMPENETRABLE = range(5)


@dataclass(frozen=True)
class ColourTable:
    """The 2-D false-colour table over (R, A).

    Attributes:
        rgb: ``(NR, NA, 3)`` uint8 colours.
        cls: ``(NR, NA)`` uint8 material class codes (0 air, 1 organic, 2 mixed,
            3 metal, 4 impenetrable).
        r_min: R of the first row (rows are log-spaced in R).
        r_max: R of the last row.
        a_max: A = -ln(I_H) of the last column (columns are linear in A).
        a_impenetrable: A beyond which the rear layer sees essentially nothing.
    """

    rgb: np.ndarray
    cls: np.ndarray
    r_min: float
    r_max: float
    a_max: float
    a_impenetrable: float

    def indices(self, ratio: np.ndarray, a_high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest table cell for each pixel: ``(row, col)`` int arrays."""
        nr, na = self.cls.shape
        lr = np.log(np.clip(ratio, np.float32(self.r_min), np.float32(self.r_max)))
        rows = (lr - np.float32(np.log(self.r_min))) * np.float32(
            (nr - 1) / np.log(self.r_max / self.r_min)
        ) + np.float32(0.5)
        cols = np.clip(a_high, 0.0, np.float32(self.a_max)) * np.float32(
            (na - 1) / self.a_max
        ) + np.float32(0.5)
        return rows.astype(np.intp), cols.astype(np.intp)

    def flat_indices(self, ratio: np.ndarray, a_high: np.ndarray) -> np.ndarray:
        """Nearest table cell as one index into the flattened table."""
        rows, cols = self.indices(ratio, a_high)
        rows *= self.cls.shape[1]
        rows += cols
        return rows

    @property
    def rgb_packed(self) -> np.ndarray:
        """The colours as one uint32 per cell (RGB0 bytes), for a fast 1-D gather."""
        packed = self.__dict__.get("_packed")
        if packed is None:
            rgba = np.zeros((*self.cls.shape, 4), dtype=np.uint8)
            rgba[:, :, :3] = self.rgb
            packed = rgba.reshape(-1, 4).view(np.uint32).ravel()
            object.__setattr__(self, "_packed", packed)
        return packed


@lru_cache(maxsize=1)
def colour_table() -> ColourTable:
    """Load the shipped table (cached)."""
    ref = resources.files("xrayscreen.resources").joinpath("colour_table.npz")
    with ref.open("rb") as fh, np.load(fh, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        return ColourTable(
            rgb=np.ascontiguousarray(data["rgb"]),
            cls=np.ascontiguousarray(data["cls"]),
            r_min=float(meta["r_min"]),
            r_max=float(meta["r_max"]),
            a_max=float(meta["a_max"]),
            a_impenetrable=float(meta["a_impenetrable"]),
        )


@dataclass(frozen=True)
class Attenuation:
    """Log attenuations of a dual-energy pair.

    Attributes:
        a_high: ``-ln(I_H)``, float32 ``(H, W)``.
        a_low: ``-ln(I_L)``, float32 ``(H, W)``.
        ratio: ``R = a_low / a_high``; set to 1 where the pixel is air.
    """

    a_high: np.ndarray
    a_low: np.ndarray
    ratio: np.ndarray


def attenuation(high: np.ndarray, low: np.ndarray) -> Attenuation:
    """Log attenuations and the ratio R, guarding both ends.

    Air (``a_high`` below :data:`A_AIR`) gets R = 1, whatever the noise says;
    zero transmission is floored at 1e-6 so the logs stay finite (the table
    renders those pixels black as impenetrable).

    Args:
        high: High-energy transmission, ``(H, W)`` in 0..1.
        low: Low-energy transmission, same shape.

    Raises:
        ScanError: if the shapes differ.
    """
    high = np.asarray(high, dtype=np.float32)
    low = np.asarray(low, dtype=np.float32)
    if high.shape != low.shape:
        raise ScanError(f"high and low energy images differ in size: {high.shape} vs {low.shape}")
    a_high = -np.log(np.clip(high, _T_FLOOR, 1.0))
    a_low = -np.log(np.clip(low, _T_FLOOR, 1.0))
    air = a_high < A_AIR
    ratio = a_low / np.where(air, 1.0, a_high)
    ratio[air] = 1.0
    return Attenuation(a_high, a_low, ratio)


def false_colour(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Render a dual-energy pair in screening false colour.

    Orange organic, green mixed / light inorganic, blue metal, black impenetrable,
    darker with thickness; air is white.

    Args:
        high: High-energy transmission ``(H, W)`` in 0..1.
        low: Low-energy transmission ``(H, W)`` in 0..1.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    att = attenuation(high, low)
    table = colour_table()
    idx = table.flat_indices(att.ratio, att.a_high)
    # Gather 4-byte cells in one 1-D take (much faster than 2-D fancy indexing of RGB).
    packed = np.take(table.rgb_packed, idx)
    rgba = packed.view(np.uint8).reshape(*idx.shape, 4)
    return np.ascontiguousarray(rgba[..., :3])


def material_classes(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Per-pixel material class code (see :class:`ColourTable`), ``(H, W)`` uint8."""
    att = attenuation(high, low)
    table = colour_table()
    out = np.take(table.cls.ravel(), table.flat_indices(att.ratio, att.a_high))
    out[att.a_high < A_AIR] = CLASS_AIR
    return out
