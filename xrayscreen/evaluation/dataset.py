"""Scans prepared once for the protocol: resized image, window grid, belt, labels, threat pixels.

Preparing a scan (read, resize to the protocol scale, label windows, apply the
belt rule) is done once per evaluation and shared by every scorer (floors and
all model score kinds), so they are compared on exactly the same windows.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from xrayscreen.errors import ConfigError, ScanError, XrayscreenError
from xrayscreen.evaluation.annotations import Annotation, AnnotationSource
from xrayscreen.evaluation.labelling import WindowLabels, label_windows
from xrayscreen.imaging.representation import resize
from xrayscreen.imaging.scan import Scan, ScanKind
from xrayscreen.inference.windows import WindowGrid, belt_mask, pad_to_grid

PROTOCOL_LONGER_SIDE = 800
PROTOCOL_WINDOW = 64
PROTOCOL_STRIDE = 16
SCAN_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dcs", ".npy")

BENIGN, THREAT = "benign", "threat"


@dataclass(frozen=True)
class ProtocolSettings:
    """The protocol's knobs (defaults = the product's conventions).

    Attributes:
        longer_side: Protocol scale: the longer image side after resizing.
        window: Window size.
        stride: Window stride.
        interpolation: ``"engine"``: the models' working-scale resize
            (:func:`xrayscreen.imaging.representation.resize`: area filter when
            shrinking, bilinear when enlarging), so the evaluated image is exactly
            what the product scores; ``"area"``: OpenCV's area filter both ways.
        exclude_border: Leave out windows that reach into the air padding.

    ``interpolation="area", exclude_border=True`` is the convention under which the
    published floor table of ``../shared/data/README.md`` is reproduced (see
    docs/BENCHMARKS.md); the defaults evaluate what the product actually sees.
    """

    longer_side: int = PROTOCOL_LONGER_SIDE
    window: int = PROTOCOL_WINDOW
    stride: int = PROTOCOL_STRIDE
    interpolation: str = "engine"
    exclude_border: bool = False

    def __post_init__(self) -> None:
        if self.interpolation not in ("engine", "area"):
            raise ConfigError(
                f"interpolation must be 'engine' or 'area', got {self.interpolation!r}"
            )

    def to_dict(self) -> dict[str, object]:
        return {
            "longer_side": self.longer_side,
            "window": self.window,
            "stride": self.stride,
            "interpolation": self.interpolation,
            "exclude_border": self.exclude_border,
        }


README_COMPAT = ProtocolSettings(interpolation="area", exclude_border=True)


@dataclass
class PreparedScan:
    """One scan at the protocol scale with everything the metrics need.

    Attributes:
        name: File stem (the bag's id).
        path: Source file.
        kind: ``"benign"`` or ``"threat"``.
        sha256: Hash of the source file's bytes.
        original_shape: ``(H, W)`` before resizing.
        scan: The scan resized to the protocol scale (what scorers see).
        grid: Window grid on ``scan``.
        labels: Window labels (benign scans: all normal).
        annotation: Threat annotation at the protocol shape (empty for benign bags).
        annotation_files: Annotation files used (fingerprinted in the report).
    """

    name: str
    path: Path
    kind: str
    sha256: str
    original_shape: tuple[int, int]
    scan: Scan
    grid: WindowGrid
    labels: WindowLabels
    annotation: Annotation
    annotation_files: tuple[Path, ...] = ()
    _rgb_padded: torch.Tensor | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.scan.shape

    @property
    def annotated(self) -> bool:
        return not self.annotation.empty

    def rgb_padded(self) -> torch.Tensor:
        """``(3, H, W)`` float32 RGB in 0..1, padded with air to the grid."""
        if self._rgb_padded is None:
            rgb = torch.from_numpy(self.scan.rgb).permute(2, 0, 1).float() / 255.0
            self._rgb_padded = pad_to_grid(rgb, self.grid, 1.0)
        return self._rgb_padded

    def release(self) -> None:
        """Drop the cached padded tensor (memory)."""
        self._rgb_padded = None


@dataclass
class Skipped:
    """A file that could not be used, and why."""

    path: Path
    reason: str


@dataclass
class Dataset:
    """Prepared scans plus what was skipped."""

    scans: list[PreparedScan]
    skipped: list[Skipped]
    classes: tuple[str, ...]
    settings: ProtocolSettings = field(default_factory=ProtocolSettings)
    annotation_shared_files: tuple[Path, ...] = ()

    def of_kind(self, kind: str) -> list[PreparedScan]:
        return [s for s in self.scans if s.kind == kind]


def list_scans(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Scan files named directly, found (non-recursively, sorted) in folders, or listed
    one per line in ``.txt`` files (``#`` comments; relative paths from the list's folder)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in SCAN_SUFFIXES)
        elif p.is_file() and p.suffix.lower() == ".txt":
            for line in p.read_text(encoding="utf-8").splitlines():
                entry = line.split("#", 1)[0].strip()
                if entry:
                    q = Path(entry)
                    out.append(q if q.is_absolute() else p.parent / q)
        elif p.exists():
            out.append(p)
        else:
            raise ScanError(f"no such file or folder: {p}")
    return out


def read_scan(path: Path) -> Scan:
    """Read a scan with the project's readers when present, else as an 8-bit image.

    Raises:
        ScanError: unreadable or corrupt file.
    """
    try:
        from xrayscreen.imaging.readers import open_scan  # issue 3's registry
    except ImportError:
        open_scan = None
    if open_scan is not None:
        return open_scan(path)
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else np.zeros(0, np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise ScanError(f"{path.name}: not a readable image (corrupt or unsupported)")
    rgb = np.ascontiguousarray(img[:, :, ::-1])
    return Scan(
        rgb=rgb,
        kind=ScanKind.PSEUDO_COLOUR,
        paths=(path,),
        sha256=hashlib.sha256(data.tobytes()).hexdigest(),
    )


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _area_resize(image: np.ndarray, factor: float) -> np.ndarray:
    if abs(factor - 1.0) < 1e-9:
        return image
    h, w = image.shape[:2]
    new = (max(1, round(w * factor)), max(1, round(h * factor)))
    out = cv2.resize(image, new, interpolation=cv2.INTER_AREA)
    return out[:, :, None] if image.ndim == 3 and out.ndim == 2 else out


def to_protocol_scale(
    scan: Scan, longer_side: int = PROTOCOL_LONGER_SIDE, interpolation: str = "engine"
) -> Scan:
    """The scan resized so its longer side is ``longer_side`` (RGB and raw channels alike).

    With ``interpolation="engine"`` this is the models' own working-scale resize,
    so a bundle with ``WorkingScale(longer_side=800)`` sees exactly this image.
    """
    factor = float(longer_side) / float(max(scan.shape))
    rs = resize if interpolation == "engine" else _area_resize
    rgb = rs(scan.rgb, factor)
    raw = None
    if scan.raw is not None:
        raw = np.moveaxis(rs(np.moveaxis(scan.raw, 0, -1), factor), -1, 0)
        raw = np.ascontiguousarray(raw, dtype=np.float32)
    pixel_mm = scan.pixel_mm / factor if scan.pixel_mm else None
    return Scan(
        rgb=np.ascontiguousarray(rgb),
        kind=scan.kind,
        raw=raw,
        pixel_mm=pixel_mm,
        paths=scan.paths,
        sha256=scan.sha256,
        meta={**scan.meta, "protocol_factor": factor},
    )


def prepare_scan(
    path: Path,
    kind: str,
    source: AnnotationSource | None,
    classes: tuple[str, ...],
    settings: ProtocolSettings = ProtocolSettings(),
) -> PreparedScan:
    """Read, resize, grid and label one scan.

    Raises:
        ScanError, AnnotationError: unreadable scan or malformed annotation.
    """
    scan = read_scan(path)
    small = to_protocol_scale(scan, settings.longer_side, settings.interpolation)
    grid = WindowGrid(small.shape[0], small.shape[1], settings.window, settings.stride)
    stem = path.stem
    if kind == THREAT and source is not None:
        annotation = source.load(stem, scan.shape).at_shape(small.shape)
        files = tuple(source.files_for(stem))
    else:
        annotation = Annotation(shape=small.shape)
        files = ()
    grey = torch.from_numpy(small.rgb).float().mean(dim=2) / 255.0
    belt = belt_mask(pad_to_grid(grey, grid, 1.0), grid).numpy()
    labels = label_windows(grid, annotation, belt, classes, exclude_border=settings.exclude_border)
    return PreparedScan(
        name=stem,
        path=path,
        kind=kind,
        sha256=file_sha256(path),
        original_shape=scan.shape,
        scan=small,
        grid=grid,
        labels=labels,
        annotation=annotation,
        annotation_files=files,
    )


def prepare_dataset(
    normal: Sequence[Path],
    threat: Sequence[Path],
    source: AnnotationSource | None,
    settings: ProtocolSettings = ProtocolSettings(),
    *,
    progress: bool = True,
) -> Dataset:
    """Prepare every scan; unreadable scans and malformed annotations are skipped and reported.

    A YOLO file naming an unknown class id is *not* skipped: it raises
    :class:`~xrayscreen.evaluation.annotations.AnnotationError`, because it means
    the class list is wrong for the whole folder.
    """
    from tqdm import tqdm

    from xrayscreen.evaluation.annotations import UnknownClassError

    classes = tuple(source.classes) if source is not None else ()
    todo = [(p, BENIGN) for p in normal] + [(p, THREAT) for p in threat]
    scans: list[PreparedScan] = []
    skipped: list[Skipped] = []
    for path, kind in tqdm(todo, desc="preparing scans", unit="scan", disable=not progress):
        try:
            scans.append(prepare_scan(path, kind, source, classes, settings))
        except UnknownClassError:
            raise
        except (XrayscreenError, OSError, ValueError) as exc:
            skipped.append(Skipped(path, str(exc) or type(exc).__name__))
    shared = tuple(source.shared_files()) if source is not None else ()
    return Dataset(
        scans=scans,
        skipped=skipped,
        classes=classes,
        settings=settings,
        annotation_shared_files=shared,
    )
