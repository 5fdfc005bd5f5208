"""The scan canvas: a QGraphicsView with the scan, the heat-map overlay and alarm frames
as separate items, wheel zoom around the cursor, drag to pan, fit and 1:1."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPen, QPixmap, QTransform
from PySide6.QtWidgets import (
    QGraphicsPixmapItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QGraphicsView,
)

ZOOM_STEP = 1.25
MIN_SCALE, MAX_SCALE = 0.02, 40.0
FRAME_COLOUR = QColor(255, 40, 40)
SELECTED_COLOUR = QColor(40, 255, 255)
MAX_LABELS = 9  # rank numbers on the strongest frames only: text is the costly part of a redraw


def rgb_to_pixmap(rgb: np.ndarray) -> QPixmap:
    """``(H, W, 3)`` uint8 RGB -> QPixmap (copied)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    img = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(img)


class ScanView(QGraphicsView):
    """Shows one scan; emits ``files_dropped`` when files are dropped on it."""

    files_dropped = Signal(list)
    zoom_changed = Signal(float)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setBackgroundBrush(QColor(40, 40, 44))
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setAcceptDrops(True)
        self.viewport().setAcceptDrops(True)
        self.scan_item = QGraphicsPixmapItem()
        self.scan_item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        # Cache the scaled scan on screen: a threshold move repaints the overlay and
        # frames, and re-scaling a 2000x1500 scan each time would cost ~10 ms.
        self.scan_item.setCacheMode(QGraphicsPixmapItem.CacheMode.DeviceCoordinateCache)
        self.heat_item = QGraphicsPixmapItem()
        # Nearest-neighbour: the heat map is piecewise constant over window-stride
        # cells anyway, and smooth scaling it on every threshold move costs frames.
        self.heat_item.setTransformationMode(Qt.TransformationMode.FastTransformation)
        self.heat_item.setZValue(1)
        for item in (self.scan_item, self.heat_item):
            self.scene().addItem(item)
        self._frame_items: list[QGraphicsRectItem] = []
        self._selected = -1
        self._auto_fit = True

    # ---------------------------------------------------------------- content
    def set_scan_image(self, rgb: np.ndarray, keep_view: bool = False) -> None:
        """Show a new display image; fits the view unless ``keep_view`` (same scan, new mode)."""
        self.scan_item.setPixmap(rgb_to_pixmap(rgb))
        self.scene().setSceneRect(QRectF(self.scan_item.pixmap().rect()))
        if not keep_view:
            self.fit()

    def set_heat_pixmap(
        self, pix: QPixmap | None, scan_shape: tuple[int, int] | None = None
    ) -> None:
        """Show the overlay, stretched over the scan (it is computed at the working scale)."""
        if pix is None or pix.isNull():
            self.heat_item.setPixmap(QPixmap())
            return
        self.heat_item.setPixmap(pix)
        if scan_shape is not None:
            h, w = scan_shape
            self.heat_item.setTransform(QTransform.fromScale(w / pix.width(), h / pix.height()))

    def set_heat_visible(self, visible: bool) -> None:
        """Show or hide the overlay (frames stay)."""
        self.heat_item.setVisible(visible)

    def set_frames(
        self, boxes: Sequence[tuple[int, int, int, int]], labels: Sequence[str] = ()
    ) -> None:
        """Replace the alarm frames (boxes in scan pixels, strongest first)."""
        scene = self.scene()
        for it in self._frame_items:
            scene.removeItem(it)
        self._frame_items = []
        self._selected = -1
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            rect = QGraphicsRectItem(QRectF(x0, y0, max(1, x1 - x0), max(1, y1 - y0)))
            pen = QPen(FRAME_COLOUR, 2)
            pen.setCosmetic(True)  # constant on-screen width at any zoom
            rect.setPen(pen)
            rect.setZValue(2)
            if i < min(len(labels), MAX_LABELS):
                text = QGraphicsSimpleTextItem(labels[i], rect)
                text.setBrush(FRAME_COLOUR)
                text.setFlag(QGraphicsSimpleTextItem.GraphicsItemFlag.ItemIgnoresTransformations)
                text.setPos(x0, y0)
            scene.addItem(rect)
            self._frame_items.append(rect)

    def frame_rects(self) -> list[QRectF]:
        """The frames currently drawn, in scan pixels."""
        return [it.rect() for it in self._frame_items]

    def select_frame(self, index: int) -> None:
        """Highlight one frame and zoom to it."""
        for i, it in enumerate(self._frame_items):
            pen = QPen(SELECTED_COLOUR if i == index else FRAME_COLOUR, 3 if i == index else 2)
            pen.setCosmetic(True)
            it.setPen(pen)
        if 0 <= index < len(self._frame_items):
            self._selected = index
            r = self._frame_items[index].rect()
            # Some context around the region, per axis, but never beyond the scan: a long
            # thin region padded by its length would zoom OUT past "fit".
            px, py = r.width() * 0.3 + 20, r.height() * 0.3 + 20
            padded = r.adjusted(-px, -py, px, py)
            bounds = self.scan_item.sceneBoundingRect()
            if not bounds.isEmpty():
                padded = padded.intersected(bounds)
            self.zoom_to(padded if not padded.isEmpty() else r)

    def clear(self) -> None:
        """Remove scan, overlay and frames."""
        self.scan_item.setPixmap(QPixmap())
        self.set_heat_pixmap(None)
        self.set_frames([])

    # ---------------------------------------------------------------- zoom / pan
    def current_scale(self) -> float:
        """Screen pixels per scan pixel."""
        return float(self.transform().m11())

    def fit(self) -> None:
        """Fit the whole scan into the view."""
        self._auto_fit = True
        if not self.scan_item.pixmap().isNull():
            self.fitInView(self.scan_item, Qt.AspectRatioMode.KeepAspectRatio)
        self.zoom_changed.emit(self.current_scale())

    def actual_size(self) -> None:
        """One scan pixel per screen pixel."""
        self._auto_fit = False
        centre = self.mapToScene(self.viewport().rect().center())
        self.setTransform(QTransform())
        self.centerOn(centre)
        self.zoom_changed.emit(self.current_scale())

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        """Zoom by ``factor`` keeping the scene point under ``anchor`` (viewport coords) fixed."""
        s = self.current_scale()
        factor = float(np.clip(s * factor, MIN_SCALE, MAX_SCALE) / s) if s > 0 else factor
        self._auto_fit = False
        if anchor is None:
            anchor = QPointF(self.viewport().rect().center())
        before = self.mapToScene(anchor.toPoint())
        old_anchor = self.transformationAnchor()
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
        self.scale(factor, factor)
        after = self.mapToScene(anchor.toPoint())
        delta = after - before
        self.translate(delta.x(), delta.y())
        self.setTransformationAnchor(old_anchor)
        self.zoom_changed.emit(self.current_scale())

    def zoom_to(self, rect: QRectF) -> None:
        """Fit ``rect`` (scan pixels) into the view."""
        self._auto_fit = False
        self.fitInView(rect, Qt.AspectRatioMode.KeepAspectRatio)
        self.zoom_changed.emit(self.current_scale())

    def wheelEvent(self, event) -> None:
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.zoom_by(ZOOM_STEP**steps, event.position())
        event.accept()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._auto_fit:
            self.fit()

    # ---------------------------------------------------------------- drag & drop
    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event) -> None:
        files = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if files:
            event.acceptProposedAction()
            self.files_dropped.emit(files)
        else:
            event.ignore()
