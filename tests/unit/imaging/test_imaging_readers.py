"""open_scan on generated files of every supported kind, pairing, and the malformed cases."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from xrayscreen.errors import ScanError
from xrayscreen.imaging.readers import (
    SCAN_FILE_FILTERS,
    find_pair,
    is_scan_file,
    open_scan,
)
from xrayscreen.imaging.scan import ScanKind


def _ramp(h: int = 40, w: int = 60, top: int = 65535, dtype=np.uint16) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return ((x + y) * top // (h + w - 2)).astype(dtype)


def _colour(h: int = 40, w: int = 60) -> np.ndarray:
    """A smooth, clearly non-grey image (smooth so JPEG keeps it close)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4, y * 6, np.full_like(x, 128)], axis=2).astype(np.uint8)


# --- grey and colour images -----------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".tif", ".bmp"])
def test_grey_8bit_becomes_single_energy_transmission(tmp_path, ext):
    img = _ramp(top=255, dtype=np.uint8)
    path = tmp_path / f"grey{ext}"
    assert cv2.imwrite(str(path), img)
    scan = open_scan(path)
    assert scan.kind is ScanKind.GREYSCALE
    assert scan.raw.shape == (1, 40, 60) and scan.raw.dtype == np.float32
    np.testing.assert_allclose(scan.raw[0], img / 255.0, atol=1e-6)
    assert scan.rgb.shape == (40, 60, 3)
    np.testing.assert_array_equal(scan.rgb[:, :, 0], img)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_grey_16bit_keeps_full_precision(tmp_path, ext):
    img = _ramp()
    path = tmp_path / f"grey16{ext}"
    assert cv2.imwrite(str(path), img)
    scan = open_scan(path)
    assert scan.kind is ScanKind.GREYSCALE
    assert scan.meta["bits"] == 16
    np.testing.assert_allclose(scan.raw[0], img / 65535.0, atol=1e-6)


def test_12bit_data_in_16bit_container_uses_12bit_full_scale(tmp_path):
    img = _ramp(top=4095)
    path = tmp_path / "grey12.png"
    cv2.imwrite(str(path), img)
    scan = open_scan(path)
    assert scan.meta["bits"] == 12
    assert scan.raw.max() == pytest.approx(1.0)
    # An explicit unattenuated value wins over the guess.
    scan = open_scan(path, unattenuated=65535)
    assert scan.raw.max() == pytest.approx(4095 / 65535, rel=1e-5)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tif"])
def test_colour_composite_is_pseudo_colour(tmp_path, ext):
    img = _colour()
    path = tmp_path / f"colour{ext}"
    assert cv2.imwrite(str(path), img[:, :, ::-1])  # OpenCV writes BGR
    scan = open_scan(path)
    assert scan.kind is ScanKind.PSEUDO_COLOUR
    assert scan.raw is None
    if ext == ".jpg":  # lossy: only roughly equal
        assert np.abs(scan.rgb.astype(int) - img).mean() < 6
    else:
        np.testing.assert_array_equal(scan.rgb, img)


def test_16bit_colour_png_is_scaled_to_8bit(tmp_path):
    img = _colour().astype(np.uint16) * 257
    path = tmp_path / "colour16.png"
    cv2.imwrite(str(path), img[:, :, ::-1])
    scan = open_scan(path)
    assert scan.kind is ScanKind.PSEUDO_COLOUR
    np.testing.assert_array_equal(scan.rgb, _colour())


def test_grey_stored_as_rgb_is_greyscale(tmp_path):
    g = _ramp(top=255, dtype=np.uint8)
    path = tmp_path / "grey_rgb.png"
    cv2.imwrite(str(path), np.repeat(g[:, :, None], 3, axis=2))
    assert open_scan(path).kind is ScanKind.GREYSCALE


def test_sha256_is_hash_of_file_bytes(tmp_path):
    path = tmp_path / "g.png"
    cv2.imwrite(str(path), _ramp())
    assert open_scan(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert open_scan(path).paths == (path,)


# --- dual energy ---------------------------------------------------------------------


def _write_pair(tmp_path: Path, hi_name: str, lo_name: str, ext: str = ".png"):
    high = _ramp()
    low = (high.astype(np.float64) ** 1.2 / 65535**0.2).astype(np.uint16)
    hp, lp = tmp_path / f"{hi_name}{ext}", tmp_path / f"{lo_name}{ext}"
    cv2.imwrite(str(hp), high)
    cv2.imwrite(str(lp), low)
    return hp, lp, high, low


@pytest.mark.parametrize(
    ("hi", "lo"), [("bag_high", "bag_low"), ("bag_HE", "bag_LE"), ("Bag_High", "Bag_Low")]
)
def test_pair_found_by_name_from_either_half(tmp_path, hi, lo):
    hp, lp, high, low = _write_pair(tmp_path, hi, lo)
    assert find_pair(hp) == (hp, lp)
    assert find_pair(lp) == (hp, lp)
    for opened in (hp, lp):
        scan = open_scan(opened)
        assert scan.kind is ScanKind.DUAL_ENERGY
        assert scan.paths == (hp, lp)
        np.testing.assert_allclose(scan.raw[0], high / 65535.0, atol=1e-6)
        np.testing.assert_allclose(scan.raw[1], low / 65535.0, atol=1e-6)


def test_pair_explicit_and_channel_order(tmp_path):
    hp, lp, high, low = _write_pair(tmp_path, "a", "b", ext=".tif")
    scan = open_scan([hp, lp])
    np.testing.assert_allclose(scan.raw[0], high / 65535.0, atol=1e-6)
    swapped = open_scan([lp, hp], channel_order=("low", "high"))
    np.testing.assert_array_equal(swapped.raw, scan.raw)


def test_find_pair_none_without_partner(tmp_path):
    p = tmp_path / "lonely_high.png"
    cv2.imwrite(str(p), _ramp())
    assert find_pair(p) is None
    assert find_pair(tmp_path / "plain.png") is None
    assert open_scan(p).kind is ScanKind.GREYSCALE


def test_npy_two_channel_layouts(tmp_path):
    hwc = np.stack([_ramp(), _ramp() // 2], axis=2)
    np.save(tmp_path / "hwc.npy", hwc)
    np.save(tmp_path / "chw.npy", np.moveaxis(hwc, 2, 0))
    a = open_scan(tmp_path / "hwc.npy")
    b = open_scan(tmp_path / "chw.npy")
    assert a.kind is ScanKind.DUAL_ENERGY
    np.testing.assert_array_equal(a.raw, b.raw)
    np.testing.assert_allclose(a.raw[1], hwc[:, :, 1] / 65535.0, atol=1e-6)
    c = open_scan(tmp_path / "hwc.npy", channel_order=("low", "high"))
    np.testing.assert_array_equal(c.raw[0], a.raw[1])


def test_npy_float_and_unattenuated(tmp_path):
    t = np.stack([np.linspace(0.1, 1, 60 * 40).reshape(40, 60)] * 2, axis=2).astype(np.float32)
    np.save(tmp_path / "t.npy", t)
    np.testing.assert_allclose(open_scan(tmp_path / "t.npy").raw[0], t[:, :, 0])
    np.save(tmp_path / "counts.npy", t * 1000.0)
    with pytest.raises(ScanError, match="unattenuated"):
        open_scan(tmp_path / "counts.npy")
    np.testing.assert_allclose(
        open_scan(tmp_path / "counts.npy", unattenuated=1000.0).raw[0], t[:, :, 0], rtol=1e-5
    )


def test_two_sample_and_two_page_tiff(tmp_path):
    high, low = _ramp(), _ramp() // 3
    tifffile.imwrite(tmp_path / "s2.tif", np.stack([high, low], axis=2), planarconfig="contig")
    with tifffile.TiffWriter(tmp_path / "p2.tif") as tw:
        tw.write(high)
        tw.write(low)
    for name in ("s2.tif", "p2.tif"):
        scan = open_scan(tmp_path / name)
        assert scan.kind is ScanKind.DUAL_ENERGY, name
        np.testing.assert_allclose(scan.raw[1], low / 65535.0, atol=1e-6)


# --- helpers for the GUI --------------------------------------------------------------


def test_filters_and_is_scan_file(tmp_path):
    labels = [label for label, _ in SCAN_FILE_FILTERS]
    assert labels[0] == "All scans"
    assert "*.npy" in SCAN_FILE_FILTERS[0][1] and "*.dcs" in SCAN_FILE_FILTERS[0][1]
    p = tmp_path / "x.PNG"
    cv2.imwrite(str(p), _ramp())
    assert is_scan_file(p)
    assert not is_scan_file(tmp_path / "missing.png")
    assert not is_scan_file(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    assert not is_scan_file(tmp_path / "notes.txt")


# --- malformed input: one typed error, a message a user understands -------------------


def _png_with_dims(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    )


def test_unknown_format(tmp_path):
    p = tmp_path / "scan.png"
    p.write_bytes(b"this is not an image at all")
    with pytest.raises(ScanError, match="unknown file format"):
        open_scan(p)


def test_truncated_png(tmp_path):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), _ramp())
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:60])
    with pytest.raises(ScanError, match="bad.png"):
        open_scan(bad)


def test_truncated_npy(tmp_path):
    np.save(tmp_path / "full.npy", _ramp())
    data = (tmp_path / "full.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ScanError, match="truncated"):
        open_scan(tmp_path / "cut.npy")


def test_absurd_dimensions_refused_before_decoding(tmp_path):
    p = tmp_path / "huge.png"
    p.write_bytes(_png_with_dims(200_000, 150_000))
    with pytest.raises(ScanError, match="beyond what a scan can be"):
        open_scan(p)
    # Same for a .npy header claiming a giant array with no data behind it.
    header = "{'descr': '<u2', 'fortran_order': False, 'shape': (90000, 90000, 2), }"
    header = header.ljust(118) + "\n"
    (tmp_path / "huge.npy").write_bytes(
        b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()
    )
    with pytest.raises(ScanError, match="beyond what a scan can be"):
        open_scan(tmp_path / "huge.npy")


@pytest.mark.parametrize("shape", [(1, 1), (0, 5), (1, 100)])
def test_empty_and_one_pixel_images(tmp_path, shape):
    p = tmp_path / "tiny.npy"
    np.save(p, np.zeros(shape, dtype=np.uint16))
    with pytest.raises(ScanError, match="too small"):
        open_scan(p)


def test_one_pixel_png(tmp_path):
    p = tmp_path / "px.png"
    cv2.imwrite(str(p), np.zeros((1, 1), np.uint8))
    with pytest.raises(ScanError, match="too small"):
        open_scan(p)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(ScanError, match="empty"):
        open_scan(p)


@pytest.mark.parametrize("dtype", [np.uint32, np.int64, np.complex64, np.bool_])
def test_wrong_bit_depth(tmp_path, dtype):
    p = tmp_path / "deep.npy"
    np.save(p, np.ones((20, 20), dtype=dtype))
    with pytest.raises(ScanError):
        open_scan(p)


def test_32bit_tiff_refused(tmp_path):
    p = tmp_path / "deep.tif"
    tifffile.imwrite(p, np.ones((20, 20), dtype=np.uint32))
    with pytest.raises(ScanError, match="32-bit"):
        open_scan(p)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf(tmp_path, bad):
    a = np.full((20, 20), 0.5, dtype=np.float32)
    a[3, 4] = bad
    np.save(tmp_path / "nan.npy", a)
    with pytest.raises(ScanError, match="NaN or infinity"):
        open_scan(tmp_path / "nan.npy")


def test_mismatched_pair_sizes(tmp_path):
    cv2.imwrite(str(tmp_path / "x_high.png"), _ramp(40, 60))
    cv2.imwrite(str(tmp_path / "x_low.png"), _ramp(40, 61))
    with pytest.raises(ScanError, match="differ in size"):
        open_scan(tmp_path / "x_high.png")


def test_colour_file_in_a_pair_refused(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), _ramp())
    cv2.imwrite(str(tmp_path / "b.png"), _colour())
    with pytest.raises(ScanError, match="two grey"):
        open_scan([tmp_path / "a.png", tmp_path / "b.png"])


def test_directory_missing_and_bad_arguments(tmp_path):
    with pytest.raises(ScanError, match="folder"):
        open_scan(tmp_path)
    with pytest.raises(ScanError, match="does not exist"):
        open_scan(tmp_path / "nope.png")
    with pytest.raises(ScanError, match="one file or a pair"):
        open_scan([tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    with pytest.raises(ScanError, match="channel_order"):
        open_scan(tmp_path / "a.png", channel_order=("high", "high"))


def test_three_page_tiff_refused(tmp_path):
    with tifffile.TiffWriter(tmp_path / "p3.tif") as tw:
        for _ in range(3):
            tw.write(_ramp())
    with pytest.raises(ScanError, match="3 pages"):
        open_scan(tmp_path / "p3.tif")


def test_pickled_npy_refused(tmp_path):
    p = tmp_path / "obj.npy"
    np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ScanError, match="objects"):
        open_scan(p)


# --- DICOS generated here (the real samples are tested in test_imaging_real_data) ------


def test_generated_dicos_dx_single_and_two_frame(tmp_path):
    from dicom_factory import dx_bytes

    img = _ramp()
    (tmp_path / "one.dcs").write_bytes(dx_bytes(img))
    scan = open_scan(tmp_path / "one.dcs")
    assert scan.kind is ScanKind.GREYSCALE
    assert scan.pixel_mm == pytest.approx(0.8)
    np.testing.assert_allclose(scan.raw[0], img / 65535.0, atol=1e-6)
    (tmp_path / "two.dcs").write_bytes(dx_bytes(np.stack([img, img // 2]), frames=2))
    scan = open_scan(tmp_path / "two.dcs")
    assert scan.kind is ScanKind.DUAL_ENERGY
    np.testing.assert_allclose(scan.raw[1], (img // 2) / 65535.0, atol=1e-6)


def test_dicos_monochrome1_is_inverted(tmp_path):
    from dicom_factory import dx_bytes

    img = _ramp()
    (tmp_path / "m1.dcs").write_bytes(dx_bytes(img, photometric="MONOCHROME1"))
    scan = open_scan(tmp_path / "m1.dcs")
    np.testing.assert_allclose(scan.raw[0], (65535 - img) / 65535.0, atol=1e-6)


def _tiff_with_dims(width: int, height: int) -> bytes:
    entries = [
        (256, 4, 1, width),  # ImageWidth, LONG
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: min-is-black
        (273, 4, 1, 8),  # StripOffsets
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, 16),  # StripByteCounts
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        ifd += struct.pack("<HHII", tag, typ, count, value)
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd


def _jpeg_with_dims(width: int, height: int) -> bytes:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + sof + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + b"\x00" * 32


def _bmp_with_dims(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 54) + info + b"\x00" * 16


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("huge.tif", _tiff_with_dims(100_000, 100_000)),
        ("huge.jpg", _jpeg_with_dims(65_000, 65_000)),
        ("huge.bmp", _bmp_with_dims(200_000, -150_000)),
    ],
)
def test_absurd_dimensions_other_formats(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    with pytest.raises(ScanError, match="beyond what a scan can be"):
        open_scan(p)


def test_pair_with_mixed_case_names(tmp_path):
    hp, lp, _, _ = _write_pair(tmp_path, "scan_HIGH", "scan_low")
    assert find_pair(hp) == (hp, lp)
