"""Beam physics, the shipped colour table (regenerates identically), false colour, demo files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xrayscreen.imaging import build_colour_table, material, physics
from xrayscreen.imaging.demo import demo_scan_paths, demo_truth
from xrayscreen.imaging.readers import open_scan
from xrayscreen.imaging.scan import ScanKind


def test_xraydb_reference_value():
    """Water at 60 keV: 0.206 cm^2/g (NIST/Elam), read through our wrapper."""
    import xraydb

    mu = xraydb.material_mu("H2O", 60000.0, density=1.0)
    assert float(mu) == pytest.approx(0.206, abs=0.003)


def test_beam_weights_normalised_and_low_layer_softer():
    b = physics.beam()
    assert b.w_high.sum() == pytest.approx(1.0) and b.w_low.sum() == pytest.approx(1.0)
    mean_high = (b.w_high * b.energies_kev).sum()
    mean_low = (b.w_low * b.energies_kev).sum()
    assert mean_low + 20 < mean_high < physics.TUBE_KVP


def _ratio(formula: str, areal: float) -> tuple[float, float]:
    t = physics.transmissions(np.array([[areal]]), physics.mass_mu(formula)[None, :])
    a_h, a_l = -np.log(t[0, 0]), -np.log(t[1, 0])
    return float(a_h), float(a_l / a_h)


def test_ratio_orders_materials_by_z_and_hardens_with_thickness():
    r = {f: _ratio(f, 0.5)[1] for f in ("C2H4", "H2O", "Al", "Fe")}
    assert r["C2H4"] < r["H2O"] < r["Al"] < r["Fe"]
    assert _ratio("Fe", 5.0)[1] < _ratio("Fe", 0.5)[1]  # beam hardening lowers R


def test_shipped_table_matches_its_generator():
    """The file in resources/ is what the script builds (no hand edits, no drift)."""
    built = build_colour_table.build()
    table = material.colour_table()
    np.testing.assert_array_equal(built["rgb"], table.rgb)
    np.testing.assert_array_equal(built["cls"], table.cls)
    meta = json.loads(str(built["meta"]))
    assert meta["beam"]["kvp"] == physics.TUBE_KVP


@pytest.mark.parametrize(
    ("formula", "areal", "cls"),
    [
        ("C2H4", 2.0, material.CLASS_ORGANIC),
        ("H2O", 5.0, material.CLASS_ORGANIC),
        ("C6H10O5", 3.0, material.CLASS_ORGANIC),
        ("Al", 1.0, material.CLASS_MIXED),
        ("SiO2", 2.0, material.CLASS_MIXED),
        ("Fe", 0.8, material.CLASS_METAL),
        ("Cu", 1.5, material.CLASS_METAL),
        ("Fe", 40.0, material.CLASS_IMPENETRABLE),
    ],
)
def test_reference_materials_classified(formula, areal, cls):
    t = physics.transmissions(np.full((1, 4, 4), areal), physics.mass_mu(formula)[None, :])
    assert (material.material_classes(t[0], t[1]) == cls).all()


def test_false_colour_air_white_and_dense_darker():
    ones = np.ones((4, 4), np.float32)
    np.testing.assert_array_equal(material.false_colour(ones, ones), 255)
    zeros = np.zeros((4, 4), np.float32)
    assert material.false_colour(zeros, zeros).max() < 10  # impenetrable: black
    thin = physics.transmissions(np.full((1, 2, 2), 1.0), physics.mass_mu("H2O")[None])
    thick = physics.transmissions(np.full((1, 2, 2), 15.0), physics.mass_mu("H2O")[None])
    assert (
        material.false_colour(thick[0], thick[1]).mean()
        < material.false_colour(thin[0], thin[1]).mean() - 40
    )


def test_demo_scans_ship_and_open():
    paths = demo_scan_paths()
    assert len(paths) == 3
    threats = []
    for p in paths:
        scan = open_scan(p)
        assert scan.kind is ScanKind.DUAL_ENERGY and len(scan.paths) == 2
        assert scan.meta["bits"] == 12
        truth = demo_truth(p)
        threats += truth["threats"]
        assert len(truth["boxes"]) == len(truth["threats"])
    assert sorted(threats) == ["gun", "knife"]
    total = sum(f.stat().st_size for f in paths[0].parent.iterdir())
    assert total < 2 * 1024**2
