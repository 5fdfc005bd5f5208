"""DICOS / DICOM DX projection images via pydicom.

DICOS (NEMA IIC 1) is DICOM for security screening. We read its 2-D X-ray (DX)
images: one frame is a single-energy image, two frames are a (high, low) pair.
Threat detection reports (TDR) and CT volumes are refused with a message that
says what they are. Compressed transfer syntaxes decode only when pydicom has a
plugin for them; otherwise the user is told which package to install.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from xrayscreen.errors import ScanError
from xrayscreen.imaging.decoders import Decoded, check_dims

TDR_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1.501.3"
CT_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1.501.1"

# What to install for each compressed family (pydicom's plugin packages).
_DECODER_HINT = {
    "JPEG Lossless": "pylibjpeg (pip install pylibjpeg pylibjpeg-libjpeg)",
    "JPEG-LS": "pylibjpeg (pip install pylibjpeg pylibjpeg-libjpeg)",
    "JPEG 2000": "pylibjpeg (pip install pylibjpeg pylibjpeg-openjpeg)",
    "JPEG": "pylibjpeg (pip install pylibjpeg pylibjpeg-libjpeg)",
    "RLE": "pylibjpeg (pip install pylibjpeg pylibjpeg-rle)",
}


def decode_dicom(data: bytes) -> Decoded:
    """Read a DICOS/DICOM DX image.

    Raises:
        ScanError: for non-DICOM bytes, reports, volumes, missing pixel data,
            absurd dimensions, or compressed data without an installed decoder.
    """
    # pydicom warns about every non-conformant value; the user gets our message instead.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _decode_dicom(data)


def _decode_dicom(data: bytes) -> Decoded:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        sop = str(ds.get("SOPClassUID", ""))
        modality = str(ds.get("Modality", ""))
        rows, cols = ds.get("Rows"), ds.get("Columns")
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    except InvalidDicomError:
        raise ScanError("file is not a readable DICOM/DICOS file") from None
    except Exception as exc:
        raise ScanError(f"DICOM file is truncated or corrupt ({type(exc).__name__})") from None
    if sop.startswith(TDR_SOP_PREFIX) or modality == "TDR":
        raise ScanError(
            "this DICOS file is a threat detection report (TDR), not an image: open the "
            "DX image it refers to"
        )
    if sop.startswith(CT_SOP_PREFIX) or (frames > 2 and modality == "CT"):
        raise ScanError(
            f"this DICOS file is a CT volume ({frames} slices); xrayscreen reads 2-D "
            "projection (DX) images"
        )
    bits_allocated = int(ds.get("BitsAllocated", 16) or 16)
    if bits_allocated > 16:
        kind = "floating-point" if int(ds.get("PixelRepresentation", 0) or 0) == 1 else "integer"
        raise ScanError(
            f"DICOS image with {bits_allocated}-bit {kind} pixels is not supported "
            "(8- or 16-bit DX images are)"
        )
    if rows is None or cols is None or "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise ScanError("DICOS float pixel data is not supported; export as 16-bit")
        raise ScanError("DICOM file has no pixel data (no image in it)")
    check_dims(int(rows), int(cols), "DICOM image", samples)
    if frames not in (1, 2):
        raise ScanError(
            f"DICOM image has {frames} frames; expected 1 (single energy) or 2 (high, low)"
        )
    if ts is not None and ts.is_compressed:
        arr = _decompress(ds, ts)
    else:
        expected = int(rows) * int(cols) * frames * samples * max(bits_allocated, 8) // 8
        if len(ds.PixelData) < expected:
            raise ScanError("DICOM pixel data is truncated")
        try:
            arr = ds.pixel_array
        except Exception as exc:
            raise ScanError(f"DICOM pixel data cannot be decoded ({type(exc).__name__})") from None
    arr = np.asarray(arr)
    if arr.dtype.kind not in "ui":
        raise ScanError(f"DICOM pixel type {arr.dtype} is not supported")
    if arr.dtype.kind == "i":
        arr = np.clip(arr, 0, None).astype(np.uint16 if arr.dtype.itemsize > 1 else np.uint8)
    bits = int(ds.get("BitsStored", arr.dtype.itemsize * 8) or arr.dtype.itemsize * 8)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")) == "MONOCHROME1":
        arr = (2**bits - 1) - arr.astype(np.int64)  # MONOCHROME1: high values are dark
        arr = np.clip(arr, 0, None).astype(np.uint16 if bits > 8 else np.uint8)
    meta = {
        "modality": modality,
        "sop_class_uid": sop,
        "transfer_syntax": str(ts) if ts is not None else "",
        "bits_stored": bits,
    }
    pixel_mm = _pixel_mm(ds)
    if frames == 2:
        if arr.ndim != 3 or arr.shape[0] != 2:
            raise ScanError(f"DICOM two-frame image has unexpected shape {arr.shape}")
        return Decoded(np.moveaxis(arr, 0, -1), "energies", "dicom", pixel_mm, meta)
    if samples == 3:
        return Decoded(np.ascontiguousarray(arr[:, :, :3]), "colour", "dicom", pixel_mm, meta)
    if arr.ndim != 2:
        raise ScanError(f"DICOM image has unexpected shape {arr.shape}")
    return Decoded(arr[:, :, None], "grey", "dicom", pixel_mm, meta)


def _decompress(ds, ts) -> np.ndarray:
    try:
        return ds.pixel_array
    except Exception as exc:
        name = getattr(ts, "name", str(ts))
        hint = next((h for key, h in _DECODER_HINT.items() if key.lower() in name.lower()), None)
        msg = str(exc)
        if hint and (
            "missing" in msg.lower() or "plugin" in msg.lower() or "dependenc" in msg.lower()
        ):
            raise ScanError(
                f"this DICOS file is compressed ({name}) and no decoder for it is installed: "
                f"install {hint}"
            ) from None
        raise ScanError(
            f"DICOM pixel data ({name}) cannot be decoded ({type(exc).__name__}); "
            f"a decoder such as {hint or 'pylibjpeg or gdcm'} may be needed"
        ) from None


def _pixel_mm(ds) -> float | None:
    for tag in ("ImagerPixelSpacing", "PixelSpacing"):
        value = ds.get(tag)
        try:
            if value is not None and float(value[0]) > 0:
                return float(value[0])
        except (TypeError, ValueError, IndexError):
            continue
    return None
