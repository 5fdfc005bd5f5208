"""Build the dual-energy false-colour table shipped in ``resources/``.

Run ``python -m xrayscreen.imaging.build_colour_table`` to regenerate
``resources/colour_table.npz`` (the table) and ``resources/colour_table.png`` (a
preview). Needs ``xraydb``; reading scans does not.

How the table is made (physics, not by eye):

1. For every element Z = 3..30, sweep the areal density and compute the high and
   low transmissions with :mod:`xrayscreen.imaging.physics` (160 kVp tube,
   sandwich detector). That gives a curve ``R_Z(A)`` of the ratio
   ``R = ln(I_L) / ln(I_H)`` against the high-energy attenuation ``A = -ln(I_H)``:
   R falls with A through beam hardening, which is why the table is 2-D.
2. For each table cell (R, A), the *equivalent Z* is read off by interpolating R
   between the element curves at that A.
3. Colour from the equivalent Z with the usual screening boundaries (Z < 10
   organic -> orange, 10-18 mixed / light inorganic -> green, > 18 metal ->
   blue), smooth over +/- 1 Z; brightness falls with A (thickness), saturation
   rises from white (air) over the first few percent of attenuation, and cells
   beyond ``A_IMPENETRABLE`` (less than ~0.4 % of the beam reaches the rear
   layer) fade to black.
"""

from __future__ import annotations

import argparse
import colorsys
import json
from pathlib import Path

import numpy as np

from xrayscreen.imaging import physics

N_R = 512
N_A = 256
R_MIN = 0.9
R_MAX = 5.5
A_MAX = 7.0
A_IMPENETRABLE = 5.5  # I_H below exp(-5.5) ~ 0.4 %: treated as impenetrable
Z_RANGE = range(3, 31)

# Class boundaries in equivalent Z and the display hues (degrees).
Z_ORGANIC_MAX = 10.0
Z_MIXED_MAX = 18.0
HUE_ORGANIC = 28.0
HUE_MIXED = 110.0
HUE_METAL = 215.0

CLASS_CODES = {"air": 0, "organic": 1, "mixed": 2, "metal": 3, "impenetrable": 4}

RESOURCES = Path(__file__).resolve().parents[2] / "resources"


def r_axis_values() -> np.ndarray:
    """Table row centres: R on a log scale (element curves crowd together at low R)."""
    return np.geomspace(R_MIN, R_MAX, N_R)


def element_curves(a_grid: np.ndarray) -> np.ndarray:
    """``R_Z(A)`` for every Z in :data:`Z_RANGE` on ``a_grid``; shape ``(nZ, nA)``."""
    import xraydb

    b = physics.beam()
    areal = np.geomspace(1e-4, 400.0, 600)
    curves = []
    for z in Z_RANGE:
        mu = physics.mass_mu(xraydb.atomic_symbol(z))[None, :]
        t = physics.transmissions(areal[None, :], mu, b).astype(np.float64)
        a_h = -np.log(t[0])
        r = -np.log(t[1]) / a_h
        # Beyond the deepest attenuation reached, hold the last ratio.
        curves.append(np.interp(a_grid, a_h, r))
    curves = np.asarray(curves)
    # R must increase with Z at fixed A for the inversion; enforce it (it only
    # trims tiny non-monotone wiggles near the impenetrable end).
    return np.maximum.accumulate(curves, axis=0)


def hue_of_z(z: np.ndarray) -> np.ndarray:
    """Display hue (degrees) for equivalent Z, smooth over +/- 1 around each boundary."""
    zs = [Z_ORGANIC_MAX - 1.0, Z_ORGANIC_MAX + 1.0, Z_MIXED_MAX - 1.0, Z_MIXED_MAX + 1.0]
    hs = [HUE_ORGANIC, HUE_MIXED, HUE_MIXED, HUE_METAL]
    return np.interp(z, zs, hs)


def build() -> dict[str, np.ndarray]:
    """Compute the table arrays (see module docstring)."""
    r_axis = r_axis_values()
    a_axis = np.linspace(0.0, A_MAX, N_A)
    curves = element_curves(a_axis)
    z_values = np.array(list(Z_RANGE), dtype=np.float64)
    zeff = np.empty((N_R, N_A))
    for j in range(N_A):
        zeff[:, j] = np.interp(r_axis, curves[:, j], z_values)
    hue = hue_of_z(zeff)
    a = np.broadcast_to(a_axis[None, :], zeff.shape)
    sat = 1.0 - np.exp(-a / 0.12)
    val = 0.2 + 0.8 * np.exp(-0.42 * a)
    # Fade to black over the last 0.5 of attenuation before the impenetrable limit.
    val = val * np.clip((A_IMPENETRABLE - a) / 0.5, 0.0, 1.0)
    rgb = np.empty((*zeff.shape, 3), dtype=np.uint8)
    for i in range(N_R):
        for j in range(N_A):
            rgb[i, j] = np.round(
                np.array(colorsys.hsv_to_rgb(hue[i, j] / 360.0, sat[i, j], val[i, j])) * 255
            )
    cls = np.where(
        zeff < Z_ORGANIC_MAX,
        CLASS_CODES["organic"],
        np.where(zeff < Z_MIXED_MAX, CLASS_CODES["mixed"], CLASS_CODES["metal"]),
    ).astype(np.uint8)
    cls[a < 0.02] = CLASS_CODES["air"]
    cls[a >= A_IMPENETRABLE] = CLASS_CODES["impenetrable"]
    meta = {
        "r_min": R_MIN,
        "r_max": R_MAX,
        "a_max": A_MAX,
        "a_impenetrable": A_IMPENETRABLE,
        "axes": "rows: log-spaced R = ln(I_L)/ln(I_H) in [r_min, r_max], columns: A = -ln(I_H) in [0, a_max]",
        "class_codes": CLASS_CODES,
        "beam": {
            "kvp": physics.TUBE_KVP,
            "tube_filter_mm_al": physics.TUBE_FILTER_MM_AL,
            "front_csi_mm": physics.FRONT_CSI_MM,
            "middle_cu_mm": physics.MIDDLE_CU_MM,
            "rear_csi_mm": physics.REAR_CSI_MM,
        },
        "attenuation_data": "xraydb (Elam tables)",
    }
    return {
        "rgb": rgb,
        "cls": cls,
        "zeff": zeff.astype(np.float16),
        "meta": np.array(json.dumps(meta)),
    }


def main(argv: list[str] | None = None) -> int:
    """Write the table and its preview into ``resources/`` (or ``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESOURCES)
    args = parser.parse_args(argv)
    import cv2

    table = build()
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "colour_table.npz", **table)
    # Preview: R upwards, A to the right, 2x for legibility.
    preview = np.ascontiguousarray(table["rgb"][::-1, :, ::-1])
    preview = cv2.resize(preview, (N_A * 2, N_R), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(args.out / "colour_table.png"), preview)
    print(json.dumps({"written": [str(args.out / "colour_table.npz")], "shape": [N_R, N_A]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
