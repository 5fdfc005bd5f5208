"""Window labels under the X-ray benchmark protocol (``../shared/data/README.md``).

On the protocol image (longer side 800 px) and the shared 64x64 / stride-16 grid
(:class:`~xrayscreen.inference.windows.WindowGrid`, bottom/right padded with air):

* **anomalous** (label 1): intersection-over-union with a threat box > 0.3, **or**
  at least half of the window's area inside that box (knives and guns are often
  larger than a window, so IoU alone labels almost no knife window). With a pixel
  mask instead of boxes: at least 30 % of the window's pixels are threat.
* **normal** (label 0): the window touches no box (zero intersection area; with a
  mask, no threat pixel).
* **ignored** (label -1): touches a threat but is not anomalous: neither side.
* **belt**: the shared empty-belt rule (:func:`~xrayscreen.inference.windows.belt_mask`);
  belt windows are left out of both sides whatever their label.

A scan annotated with both boxes and a mask is labelled from its **boxes** (the
protocol's primary annotation, and what the published floor table used); the
mask still serves pixel-level scores. The class of an anomalous window is that of
the box it overlaps most (mask: the most frequent threat class in the window).
Window areas include padded air, exactly as the model sees the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from xrayscreen.evaluation.annotations import Annotation, Box
from xrayscreen.inference.windows import WindowGrid

IOU_THRESHOLD = 0.3
INSIDE_FRACTION = 0.5
MASK_FRACTION = 0.3

ANOMALOUS, NORMAL, IGNORED = 1, 0, -1


@dataclass
class WindowLabels:
    """Per-window labels of one scan, in the grid's row-major order.

    Attributes:
        label: ``(N,)`` int8: 1 anomalous, 0 normal, -1 ignored (touches a threat).
        cls: ``(N,)`` int16 index into ``classes`` for anomalous windows, -1 otherwise.
        classes: Class names (the evaluation's class list).
        belt: ``(N,)`` bool, empty-belt windows (excluded from every pool).
        rule: ``"boxes"``, ``"mask"`` or ``"none"`` (no annotation: all windows normal
            by absence of knowledge, usable only at bag level).
        border: ``(N,)`` bool, windows left out because they reach into the padding
            (only with the README-compatible setting; all False by default).
    """

    label: np.ndarray
    cls: np.ndarray
    classes: tuple[str, ...]
    belt: np.ndarray
    rule: str
    border: np.ndarray | None = None

    @property
    def excluded(self) -> np.ndarray:
        """Bool mask of windows on neither side (belt, or border when excluded)."""
        return self.belt if self.border is None else (self.belt | self.border)

    @property
    def positives(self) -> np.ndarray:
        """Bool mask of anomalous, non-excluded windows."""
        return (self.label == ANOMALOUS) & ~self.excluded

    @property
    def negatives(self) -> np.ndarray:
        """Bool mask of normal (threat-free), non-excluded windows."""
        return (self.label == NORMAL) & ~self.excluded


def box_overlaps(grid: WindowGrid, boxes: list[Box]) -> tuple[np.ndarray, np.ndarray]:
    """Intersection areas and IoU of every window with every box.

    Returns:
        ``(inter, iou)``, each ``(N, M)`` float64 for N windows and M boxes.
    """
    origins = grid.origins().astype(np.float64)
    n, m, win = len(origins), len(boxes), float(grid.window)
    if m == 0:
        return np.zeros((n, 0)), np.zeros((n, 0))
    b = np.array([[bx.x0, bx.y0, bx.x1, bx.y1] for bx in boxes], dtype=np.float64)
    wy0, wx0 = origins[:, :1], origins[:, 1:]
    ix = np.clip(np.minimum(wx0 + win, b[None, :, 2]) - np.maximum(wx0, b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(wy0 + win, b[None, :, 3]) - np.maximum(wy0, b[None, :, 1]), 0, None)
    inter = ix * iy
    areas = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = win * win + areas[None, :] - inter
    return inter, inter / union


def label_boxes(
    grid: WindowGrid, boxes: list[Box], classes: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and classes from boxes (IoU > 0.3 or >= half inside; normal = touches none)."""
    n = len(grid)
    label = np.zeros(n, dtype=np.int8)
    cls = np.full(n, -1, dtype=np.int16)
    if not boxes:
        return label, cls
    inter, iou = box_overlaps(grid, boxes)
    win_area = float(grid.window) ** 2
    qualifies = (iou > IOU_THRESHOLD) | (inter >= INSIDE_FRACTION * win_area)
    touching = (inter > 0).any(axis=1)
    anomalous = qualifies.any(axis=1)
    label[touching] = IGNORED
    label[anomalous] = ANOMALOUS
    # Class of the qualifying box with the largest overlap.
    best = np.where(qualifies, inter, -1.0).argmax(axis=1)
    box_cls = np.array([classes.index(b.cls) for b in boxes], dtype=np.int16)
    cls[anomalous] = box_cls[best[anomalous]]
    return label, cls


def label_mask(
    grid: WindowGrid, mask: np.ndarray, mask_classes: dict[int, str], classes: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and classes from a class-id mask at the scan's size (>= 30 % threat pixels)."""
    ids = [int(v) for v in np.unique(mask) if v != 0]
    ph, pw = grid.padded_shape
    m = torch.zeros((ph, pw), dtype=torch.int64)
    m[: mask.shape[0], : mask.shape[1]] = torch.from_numpy(mask.astype(np.int64))
    win, s = grid.window, grid.stride
    threat = F.avg_pool2d((m > 0).float()[None, None], win, s).flatten().numpy()
    label = np.zeros(len(grid), dtype=np.int8)
    label[threat > 0] = IGNORED
    anomalous = threat >= MASK_FRACTION - 1e-9
    label[anomalous] = ANOMALOUS
    cls = np.full(len(grid), -1, dtype=np.int16)
    if ids:
        counts = np.stack(
            [F.avg_pool2d((m == i).float()[None, None], win, s).flatten().numpy() for i in ids],
            axis=1,
        )
        names = [mask_classes.get(i, f"class{i}") for i in ids]
        idx = np.array([classes.index(nm) for nm in names], dtype=np.int16)
        cls[anomalous] = idx[counts[anomalous].argmax(axis=1)]
    return label, cls


def label_windows(
    grid: WindowGrid,
    annotation: Annotation,
    belt: np.ndarray,
    classes: tuple[str, ...],
    *,
    exclude_border: bool = False,
) -> WindowLabels:
    """Protocol labels of every window of one scan.

    Args:
        grid: The window grid on the protocol image.
        annotation: Threat annotation at the protocol image's shape (``Annotation.at_shape``).
        belt: ``(N,)`` bool empty-belt windows.
        classes: Evaluation class list; every annotated class must be in it.
        exclude_border: Leave out windows that reach into the bottom/right padding.

    Returns:
        The labels.
    """
    if annotation.has_boxes:
        label, cls = label_boxes(grid, annotation.boxes, classes)
        rule = "boxes"
    elif annotation.has_mask:
        label, cls = label_mask(grid, annotation.mask, annotation.mask_classes, classes)
        rule = "mask"
    else:
        label = np.zeros(len(grid), dtype=np.int8)
        cls = np.full(len(grid), -1, dtype=np.int16)
        rule = "none"
    border = None
    if exclude_border:
        o = grid.origins()
        border = (o[:, 0] + grid.window > grid.height) | (o[:, 1] + grid.window > grid.width)
    return WindowLabels(
        label=label, cls=cls, classes=classes, belt=np.asarray(belt), rule=rule, border=border
    )
