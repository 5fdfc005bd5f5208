"""Alarm regions: threshold mask and connected-component summaries."""

from __future__ import annotations

import numpy as np
import pytest

from xrayscreen.inference.regions import Region, extract_regions, threshold_mask


def _two_blobs() -> np.ndarray:
    heat = np.zeros((100, 200), np.float32)
    heat[10:30, 20:60] = 3.0  # 20 x 40 = 800 px, flat 3
    heat[15, 25] = 5.0  # its peak
    heat[60:90, 150:160] = 2.5  # 30 x 10 = 300 px
    heat[95:97, 0:2] = 4.0  # 4 px speck
    return heat


def test_threshold_mask_is_inclusive():
    heat = _two_blobs()
    m = threshold_mask(heat, 2.5)
    assert m.dtype == bool and m.sum() == 800 + 300 + 4
    assert threshold_mask(heat, 10.0).sum() == 0


def test_regions_boxes_peaks_means_areas():
    regions = extract_regions(_two_blobs(), 2.0, min_area=10)
    assert len(regions) == 2  # the 4 px speck is below min_area
    a, b = regions  # strongest first
    assert isinstance(a, Region)
    assert a.box == (20, 10, 60, 30)
    assert a.peak == pytest.approx(5.0)
    assert a.mean == pytest.approx((799 * 3.0 + 5.0) / 800)
    assert a.area_px == 800
    assert a.centroid == pytest.approx((39.5, 19.5))
    assert b.box == (150, 60, 160, 90) and b.peak == pytest.approx(2.5) and b.area_px == 300
    areas = [r.area_px for r in extract_regions(_two_blobs(), 2.0, min_area=1)]
    assert areas == [800, 4, 300]  # the speck's peak (4.0) ranks it second


def test_regions_reported_in_original_scan_pixels():
    # Heat map at working scale 0.5: everything doubles in original pixels.
    r = extract_regions(_two_blobs(), 2.0, min_area=10, scale_factor=0.5)[0]
    assert r.box == (40, 20, 120, 60)
    assert r.area_px == 3200
    assert r.centroid == pytest.approx((79.5, 39.5))
    assert r.to_dict()["centroid"] == pytest.approx([79.5, 39.5])


def test_touching_diagonally_is_one_region_with_8_connectivity():
    heat = np.zeros((10, 10), np.float32)
    heat[2, 2] = heat[3, 3] = 1.0
    assert len(extract_regions(heat, 0.5, min_area=1)) == 1
    assert len(extract_regions(heat, 0.5, min_area=1, connectivity=4)) == 2


def test_nested_component_in_anothers_box_is_not_mixed_up():
    # A ring with a separate hot dot in its hole: the ring's peak must not be the dot's.
    heat = np.zeros((50, 50), np.float32)
    heat[10:40, 10:40] = 1.0
    heat[15:35, 15:35] = 0.0
    heat[24:26, 24:26] = 9.0
    regs = extract_regions(heat, 0.5, min_area=1)
    assert [r.peak for r in regs] == [9.0, 1.0]
    assert regs[1].mean == pytest.approx(1.0)


def test_empty_and_non_float_maps():
    assert extract_regions(np.zeros((20, 20)), 1.0) == []
    heat64 = _two_blobs().astype(np.float64)
    assert len(extract_regions(heat64, 2.0, min_area=10)) == 2
