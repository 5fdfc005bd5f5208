"""Side panels: display controls, heat map, threshold, regions, decision."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleSlider, QLabeledSlider

from xrayscreen.gui.backend import display_modes, mode_label
from xrayscreen.gui.overlay import COLOUR_MAPS


def _hslider(cls, lo, hi, value):
    s = cls(Qt.Orientation.Horizontal)
    s.setRange(lo, hi)
    s.setValue(value)
    return s


class DisplayPanel(QGroupBox):
    """Display mode and brightness / contrast / gamma."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Display", parent)
        form = QFormLayout(self)
        self.mode = QComboBox()
        for m in display_modes():
            self.mode.addItem(mode_label(m), m)
        self.brightness = _hslider(QLabeledDoubleSlider, -0.5, 0.5, 0.0)
        self.contrast = _hslider(QLabeledDoubleSlider, 0.2, 3.0, 1.0)
        self.gamma = _hslider(QLabeledDoubleSlider, 0.2, 3.0, 1.0)
        reset = QPushButton("Reset")
        reset.clicked.connect(self.reset)
        form.addRow("Mode", self.mode)
        form.addRow("Brightness", self.brightness)
        form.addRow("Contrast", self.contrast)
        form.addRow("Gamma", self.gamma)
        form.addRow("", reset)
        self.mode.currentIndexChanged.connect(lambda *_: self.changed.emit())
        for s in (self.brightness, self.contrast, self.gamma):
            s.valueChanged.connect(lambda *_: self.changed.emit())

    def current_mode(self) -> str:
        return str(self.mode.currentData())

    def set_mode(self, mode: str) -> None:
        i = self.mode.findData(mode)
        if i >= 0:
            self.mode.setCurrentIndex(i)

    def values(self) -> dict[str, float]:
        return {
            "brightness": float(self.brightness.value()),
            "contrast": float(self.contrast.value()),
            "gamma": float(self.gamma.value()),
        }

    def reset(self) -> None:
        for s, v in ((self.brightness, 0.0), (self.contrast, 1.0), (self.gamma, 1.0)):
            s.setValue(v)


class HeatPanel(QGroupBox):
    """Heat map visibility, opacity, colour map, latent vs residual."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Heat map", parent)
        form = QFormLayout(self)
        self.visible = QCheckBox("Show heat map (H)")
        self.visible.setChecked(True)
        self.opacity = _hslider(QLabeledSlider, 0, 100, 55)
        self.colour_map = QComboBox()
        self.colour_map.addItems(COLOUR_MAPS)
        self.kind = QComboBox()
        self.kind.addItem("Latent |z - ẑ| (paper)", "latent")
        self.kind.addItem("Reconstruction residual", "residual")
        form.addRow(self.visible)
        form.addRow("Opacity %", self.opacity)
        form.addRow("Colours", self.colour_map)
        form.addRow("Map", self.kind)
        self.visible.toggled.connect(lambda *_: self.changed.emit())
        self.opacity.valueChanged.connect(lambda *_: self.changed.emit())
        self.colour_map.currentIndexChanged.connect(lambda *_: self.changed.emit())
        self.kind.currentIndexChanged.connect(lambda *_: self.changed.emit())

    def map_kind(self) -> str:
        return str(self.kind.currentData())

    def set_score_label(self, kind: str, per_scan: bool = False) -> None:
        """Name the first map after the model's own score kind (the engine's score map)."""
        names = {
            "latent": "Latent |z - ẑ| (paper)",
            "residual": "Residual score",
            "residual_excess": "Unexplained density",
            "feature_knn": "Feature memory",
            "feature_knn_residual": "Feature memory + residual",
            "feature_knn_excess": "Feature memory + unexplained density",
        }
        text = names.get(kind, f"Model score ({kind})")
        if per_scan:
            text += ", per scan"
        self.kind.setItemText(0, text)


class ThresholdPanel(QGroupBox):
    """The threshold in calibrated units and what it means in false alarms."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Threshold (calibrated units)", parent)
        lay = QVBoxLayout(self)
        self.slider = _hslider(QLabeledDoubleSlider, 0.0, 6.0, 2.0)
        self.slider.setSingleStep(0.05)
        self.slider.setDecimals(2)
        self.meaning = QLabel("no model")
        self.meaning.setWordWrap(True)
        self.default_button = QPushButton("Model default")
        lay.addWidget(self.slider)
        lay.addWidget(self.meaning)
        lay.addWidget(self.default_button)

    @staticmethod
    def describe(calibration: Any, t: float) -> str:
        """'≈ x % of normal bags would alarm at this threshold' from the bundle's calibration."""
        if calibration is None:
            return "This model is not calibrated: the threshold is in raw score units."
        win = calibration.window_far(t) * 100.0
        bag = calibration.bag_far(t)
        text = f"≈ {win:.2g} % of normal windows reach {t:.2f}."
        if bag is None:
            return text + " (No bag-level calibration in this model.)"
        n = len(calibration.bag_maxima)
        # The raw count and its 95 % interval beside any estimate, so the analyst sees
        # how few bags it rests on.
        lo, hi = calibration.bag_far_interval(t)
        count = (
            f"({round(bag * n)} of {n} held-out bags did; "
            f"95 % interval {lo * 100:.0f}-{hi * 100:.0f} %)"
        )
        fitted = calibration.bag_far_fitted(t)
        if fitted is not None:
            # The smooth estimate from the Gumbel law fitted to the held-out peaks.
            return (
                f"≈ {fitted * 100:.1f} % of normal bags would alarm at this threshold {count}. "
                + text
            )
        return f"≈ {bag * 100:.1f} % of normal bags would alarm at this threshold {count}. " + text


class RegionsPanel(QGroupBox):
    """Alarm regions ranked by peak score; clicking one zooms to it."""

    region_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Alarm regions", parent)
        lay = QVBoxLayout(self)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["#", "peak", "mean", "area px"])
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        for col, width in enumerate((34, 60, 60, 70)):
            self.tree.setColumnWidth(col, width)
        self.tree.itemClicked.connect(
            lambda item, _col: self.region_clicked.emit(int(item.data(0, Qt.ItemDataRole.UserRole)))
        )
        self.summary = QLabel("")
        lay.addWidget(self.summary)
        lay.addWidget(self.tree)

    def set_regions(self, regions: list[Any]) -> None:
        self.tree.setUpdatesEnabled(False)
        self.tree.clear()
        for i, r in enumerate(regions):
            item = QTreeWidgetItem(
                [
                    str(i + 1),
                    f"{float(r.peak):.2f}",
                    f"{float(getattr(r, 'mean', r.peak)):.2f}",
                    str(int(getattr(r, "area_px", 0))),
                ]
            )
            item.setData(0, Qt.ItemDataRole.UserRole, i)
            self.tree.addTopLevelItem(item)
        self.tree.setUpdatesEnabled(True)
        n = len(regions)
        self.summary.setText(
            "No alarm at this threshold" if n == 0 else f"{n} alarm region{'s' if n > 1 else ''}"
        )


class DecisionPanel(QGroupBox):
    """Clear / Suspect with an optional note, and earlier decisions on this scan."""

    decided = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Decision", parent)
        lay = QVBoxLayout(self)
        self.note = QLineEdit()
        self.note.setPlaceholderText("optional note")
        row = QHBoxLayout()
        self.clear_button = QPushButton("Clear  (C)")
        self.suspect_button = QPushButton("Suspect  (S)")
        self.clear_button.setStyleSheet(
            "QPushButton { background: #2e7d32; color: white; padding: 6px; }"
        )
        self.suspect_button.setStyleSheet(
            "QPushButton { background: #c62828; color: white; padding: 6px; }"
        )
        row.addWidget(self.clear_button)
        row.addWidget(self.suspect_button)
        self.advance = QCheckBox("Next scan after deciding")
        self.history = QLabel("")
        self.history.setWordWrap(True)
        self.history.setTextFormat(Qt.TextFormat.RichText)
        lay.addWidget(self.note)
        lay.addLayout(row)
        lay.addWidget(self.advance)
        lay.addWidget(self.history)
        self.clear_button.clicked.connect(lambda: self.decided.emit("Clear"))
        self.suspect_button.clicked.connect(lambda: self.decided.emit("Suspect"))

    def set_history(self, decisions: list[Any]) -> None:
        if not decisions:
            self.history.setText("<i>No earlier decision on this scan.</i>")
            return
        lines = []
        for d in decisions[-5:]:
            colour = "#c62828" if d.verdict == "Suspect" else "#2e7d32"
            note = f" - {d.note}" if d.note else ""
            lines.append(
                f"<span style='color:{colour}'><b>{d.verdict}</b></span> by {d.operator_id} "
                f"at {d.decided_at[:19].replace('T', ' ')}{note}"
            )
        self.history.setText("<b>Already decided:</b><br>" + "<br>".join(lines))
