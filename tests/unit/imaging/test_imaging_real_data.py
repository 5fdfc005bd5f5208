"""open_scan on the real files in ../shared/data (skipped when the folder is absent)."""

from __future__ import annotations

import numpy as np
import pytest

from xrayscreen.errors import ScanError
from xrayscreen.imaging.material import false_colour
from xrayscreen.imaging.readers import open_scan
from xrayscreen.imaging.scan import ScanKind

pytestmark = pytest.mark.data


def test_sixray_jpegs_are_pseudo_colour(shared_data):
    files = sorted((shared_data / "sixray" / "normal").glob("*.jpg"))[:3]
    files += sorted((shared_data / "sixray" / "threat" / "images").glob("*.jpg"))[:3]
    if not files:
        pytest.skip("no SIXray images present")
    for f in files:
        scan = open_scan(f)
        assert scan.kind is ScanKind.PSEUDO_COLOUR
        assert scan.raw is None
        assert min(scan.shape) > 300
        # A false-colour composite: plenty of pixels whose channels differ (not grey).
        spread = scan.rgb.max(axis=2).astype(int) - scan.rgb.min(axis=2)
        assert (spread > 30).mean() > 0.05, f.name


def test_cargo_npy_dual_energy(shared_data):
    path = shared_data / "dual_energy_cargo" / "5.npy"
    if not path.exists():
        pytest.skip("cargo radiographs absent")
    arr = np.load(path)
    scan = open_scan(path)
    assert scan.kind is ScanKind.DUAL_ENERGY
    assert scan.raw.shape == (2, arr.shape[0], arr.shape[1])
    assert scan.meta["unattenuated"] == 65535.0
    np.testing.assert_allclose(scan.raw[0], arr[:, :, 0] / 65535.0, atol=1e-6)
    np.testing.assert_allclose(scan.raw[1], arr[:, :, 1] / 65535.0, atol=1e-6)
    np.testing.assert_array_equal(scan.rgb, false_colour(scan.raw[0], scan.raw[1]))
    swapped = open_scan(path, channel_order=("low", "high"))
    np.testing.assert_array_equal(swapped.raw[0], scan.raw[1])


def test_dicos_uncompressed_dx(shared_data):
    path = (
        shared_data
        / "dicos"
        / "V03_Data"
        / "DX_01_ExplicitLittlEndian"
        / ("DX_01_ExplicitLittlEndian.dcs")
    )
    if not path.exists():
        pytest.skip("DICOS samples absent")
    scan = open_scan(path)
    assert scan.kind is ScanKind.GREYSCALE
    assert scan.shape == (256, 256)
    assert scan.meta["format"] == "dicom"
    assert scan.raw.shape == (1, 256, 256)


def test_dicos_compressed_names_the_decoder(shared_data):
    path = shared_data / "dicos" / "V03_Data" / "DXwithTDR" / "dx.dcs"
    if not path.exists():
        pytest.skip("DICOS samples absent")
    try:
        import pylibjpeg  # noqa: F401
    except ImportError:
        with pytest.raises(ScanError, match="pylibjpeg"):
            open_scan(path)
    else:  # a decoder is installed: then it must read
        assert open_scan(path).kind is ScanKind.GREYSCALE


def test_dicos_reports_volumes_and_wide_types_refused(shared_data):
    root = shared_data / "dicos"
    if not root.exists():
        pytest.skip("DICOS samples absent")
    cases = {
        root / "V03_Data" / "DXwithTDR" / "tdr.dcs": "threat detection report",
        root / "V02A_Data" / "V02A_NewDataTypes" / "DX" / "DX_unsigned32.dcs": "32-bit",
        root / "V02A_Data" / "V02A_NewDataTypes" / "DX" / "DX_float.dcs": "floating-point",
    }
    for path, message in cases.items():
        with pytest.raises(ScanError, match=message):
            open_scan(path)
