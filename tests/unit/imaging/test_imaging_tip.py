"""Threat image projection into dual-energy, pseudo-colour and grey scans."""

from __future__ import annotations

import numpy as np
import pytest

from xrayscreen.imaging import physics
from xrayscreen.imaging.material import false_colour
from xrayscreen.imaging.scan import Scan, ScanKind
from xrayscreen.imaging.simulator import DECOYS, MATERIAL_NAMES, simulate_bag, threat_areal
from xrayscreen.imaging.tip import project_decoy, project_threat


@pytest.fixture(scope="module")
def clean():
    return simulate_bag(31, size=(300, 400))


def _check_box(res):
    ys, xs = np.nonzero(res.mask)
    assert res.box == (res.box.label, xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


@pytest.mark.parametrize("threat", ["gun", "knife", "blade"])
def test_dual_energy_projection_multiplies_transmission(clean, threat):
    res = project_threat(clean.scan, threat, seed=2)
    _check_box(res)
    assert res.box.label == threat
    assert res.scan.kind is clean.scan.kind
    ratio = res.scan.raw / np.maximum(clean.scan.raw, 1e-6)
    outside = ~res.mask
    np.testing.assert_array_equal(res.scan.raw[:, outside], clean.scan.raw[:, outside])
    assert (ratio[:, res.mask] <= 1.0 + 1e-6).all()
    # Steel attenuates the low energy more: the low/high ratio of the threat < 1 on average.
    m = res.mask & (clean.scan.raw[0] > 0.05)
    assert (np.log(ratio[1][m]) < np.log(ratio[0][m]) - 1e-4).mean() > 0.9
    np.testing.assert_array_equal(res.scan.rgb, false_colour(res.scan.raw[0], res.scan.raw[1]))
    assert res.scan.meta["tip"]["source_sha256"] == clean.scan.sha256
    assert res.scan.sha256 != clean.scan.sha256


def test_exact_transmission_at_a_fixed_position(clean):
    """Beer-Lambert check: the multiplied factor equals the threat's own transmission."""
    pos = (200.0, 150.0)
    res = project_threat(clean.scan, "knife", seed=9, position=pos)
    rng = np.random.default_rng(9)
    areal, fp = threat_areal("knife", rng, clean.scan.pixel_mm)
    mus = np.stack([physics.mass_mu(physics.MATERIALS[m].formula) for m in MATERIAL_NAMES])
    t = physics.transmissions(areal, mus)
    th, tw = fp.shape
    y0, x0 = int(round(pos[1] - th / 2)), int(round(pos[0] - tw / 2))
    np.testing.assert_array_equal(res.mask[y0 : y0 + th, x0 : x0 + tw], fp)
    got = res.scan.raw[:, y0 : y0 + th, x0 : x0 + tw]
    want = clean.scan.raw[:, y0 : y0 + th, x0 : x0 + tw] * np.where(fp, t, np.float32(1))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_deterministic_and_seed_dependent(clean):
    a = project_threat(clean.scan, "gun", seed=5)
    b = project_threat(clean.scan, "gun", seed=5)
    c = project_threat(clean.scan, "gun", seed=6)
    assert a.box == b.box
    np.testing.assert_array_equal(a.scan.rgb, b.scan.rgb)
    assert a.box != c.box


def test_pseudo_colour_projection_darkens_only_inside(clean):
    scan = Scan(rgb=clean.scan.rgb.copy(), kind=ScanKind.PSEUDO_COLOUR)
    res = project_threat(scan, "gun", seed=3)
    _check_box(res)
    assert res.scan.kind is ScanKind.PSEUDO_COLOUR and res.scan.raw is None
    np.testing.assert_array_equal(res.scan.rgb[~res.mask], scan.rgb[~res.mask])
    assert (res.scan.rgb[res.mask].astype(int) <= scan.rgb[res.mask].astype(int) + 1).all()
    assert res.scan.rgb[res.mask].mean() < scan.rgb[res.mask].mean() - 30
    # A steel gun in false colour: blue dominates over red where it is visible.
    px = res.scan.rgb[res.mask].astype(int)
    visible = px.sum(axis=1) > 60
    assert (px[visible, 2] > px[visible, 0]).mean() > 0.5


def test_grey_projection_and_clipping(clean):
    t = clean.scan.raw[:1].copy()
    g = (t[0] * 255).astype(np.uint8)
    scan = Scan(rgb=np.dstack([g, g, g]), kind=ScanKind.GREYSCALE, raw=t)
    res = project_threat(scan, "knife", seed=1, position=(2.0, 2.0))  # mostly off the image
    _check_box(res)
    assert res.box.x0 == 0 and res.box.y0 == 0
    assert (res.scan.raw[0][res.mask] <= t[0][res.mask]).all()
    with pytest.raises(ValueError):
        project_threat(scan, "knife", seed=1, position=(-5000.0, -5000.0))
    with pytest.raises(ValueError, match="unknown threat"):
        project_threat(scan, "bazooka", seed=1)


def test_thickness_scales_the_threats_matter_and_nothing_else(clean):
    pos = (200.0, 150.0)
    full = project_threat(clean.scan, "knife", seed=9, position=pos)
    thin = project_threat(clean.scan, "knife", seed=9, position=pos, thickness=0.3)
    same = project_threat(clean.scan, "knife", seed=9, position=pos, thickness=1.0)
    np.testing.assert_array_equal(same.scan.raw, full.scan.raw)  # 1 = the default exactly
    assert thin.box == full.box and (thin.mask == full.mask).all()
    m = full.mask
    # Polychromatic Beer-Lambert: the thin threat attenuates less everywhere, and more
    # than 0.3 x the full one (beam hardening: thick steel attenuates sub-linearly).
    a_full = -np.log(full.scan.raw[:, m] / clean.scan.raw[:, m])
    a_thin = -np.log(thin.scan.raw[:, m] / clean.scan.raw[:, m])
    assert (a_thin <= a_full + 1e-6).all()
    assert 0.3 <= np.median(a_thin / np.maximum(a_full, 1e-6)) <= 0.6
    assert thin.scan.meta["tip"]["thickness"] == 0.3 and "thickness" not in full.scan.meta["tip"]
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="thickness"):
            project_threat(clean.scan, "knife", seed=9, thickness=bad)


def test_clutter_places_threats_in_the_dense_contents():
    # A bag whose left half is dense clutter (grey 60) and right half light (grey 200).
    rgb = np.full((200, 300, 3), 250, np.uint8)
    rgb[20:180, 20:150] = 60
    rgb[20:180, 150:280] = 200
    bag = Scan(rgb=rgb, kind=ScanKind.PSEUDO_COLOUR)

    def share_dense(clutter: float) -> float:
        boxes = [
            project_threat(bag, "knife", seed=s, thickness=0.5, clutter=clutter).box
            for s in range(60)
        ]
        return float(np.mean([(b.x0 + b.x1) / 2 < 150 for b in boxes]))

    uniform, dense = share_dense(0.0), share_dense(3.0)
    # Opacity 0.76 against 0.22: to the 3rd power, ~40x likelier on the dense half.
    assert 0.1 < uniform < 0.6
    assert dense > 0.9 and dense > uniform + 0.4
    with pytest.raises(ValueError, match="clutter"):
        project_threat(bag, "knife", seed=0, clutter=-1.0)


@pytest.mark.parametrize("decoy", DECOYS)
def test_decoys_project_like_threats_and_are_recorded_as_decoys(clean, decoy):
    res = project_decoy(clean.scan, decoy, seed=4)
    _check_box(res)
    assert res.box.label == decoy
    outside = ~res.mask
    np.testing.assert_array_equal(res.scan.raw[:, outside], clean.scan.raw[:, outside])
    assert (res.scan.raw[:, res.mask] <= clean.scan.raw[:, res.mask] + 1e-6).all()
    assert res.scan.meta["tip_decoy"] == {
        "decoy": decoy,
        "seed": 4,
        "source_sha256": clean.scan.sha256,
    }
    assert "tip" not in res.scan.meta
    # Dense metal: a good part of the footprint passes under a tenth of the high energy.
    dark = res.scan.raw[0][res.mask] < 0.1 * np.maximum(clean.scan.raw[0][res.mask], 1e-6)
    assert dark.mean() > 0.05


def test_decoy_names_are_checked(clean):
    with pytest.raises(ValueError, match="unknown decoy"):
        project_decoy(clean.scan, "gun", seed=0)
    with pytest.raises(ValueError, match="unknown threat"):
        project_threat(clean.scan, "block", seed=0)
    with pytest.raises(ValueError, match="thickness"):
        project_decoy(clean.scan, "lump", seed=0, thickness=0.0)
