"""Property test: whatever bytes a file holds, open_scan raises ScanError or returns a Scan."""

from __future__ import annotations

import io
import os

import cv2
import numpy as np
import tifffile
from dicom_factory import dx_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xrayscreen.errors import ScanError
from xrayscreen.imaging.readers import open_scan
from xrayscreen.imaging.scan import Scan

# Bounded for CI; raise XRAYSCREEN_FUZZ_EXAMPLES for a long local run.
EXAMPLES = int(os.environ.get("XRAYSCREEN_FUZZ_EXAMPLES", "400"))


def _valid_files() -> list[bytes]:
    img16 = (np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) * 80).astype(np.uint16)
    rgb = np.dstack([img16 >> 8] * 2 + [np.full_like(img16, 7)]).astype(np.uint8)
    out = []
    for ext, img in ((".png", img16), (".png", rgb), (".jpg", rgb), (".bmp", rgb)):
        ok, buf = cv2.imencode(ext, img)
        assert ok
        out.append(buf.tobytes())
    for arr in (img16, np.dstack([img16, img16 // 2])):
        bio = io.BytesIO()
        np.save(bio, arr)
        out.append(bio.getvalue())
        bio = io.BytesIO()
        tifffile.imwrite(bio, arr)
        out.append(bio.getvalue())
    out.append(dx_bytes(img16))
    return out


VALID = _valid_files()
SUFFIXES = [".png", ".jpg", ".bmp", ".tif", ".npy", ".dcs", ".bin"]


@st.composite
def malformed(draw) -> bytes:
    """Valid files mangled (truncated, bytes flipped, spliced) or random bytes with a magic."""
    kind = draw(st.sampled_from(["truncate", "flip", "splice", "random"]))
    base = draw(st.sampled_from(VALID))
    if kind == "truncate":
        return base[: draw(st.integers(0, len(base)))]
    if kind == "flip":
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 12))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "splice":
        cut = draw(st.integers(0, min(len(base), 300)))
        return base[:cut] + draw(st.binary(max_size=400))
    magic = draw(
        st.sampled_from(
            [
                b"",
                b"\x89PNG\r\n\x1a\n",
                b"\xff\xd8\xff",
                b"BM",
                b"II*\x00",
                b"MM\x00*",
                b"\x93NUMPY\x01\x00",
                b"\x00" * 128 + b"DICM",
            ]
        )
    )
    return magic + draw(st.binary(max_size=600))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=malformed(), suffix=st.sampled_from(SUFFIXES))
def test_only_scan_error_comes_out(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        scan = open_scan(path)
    except ScanError as exc:
        assert str(exc)  # a message, not an empty error
    else:  # some mangled files still decode (e.g. a flipped pixel byte): then it is a valid Scan
        assert isinstance(scan, Scan)
        assert scan.rgb.dtype == np.uint8 and scan.rgb.ndim == 3
        if scan.raw is not None:
            assert np.isfinite(scan.raw).all()
            assert scan.raw.min() >= 0.0 and scan.raw.max() <= 1.0
