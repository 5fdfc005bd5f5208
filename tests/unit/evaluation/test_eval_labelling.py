"""Window labels on hand-made boxes and masks, with answers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from xrayscreen.evaluation.annotations import Annotation, Box
from xrayscreen.evaluation.labelling import (
    ANOMALOUS,
    IGNORED,
    NORMAL,
    box_overlaps,
    label_boxes,
    label_mask,
    label_windows,
)
from xrayscreen.inference.windows import WindowGrid

CLASSES = ("gun", "knife")


def _index(grid: WindowGrid, y: int, x: int) -> int:
    return (y // grid.stride) * grid.cols + (x // grid.stride)


def test_iou_and_inside_fraction_by_hand():
    grid = WindowGrid(128, 128, 64, 16)
    box = Box(0, 0, 64, 32, "gun")  # exactly the top half of window (0, 0)
    inter, iou = box_overlaps(grid, [box])
    i = _index(grid, 0, 0)
    assert inter[i, 0] == pytest.approx(64 * 32)
    assert iou[i, 0] == pytest.approx(2048 / 4096)
    j = _index(grid, 16, 16)  # overlap 48 x 16 = 768; union 4096 + 2048 - 768
    assert inter[j, 0] == pytest.approx(768)
    assert iou[j, 0] == pytest.approx(768 / (4096 + 2048 - 768))


def test_half_inside_labels_a_window_that_iou_alone_would_not():
    # A long knife: 300 x 40 box. Window (0, 0) is 40/64 = 62.5 % inside the box,
    # while its IoU is 2560 / (4096 + 12000 - 2560) = 0.19 < 0.3.
    grid = WindowGrid(200, 400, 64, 16)
    box = Box(0, 0, 300, 40, "knife")
    _, iou = box_overlaps(grid, [box])
    i = _index(grid, 0, 0)
    assert iou[i, 0] < 0.3
    label, cls = label_boxes(grid, [box], CLASSES)
    assert label[i] == ANOMALOUS and cls[i] == 1
    # Window at y=16 has 24/64 = 37.5 % inside and IoU < 0.3: touches, so ignored.
    k = _index(grid, 16, 0)
    assert label[k] == IGNORED and cls[k] == -1


def test_iou_rule_labels_a_small_box_window():
    grid = WindowGrid(128, 128, 64, 16)
    box = Box(8, 8, 56, 56, "gun")  # 48 x 48 inside window (0, 0): IoU = 2304/4096 = 0.5625
    label, cls = label_boxes(grid, [box], CLASSES)
    assert label[_index(grid, 0, 0)] == ANOMALOUS and cls[_index(grid, 0, 0)] == 0
    # Window (48, 48): overlap 8 x 8 = 64 -> IoU tiny, not half inside -> ignored.
    assert label[_index(grid, 48, 48)] == IGNORED
    # Window (64, 64) starts at the box's far edge: zero-area contact is not touching.
    assert label[_index(grid, 64, 64)] == NORMAL


def test_window_class_follows_the_larger_overlap():
    grid = WindowGrid(64, 128, 64, 16)
    boxes = [Box(0, 0, 40, 64, "gun"), Box(40, 0, 64, 64, "knife")]
    label, cls = label_boxes(grid, boxes, CLASSES)
    assert label[0] == ANOMALOUS and cls[0] == 0  # gun covers 40/64 of window 0


def test_mask_rule_thirty_percent():
    grid = WindowGrid(64, 128, 64, 16)
    mask = np.zeros((64, 128), np.uint8)
    mask[:, 64 - 20 : 64] = 2  # last 20 columns of window 0: 31.25 % knife
    label, cls = label_mask(grid, mask, {1: "gun", 2: "knife"}, CLASSES)
    assert label[0] == ANOMALOUS and cls[0] == 1
    # Window at x=16: columns 44..63 -> still 20 columns inside -> anomalous.
    assert label[1] == ANOMALOUS
    # Window at x=48: columns 48..63 = 16 columns = 25 % -> touches, ignored.
    assert label[3] == IGNORED
    # Window at x=64: no threat pixel -> normal.
    assert label[4] == NORMAL


def test_boxes_take_precedence_over_mask_and_belt_is_excluded():
    grid = WindowGrid(64, 128, 64, 16)
    mask = np.zeros((64, 128), np.uint8)
    mask[:, 100:] = 1
    ann = Annotation(boxes=[Box(0, 0, 64, 64, "knife")], mask=mask, shape=(64, 128))
    belt = np.zeros(len(grid), bool)
    belt[0] = True
    lab = label_windows(grid, ann, belt, CLASSES)
    assert lab.rule == "boxes"
    assert lab.label[0] == ANOMALOUS and not lab.positives[0]  # belt: on neither side
    assert lab.label[4] == NORMAL  # the mask's region is not used for window labels


def test_exclude_border_windows():
    grid = WindowGrid(70, 64, 64, 16)  # rows at y=0 and y=16 (the second reaches padding)
    lab = label_windows(
        grid, Annotation(shape=(70, 64)), np.zeros(len(grid), bool), CLASSES, exclude_border=True
    )
    assert lab.negatives.tolist() == [True, False]
