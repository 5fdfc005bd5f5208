"""Every reader format opens in the window and is scored; errors are dialogs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile
from conftest import synthetic_bag, wait_scored

from xrayscreen.gui import backend


def _grey16(h=200, w=300):
    yy, xx = np.mgrid[0:h, 0:w]
    t = 0.35 + 0.6 * np.exp(-((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (2 * (w / 3) ** 2))
    return (np.clip(1.0 - t + 0.3, 0.05, 1.0) * 65535).astype(np.uint16)


def _write_dicos(path, frames: np.ndarray) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.501.2.1"  # DICOS DX for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = frames.shape[-2:]
    if frames.ndim == 3:
        ds.NumberOfFrames = frames.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(frames, dtype="<u2").tobytes()
    ds.save_as(str(path), enforce_file_format=True)


FORMATS = [
    "png",
    "jpg",
    "bmp",
    "tif_rgb",
    "tif_grey16",
    "pair_tif",
    "npy_dual",
    "dicos_dx",
    "dicos_dual",
]


def _make(kind: str, d) -> tuple[object, str]:
    rgb = synthetic_bag(h=200, w=300, seed=5)
    if kind in ("png", "jpg", "bmp"):
        p = d / f"bag.{kind}"
        cv2.imwrite(str(p), rgb[:, :, ::-1])
        return p, "pseudo_colour"
    if kind == "tif_rgb":
        p = d / "bag.tif"
        tifffile.imwrite(p, rgb)
        return p, "pseudo_colour"
    hi = _grey16()
    lo = (hi.astype(np.float64) * 0.85).astype(np.uint16)
    if kind == "tif_grey16":
        p = d / "bag.tif"
        tifffile.imwrite(p, hi)
        return p, "greyscale"
    if kind == "pair_tif":
        tifffile.imwrite(d / "bag_high.tif", hi)
        tifffile.imwrite(d / "bag_low.tif", lo)
        return (d / "bag_high.tif", d / "bag_low.tif"), "dual_energy"
    if kind == "npy_dual":
        p = d / "bag.npy"
        np.save(p, np.stack([hi, lo], axis=-1))
        return p, "dual_energy"
    if kind == "dicos_dx":
        p = d / "bag.dcs"
        _write_dicos(p, hi)
        return p, "greyscale"
    p = d / "bag2.dcs"
    _write_dicos(p, np.stack([hi, lo]))
    return p, "dual_energy"


@pytest.mark.parametrize("kind", FORMATS)
def test_each_format_opens_and_scores(qtbot, window, errors, tmp_path, kind):
    source, expected_kind = _make(kind, tmp_path)
    if isinstance(source, tuple):
        assert window.open_pair(*source), errors
        assert isinstance(window.scan_source, tuple)
    else:
        assert window.open_path(source), errors
    assert errors == []
    assert window.scan.shape == (200, 300)
    assert getattr(window.scan.kind, "value", window.scan.kind) == expected_kind
    if expected_kind == "dual_energy":
        assert window.scan.raw is not None and window.scan.raw.shape[0] == 2
    wait_scored(qtbot, window)
    assert window.heat is not None and not window.view.heat_item.pixmap().isNull()


def test_open_dialog_filters_list_every_format():
    filters = backend.file_filters()
    joined = " ".join(filters)
    for ext in ("*.png", "*.jpg", "*.tif"):
        assert ext in joined
    assert "*.npy" in joined and "*.dcs" in joined
    assert all("(" in f and f.endswith(")") for f in filters)


@pytest.mark.parametrize(
    "content",
    [b"\x89PNG\r\n\x1a\n" + b"garbage" * 50, b"", b"DICM" * 10, b"not an image at all"],
    ids=["truncated_png", "empty", "fake_dicom", "text"],
)
def test_corrupt_files_are_dialogs_not_crashes(qtbot, window, errors, tmp_path, content):
    bad = tmp_path / "broken.png"
    bad.write_bytes(content)
    assert not window.open_path(bad)
    assert len(errors) == 1
    title, text = errors[0]
    assert title == "Cannot open scan" and "Traceback" not in text and text.strip()
    assert window.scan is None
