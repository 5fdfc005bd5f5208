"""Model ▸ Retrain…: curate a normal pool, train in a separate process, compare, activate.

* The pool comes from folders and/or the bags operators cleared in the decision
  log (date range, operator, "leave out bags ever marked Suspect"), deduplicated by
  scan sha256, with counts and a thumbnail strip (:mod:`xrayscreen.pool`).
* Training runs in ``python -m xrayscreen.retrain_worker`` under ``QProcess``: the
  window stays responsive and a training crash cannot take it down. The worker
  prints one JSON line per event; the dialog turns them into the progress line,
  the ETA and a live loss curve.
* Cancel sends SIGTERM (the worker stops after the current step; the last
  per-epoch checkpoint stays), Resume continues from it.
* When training ends, the :class:`~xrayscreen.gui.model_compare.ModelCompareCard`
  shows new vs active on the same held-out bags and threats; Activate switches the
  registry's atomic pointer and the main window's model (so the next decision
  carries the new id); Roll back restores the previous one in one click.
* Closing the app while training asks: keep training in the background, cancel
  it, or stay. A background run keeps writing ``events.jsonl`` in its job folder;
  the dialog picks the result up when it is opened again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QDate, QEvent, QObject, QProcess, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QColor, QIcon, QImage, QPainter, QPainterPath, QPen, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDateEdit,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from xrayscreen import retrain_worker as rw
from xrayscreen.errors import XrayscreenError
from xrayscreen.gui.pyside_refcount import guard_none_refcount
from xrayscreen.pool import LogFilter, NormalPool
from xrayscreen.registry import Registry
from xrayscreen.retrain_eval import Comparison

# This module draws a live plot (thousands of Qt calls): keep a PySide6 refcount
# bug from aborting the interpreter (see pyside_refcount). The main window imports
# this module at start-up, so the guard covers the whole app.
guard_none_refcount()

THUMBS = 12
THUMB_SIZE = 72
LOSS_KEYS = ("g", "d", "con", "enc", "adv")
LOSS_COLOURS = {
    "g": QColor(30, 90, 200),
    "d": QColor(200, 60, 40),
    "con": QColor(30, 150, 70),
    "enc": QColor(150, 60, 170),
    "adv": QColor(220, 150, 20),
    "val_loss": QColor(20, 20, 20),
}

# What to do with a running training when the app closes.
KEEP, CANCEL, STAY = "keep", "cancel", "stay"


def ask_close_choice(parent: QWidget | None) -> str:
    """Ask whether to keep training in the background, cancel it, or not quit (tests patch it)."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Question)
    box.setWindowTitle("Training is running")
    box.setText("A model is being retrained. What should happen to it?")
    box.setInformativeText(
        "Keep it running: training continues in the background and the result is offered "
        "the next time you open Model ▸ Retrain…. Cancel: it stops; the last epoch's "
        "checkpoint is kept so you can resume later."
    )
    keep = box.addButton("Keep training in background", QMessageBox.ButtonRole.AcceptRole)
    cancel = box.addButton("Cancel training", QMessageBox.ButtonRole.DestructiveRole)
    box.addButton("Don't quit", QMessageBox.ButtonRole.RejectRole)
    box.exec()
    if box.clickedButton() is keep:
        return KEEP
    if box.clickedButton() is cancel:
        return CANCEL
    return STAY


def _fmt_s(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "—"
    s = max(0.0, float(s))
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


# ------------------------------------------------------------------------- loss plot
class LossPlot(QWidget):
    """A small live loss plot (log scale, one line per loss), drawn with QPainter.

    ``add(x, losses)`` appends a point per loss; epoch means and validation losses
    go in with ``add(x, losses, epoch=True)`` and are drawn as dots.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.epoch_points: dict[str, list[tuple[float, float]]] = {}
        self.setMinimumSize(360, 170)

    def clear(self) -> None:
        self.series.clear()
        self.epoch_points.clear()
        self.update()

    def add(self, x: float, losses: dict[str, float], *, epoch: bool = False) -> None:
        target = self.epoch_points if epoch else self.series
        keys = (*LOSS_KEYS, "val_loss") if epoch else LOSS_KEYS
        for k in keys:
            v = losses.get(k)
            if v is not None and math.isfinite(v) and v > 0:
                target.setdefault(k, []).append((float(x), float(v)))
        self.update()

    def n_points(self) -> int:
        return sum(len(v) for v in self.series.values())

    def paintEvent(self, _event: Any) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor(252, 252, 252))
        left, right, top, bottom = 44, 70, 8, 22
        area = QRectF(left, top, self.width() - left - right, self.height() - top - bottom)
        p.setPen(QPen(QColor(170, 170, 170)))
        p.drawRect(area)
        pts = [pt for s in (*self.series.values(), *self.epoch_points.values()) for pt in s]
        if not pts:
            p.setPen(QColor(120, 120, 120))
            p.drawText(
                area, Qt.AlignmentFlag.AlignCenter, "loss curve appears when training starts"
            )
            return
        xs = [x for x, _ in pts]
        ys = [math.log10(y) for _, y in pts]
        x0, x1 = min(xs), max(xs)
        y0, y1 = math.floor(min(ys)), math.ceil(max(ys))
        x1 = x1 if x1 > x0 else x0 + 1
        y1 = y1 if y1 > y0 else y0 + 1

        def to(x: float, y: float) -> tuple[float, float]:
            fx = area.left() + (x - x0) / (x1 - x0) * area.width()
            fy = area.bottom() - (math.log10(y) - y0) / (y1 - y0) * area.height()
            return fx, fy

        p.setPen(QColor(90, 90, 90))
        for e in range(y0, y1 + 1):
            fy = area.bottom() - (e - y0) / (y1 - y0) * area.height()
            p.drawText(QRectF(0, fy - 8, left - 4, 16), Qt.AlignmentFlag.AlignRight, f"1e{e}")
        p.drawText(
            QRectF(area.left(), area.bottom() + 3, area.width(), 16),
            Qt.AlignmentFlag.AlignCenter,
            "training step (log-scale losses)",
        )
        legend_y = top
        for k, s in self.series.items():
            pen = QPen(LOSS_COLOURS.get(k, QColor(0, 0, 0)), 1.4)
            p.setPen(pen)
            path = QPainterPath()
            # Many points: draw at most ~2 per pixel column.
            stride = max(1, len(s) // max(int(area.width()) * 2, 1))
            for i, (x, y) in enumerate(s[::stride]):
                fx, fy = to(x, y)
                path.moveTo(fx, fy) if i == 0 else path.lineTo(fx, fy)
            p.drawPath(path)
            p.drawText(QRectF(area.right() + 6, legend_y, right - 6, 14), k)
            legend_y += 14
        for k, s in self.epoch_points.items():
            c = LOSS_COLOURS.get(k, QColor(0, 0, 0))
            p.setPen(QPen(c, 1))
            p.setBrush(c)
            for x, y in s:
                fx, fy = to(x, y)
                p.drawEllipse(QRectF(fx - 3, fy - 3, 6, 6))
            if k not in self.series:
                p.drawText(QRectF(area.right() + 6, legend_y, right - 6, 14), f"• {k}")
                legend_y += 14
        p.end()


# ---------------------------------------------------------------------------- dialog
def _thumbnail(path: Path) -> QPixmap | None:
    """A small preview of a scan file (fast path for plain images; readers otherwise)."""
    import cv2

    img = None
    with contextlib.suppress(Exception):
        data = np.fromfile(str(path), dtype=np.uint8)
        bgr = cv2.imdecode(data, cv2.IMREAD_REDUCED_COLOR_2) if data.size else None
        if bgr is not None:
            img = np.ascontiguousarray(bgr[:, :, ::-1])
    if img is None:
        try:
            from xrayscreen.training.data import read_scan

            img = read_scan(path).rgb
        except Exception:
            return None
    h, w = img.shape[:2]
    f = THUMB_SIZE / max(h, w)
    small = cv2.resize(
        img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA
    )
    small = np.ascontiguousarray(small)
    qimg = QImage(
        small.data, small.shape[1], small.shape[0], small.strides[0], QImage.Format.Format_RGB888
    )
    return QPixmap.fromImage(qimg.copy())


class RetrainDialog(QDialog):
    """The retraining dialog (non-modal; closing it hides it, training keeps going).

    Args:
        main_window: The workstation (uses ``bundle``, ``threshold``,
            ``decision_log``, ``set_bundle``); may be None in tests.
        registry: The model registry (default: the per-user one).
        decision_log: Overrides ``main_window.decision_log``.

    Signals:
        state_changed(str): "idle", "estimating", "training", "evaluating",
            "finished", "cancelled", "failed".
        model_activated(str): a model id was activated (or rolled back to).
    """

    state_changed = Signal(str)
    model_activated = Signal(str)

    def __init__(
        self,
        main_window: Any = None,
        registry: Registry | None = None,
        decision_log: Any = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent if parent is not None else main_window)
        self.setWindowTitle("Retrain model")
        self.main_window = main_window
        self.registry = registry or Registry()
        self.decision_log = decision_log or getattr(main_window, "decision_log", None)
        self.pool = NormalPool()
        self.state = "idle"
        self.job: rw.RetrainJob | None = None
        self.process: QProcess | None = None
        self.estimate_process: QProcess | None = None
        self._estimate_dir: Path | None = None
        self._buffer = ""
        self.events: list[dict[str, Any]] = []
        self.new_model_id: str | None = None
        self.comparison: Comparison | None = None
        self.card: QWidget | None = None
        self.last_error = ""
        self._attached_pid: int | None = None
        self._tail_offset = 0
        self._tail_timer = QTimer(self)
        self._tail_timer.setInterval(300)
        self._tail_timer.timeout.connect(self._poll_background)
        self._build()
        self._load_defaults()
        self.rebuild_pool()
        self.pick_up_background_job()

    # ------------------------------------------------------------------ UI
    def _build(self) -> None:
        lay = QVBoxLayout(self)
        # -- pool
        pool_box = QGroupBox("Normal scans to learn from")
        pl = QVBoxLayout(pool_box)
        row = QHBoxLayout()
        self.folder_list = QListWidget()
        self.folder_list.setMaximumHeight(64)
        row.addWidget(self.folder_list, 1)
        col = QVBoxLayout()
        self.add_folder_button = QPushButton("Add folder…")
        self.remove_folder_button = QPushButton("Remove")
        col.addWidget(self.add_folder_button)
        col.addWidget(self.remove_folder_button)
        row.addLayout(col)
        pl.addLayout(row)
        self.use_log = QCheckBox("Bags operators marked Clear in the decision log")
        self.use_log.setChecked(self.decision_log is not None)
        self.use_log.setEnabled(self.decision_log is not None)
        pl.addWidget(self.use_log)
        filt = QHBoxLayout()
        self.since_check = QCheckBox("from")
        self.since_edit = QDateEdit(QDate.currentDate().addMonths(-1))
        self.until_check = QCheckBox("until")
        self.until_edit = QDateEdit(QDate.currentDate())
        for e in (self.since_edit, self.until_edit):
            e.setCalendarPopup(True)
            e.setDisplayFormat("yyyy-MM-dd")
        self.operator = QComboBox()
        self.operator.setEditable(False)
        self.exclude_suspect = QCheckBox("leave out bags ever marked Suspect")
        self.exclude_suspect.setChecked(True)
        for w in (self.since_check, self.since_edit, self.until_check, self.until_edit):
            filt.addWidget(w)
        filt.addWidget(QLabel("operator"))
        filt.addWidget(self.operator)
        filt.addWidget(self.exclude_suspect)
        filt.addStretch(1)
        pl.addLayout(filt)
        hold = QHBoxLayout()
        hold.addWidget(QLabel("Hold out for the comparison:"))
        self.holdout = QSpinBox()
        self.holdout.setRange(0, 50)
        self.holdout.setValue(15)
        self.holdout.setSuffix(" %")
        hold.addWidget(self.holdout)
        hold.addStretch(1)
        pl.addLayout(hold)
        self.counts_label = QLabel()
        self.counts_label.setWordWrap(True)
        pl.addWidget(self.counts_label)
        self.preview = QListWidget()
        self.preview.setViewMode(QListView.ViewMode.IconMode)
        self.preview.setFlow(QListView.Flow.LeftToRight)
        self.preview.setWrapping(False)
        self.preview.setIconSize(QSize(THUMB_SIZE, THUMB_SIZE))
        self.preview.setFixedHeight(THUMB_SIZE + 34)
        self.preview.setMovement(QListView.Movement.Static)
        pl.addWidget(self.preview)
        lay.addWidget(pool_box)
        # -- advanced
        self.advanced_toggle = QToolButton()
        self.advanced_toggle.setText("Advanced settings")
        self.advanced_toggle.setCheckable(True)
        self.advanced_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_toggle.setArrowType(Qt.ArrowType.RightArrow)
        lay.addWidget(self.advanced_toggle)
        self.advanced = QWidget()
        form = QFormLayout(self.advanced)
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.window_size = QComboBox()
        for v in (16, 32, 64, 128):
            self.window_size.addItem(str(v), v)
        self.stride = QSpinBox()
        self.stride.setRange(1, 128)
        self.ngf = QComboBox()
        for v in (8, 16, 32, 64, 128):
            self.ngf.addItem(str(v), v)
        self.batch = QSpinBox()
        self.batch.setRange(1, 4096)
        self.device = QComboBox()
        self.device.addItem("auto", "auto")
        self.device.addItem("CPU", "cpu")
        with contextlib.suppress(Exception):
            import torch

            if torch.cuda.is_available():
                self.device.addItem("CUDA GPU", "cuda")
        self.threads = QSpinBox()
        self.threads.setRange(0, 256)
        self.threads.setSpecialValueText("default")
        # A site policy with a measured trade (docs/BENCHMARKS.md, issue 7): on real SIXray
        # bags it raised threat-bag detection; on thin, low-density blades it costs.
        self.density_weight = QDoubleSpinBox()
        self.density_weight.setRange(0.0, 10.0)
        self.density_weight.setSingleStep(0.25)
        self.density_weight.setDecimals(2)
        self.density_weight.setSpecialValueText("off")
        self.density_weight.setToolTip(
            "Adds this many times the window's density (within the bag) to the model's "
            "evidence. Helps on dense metal threats; hides thin, low-density ones. 0 = off."
        )
        # Measured on SIXray (docs/BENCHMARKS.md, issue 7, ninth session): trained on the
        # simulator's threats projected into the site's own normal bags, never a real one.
        self.tip_weight = QDoubleSpinBox()
        self.tip_weight.setRange(0.0, 10.0)
        self.tip_weight.setSingleStep(0.25)
        self.tip_weight.setDecimals(2)
        self.tip_weight.setSpecialValueText("off")
        self.tip_weight.setToolTip(
            "Trains a small head on simulated threats projected into the normal training "
            "bags and adds this many times its evidence to the model's. On real bags it "
            "ranked windows and bags better; its effect at a strict bag threshold varied "
            "from model to model, so compare before activating. About 1 minute more per "
            "200 bags. 0 = off."
        )
        form.addRow("Epochs", self.epochs)
        form.addRow("Window (px)", self.window_size)
        form.addRow("Training stride (px)", self.stride)
        form.addRow("Model size (ngf = ndf)", self.ngf)
        form.addRow("Batch size", self.batch)
        form.addRow("Device", self.device)
        form.addRow("CPU threads", self.threads)
        form.addRow("Window density weight", self.density_weight)
        form.addRow("Projected-threat head weight", self.tip_weight)
        self.advanced.setVisible(False)
        lay.addWidget(self.advanced)
        est = QHBoxLayout()
        self.estimate_button = QPushButton("Estimate time")
        self.estimate_label = QLabel("Time estimate: press Estimate time (a short timed warm-up).")
        self.estimate_label.setWordWrap(True)
        est.addWidget(self.estimate_button)
        est.addWidget(self.estimate_label, 1)
        lay.addLayout(est)
        # -- progress
        prog_box = QGroupBox("Training")
        gl = QVBoxLayout(prog_box)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        self.status_label = QLabel("Not started.")
        self.status_label.setWordWrap(True)
        self.loss_plot = LossPlot()
        gl.addWidget(self.progress_bar)
        gl.addWidget(self.status_label)
        gl.addWidget(self.loss_plot, 1)
        lay.addWidget(prog_box, 1)
        self.card_holder = QVBoxLayout()
        lay.addLayout(self.card_holder)
        # -- buttons
        self.buttons = QDialogButtonBox()
        self.start_button = self.buttons.addButton(
            "Start training", QDialogButtonBox.ButtonRole.ActionRole
        )
        self.cancel_button = self.buttons.addButton(
            "Cancel training", QDialogButtonBox.ButtonRole.ActionRole
        )
        self.resume_button = self.buttons.addButton(
            "Resume", QDialogButtonBox.ButtonRole.ActionRole
        )
        self.rollback_button = self.buttons.addButton(
            "Roll back model", QDialogButtonBox.ButtonRole.ActionRole
        )
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        lay.addWidget(self.buttons)
        # -- wiring
        self.add_folder_button.clicked.connect(self._choose_folder)
        self.remove_folder_button.clicked.connect(self._remove_folder)
        for sig in (
            self.use_log.toggled,
            self.since_check.toggled,
            self.until_check.toggled,
            self.exclude_suspect.toggled,
        ):
            sig.connect(self.rebuild_pool)
        self.since_edit.dateChanged.connect(self._maybe_rebuild)
        self.until_edit.dateChanged.connect(self._maybe_rebuild)
        self.operator.currentIndexChanged.connect(self.rebuild_pool)
        self.holdout.valueChanged.connect(self._update_counts)
        self.advanced_toggle.toggled.connect(self._toggle_advanced)
        self.estimate_button.clicked.connect(self.estimate_time)
        self.start_button.clicked.connect(self.start_training)
        self.cancel_button.clicked.connect(self.cancel_training)
        self.resume_button.clicked.connect(self.resume_training)
        self.rollback_button.clicked.connect(self.roll_back)
        self.close_button.clicked.connect(self.hide)
        self._set_state("idle")

    def _toggle_advanced(self, on: bool) -> None:
        self.advanced.setVisible(on)
        self.advanced_toggle.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)

    def _load_defaults(self) -> None:
        from xrayscreen.training.config import TrainConfig

        cfg = TrainConfig.xray()  # the X-ray configuration chosen by the issue-7 ablation
        self.epochs.setValue(cfg.epochs)
        self.window_size.setCurrentIndex(max(0, self.window_size.findData(cfg.window)))
        self.stride.setValue(cfg.stride)
        self.ngf.setCurrentIndex(max(0, self.ngf.findData(cfg.ngf)))
        self.batch.setValue(cfg.batch_size)
        self.device.setCurrentIndex(max(0, self.device.findData(cfg.device)))
        self.threads.setValue(cfg.threads)
        self.density_weight.setValue(cfg.density_weight)
        self.tip_weight.setValue(cfg.tip_weight)
        self.base_config: dict[str, Any] = cfg.to_dict()
        self._fill_operators()

    def _fill_operators(self) -> None:
        current = self.operator.currentData() if self.operator.count() else ""
        self.operator.blockSignals(True)
        self.operator.clear()
        self.operator.addItem("any operator", "")
        if self.decision_log is not None:
            with contextlib.suppress(Exception):
                ops = sorted({d.operator_id for d in self.decision_log.query() if d.operator_id})
                for op in ops:
                    self.operator.addItem(op, op)
        self.operator.setCurrentIndex(max(0, self.operator.findData(current)))
        self.operator.blockSignals(False)

    # ------------------------------------------------------------------ settings
    def train_config(self) -> dict[str, Any]:
        """The TrainConfig dict the dialog's settings describe (validated)."""
        from xrayscreen.training.config import TrainConfig

        cfg = dict(self.base_config)
        ngf = int(self.ngf.currentData())
        cfg.update(
            epochs=int(self.epochs.value()),
            window=int(self.window_size.currentData()),
            stride=min(int(self.stride.value()), int(self.window_size.currentData())),
            ngf=ngf,
            ndf=ngf,
            batch_size=int(self.batch.value()),
            device=str(self.device.currentData()),
            threads=int(self.threads.value()),
            density_weight=float(self.density_weight.value()),
            tip_weight=float(self.tip_weight.value()),
        )
        return TrainConfig.from_dict(cfg).to_dict()

    def set_config(self, **values: Any) -> None:
        """Set settings programmatically (tests, presets): any TrainConfig field."""
        widgets = {"epochs": self.epochs, "stride": self.stride, "batch_size": self.batch,
                   "threads": self.threads}  # fmt: skip
        for k, v in values.items():
            if k in widgets:
                widgets[k].setValue(int(v))
            elif k == "window":
                if self.window_size.findData(int(v)) < 0:
                    self.window_size.addItem(str(v), int(v))
                self.window_size.setCurrentIndex(self.window_size.findData(int(v)))
            elif k == "ngf":
                if self.ngf.findData(int(v)) < 0:
                    self.ngf.addItem(str(v), int(v))
                self.ngf.setCurrentIndex(self.ngf.findData(int(v)))
            elif k == "device":
                self.device.setCurrentIndex(max(0, self.device.findData(str(v))))
            elif k == "density_weight":
                self.density_weight.setValue(float(v))
            elif k == "tip_weight":
                self.tip_weight.setValue(float(v))
            else:
                self.base_config[k] = v

    # ------------------------------------------------------------------ pool
    def add_folder(self, folder: str | os.PathLike[str]) -> None:
        """Add a folder of normal scans to the pool."""
        self.folder_list.addItem(str(folder))
        self.rebuild_pool()

    def _choose_folder(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Folder of normal (threat-free) scans")
        if d:
            self.add_folder(d)

    def _remove_folder(self) -> None:
        for item in self.folder_list.selectedItems():
            self.folder_list.takeItem(self.folder_list.row(item))
        self.rebuild_pool()

    def _maybe_rebuild(self, *_: Any) -> None:
        if self.since_check.isChecked() or self.until_check.isChecked():
            self.rebuild_pool()

    def log_filter(self) -> LogFilter:
        """The decision-log filter the widgets describe."""

        def day(edit: QDateEdit) -> str:
            return edit.date().toString("yyyy-MM-dd")

        until = None
        if self.until_check.isChecked():
            until = self.until_edit.date().addDays(1).toString("yyyy-MM-dd")  # inclusive day
        return LogFilter(
            since=day(self.since_edit) if self.since_check.isChecked() else None,
            until=until,
            operator_id=str(self.operator.currentData() or "") or None,
            exclude_any_suspect=self.exclude_suspect.isChecked(),
        )

    def rebuild_pool(self, *_: Any) -> NormalPool:
        """Rebuild the pool from the folders and the decision log; update counts and preview."""
        pool = NormalPool()
        problems = []
        for i in range(self.folder_list.count()):
            try:
                pool.add_folder(self.folder_list.item(i).text())
            except (XrayscreenError, OSError) as exc:
                problems.append(str(exc))
        if self.use_log.isChecked() and self.decision_log is not None:
            try:
                pool.add_from_log(self.decision_log, self.log_filter())
            except Exception as exc:  # a broken log must not break the dialog
                problems.append(f"decision log: {exc}")
        self.pool = pool
        self._problems = problems
        self._update_counts()
        self._fill_preview()
        return pool

    def _update_counts(self, *_: Any) -> None:
        split = self.pool.split_holdout(self.holdout.value() / 100.0) if len(self.pool) else None
        text = f"<b>{len(self.pool)} scans</b> in the pool ({self.pool.counts.summary()})"
        if split is not None:
            text += f"; {len(split.train)} to train on, {len(split.holdout)} held out for the comparison"
        for p in self._problems:
            text += f"<br><span style='color:#b02020'>{p}</span>"
        self.counts_label.setText(text)
        self._refresh_buttons()

    def _fill_preview(self) -> None:
        self.preview.clear()
        for item in self.pool.items[:THUMBS]:
            pm = _thumbnail(item.path)
            w = QListWidgetItem(QIcon(pm) if pm is not None else QIcon(), item.path.name[:14])
            w.setToolTip(f"{item.path}\n{item.sha256[:16]}… ({item.source})")
            self.preview.addItem(w)
        if len(self.pool) > THUMBS:
            self.preview.addItem(QListWidgetItem(f"+{len(self.pool) - THUMBS} more"))

    # ------------------------------------------------------------------ jobs
    def _threshold(self) -> float:
        t = getattr(self.main_window, "threshold", None)
        if isinstance(t, (int, float)):
            return float(t)
        cal = getattr(getattr(self.main_window, "bundle", None), "calibration", None)
        return float(cal.default_threshold) if cal is not None else 2.0

    def _active_bundle_dir(self) -> str | None:
        path = getattr(getattr(self.main_window, "bundle", None), "path", None)
        if path is not None and (Path(path) / "model.json").is_file():
            return str(path)
        p = self.registry.active_path()
        return str(p) if (p / "model.json").is_file() else None

    def make_job(self) -> rw.RetrainJob:
        """A job for the current pool and settings (written to a new job folder)."""
        if len(self.pool) < 2:
            raise XrayscreenError("the pool needs at least 2 scans (add a folder or cleared bags)")
        split = self.pool.split_holdout(self.holdout.value() / 100.0)
        job = rw.RetrainJob(
            job_dir=str(rw.new_job_dir(self.registry.root.parent / "retrain")),
            config=self.train_config(),
            sources=[str(i.path) for i in split.train],
            holdout=[str(i.path) for i in split.holdout],
            threshold=self._threshold(),
            active_bundle=self._active_bundle_dir(),
            registry_root=str(self.registry.root),
            pool_fingerprint=self.pool.fingerprint(),
            pool_summary=self.pool.counts.summary(),
            threads=int(self.threads.value()),
        )
        job.save()
        return job

    def start_training(self) -> bool:
        """Write a job for the current pool and start the worker process."""
        if self.is_running():
            return False
        try:
            job = self.make_job()
        except XrayscreenError as exc:
            self._fail(str(exc))
            return False
        self.job = job
        self.loss_plot.clear()
        self._clear_card()
        return self._launch(resume=False)

    def resume_training(self) -> bool:
        """Continue the current (cancelled or interrupted) job from its checkpoint."""
        if self.job is None or self.is_running():
            return False
        return self._launch(resume=True)

    def _launch(self, resume: bool) -> bool:
        assert self.job is not None
        self.events = []
        self._buffer = ""
        self.last_error = ""
        self.new_model_id = None
        self.comparison = None
        proc = QProcess(self)
        proc.setProcessChannelMode(QProcess.ProcessChannelMode.SeparateChannels)
        proc.readyReadStandardOutput.connect(self._read_stdout)
        proc.readyReadStandardError.connect(self._read_stderr)
        proc.finished.connect(self._finished)
        proc.errorOccurred.connect(self._process_error)
        self.process = proc
        self._stderr_tail = ""
        self.progress_bar.setValue(0)
        self._set_state("training")
        self.status_label.setText("Starting the training process…")
        proc.start(
            sys.executable, rw.worker_command(Path(self.job.job_dir) / rw.JOB, resume=resume)
        )
        return True

    def is_running(self) -> bool:
        """True while a training process (own or attached background one) is running."""
        if self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning:
            return True
        return self._attached_pid is not None and _pid_alive(self._attached_pid)

    def cancel_training(self) -> None:
        """Ask the worker to stop (SIGTERM); it keeps its last epoch checkpoint."""
        if self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning:
            self.status_label.setText("Cancelling after the current step…")
            self.process.terminate()
        elif self._attached_pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self._attached_pid, signal.SIGTERM)

    def child_pid(self) -> int | None:
        """Pid of the process that trains (written by the worker), if known."""
        if self.job is None:
            return None
        try:
            return int((Path(self.job.job_dir) / rw.PID).read_text().strip())
        except (OSError, ValueError):
            return None

    # ------------------------------------------------------------------ events
    def _read_stdout(self) -> None:
        assert self.process is not None
        self._buffer += bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue  # not a protocol line
            if isinstance(ev, dict):
                self.handle_event(ev)

    def _read_stderr(self) -> None:
        assert self.process is not None
        text = bytes(self.process.readAllStandardError()).decode("utf-8", "replace")
        self._stderr_tail = (self._stderr_tail + text)[-4000:]

    def handle_event(self, ev: dict[str, Any]) -> None:
        """Apply one worker event to the dialog."""
        self.events.append(ev)
        kind = ev.get("event")
        if kind == "progress":
            self._on_progress(ev)
        elif kind == "trained":
            self.status_label.setText("Training finished; comparing with the active model…")
            self._set_state("evaluating")
        elif kind == "evaluation":
            cmp = ev.get("comparison")
            self.comparison = Comparison.from_dict(cmp) if cmp else None
        elif kind == "registered":
            self.new_model_id = str(ev["model_id"])
        elif kind == "cancelled":
            ep = ev.get("checkpoint_epoch")
            self.status_label.setText(
                f"Cancelled. Checkpoint after epoch {ep} kept: Resume continues from there."
                if ep
                else "Cancelled before the first epoch finished: nothing to resume."
            )
        elif kind == "error":
            self.last_error = str(ev.get("message", "training failed"))
        elif kind == "estimate":
            self._on_estimate(ev)

    def _on_progress(self, ev: dict[str, Any]) -> None:
        phase = ev.get("phase", "")
        epoch, epochs = int(ev.get("epoch") or 0), int(ev.get("epochs") or 0)
        step, spe = int(ev.get("step") or 0), int(ev.get("steps_per_epoch") or 0)
        losses = ev.get("losses") or {}
        if phase == "train" and epochs and spe:
            done = ((epoch - 1) * spe + step) / (epochs * spe)
            self.progress_bar.setValue(int(1000 * done))
            x = (epoch - 1) * spe + step
            self.loss_plot.add(x, losses)
            self.status_label.setText(
                f"Epoch {epoch}/{epochs} · step {step}/{spe} · about {_fmt_s(ev.get('eta_s'))} left"
            )
        elif phase == "validate" and losses and spe:
            self.loss_plot.add(epoch * spe, losses, epoch=True)
            if ev.get("message"):
                self.status_label.setText(str(ev["message"]))
        elif phase == "loading":
            self.status_label.setText(f"Reading scans {step}/{spe}…")
        elif phase == "evaluate":
            self._set_state("evaluating")
            self.progress_bar.setValue(int(1000 * step / max(spe, 1)))
            self.status_label.setText(f"Comparing models: {ev.get('message', '')} {step}/{spe}")
        elif phase:
            self.status_label.setText(f"{phase.capitalize()}… {ev.get('message', '')}")

    def _finished(self, code: int, _status: Any = None) -> None:
        if self.process is not None:
            self._read_stdout()
        self._end_of_run(code)

    def _end_of_run(self, code: int | None) -> None:
        kinds = [e.get("event") for e in self.events]
        if "registered" in kinds and self.new_model_id:
            self.progress_bar.setValue(1000)
            self.status_label.setText(f"New model {self.new_model_id} registered (not active).")
            self._set_state("finished")
            self._show_card()
        elif "cancelled" in kinds or code == rw.EXIT_CANCELLED:
            self._set_state("cancelled")
        else:
            msg = self.last_error or "the training process ended unexpectedly"
            if not self.last_error and self._stderr_tail_line():
                msg += f" ({self._stderr_tail_line()})"
            self._fail(msg)

    def _stderr_tail_line(self) -> str:
        lines = [ln for ln in getattr(self, "_stderr_tail", "").splitlines() if ln.strip()]
        return lines[-1][:200] if lines else ""

    def _process_error(self, err: Any) -> None:
        if err == QProcess.ProcessError.FailedToStart:
            self._fail("could not start the training process")

    def _fail(self, message: str) -> None:
        self.last_error = message
        ep = rw.checkpoint_epoch(self.job.job_dir) if self.job else None
        extra = f" A checkpoint after epoch {ep} is kept: Resume continues from it." if ep else ""
        self.status_label.setText(
            f"<span style='color:#b02020'>Training failed: {message}</span>{extra}"
        )
        self._set_state("failed")

    def _set_state(self, state: str) -> None:
        self.state = state
        self._refresh_buttons()
        self.state_changed.emit(state)

    def _refresh_buttons(self) -> None:
        running = self.state in ("training", "evaluating", "estimating")
        can_resume = (
            not running
            and self.job is not None
            and self.state in ("cancelled", "failed")
            and rw.checkpoint_epoch(self.job.job_dir) is not None
        )
        self.start_button.setEnabled(not running and len(self.pool) >= 2)
        self.estimate_button.setEnabled(not running and len(self.pool) >= 1)
        self.cancel_button.setEnabled(self.state in ("training", "evaluating"))
        self.resume_button.setEnabled(can_resume)
        self.rollback_button.setEnabled(bool(self.registry.history()))

    # ------------------------------------------------------------------ card
    def _clear_card(self) -> None:
        if self.card is not None:
            self.card.setParent(None)
            self.card.deleteLater()
            self.card = None

    def _show_card(self) -> None:
        from xrayscreen.gui.model_compare import ModelCompareCard

        self._clear_card()
        new_rec = act_rec = None
        with contextlib.suppress(XrayscreenError):
            new_rec = self.registry.get(self.new_model_id) if self.new_model_id else None
        with contextlib.suppress(XrayscreenError):
            act_id = (
                (
                    self.comparison.active.model_id
                    if self.comparison and self.comparison.active
                    else None
                )
                or getattr(getattr(self.main_window, "bundle", None), "model_id", None)
                or _active_record_id(self.registry)
            )
            act_rec = self.registry.get(act_id)
        self.card = ModelCompareCard(self.comparison, new_rec, act_rec, self)
        self.card.activate_requested.connect(self.activate_model)
        self.card.discard_requested.connect(self.discard_model)
        self.card_holder.addWidget(self.card)

    def _record_decision(self, action: str, model_id: str) -> None:
        if self.job is None:
            return
        from xrayscreen.atomic import atomic_write_json

        atomic_write_json(
            Path(self.job.job_dir) / "decision.json", {"action": action, "model_id": model_id}
        )

    def activate_model(self, model_id: str) -> bool:
        """Activate ``model_id`` in the registry and switch the main window to it."""
        try:
            rec = activate_with_rollback(self.registry, model_id, self.main_window)
        except XrayscreenError as exc:
            self._error("Cannot activate the model", exc)
            return False
        self._record_decision("activated", model_id)
        self._use_in_main_window(rec.path)
        self._clear_card()
        self.status_label.setText(
            f"Model {model_id} is now active. Roll back restores the previous one."
        )
        self._refresh_buttons()
        self.model_activated.emit(model_id)
        return True

    def discard_model(self, model_id: str) -> bool:
        """Remove the new (inactive) model from the registry."""
        try:
            self.registry.remove(model_id)
        except XrayscreenError as exc:
            self._error("Cannot discard the model", exc)
            return False
        self._record_decision("discarded", model_id)
        self._clear_card()
        self.status_label.setText(f"Model {model_id} discarded; the active model is unchanged.")
        return True

    def roll_back(self) -> bool:
        """Re-activate the previous model (one click) and switch the main window to it."""
        return roll_back(self.main_window, self.registry, parent=self) is not None

    def _use_in_main_window(self, path: Path) -> None:
        use_bundle_dir(self.main_window, path, parent=self)

    def _error(self, title: str, exc: BaseException | str) -> None:
        _show_error(self, title, exc)

    # ------------------------------------------------------------------ estimate
    def estimate_time(self) -> bool:
        """Time a few training steps on a sample of the pool in a worker process."""
        if len(self.pool) < 1 or self.estimate_process is not None:
            return False
        self._estimate_dir = Path(tempfile.mkdtemp(prefix="xrs-estimate-"))
        job = rw.RetrainJob(
            job_dir=str(self._estimate_dir),
            config=self.train_config(),
            # the scans the run would train on (the hold-out is not trained on)
            sources=[
                str(i.path) for i in self.pool.split_holdout(self.holdout.value() / 100.0).train
            ],
            threads=int(self.threads.value()),
        )
        job.save()
        proc = QProcess(self)
        self.estimate_process = proc
        self._estimate_buffer = ""
        proc.readyReadStandardOutput.connect(self._read_estimate)
        proc.finished.connect(self._estimate_finished)
        self.estimate_label.setText("Timing a few training steps…")
        self._set_state("estimating")
        args = [*rw.worker_command(self._estimate_dir / rw.JOB), "--warmup", "6"]
        proc.start(sys.executable, args)
        return True

    def _read_estimate(self) -> None:
        assert self.estimate_process is not None
        self._estimate_buffer += bytes(self.estimate_process.readAllStandardOutput()).decode()
        *lines, self._estimate_buffer = self._estimate_buffer.split("\n")
        for line in lines:
            with contextlib.suppress(json.JSONDecodeError):
                ev = json.loads(line)
                if isinstance(ev, dict) and ev.get("event") in ("estimate", "error"):
                    if ev["event"] == "error":
                        self.estimate_label.setText(f"Estimate failed: {ev.get('message')}")
                    else:
                        self._on_estimate(ev)

    def _on_estimate(self, ev: dict[str, Any]) -> None:
        self.last_estimate = ev
        self.estimate_label.setText(
            f"About <b>{_fmt_s(ev.get('total_s'))}</b> on this machine "
            f"({ev.get('step_s', 0):.3f} s per step × {ev.get('steps_per_epoch')} steps × "
            f"{ev.get('epochs')} epochs, plus reading the scans). Measured on a short warm-up; "
            "other work on the machine slows it down."
        )

    def _estimate_finished(self, *_: Any) -> None:
        if self.estimate_process is not None:
            self._read_estimate()
            self.estimate_process.deleteLater()
        self.estimate_process = None
        if self._estimate_dir is not None:
            shutil.rmtree(self._estimate_dir, ignore_errors=True)
            self._estimate_dir = None
        if self.state == "estimating":
            self._set_state("idle")

    # ------------------------------------------------------------------ background runs
    def pick_up_background_job(self) -> str | None:
        """Look at the newest job folder: attach to a running one, or offer its result.

        Returns what was found: "running", "finished", "resumable" or None.
        """
        root = self.registry.root.parent / "retrain"
        jobs = (
            sorted(p for p in root.glob("job-*") if (p / rw.JOB).is_file()) if root.is_dir() else []
        )
        if not jobs:
            return None
        d = jobs[-1]
        if (d / "decision.json").is_file():
            return None
        try:
            job = rw.RetrainJob.load(d / rw.JOB)
        except XrayscreenError:
            return None
        events = rw.read_events(d)
        kinds = [e.get("event") for e in events]
        pid = None
        with contextlib.suppress(OSError, ValueError):
            pid = int((d / rw.PID).read_text().strip())
        self.job = job
        if pid is not None and _pid_alive(pid) and "done" not in kinds and "cancelled" not in kinds:
            self._attached_pid = pid
            self._tail_offset = 0
            self.events = []
            self._set_state("training")
            self.status_label.setText("Training continues in the background (started earlier).")
            self._tail_timer.start()
            return "running"
        for ev in events:
            self.handle_event(ev)
        if "registered" in kinds and self.new_model_id:
            try:
                self.registry.get(self.new_model_id)
            except XrayscreenError:
                return None
            self._end_of_run(0)
            return "finished"
        if rw.checkpoint_epoch(d) is not None:
            self._set_state("cancelled")
            self.status_label.setText(
                f"An earlier training stopped after epoch {rw.checkpoint_epoch(d)}: Resume continues it."
            )
            return "resumable"
        self.job = None
        return None

    def _poll_background(self) -> None:
        if self.job is None:
            self._tail_timer.stop()
            return
        path = Path(self.job.job_dir) / rw.EVENTS
        with contextlib.suppress(OSError):
            with open(path, encoding="utf-8") as fh:
                fh.seek(self._tail_offset)
                chunk = fh.read()
            complete = chunk[: chunk.rfind("\n") + 1]
            self._tail_offset += len(complete.encode("utf-8"))
            for line in complete.splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    self.handle_event(json.loads(line))
        if self._attached_pid is not None and not _pid_alive(self._attached_pid):
            self._tail_timer.stop()
            self._attached_pid = None
            kinds = [e.get("event") for e in self.events]
            self._end_of_run(0 if "done" in kinds else None)

    # ------------------------------------------------------------------ closing the app
    def on_app_close(self) -> bool:
        """Called when the main window closes; returns False to keep the app open."""
        if not self.is_running():
            return True
        choice = ask_close_choice(self.main_window or self)
        if choice == STAY:
            return False
        if choice == CANCEL:
            self.cancel_training()
            if self.process is not None:
                self.process.waitForFinished(60000)
            return True
        # KEEP: the trainer runs in its own session; only the relaying supervisor ends.
        if self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning:
            self.process.kill()
            self.process.waitForFinished(5000)
        return True

    def showEvent(self, event: Any) -> None:
        # Decisions may have been logged since the dialog was last open.
        if not self.is_running() and self.state not in ("finished",):
            self._fill_operators()
            self.rebuild_pool()
        super().showEvent(event)

    def closeEvent(self, event: Any) -> None:
        # Closing the dialog only hides it; training and its progress carry on.
        event.ignore()
        self.hide()


def _active_record_id(registry: Registry) -> str:
    for r in registry.list():
        if r.is_active:
            return r.model_id
    raise XrayscreenError("no active model")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not running.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _show_error(parent: QWidget | None, title: str, exc: BaseException | str) -> None:
    try:
        from xrayscreen.gui.dialogs import show_error
    except ImportError:
        QMessageBox.critical(parent, title, str(exc))
    else:
        show_error(parent, title, exc)


def activate_with_rollback(registry: Registry, model_id: str, main_window: Any) -> Any:
    """Activate ``model_id`` so that Roll back returns to the model the window is using.

    A model loaded from a folder (Model ▸ Load bundle…) is not in the registry; it
    is registered (copied) first, so one click can bring it back.
    """
    current = getattr(main_window, "bundle", None)
    previous = None
    cur_id, cur_path = getattr(current, "model_id", None), getattr(current, "path", None)
    if cur_id and cur_id != model_id:
        try:
            registry.path_of(cur_id)
            previous = cur_id
        except XrayscreenError:
            if cur_path is not None and (Path(cur_path) / "model.json").is_file():
                with contextlib.suppress(XrayscreenError):
                    previous = registry.register(cur_path).model_id
    return registry.activate(model_id, previous=previous)


def use_bundle_dir(main_window: Any, path: Path, parent: QWidget | None = None) -> bool:
    """Load the bundle at ``path`` and hand it to the main window (which rescoring uses)."""
    if main_window is None or not hasattr(main_window, "set_bundle"):
        return False
    from xrayscreen.model.bundle import load_bundle

    try:
        bundle = load_bundle(path)
    except XrayscreenError as exc:
        _show_error(parent, "Cannot load the model", exc)
        return False
    main_window.set_bundle(bundle)
    return True


def roll_back(
    main_window: Any, registry: Registry | None = None, parent: QWidget | None = None
) -> Path | None:
    """Roll the registry back one activation and switch the main window; None if impossible."""
    reg = registry or Registry()
    try:
        rec = reg.rollback()
    except XrayscreenError as exc:
        _show_error(parent or main_window, "Cannot roll back", exc)
        return None
    use_bundle_dir(main_window, rec.path, parent)
    if hasattr(main_window, "statusBar"):
        with contextlib.suppress(Exception):
            main_window.statusBar().showMessage(f"Rolled back to model {rec.model_id}", 5000)
    return rec.path


# ------------------------------------------------------------------------ menu actions
@dataclasses.dataclass
class RetrainActions:
    """What :func:`install_retrain_actions` added (kept on the main window)."""

    retrain: QAction
    activate: QAction
    rollback: QAction
    import_: QAction
    export: QAction
    controller: RetrainController


class RetrainController(QObject):
    """Owns the dialog and implements the Model-menu actions; filters the window's Close."""

    def __init__(self, main_window: Any, registry: Registry | None = None) -> None:
        super().__init__(main_window)
        self.main_window = main_window
        self._registry = registry
        self.dialog: RetrainDialog | None = None

    @property
    def registry(self) -> Registry:
        return self._registry or Registry()

    def open_dialog(self) -> RetrainDialog:
        if self.dialog is None:
            self.dialog = RetrainDialog(self.main_window, self.registry)
            self.dialog.resize(820, 860)
        self.dialog.show()
        self.dialog.raise_()
        return self.dialog

    def choose_and_activate(self) -> None:
        reg = self.registry
        records = reg.list()
        if not records:
            _show_error(self.main_window, "No models", "There are no registered models.")
            return
        labels = []
        for r in records:
            far = (r.evaluation or {}).get("bag_far")
            extra = f", bag FAR {100 * far:.1f} %" if isinstance(far, (int, float)) else ""
            kind = "bundled default" if r.is_default else f"{r.n_scans or '?'} scans"
            labels.append(f"{'● ' if r.is_active else ''}{r.model_id} ({kind}{extra})")
        current = next((i for i, r in enumerate(records) if r.is_active), 0)
        label, ok = QInputDialog.getItem(
            self.main_window, "Activate model", "Model to use from now on:", labels, current, False
        )
        if ok:
            self.activate(records[labels.index(label)].model_id)

    def activate(self, model_id: str) -> bool:
        try:
            rec = activate_with_rollback(self.registry, model_id, self.main_window)
        except XrayscreenError as exc:
            _show_error(self.main_window, "Cannot activate the model", exc)
            return False
        return use_bundle_dir(self.main_window, rec.path, self.main_window)

    def rollback(self) -> Path | None:
        return roll_back(self.main_window, self.registry)

    def import_bundle(self, file: str | None = None) -> str | None:
        if file is None:
            file, _ = QFileDialog.getOpenFileName(
                self.main_window,
                "Import model",
                "",
                "xrayscreen models (*.xrsmodel);;All files (*)",
            )
        if not file:
            return None
        try:
            rec = self.registry.import_(file)
        except (XrayscreenError, OSError) as exc:
            _show_error(self.main_window, "Cannot import this model", exc)
            return None
        if hasattr(self.main_window, "statusBar"):
            self.main_window.statusBar().showMessage(
                f"Imported model {rec.model_id} (not active; Model ▸ Activate model… to use it)",
                8000,
            )
        return rec.model_id

    def export_bundle(self, file: str | None = None) -> Path | None:
        mid = getattr(getattr(self.main_window, "bundle", None), "model_id", None)
        if mid is None:
            _show_error(self.main_window, "No model", "No model is loaded.")
            return None
        if file is None:
            file, _ = QFileDialog.getSaveFileName(
                self.main_window,
                "Export model",
                f"{mid}.xrsmodel",
                "xrayscreen models (*.xrsmodel)",
            )
        if not file:
            return None
        try:
            return self.registry.export(mid, file)
        except (XrayscreenError, OSError) as exc:
            _show_error(self.main_window, "Cannot export the model", exc)
            return None

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if obj is self.main_window and event.type() == QEvent.Type.Close:
            if self.dialog is not None and not self.dialog.on_app_close():
                event.ignore()
                return True
        return False


def install_retrain_actions(main_window: Any, registry: Registry | None = None) -> RetrainActions:
    """Add Retrain…, Activate…, Roll back, Import/Export to ``main_window.model_menu``.

    Also installs an event filter on the window so closing the app while training
    asks whether to keep training in the background or cancel it.
    """
    ctl = RetrainController(main_window, registry)
    menu = main_window.model_menu
    retrain = menu.addAction("&Retrain…")
    retrain.triggered.connect(ctl.open_dialog)
    activate = menu.addAction("&Activate model…")
    activate.triggered.connect(ctl.choose_and_activate)
    rollback = menu.addAction("Roll &back to previous model")
    rollback.triggered.connect(ctl.rollback)
    menu.addSeparator()
    imp = menu.addAction("&Import model bundle…")
    imp.triggered.connect(lambda: ctl.import_bundle())
    exp = menu.addAction("&Export model bundle…")
    exp.triggered.connect(lambda: ctl.export_bundle())
    menu.aboutToShow.connect(lambda: rollback.setEnabled(bool(ctl.registry.history())))
    main_window.installEventFilter(ctl)
    actions = RetrainActions(retrain, activate, rollback, imp, exp, ctl)
    main_window.retrain_actions = actions
    return actions
