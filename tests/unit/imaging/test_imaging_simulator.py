"""The bag simulator: determinism, ground truth, realism of the raw data, false-colour hues."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from xrayscreen.imaging.scan import ScanKind
from xrayscreen.imaging.simulator import THREATS, Box, simulate_bag

SIZE = (300, 400)


@pytest.fixture(scope="module")
def bags():
    return [simulate_bag(seed, size=SIZE, threats=("gun", "knife")) for seed in range(4)]


def test_deterministic_per_seed():
    a = simulate_bag(5, size=SIZE, threats=("gun",))
    b = simulate_bag(5, size=SIZE, threats=("gun",))
    c = simulate_bag(6, size=SIZE, threats=("gun",))
    np.testing.assert_array_equal(a.scan.raw, b.scan.raw)
    assert a.boxes == b.boxes
    assert a.scan.sha256 == b.scan.sha256 != c.scan.sha256


def test_scan_is_16bit_dual_energy_with_noise(bags):
    scan = bags[0].scan
    assert scan.kind is ScanKind.SIMULATED
    assert scan.raw.shape == (2, *SIZE) and scan.raw.dtype == np.float32
    assert scan.rgb.shape == (*SIZE, 3)
    levels = scan.raw * 65535.0
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-2)  # quantised to 16 bit
    assert 0.0 <= scan.raw.min() and scan.raw.max() <= 1.0
    # Low energy is attenuated more than high energy wherever there is matter.
    matter = scan.raw[0] < 0.8
    assert (scan.raw[1][matter] < scan.raw[0][matter]).mean() > 0.95
    # Photon noise: the same bag without noise differs, by about the expected amount in air.
    clean = simulate_bag(0, size=SIZE, threats=("gun", "knife"), noise=False)
    diff = scan.raw[0] - clean.scan.raw[0]
    air = clean.scan.raw[0] > 0.999
    assert 0.001 < diff[air].std() < 0.02


def test_threat_masks_and_boxes_agree(bags):
    for bag in bags:
        labels = sorted(b.label for b in bag.boxes)
        assert labels == ["gun", "knife"]
        for box in bag.boxes:
            assert isinstance(box, Box)
            mask = bag.masks[box.label]
            ys, xs = np.nonzero(mask)
            assert (box.x0, box.y0, box.x1, box.y1) == (
                xs.min(),
                ys.min(),
                xs.max() + 1,
                ys.max() + 1,
            )
            assert 0 <= box.x0 < box.x1 <= SIZE[1] and 0 <= box.y0 < box.y1 <= SIZE[0]
        # A threat is visibly attenuating: its pixels are darker than the bag on average.
        grey = bag.scan.grey()
        assert grey[bag.masks["gun"]].mean() < np.median(grey) - 0.1


def test_clean_bag_has_no_threats():
    bag = simulate_bag(3, size=SIZE)
    assert bag.boxes == []
    assert not any(k in bag.masks for k in THREATS)
    assert {"organic", "mixed", "metal"} <= set(bag.masks)


def test_unknown_threat_rejected():
    with pytest.raises(ValueError, match="unknown threat"):
        simulate_bag(0, size=SIZE, threats=("bomb",))


def _hues(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV_FULL)  # hue 0..255 for 0..360 degrees
    sat = hsv[:, :, 1][mask]
    hue = hsv[:, :, 0][mask].astype(np.float64) * 360.0 / 256.0
    return hue[sat > 40]


def test_false_colour_hue_bands_follow_materials(bags):
    """Organic -> orange, mixed -> green, metal -> blue, inside the ground-truth masks."""
    hues = {"organic": [], "mixed": [], "metal": []}
    for bag in bags:
        for cls in hues:
            hues[cls].append(_hues(bag.scan.rgb, bag.masks[cls]))
    bands = {"organic": (10, 50), "mixed": (70, 160), "metal": (170, 250)}
    for cls, (lo, hi) in bands.items():
        h = np.concatenate(hues[cls])
        assert h.size > 500, cls
        inside = ((h >= lo) & (h <= hi)).mean()
        assert inside > 0.8, f"{cls}: only {inside:.0%} of hues in {lo}-{hi} deg"
        assert lo <= np.median(h) <= hi, cls


def test_sizes_and_pixel_scale():
    small = simulate_bag(1, size=(128, 160))
    big = simulate_bag(1, size=(600, 800))
    assert small.scan.shape == (128, 160)
    assert small.scan.pixel_mm > big.scan.pixel_mm
    with pytest.raises(ValueError):
        simulate_bag(1, size=(10, 10))
