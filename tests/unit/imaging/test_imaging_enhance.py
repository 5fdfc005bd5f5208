"""Display modes and enhancement controls on dual-energy, pseudo-colour and grey scans."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xrayscreen.errors import ConfigError
from xrayscreen.imaging import enhance
from xrayscreen.imaging.material import CLASS_METAL, CLASS_ORGANIC, material_classes
from xrayscreen.imaging.scan import Scan, ScanKind
from xrayscreen.imaging.simulator import simulate_bag


@pytest.fixture(scope="module")
def bag():
    return simulate_bag(21, size=(240, 320), threats=("gun", "knife"))


@pytest.fixture(scope="module")
def pseudo(bag):
    """The same bag as a pseudo-colour composite (RGB only, like SIXray)."""
    return Scan(rgb=bag.scan.rgb.copy(), kind=ScanKind.PSEUDO_COLOUR)


@pytest.fixture(scope="module")
def grey_scan(bag):
    t = bag.scan.raw[:1].copy()
    g = (t[0] * 255).astype(np.uint8)
    return Scan(rgb=np.dstack([g, g, g]), kind=ScanKind.GREYSCALE, raw=t)


def test_mode_list_contract():
    for m in ("false_colour", "high", "low", "grey", "organic", "inorganic", "metal"):
        assert m in enhance.MODES
    for m in ("high_pen", "low_pen", "negative", "edges"):
        assert m in enhance.MODES
    assert enhance.MODES[0] == "false_colour"
    assert set(enhance.MODE_LABELS) == set(enhance.MODES)


@pytest.mark.parametrize("mode", enhance.MODES)
@pytest.mark.parametrize("which", ["bag", "pseudo", "grey_scan"])
def test_every_mode_renders_every_kind(request, mode, which):
    scan = request.getfixturevalue(which)
    if which == "bag":
        scan = scan.scan
    img = enhance.render(scan, mode, brightness=0.05, contrast=1.1, gamma=0.9)
    assert img.shape == (*scan.shape, 3) and img.dtype == np.uint8


def test_false_colour_is_the_scan_rgb_and_controls_change_it(bag):
    scan = bag.scan
    np.testing.assert_array_equal(enhance.render(scan), scan.rgb)
    brighter = enhance.render(scan, brightness=0.2)
    assert brighter.mean() > scan.rgb.mean() + 10
    flat = enhance.render(scan, contrast=0.2)
    assert flat.std() < scan.rgb.std() * 0.5
    assert enhance.render(scan, gamma=2.0).mean() > scan.rgb.mean()


def test_negative_and_high_low(bag):
    scan = bag.scan
    np.testing.assert_array_equal(enhance.render(scan, "negative"), 255 - scan.rgb)
    high = enhance.render(scan, "high")[:, :, 0].astype(int)
    low = enhance.render(scan, "low")[:, :, 0].astype(int)
    np.testing.assert_allclose(high, np.round(scan.raw[0] * 255), atol=1)
    matter = scan.raw[0] < 0.8
    assert (low[matter] <= high[matter] + 1).mean() > 0.99  # low energy is attenuated more


def test_organic_stripping_keeps_only_organic(bag):
    scan = bag.scan
    out = enhance.render(scan, "organic")
    cls = material_classes(scan.raw[0], scan.raw[1])
    organic = cls == CLASS_ORGANIC
    np.testing.assert_array_equal(out[organic], scan.rgb[organic])
    # Metal pixels lose their colour (become grey).
    metal = cls == CLASS_METAL
    assert metal.sum() > 100
    spread = out[metal].max(axis=1).astype(int) - out[metal].min(axis=1)
    assert (spread == 0).all()


def test_metal_only_on_pseudo_colour_uses_hue(bag, pseudo):
    out = enhance.render(pseudo, "metal")
    gun = bag.masks["gun"]
    # Most gun pixels (blue/black steel) survive in colour; organic clutter does not.
    kept_gun = (out[gun] == pseudo.rgb[gun]).all(axis=1).mean()
    assert kept_gun > 0.6
    organic = bag.masks["organic"] & ~gun & ~bag.masks["knife"]
    spread = out[organic].max(axis=1).astype(int) - out[organic].min(axis=1)
    assert (spread == 0).mean() > 0.9


def test_stripping_not_offered_without_material_information(grey_scan, bag):
    assert "organic" not in enhance.available_modes(grey_scan)
    assert enhance.available_modes(bag.scan) == enhance.MODES


def test_penetration_windows(bag):
    scan = bag.scan
    a_high = -np.log(np.clip(scan.raw[0], 1e-6, 1))
    dense = (a_high > 2.0) & (a_high < 4.0)
    thin = (a_high > 0.2) & (a_high < 0.8)
    assert dense.sum() > 50 and thin.sum() > 500
    hi = enhance.render(scan, "high_pen").mean(axis=2)
    lo = enhance.render(scan, "low_pen").mean(axis=2)
    base = scan.rgb.mean(axis=2)
    # High penetration brightens dense objects; low penetration darkens them and
    # spreads the thin range.
    assert hi[dense].mean() > base[dense].mean() + 20
    assert lo[dense].mean() < 5
    assert lo[thin].std() > base[thin].std()


def test_edges_sharpen(bag):
    scan = bag.scan
    out = enhance.render(scan, "edges").astype(np.float32).mean(axis=2)
    base = scan.rgb.astype(np.float32).mean(axis=2)
    grad = lambda g: np.abs(np.diff(g, axis=1)).mean()  # noqa: E731
    assert grad(out) > grad(base) * 1.3


def test_tone_lut_identity_and_bad_controls(bag):
    np.testing.assert_array_equal(enhance.tone_lut(0.0, 1.0, 1.0), np.arange(256, dtype=np.uint8))
    with pytest.raises(ConfigError):
        enhance.render(bag.scan, "sparkle")
    with pytest.raises(ConfigError):
        enhance.render(bag.scan, contrast=0.0)
    with pytest.raises(ConfigError):
        enhance.render(bag.scan, gamma=float("nan"))


@settings(max_examples=60, deadline=None)
@given(
    brightness=st.floats(-1.0, 1.0),
    contrast=st.floats(0.05, 5.0),
    gamma=st.floats(0.1, 5.0),
)
def test_tone_lut_is_monotone_for_any_controls(brightness, contrast, gamma):
    lut = enhance.tone_lut(brightness, contrast, gamma).astype(int)
    assert lut.shape == (256,)
    assert (np.diff(lut) >= 0).all()
