"""Threat annotations: YOLO boxes, CSV pixel boxes and pixel masks, read and rescaled.

Every annotation is read in the coordinates of its source and brought to the
protocol image (the scan resized so its longer side is 800 px) by
:meth:`Annotation.at_shape`:

* **YOLO** ``class cx cy w h`` (normalised to the image, so scale-free) with a
  ``classes.txt`` naming the ids, one per line. A file naming an id that
  ``classes.txt`` does not define is refused (:class:`AnnotationError`): silently
  dropping or mislabelling a threat would corrupt every figure downstream.
* **CSV** boxes in pixels of the original scan: columns ``image, x0, y0, x1, y1,
  class`` (common aliases such as ``filename, xmin, ymin, xmax, ymax, label``
  accepted).
* **Masks**: images of class ids (0 background; by default 1 gun, 2 knife, as in
  the SIXray masks). A mask may have been drawn on a resized copy of the scan (the
  SIXray masks are 768x576 whatever the scan's size), so it is rescaled to the
  scan with nearest-neighbour interpolation, independently in each axis.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from xrayscreen.errors import ConfigError

DEFAULT_MASK_CLASSES: dict[int, str] = {1: "gun", 2: "knife"}

_CSV_ALIASES = {
    "image": ("image", "filename", "file", "name", "image_id", "path"),
    "x0": ("x0", "xmin", "x_min", "left", "x1_"),
    "y0": ("y0", "ymin", "y_min", "top"),
    "x1": ("x1", "xmax", "x_max", "right"),
    "y1": ("y1", "ymax", "y_max", "bottom"),
    "class": ("class", "label", "category", "class_name", "cls"),
}


class AnnotationError(ConfigError):
    """An annotation file is malformed or names something the class list does not define."""


class UnknownClassError(AnnotationError):
    """A label file names a class id the class list does not define (wrong classes.txt)."""


@dataclass(frozen=True)
class Box:
    """An axis-aligned threat box in continuous pixel coordinates ``[x0, x1) x [y0, y1)``."""

    x0: float
    y0: float
    x1: float
    y1: float
    cls: str

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)

    def scaled(self, sx: float, sy: float) -> Box:
        """The box with x multiplied by ``sx`` and y by ``sy``."""
        return Box(self.x0 * sx, self.y0 * sy, self.x1 * sx, self.y1 * sy, self.cls)


@dataclass
class Annotation:
    """What is known about the threats in one scan.

    Attributes:
        boxes: Threat boxes in pixels of ``shape``.
        mask: uint8 class-id image covering the whole scan (0 = background), or ``None``;
            it may have been drawn at another size than ``shape`` (see :meth:`at_shape`).
        mask_classes: Class id -> name for ``mask``.
        shape: ``(H, W)`` of the image these coordinates refer to.
        sources: Files the annotation came from (for fingerprints and messages).
    """

    boxes: list[Box] = field(default_factory=list)
    mask: np.ndarray | None = None
    mask_classes: dict[int, str] = field(default_factory=lambda: dict(DEFAULT_MASK_CLASSES))
    shape: tuple[int, int] = (0, 0)
    sources: tuple[Path, ...] = ()

    @property
    def has_boxes(self) -> bool:
        return bool(self.boxes)

    @property
    def has_mask(self) -> bool:
        return self.mask is not None and bool((self.mask > 0).any())

    @property
    def empty(self) -> bool:
        return not (self.has_boxes or self.has_mask)

    def classes(self) -> set[str]:
        """Names of the threat classes present."""
        names = {b.cls for b in self.boxes}
        if self.mask is not None:
            names |= {self.mask_classes.get(int(v), f"class{int(v)}") for v in np.unique(self.mask)}
            names.discard(self.mask_classes.get(0, "class0"))
        return names

    def at_shape(self, shape: tuple[int, int]) -> Annotation:
        """The annotation rescaled to an image of ``shape`` = (H, W).

        Boxes scale by the per-axis ratio of the shapes; a mask is resized with
        nearest-neighbour interpolation (class ids must not blend).
        """
        h, w = shape
        sy, sx = h / self.shape[0], w / self.shape[1]
        mask = None
        if self.mask is not None:
            mask = rescale_mask(self.mask, shape)
        return Annotation(
            boxes=[b.scaled(sx, sy) for b in self.boxes],
            mask=mask,
            mask_classes=dict(self.mask_classes),
            shape=(h, w),
            sources=self.sources,
        )

    def threat_pixels(self) -> np.ndarray:
        """``(H, W)`` bool: pixels inside any box or marked in the mask."""
        h, w = self.shape
        out = np.zeros((h, w), dtype=bool)
        for b in self.boxes:
            y0, y1 = int(np.floor(b.y0)), int(np.ceil(b.y1))
            x0, x1 = int(np.floor(b.x0)), int(np.ceil(b.x1))
            out[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = True
        if self.mask is not None:
            out |= rescale_mask(self.mask, (h, w)) > 0
        return out


def rescale_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a class-id mask to ``shape`` = (H, W) with nearest-neighbour interpolation."""
    h, w = shape
    if mask.shape[:2] == (h, w):
        return mask
    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)


# ----------------------------------------------------------------------------- YOLO
def read_classes(path: str | os.PathLike[str]) -> list[str]:
    """Class names from a YOLO ``classes.txt`` (one per line, id = line number)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"cannot read class list {p}: {exc}") from None
    names = [ln.strip() for ln in lines]
    while names and not names[-1]:
        names.pop()
    if not names or any(not n for n in names):
        raise AnnotationError(f"{p} must name one class per line (no blank lines)")
    return names


def read_yolo(path: str | os.PathLike[str], classes: list[str]) -> list[Box]:
    """Boxes of one YOLO label file, in normalised coordinates (0..1).

    Args:
        path: The ``.txt`` file (``class cx cy w h`` per line).
        classes: Class names by id (from ``classes.txt``).

    Returns:
        Boxes with coordinates in units of the image size (multiply by W, H).

    Raises:
        AnnotationError: malformed line, or a class id ``classes`` does not define.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"cannot read YOLO labels {p}: {exc}") from None
    boxes = []
    for i, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise AnnotationError(f"{p}:{i}: expected 'class cx cy w h', got {line.strip()!r}")
        try:
            cid = int(parts[0])
            cx, cy, bw, bh = (float(v) for v in parts[1:])
        except ValueError:
            raise AnnotationError(f"{p}:{i}: not numbers: {line.strip()!r}") from None
        if not 0 <= cid < len(classes):
            raise UnknownClassError(
                f"{p}:{i}: class id {cid} is not defined in classes.txt "
                f"(ids 0..{len(classes) - 1}: {', '.join(classes)})"
            )
        if not all(np.isfinite([cx, cy, bw, bh])) or bw <= 0 or bh <= 0:
            raise AnnotationError(f"{p}:{i}: box must have finite centre and positive size")
        boxes.append(Box(cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2, classes[cid]))
    return boxes


# ------------------------------------------------------------------------------ CSV
def read_csv_boxes(path: str | os.PathLike[str]) -> dict[str, list[Box]]:
    """Pixel boxes from a CSV file, keyed by image stem (file name without extension).

    Raises:
        AnnotationError: missing columns or a non-numeric coordinate.
    """
    p = Path(path)
    try:
        fh = open(p, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise AnnotationError(f"cannot read {p}: {exc}") from None
    with fh:
        reader = csv.DictReader(fh)
        header = {h.strip().lower(): h for h in (reader.fieldnames or [])}
        cols = {}
        for key, aliases in _CSV_ALIASES.items():
            found = next((header[a] for a in aliases if a in header), None)
            if found is None:
                raise AnnotationError(
                    f"{p}: no column for {key!r} (accepted names: {', '.join(aliases)}); "
                    f"found {', '.join(reader.fieldnames or [])}"
                )
            cols[key] = found
        out: dict[str, list[Box]] = {}
        for i, row in enumerate(reader, 2):
            try:
                x0, y0, x1, y1 = (float(row[cols[k]]) for k in ("x0", "y0", "x1", "y1"))
            except (TypeError, ValueError):
                raise AnnotationError(f"{p}:{i}: coordinates must be numbers: {row}") from None
            if x1 <= x0 or y1 <= y0:
                raise AnnotationError(f"{p}:{i}: box has no area ({x0}, {y0}, {x1}, {y1})")
            cls = str(row[cols["class"]]).strip()
            if not cls:
                raise AnnotationError(f"{p}:{i}: empty class name")
            stem = Path(str(row[cols["image"]]).strip()).stem
            out.setdefault(stem, []).append(Box(x0, y0, x1, y1, cls))
    return out


# ---------------------------------------------------------------------------- masks
def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """A class-id mask image as ``(H, W)`` uint8.

    Raises:
        AnnotationError: unreadable file or not a single-channel 8-bit image.
    """
    p = Path(path)
    data = np.fromfile(str(p), dtype=np.uint8) if p.is_file() else np.zeros(0, np.uint8)
    mask = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if mask is None:
        raise AnnotationError(f"cannot read mask image {p}")
    if mask.ndim == 3:
        # A class mask saved as RGB(A) with equal channels is still usable.
        if not (mask[..., :1] == mask[..., :3]).all():
            raise AnnotationError(f"{p}: a mask must hold class ids (one channel), got colours")
        mask = mask[..., 0]
    if mask.dtype != np.uint8:
        raise AnnotationError(f"{p}: mask must be 8-bit class ids, got {mask.dtype}")
    return mask


# ---------------------------------------------------------------------------- loader
@dataclass
class AnnotationSource:
    """Where annotations come from: a YOLO folder or CSV file, and/or a mask folder."""

    labels: Path | None = None
    masks: Path | None = None
    mask_classes: dict[int, str] = field(default_factory=lambda: dict(DEFAULT_MASK_CLASSES))

    def __post_init__(self) -> None:
        self.labels = Path(self.labels) if self.labels else None
        self.masks = Path(self.masks) if self.masks else None
        self._classes: list[str] | None = None
        self._csv: dict[str, list[Box]] | None = None
        if self.labels is not None:
            if self.labels.is_dir():
                cls_file = self.labels / "classes.txt"
                if not cls_file.is_file():
                    raise AnnotationError(
                        f"YOLO label folder {self.labels} has no classes.txt naming the ids"
                    )
                self._classes = read_classes(cls_file)
            elif self.labels.is_file():
                self._csv = read_csv_boxes(self.labels)
            else:
                raise AnnotationError(f"labels {self.labels} is neither a folder nor a CSV file")
        if self.masks is not None and not self.masks.is_dir():
            raise AnnotationError(f"mask folder {self.masks} does not exist")

    @property
    def classes(self) -> list[str]:
        """All class names this source can produce (YOLO list, CSV names, mask names)."""
        names: list[str] = list(self._classes or [])
        for boxes in (self._csv or {}).values():
            names += [b.cls for b in boxes if b.cls not in names]
        names += [n for n in self.mask_classes.values() if n not in names]
        return names

    def files_for(self, stem: str) -> list[Path]:
        """Annotation files that belong to scan ``stem`` (for fingerprints)."""
        out = []
        if self._classes is not None and self.labels is not None:
            p = self.labels / f"{stem}.txt"
            if p.is_file():
                out.append(p)
        if self.masks is not None:
            out += _mask_files(self.masks, stem)
        return out

    def shared_files(self) -> list[Path]:
        """Files every annotation depends on (classes.txt or the CSV)."""
        if self.labels is None:
            return []
        return [self.labels / "classes.txt"] if self.labels.is_dir() else [self.labels]

    def load(self, stem: str, shape: tuple[int, int]) -> Annotation:
        """The annotation of scan ``stem`` whose original image has ``shape`` = (H, W).

        Returns an empty annotation when nothing is known about the scan.

        Raises:
            AnnotationError: a file exists but is malformed.
        """
        h, w = shape
        boxes: list[Box] = []
        sources: list[Path] = []
        if self._classes is not None and self.labels is not None:
            p = self.labels / f"{stem}.txt"
            if p.is_file():
                boxes = [b.scaled(w, h) for b in read_yolo(p, self._classes)]
                sources.append(p)
        elif self._csv is not None:
            boxes = list(self._csv.get(stem, []))
        mask = None
        if self.masks is not None:
            files = _mask_files(self.masks, stem)
            if files:
                # Kept at its drawn size: at_shape() rescales it once, straight to
                # the protocol image, instead of twice through the scan's size.
                mask = read_mask(files[0])
                sources.append(files[0])
                unknown = sorted(set(np.unique(mask).tolist()) - {0} - set(self.mask_classes))
                if unknown:
                    raise UnknownClassError(
                        f"{files[0]}: mask class id(s) {unknown} not named; the mask classes "
                        f"are {self.mask_classes} (set them with --mask-classes)"
                    )
        return Annotation(
            boxes=boxes,
            mask=mask,
            mask_classes=dict(self.mask_classes),
            shape=(h, w),
            sources=tuple(sources),
        )


def _mask_files(folder: Path, stem: str) -> list[Path]:
    return [
        folder / f"{stem}{ext}"
        for ext in (".png", ".bmp", ".tif", ".tiff")
        if (folder / f"{stem}{ext}").is_file()
    ]


def parse_mask_classes(text: str | Iterable[str]) -> dict[int, str]:
    """``"gun,knife"`` -> ``{1: "gun", 2: "knife"}`` (ids start at 1; 0 is background)."""
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    if not names or any(not n for n in names):
        raise ConfigError(f"mask classes must be comma-separated names, got {text!r}")
    return {i + 1: n for i, n in enumerate(names)}
