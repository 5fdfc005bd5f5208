"""Dual-energy physics shared by the colour table and the simulator.

One beam model so the false colour and the simulated scans can never disagree:

* a 160 kVp tungsten tube, Kramers' continuum ``N(E) ~ (E0 - E) / E`` through
  2.5 mm Al inherent filtration (characteristic lines are ignored: they sit at
  58-69 keV in a broad continuum and shift R by little);
* a two-layer sandwich detector as used in baggage line scanners: a thin front
  CsI layer (the *low*-energy signal), a copper filter, a thick rear CsI layer
  (the *high*-energy signal). Both are energy-integrating: a photon of energy E
  absorbed in a layer contributes ``E`` to its signal.

Mass attenuation coefficients come from ``xraydb`` (Elam tables). Objects are
described by **areal densities** (g/cm^2) per material, so Beer-Lambert for a
pixel is ``T = sum_E w(E) exp(-sum_m mu_m(E) * rho_t_m)`` with ``w`` the
normalised detector response of a layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Energy grid (keV, bin centres) for the polychromatic sums: 5 keV bins where
# attenuation changes fast (below 50 keV), 10 keV above; no K-edge of a reference
# material lies above 10 keV. 19 bins keep the simulator fast.
_EDGES_KEV = np.concatenate([np.arange(10.0, 50.0, 5.0), np.arange(50.0, 161.0, 10.0)])
ENERGIES_KEV = (_EDGES_KEV[:-1] + _EDGES_KEV[1:]) / 2.0
BIN_WIDTH_KEV = np.diff(_EDGES_KEV)

TUBE_KVP = 160.0
TUBE_FILTER_MM_AL = 2.5
FRONT_CSI_MM = 0.4
MIDDLE_CU_MM = 0.6
REAR_CSI_MM = 3.0

CSI_DENSITY = 4.51


@dataclass(frozen=True)
class MaterialSpec:
    """A reference material.

    Attributes:
        formula: Chemical formula understood by xraydb.
        density: g/cm^3 (to turn thicknesses in cm into areal densities).
        cls: Material class shown by the false colour: ``"organic"``, ``"mixed"`` or ``"metal"``.
    """

    formula: str
    density: float
    cls: str


MATERIALS: dict[str, MaterialSpec] = {
    "polyethylene": MaterialSpec("C2H4", 0.94, "organic"),
    "water": MaterialSpec("H2O", 1.0, "organic"),
    "cellulose": MaterialSpec("C6H10O5", 1.5, "organic"),  # paper, cotton
    "nylon": MaterialSpec("C12H22N2O2", 1.14, "organic"),  # bag shell, synthetics
    "glass": MaterialSpec("SiO2", 2.5, "mixed"),
    "aluminium": MaterialSpec("Al", 2.7, "mixed"),
    "iron": MaterialSpec("Fe", 7.87, "metal"),  # steel
    "copper": MaterialSpec("Cu", 8.96, "metal"),
}

MATERIAL_CLASSES = ("organic", "mixed", "metal")


@lru_cache(maxsize=64)
def _mass_mu_cached(formula: str) -> tuple[float, ...]:
    import xraydb  # imported lazily: the table file means readers never need it

    energies_ev = ENERGIES_KEV * 1000.0
    # material_mu gives the linear coefficient for the given density; density 1
    # makes it numerically the mass attenuation coefficient (cm^2/g).
    mu = xraydb.material_mu(formula, energies_ev, density=1.0)
    return tuple(float(v) for v in np.asarray(mu))


def mass_mu(formula: str) -> np.ndarray:
    """Mass attenuation coefficient (cm^2/g) of ``formula`` on :data:`ENERGIES_KEV`."""
    return np.asarray(_mass_mu_cached(formula), dtype=np.float64)


def tube_spectrum(kvp: float = TUBE_KVP, filter_mm_al: float = TUBE_FILTER_MM_AL) -> np.ndarray:
    """Photon fluence per energy bin (arbitrary units) after the tube's filtration."""
    e = ENERGIES_KEV
    kramers = np.clip(kvp - e, 0.0, None) / e * BIN_WIDTH_KEV
    return kramers * np.exp(-mass_mu("Al") * 2.70 * filter_mm_al / 10.0)


@dataclass(frozen=True)
class Beam:
    """Normalised energy responses of the two detector layers.

    Attributes:
        energies_kev: The energy grid.
        w_high: Rear-layer weights (sum 1).
        w_low: Front-layer weights (sum 1).
    """

    energies_kev: np.ndarray
    w_high: np.ndarray
    w_low: np.ndarray


@lru_cache(maxsize=4)
def beam(
    kvp: float = TUBE_KVP,
    front_mm: float = FRONT_CSI_MM,
    cu_mm: float = MIDDLE_CU_MM,
    rear_mm: float = REAR_CSI_MM,
) -> Beam:
    """The detector responses for a tube and sandwich geometry (cached)."""
    s = tube_spectrum(kvp)
    mu_csi = mass_mu("CsI") * CSI_DENSITY / 10.0  # per mm
    mu_cu = mass_mu("Cu") * 8.96 / 10.0
    absorbed_front = 1.0 - np.exp(-mu_csi * front_mm)
    through_front = np.exp(-mu_csi * front_mm) * np.exp(-mu_cu * cu_mm)
    absorbed_rear = through_front * (1.0 - np.exp(-mu_csi * rear_mm))
    e = ENERGIES_KEV
    w_low = s * e * absorbed_front
    w_high = s * e * absorbed_rear
    return Beam(ENERGIES_KEV.copy(), w_high / w_high.sum(), w_low / w_low.sum())


def transmissions(
    areal: np.ndarray, mus: np.ndarray, b: Beam | None = None, *, chunk: int = 1 << 18
) -> np.ndarray:
    """Polychromatic Beer-Lambert transmission for a stack of materials.

    Args:
        areal: ``(M, ...)`` areal densities (g/cm^2) of M materials per pixel.
        mus: ``(M, E)`` mass attenuation of each material on the beam's energy grid.
        b: Beam model (default :func:`beam`).
        chunk: Pixels per block, to bound memory on large images.

    Returns:
        ``(2, ...)`` float32 transmissions (high, low) in (0, 1].
    """
    b = b or beam()
    m = areal.shape[0]
    flat = areal.reshape(m, -1).astype(np.float32)
    mus32 = np.asarray(mus, dtype=np.float32).T  # (E, M)
    w = np.stack([b.w_high, b.w_low]).astype(np.float32)  # (2, E)
    out = np.empty((2, flat.shape[1]), dtype=np.float32)
    for start in range(0, flat.shape[1], chunk):
        block = flat[:, start : start + chunk]
        att = mus32 @ block  # (E, P)
        np.negative(att, out=att)
        np.exp(att, out=att)
        out[:, start : start + chunk] = w @ att
    return out.reshape((2, *areal.shape[1:]))
