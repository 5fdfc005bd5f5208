"""Open any scan file an operator meets: :func:`open_scan` is the one entry point.

Supported (the format is recognised from the file's bytes, not its name):

* pseudo-colour composites (PNG, JPEG, BMP, TIFF; 8 or 16 bit) -> ``PSEUDO_COLOUR``;
* single-energy grey images (8/16-bit PNG, TIFF, BMP, JPEG, DICOS DX) -> ``GREYSCALE``;
* dual-energy pairs: two grey files (high, low), given together or found by name
  (``*_high``/``*_low``, ``*_HE``/``*_LE``) -> ``DUAL_ENERGY``;
* two-channel arrays: ``.npy`` (H, W, 2) or (2, H, W), 2-sample or two-page TIFF,
  two-frame DICOS -> ``DUAL_ENERGY``.

Raw values become transmissions in 0..1 by dividing by the *unattenuated*
value: given explicitly, else the type's full scale (255, 65535), except that
16-bit data whose maximum fits in 12 or 14 bits is taken to come from a 12/14-bit
detector (a scan always shows some air, which reads near full scale).

Every failure a user can cause raises :class:`~xrayscreen.errors.ScanError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xrayscreen.errors import ScanError
from xrayscreen.imaging import decoders
from xrayscreen.imaging.decoders import Decoded
from xrayscreen.imaging.material import false_colour
from xrayscreen.imaging.scan import Scan, ScanKind

IMAGE_PATTERNS = ["*.png", "*.jpg", "*.jpeg", "*.bmp", "*.tif", "*.tiff"]
RAW_PATTERNS = ["*.npy"]
DICOS_PATTERNS = ["*.dcs", "*.dcm"]

SCAN_FILE_FILTERS: list[tuple[str, list[str]]] = [
    ("All scans", IMAGE_PATTERNS + RAW_PATTERNS + DICOS_PATTERNS),
    ("Images (pseudo-colour, grey, dual-energy pairs)", IMAGE_PATTERNS),
    ("Raw dual-energy arrays (.npy)", RAW_PATTERNS),
    ("DICOS / DICOM", DICOS_PATTERNS),
    ("All files", ["*"]),
]

SCAN_SUFFIXES = frozenset(p[1:] for p in IMAGE_PATTERNS + RAW_PATTERNS + DICOS_PATTERNS)
MAX_FILE_BYTES = 2 * 1024**3

# Pair naming: stem ends with one of these tokens (case-insensitive), high first.
_PAIR_TOKENS = (("_high", "_low"), ("_he", "_le"), ("-high", "-low"), ("-he", "-le"))


def is_scan_file(path: str | Path) -> bool:
    """Whether ``path`` is an existing file with a scan extension (cheap; no decoding)."""
    p = Path(path)
    return p.suffix.lower() in SCAN_SUFFIXES and p.is_file()


def find_pair(path: str | Path) -> tuple[Path, Path] | None:
    """Find the other half of a dual-energy pair by file name.

    ``bag_high.png`` pairs with ``bag_low.png``, ``bag_HE.tif`` with ``bag_LE.tif``
    (case-insensitive, same folder; the same extension is preferred, any scan
    extension accepted).

    Returns:
        ``(high, low)`` paths when both exist, else ``None``.
    """
    p = Path(path)
    stem = p.stem
    low_stem = stem.lower()
    for hi, lo in _PAIR_TOKENS:
        for mine, other, is_high in ((hi, lo, True), (lo, hi, False)):
            if low_stem.endswith(mine):
                base = stem[: len(stem) - len(mine)]
                sep_token = stem[len(stem) - len(mine) :]
                other_token = _match_case(sep_token, other)
                partner = _existing_partner(p, base + other_token)
                if partner is None:
                    return None
                return (p, partner) if is_high else (partner, p)
    return None


def _match_case(token: str, other: str) -> str:
    """Give ``other`` the case style of ``token`` (``_HE`` -> ``_LE``, ``_High`` -> ``_Low``)."""
    body = token[1:]
    if body.isupper():
        return other.upper()
    if body[:1].isupper():
        return other[0] + other[1:].capitalize()
    return other


def _existing_partner(p: Path, stem: str) -> Path | None:
    candidates = [p.with_name(stem + p.suffix)]
    candidates += [p.with_name(stem + s) for s in sorted(SCAN_SUFFIXES) if s != p.suffix.lower()]
    for c in candidates:
        if c.is_file():
            return c
    # Names that differ only in case (bag_HIGH.png + bag_low.png): scan the folder.
    want = stem.lower()
    try:
        for c in p.parent.iterdir():
            if c != p and c.stem.lower() == want and c.suffix.lower() in SCAN_SUFFIXES:
                if c.is_file():
                    return c
    except OSError:
        return None
    return None


def open_scan(
    path_or_paths: str | Path | Sequence[str | Path],
    *,
    channel_order: tuple[str, str] = ("high", "low"),
    unattenuated: float | None = None,
) -> Scan:
    """Open a scan.

    Args:
        path_or_paths: One file, or two grey files forming a dual-energy pair (in
            the order given by ``channel_order``). A single file named like half of
            a pair (``*_high``/``*_low``, ``*_HE``/``*_LE``) is opened together with
            its partner when the partner exists.
        channel_order: What the two channels/files hold, e.g. ``("low", "high")``
            for data stored low energy first.
        unattenuated: Raw value meaning "no attenuation" (e.g. 65535); default
            from the bit depth (see module docstring).

    Returns:
        The :class:`Scan`.

    Raises:
        ScanError: for anything that is not a readable scan.
    """
    order = _check_order(channel_order)
    if unattenuated is not None and not (np.isfinite(unattenuated) and unattenuated > 0):
        raise ScanError(f"the unattenuated value must be a positive number, got {unattenuated}")
    paths = _as_paths(path_or_paths)
    if len(paths) == 1:
        pair = find_pair(paths[0]) if paths[0].is_file() else None
        if pair is not None:
            paths = [pair[0], pair[1]] if order == (0, 1) else [pair[1], pair[0]]
    datas = [_read_bytes(p) for p in paths]
    digest = hashlib.sha256()
    for d in datas:
        digest.update(d)
    decoded = [_decode(d, p) for d, p in zip(datas, paths)]
    if len(decoded) == 1:
        scan = _single(decoded[0], order, unattenuated)
    else:
        scan = _pair(decoded, order, unattenuated)
    scan.paths = tuple(paths)
    scan.sha256 = digest.hexdigest()
    return scan


def _check_order(channel_order: Sequence[str]) -> tuple[int, int]:
    names = tuple(str(c).lower() for c in channel_order)
    if sorted(names) != ["high", "low"]:
        raise ScanError(f"channel_order must name 'high' and 'low' once each, got {channel_order}")
    return (names.index("high"), names.index("low"))


def _as_paths(path_or_paths: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(path_or_paths, (str, Path)):
        paths = [Path(path_or_paths)]
    else:
        try:
            paths = [Path(p) for p in path_or_paths]
        except TypeError:
            raise ScanError(f"not a file path: {path_or_paths!r}") from None
    if not 1 <= len(paths) <= 2:
        raise ScanError(f"a scan is one file or a pair of files; got {len(paths)} files")
    return paths


def _read_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise ScanError(f"{path.name} is a folder, not a scan file")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ScanError(f"{path.name} is {size / 1e9:.1f} GB, too large to be one scan")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ScanError(f"{path} does not exist") from None
    except PermissionError:
        raise ScanError(f"no permission to read {path}") from None
    except OSError as exc:
        raise ScanError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not data:
        raise ScanError(f"{path.name} is empty (0 bytes)")
    return data


def _decode(data: bytes, path: Path) -> Decoded:
    fmt = decoders.sniff(data, path.suffix.lower())
    if fmt is None:
        raise ScanError(
            f"{path.name}: unknown file format (expected PNG, JPEG, BMP, TIFF, .npy or DICOS)"
        )
    try:
        if fmt in ("png", "jpeg", "bmp"):
            dec = decoders.decode_raster(data, fmt)
        elif fmt == "tiff":
            dec = decoders.decode_tiff(data)
        elif fmt == "npy":
            dec = decoders.decode_npy(data)
        else:
            from xrayscreen.imaging.dicos import decode_dicom

            dec = decode_dicom(data)
    except ScanError as exc:
        raise ScanError(f"{path.name}: {exc}") from None
    except MemoryError:
        raise ScanError(f"{path.name}: not enough memory to decode this file") from None
    except Exception as exc:  # last line of defence against decoder surprises on corrupt bytes
        raise ScanError(
            f"{path.name}: {fmt.upper()} file is corrupt or unsupported ({type(exc).__name__})"
        ) from None
    _check_values(dec, path)
    return dec


def _check_values(dec: Decoded, path: Path) -> None:
    px = dec.pixels
    if px.dtype == np.bool_ or px.dtype.kind not in "uif":
        raise ScanError(f"{path.name}: pixel type {px.dtype} is not supported")
    if px.dtype.kind in "ui" and px.dtype.itemsize > 2:
        raise ScanError(
            f"{path.name}: {px.dtype.itemsize * 8}-bit integer pixels are not supported "
            "(8- or 16-bit expected)"
        )
    if px.dtype.kind == "i" and px.size and int(px.min()) < 0:
        raise ScanError(f"{path.name}: negative pixel values; expected transmissions")
    if px.dtype.kind == "f":
        if not np.isfinite(px).all():
            raise ScanError(f"{path.name}: pixel values include NaN or infinity")
        if px.size and float(px.min()) < 0:
            raise ScanError(f"{path.name}: negative pixel values; expected transmissions")
    dec.meta.setdefault("format", dec.fmt)
    dec.meta.setdefault("dtype", str(px.dtype))


def _full_scale(px: np.ndarray, unattenuated: float | None) -> tuple[float, int | None]:
    """``(unattenuated value, bits)`` for turning raw values into transmissions."""
    if unattenuated is not None:
        return float(unattenuated), None
    if px.dtype == np.uint8 or px.dtype == np.int8:
        return 255.0, 8
    if px.dtype.kind in "ui":
        top = int(px.max()) if px.size else 0
        for bits in (12, 14):
            if top <= 2**bits - 1 and top > 2 ** (bits - 2):
                return float(2**bits - 1), bits
        return 65535.0, 16
    top = float(px.max()) if px.size else 0.0
    if top <= 1.0 + 1e-6:
        return 1.0, None
    raise ScanError(
        "floating-point pixel values above 1: pass the unattenuated value (the reading "
        "with nothing in the beam) to convert them to transmissions"
    )


def _transmission(px: np.ndarray, unattenuated: float | None) -> tuple[np.ndarray, dict]:
    scale, bits = _full_scale(px, unattenuated)
    t = np.clip(px.astype(np.float32) / np.float32(scale), 0.0, 1.0)
    return t, {"unattenuated": scale, "bits": bits or px.dtype.itemsize * 8}


def _to_uint8(px: np.ndarray) -> np.ndarray:
    if px.dtype == np.uint8:
        return px
    if px.dtype.kind == "u" or px.dtype.kind == "i":
        top = 255 if px.dtype.itemsize == 1 else 65535
        return (px.astype(np.float32) * (255.0 / top) + 0.5).astype(np.uint8)
    top = max(float(px.max()), 1.0)
    return (np.clip(px / top, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def _grey_rgb(t: np.ndarray) -> np.ndarray:
    g = (np.clip(t, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


def _single(dec: Decoded, order: tuple[int, int], unattenuated: float | None) -> Scan:
    px = dec.pixels
    meta = dict(dec.meta)
    if dec.layout == "colour":
        if np.array_equal(px[:, :, 0], px[:, :, 1]) and np.array_equal(px[:, :, 0], px[:, :, 2]):
            dec = Decoded(px[:, :, :1], "grey", dec.fmt, dec.pixel_mm, meta)
            meta["stored_as_rgb"] = True
        else:
            meta["bits"] = px.dtype.itemsize * 8
            return Scan(
                rgb=np.ascontiguousarray(_to_uint8(px)),
                kind=ScanKind.PSEUDO_COLOUR,
                pixel_mm=dec.pixel_mm,
                meta=meta,
            )
    if dec.layout == "grey":
        t, info = _transmission(dec.pixels, unattenuated)
        meta.update(info)
        return Scan(
            rgb=_grey_rgb(t[:, :, 0]),
            kind=ScanKind.GREYSCALE,
            raw=np.ascontiguousarray(np.moveaxis(t, -1, 0)),
            pixel_mm=dec.pixel_mm,
            meta=meta,
        )
    # Two channels: (high, low) in channel_order.
    t, info = _transmission(px, unattenuated)
    meta.update(info)
    meta["channel_order"] = ["high", "low"] if order == (0, 1) else ["low", "high"]
    return _dual(t[:, :, order[0]], t[:, :, order[1]], dec.pixel_mm, meta)


def _pair(decs: list[Decoded], order: tuple[int, int], unattenuated: float | None) -> Scan:
    for i, d in enumerate(decs):
        if d.layout == "colour":
            px = d.pixels
            if np.array_equal(px[:, :, 0], px[:, :, 1]) and np.array_equal(
                px[:, :, 0], px[:, :, 2]
            ):
                decs[i] = Decoded(px[:, :, :1], "grey", d.fmt, d.pixel_mm, d.meta)
                continue
        if decs[i].layout != "grey":
            raise ScanError(
                "a dual-energy pair must be two grey (single-channel) images; "
                f"file {i + 1} holds {d.layout} data"
            )
    a, b = decs[0].pixels, decs[1].pixels
    if a.shape != b.shape:
        raise ScanError(
            f"the two images of the pair differ in size: {a.shape[1]}x{a.shape[0]} vs "
            f"{b.shape[1]}x{b.shape[0]}"
        )
    if a.dtype != b.dtype:
        raise ScanError(f"the two images of the pair differ in bit depth: {a.dtype} vs {b.dtype}")
    both = np.concatenate([a, b], axis=2)
    t, info = _transmission(both, unattenuated)
    meta = dict(decs[0].meta)
    meta.update(info)
    meta["pair"] = True
    return _dual(t[:, :, order[0]], t[:, :, order[1]], decs[0].pixel_mm, meta)


def _dual(high: np.ndarray, low: np.ndarray, pixel_mm: float | None, meta: dict) -> Scan:
    raw = np.ascontiguousarray(np.stack([high, low]), dtype=np.float32)
    return Scan(
        rgb=false_colour(raw[0], raw[1]),
        kind=ScanKind.DUAL_ENERGY,
        raw=raw,
        pixel_mm=pixel_mm,
        meta=meta,
    )
