"""Annotation readers: YOLO (with the unknown-class refusal), CSV pixel boxes, mask rescaling."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from xrayscreen.evaluation.annotations import (
    Annotation,
    AnnotationError,
    AnnotationSource,
    Box,
    UnknownClassError,
    read_csv_boxes,
    read_yolo,
    rescale_mask,
)


def test_yolo_boxes_scale_with_the_image(tmp_path):
    (tmp_path / "classes.txt").write_text("gun\nknife\n")
    (tmp_path / "a.txt").write_text("1 0.5 0.25 0.5 0.5\n")
    src = AnnotationSource(labels=tmp_path)
    ann = src.load("a", (200, 400))  # H=200, W=400
    assert ann.boxes == [Box(100.0, 0.0, 300.0, 100.0, "knife")]
    small = ann.at_shape((100, 200))
    assert small.boxes == [Box(50.0, 0.0, 150.0, 50.0, "knife")]


def test_unknown_yolo_class_is_refused_clearly(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("0 0.5 0.5 0.1 0.1\n7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(UnknownClassError, match=r"x.txt:2: class id 7 is not defined"):
        read_yolo(f, ["gun", "knife"])


def test_malformed_yolo_line_and_missing_classes_file(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("0 0.5 0.5 0.1\n")
    with pytest.raises(AnnotationError, match="expected 'class cx cy w h'"):
        read_yolo(f, ["gun"])
    with pytest.raises(AnnotationError, match="classes.txt"):
        AnnotationSource(labels=tmp_path)


def test_csv_pixel_boxes_with_aliases(tmp_path):
    f = tmp_path / "boxes.csv"
    f.write_text(
        "filename,xmin,ymin,xmax,ymax,label\nbag1.jpg,10,20,50,60,gun\nbag1.jpg,0,0,5,5,knife\n"
    )
    boxes = read_csv_boxes(f)
    assert boxes["bag1"][0] == Box(10, 20, 50, 60, "gun") and len(boxes["bag1"]) == 2
    ann = AnnotationSource(labels=f).load("bag1", (100, 100)).at_shape((50, 200))
    assert ann.boxes[0] == Box(20.0, 10.0, 100.0, 30.0, "gun")  # x * 2, y * 0.5
    bad = tmp_path / "bad.csv"
    bad.write_text("image,x0,y0,x1,class\nb,1,2,3,gun\n")
    with pytest.raises(AnnotationError, match="no column for 'y1'"):
        read_csv_boxes(bad)


def test_mask_drawn_at_another_size_is_rescaled_to_the_scan(tmp_path):
    # Mask drawn on a 768 x 576 copy (like SIXray); the scan is 400 x 300 (W x H).
    mask = np.zeros((576, 768), np.uint8)
    mask[288:, 384:] = 2  # bottom-right quarter is a knife
    cv2.imwrite(str(tmp_path / "bag.png"), mask)
    src = AnnotationSource(masks=tmp_path)
    ann = src.load("bag", (300, 400)).at_shape((300, 400))
    assert ann.mask.shape == (300, 400)
    assert set(np.unique(ann.mask)) == {0, 2}  # nearest neighbour: no blended ids
    assert ann.mask[150:, 200:].all() and not ann.mask[:150].any() and not ann.mask[:, :200].any()
    assert ann.classes() == {"knife"}
    assert ann.threat_pixels().sum() == 150 * 200


def test_rescale_mask_identity_and_threat_pixels_from_boxes():
    m = np.ones((4, 4), np.uint8)
    assert rescale_mask(m, (4, 4)) is m
    ann = Annotation(boxes=[Box(1.5, 0, 3, 2, "gun")], shape=(4, 4))
    px = ann.threat_pixels()
    assert px[:2, 1:3].all() and px.sum() == 4


def test_mask_with_an_unnamed_class_id_is_refused(tmp_path):
    mask = np.zeros((8, 8), np.uint8)
    mask[:2] = 3
    cv2.imwrite(str(tmp_path / "bag.png"), mask)
    with pytest.raises(UnknownClassError, match=r"mask class id\(s\) \[3\] not named"):
        AnnotationSource(masks=tmp_path).load("bag", (8, 8))
