"""Format decoders: file bytes -> pixel array, with header checks before any allocation.

Every decoder takes the whole file as ``bytes`` (already read once for the
scan's sha256) and returns a :class:`Decoded` or raises :class:`ScanError`.
Image dimensions are read from the header and checked against
:data:`MAX_SIDE` / :data:`MAX_PIXELS` *before* a decoder allocates the pixels,
so a 20-byte file claiming 100000 x 100000 pixels is refused, not attempted.
Third-party decoders (OpenCV, tifffile, numpy) raise many exception types on
corrupt input; each is turned into one ScanError with the format named.
"""

from __future__ import annotations

import ast
import io
import struct
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from xrayscreen.errors import ScanError

MAX_SIDE = 32768
MAX_PIXELS = 120_000_000  # per channel; a 2-channel 16-bit scan of this size is ~480 MB
MIN_SIDE = 2

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
BMP_MAGIC = b"BM"
TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
NPY_MAGIC = b"\x93NUMPY"


@dataclass
class Decoded:
    """A decoded file.

    Attributes:
        pixels: ``(H, W, C)`` array, C in 1..3 (uint8/uint16/float).
        layout: ``"colour"`` (C = 3, RGB order), ``"grey"`` (C = 1) or ``"energies"``
            (C = 2, in file order).
        fmt: Short format name for messages and metadata.
        pixel_mm: Pixel pitch if the file says so.
        meta: Extra format details.
    """

    pixels: np.ndarray
    layout: str
    fmt: str
    pixel_mm: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def sniff(data: bytes, suffix: str) -> str | None:
    """Format name from the magic bytes (the extension only breaks ties for DICOM)."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(TIFF_MAGICS):
        return "tiff"
    if data.startswith(NPY_MAGIC):
        return "npy"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(BMP_MAGIC):
        return "bmp"
    if suffix in (".dcm", ".dcs", ".dicom") and len(data) > 8:
        return "dicom"  # DICOM without the 128-byte preamble
    return None


def check_dims(height: int, width: int, what: str, channels: int = 1) -> None:
    """Refuse empty, 1-pixel and absurdly large images (before allocating them)."""
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ScanError(
            f"{what} is {width}x{height} pixels: too small to be a scan (at least "
            f"{MIN_SIDE}x{MIN_SIDE} needed)"
        )
    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
        raise ScanError(
            f"{what} claims {width}x{height} pixels, beyond what a scan can be "
            f"(max side {MAX_SIDE}, max {MAX_PIXELS // 1_000_000} megapixels): the file "
            "is corrupt or not a scan"
        )
    if channels < 1 or channels > 4:
        raise ScanError(f"{what} has {channels} channels per pixel; expected 1 to 4")


# --- PNG / JPEG / BMP through OpenCV --------------------------------------------------


def _png_dims(data: bytes) -> tuple[int, int]:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ScanError("PNG file is truncated or corrupt (no image header)")
    width, height = struct.unpack(">II", data[16:24])
    return height, width


def _bmp_dims(data: bytes) -> tuple[int, int]:
    if len(data) < 26:
        raise ScanError("BMP file is truncated (no image header)")
    header_size = struct.unpack("<I", data[14:18])[0]
    if header_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    return abs(int(height)), int(width)


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_dims(data: bytes) -> tuple[int, int]:
    """Walk JPEG markers to the frame header (SOFn), which must precede the scan data."""
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF_MARKERS:
            if i + 9 > n:
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(height), int(width)
        if marker in (0xDA, 0xD9) or length < 2:
            break
        i += 2 + length
    raise ScanError("JPEG file is truncated or corrupt (no frame header before the image data)")


def decode_raster(data: bytes, fmt: str) -> Decoded:
    """PNG, JPEG or BMP (8 or 16 bit, grey or colour) via OpenCV."""
    dims = {"png": _png_dims, "jpeg": _jpeg_dims, "bmp": _bmp_dims}[fmt](data)
    check_dims(*dims, what=f"{fmt.upper()} image")
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ScanError(f"{fmt.upper()} file is corrupt: {exc.msg.strip()[:120]}") from None
    if img is None:
        raise ScanError(f"{fmt.upper()} file is truncated or corrupt (the decoder gave up)")
    if img.shape[:2] != dims:
        raise ScanError(f"{fmt.upper()} file is corrupt (header and pixel data disagree)")
    if img.ndim == 2:
        return Decoded(img[:, :, None], "grey", fmt)
    if img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.shape[2] == 2:  # grey + alpha
        return Decoded(np.ascontiguousarray(img[:, :, :1]), "grey", fmt)
    else:
        raise ScanError(f"{fmt.upper()} image has {img.shape[2]} channels; expected 1, 3 or 4")
    return Decoded(img, "colour", fmt)


# --- TIFF through tifffile --------------------------------------------------------------


def decode_tiff(data: bytes) -> Decoded:
    """TIFF: grey, RGB(A), 2-sample (high/low) or two grey pages (high/low)."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            pages = list(tif.pages)
            if not pages:
                raise ScanError("TIFF file holds no images")
            if len(pages) > 2:
                raise ScanError(
                    f"TIFF file holds {len(pages)} pages; a scan is one page (grey or colour) or "
                    "two pages (high and low energy)"
                )
            shapes = []
            for page in pages:
                shape = tuple(int(s) for s in page.shape)
                if len(shape) not in (2, 3):
                    raise ScanError(f"TIFF page has an unexpected shape {shape}")
                channels = shape[2] if len(shape) == 3 else 1
                check_dims(shape[0], shape[1], "TIFF image", channels)
                shapes.append(shape)
            pixel_mm = _tiff_pixel_mm(pages[0])
            try:
                arrays = [page.asarray() for page in pages]
            except ValueError as exc:
                if "imagecodecs" not in str(exc):
                    raise
                # tifffile needs imagecodecs for LZW/JPEG/...; OpenCV's libtiff has them.
                arrays = _tiff_via_opencv(data, len(pages), shapes)
    except ScanError:
        raise
    except Exception as exc:  # tifffile raises many types on corrupt input
        raise ScanError(f"TIFF file is truncated or corrupt ({type(exc).__name__})") from None
    if len(arrays) == 2:
        a, b = arrays
        if a.ndim != 2 or b.ndim != 2:
            raise ScanError("two-page TIFF must hold two grey images (high and low energy)")
        if a.shape != b.shape:
            raise ScanError(f"the two TIFF pages differ in size: {a.shape} vs {b.shape}")
        return Decoded(np.stack([a, b], axis=2), "energies", "tiff", pixel_mm, {"pages": 2})
    (img,) = arrays
    if img.ndim == 2:
        return Decoded(img[:, :, None], "grey", "tiff", pixel_mm)
    if img.shape[2] == 2:
        return Decoded(img, "energies", "tiff", pixel_mm, {"samples": 2})
    if img.shape[2] in (3, 4):
        return Decoded(np.ascontiguousarray(img[:, :, :3]), "colour", "tiff", pixel_mm)
    if img.shape[2] == 1:
        return Decoded(img, "grey", "tiff", pixel_mm)
    raise ScanError(f"TIFF image has {img.shape[2]} samples per pixel; expected 1, 2, 3 or 4")


def _tiff_via_opencv(data: bytes, n_pages: int, shapes: list[tuple]) -> list[np.ndarray]:
    ok, mats = cv2.imdecodemulti(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if not ok or len(mats) != n_pages:
        raise ScanError("TIFF file uses a compression that cannot be decoded here")
    out = []
    for m, shape in zip(mats, shapes):
        if m.ndim == 3 and m.shape[2] >= 3:
            m = m[:, :, [2, 1, 0, *range(3, m.shape[2])]]  # OpenCV gives BGR(A)
        if m.shape[:2] != shape[:2]:
            raise ScanError("TIFF file is corrupt (header and pixel data disagree)")
        out.append(m)
    return out


def _tiff_pixel_mm(page: Any) -> float | None:
    try:
        tags = page.tags
        unit = tags["ResolutionUnit"].value if "ResolutionUnit" in tags else 2
        num, den = tags["XResolution"].value
        per_unit = num / den
        if per_unit <= 0:
            return None
        mm = {2: 25.4, 3: 10.0}.get(int(unit))
        if mm is None:
            return None
        pitch = mm / per_unit
        # 72/96 dpi are software defaults, not a detector pitch.
        return None if int(unit) == 2 and per_unit in (72, 96, 300) else pitch
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


# --- NumPy .npy ----------------------------------------------------------------------


def decode_npy(data: bytes) -> Decoded:
    """``.npy`` without pickles: (H, W), (H, W, C) or (C, H, W) with C in 1..3."""
    try:
        major = data[6]
        if major == 1:
            hlen = struct.unpack("<H", data[8:10])[0]
            start = 10
        elif major in (2, 3):
            hlen = struct.unpack("<I", data[8:12])[0]
            start = 12
        else:
            raise ScanError(f"unsupported .npy format version {major}")
        header = data[start : start + hlen].decode("latin1")
        info = ast.literal_eval(header)
        descr, fortran, shape = info["descr"], info["fortran_order"], tuple(info["shape"])
        dtype = np.dtype(descr)
    except ScanError:
        raise
    except Exception:
        raise ScanError(".npy file has a corrupt header") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise ScanError(".npy file holds objects or records, not pixel values")
    if not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ScanError(f".npy file has an invalid shape {shape}")
    if len(shape) == 2:
        h, w, c, layout_axis = shape[0], shape[1], 1, None
    elif len(shape) == 3 and shape[2] in (1, 2, 3):
        h, w, c, layout_axis = shape[0], shape[1], shape[2], 2
    elif len(shape) == 3 and shape[0] in (1, 2, 3):
        h, w, c, layout_axis = shape[1], shape[2], shape[0], 0
    else:
        raise ScanError(
            f".npy array has shape {shape}; expected (H, W), (H, W, C) or (C, H, W) with C = 1..3"
        )
    check_dims(h, w, ".npy array", c)
    nbytes = h * w * c * dtype.itemsize
    if len(data) - start - hlen < nbytes:
        raise ScanError(
            f".npy file is truncated: {len(data) - start - hlen} bytes of pixel data, "
            f"{nbytes} needed for shape {shape}"
        )
    flat = np.frombuffer(data, dtype=dtype, count=h * w * c, offset=start + hlen)
    arr = flat.reshape(shape, order="F" if fortran else "C")
    if layout_axis is None:
        arr = arr[:, :, None]
    elif layout_axis == 0:
        arr = np.moveaxis(arr, 0, -1)
    arr = np.ascontiguousarray(arr)
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    layout = {1: "grey", 2: "energies", 3: "colour"}[c]
    return Decoded(arr, layout, "npy")
