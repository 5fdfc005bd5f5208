"""The comparison card shown after retraining: new vs active model on the same bags.

Two figures decide whether to switch, both measured at the operator's current
threshold on exactly the same held-out normal bags and the same TIP-projected
threats: the bag false-alarm rate (lower is better) and the detection rate
(higher is better). Beside them, new minus active with a paired 95 % bootstrap
interval (the same bags resampled for both models): a difference is coloured only
when its interval excludes zero, so one bag of twenty does not paint the new model
green. The card only reports; the analyst presses **Activate** or **Discard**
(nothing switches by itself).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from xrayscreen.retrain_eval import Comparison, ModelEvaluation

BETTER = QColor(30, 130, 60)
WORSE = QColor(180, 40, 40)


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100.0 * v:.1f} %"


def _count(ev: ModelEvaluation | None, rate: float | None, n: int) -> str:
    if ev is None or rate is None:
        return "—"
    return f"{_pct(rate)}  ({round(rate * n)}/{n})"


def _difference_text(diff: dict | None) -> str:
    """``+5.0 points [-5.0 to +15.0]`` (rates in percentage points), or a dash."""
    if diff is None:
        return "—"
    lo, hi = diff["ci"]
    return f"{100 * diff['diff']:+.1f} points [{100 * lo:+.1f} to {100 * hi:+.1f}]"


class ModelCompareCard(QFrame):
    """New vs active model; emits ``activate_requested`` / ``discard_requested``.

    Args:
        comparison: The :class:`~xrayscreen.retrain_eval.Comparison` (may be None when
            the evaluation was skipped; the card then says so).
        new_record: Registry record of the new model (for id, scans, date).
        active_record: Registry record of the active model.
    """

    activate_requested = Signal(str)
    discard_requested = Signal(str)

    def __init__(
        self,
        comparison: Comparison | None,
        new_record: Any = None,
        active_record: Any = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("ModelCompareCard")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.comparison = comparison
        self.new_id = str(
            getattr(new_record, "model_id", None) or (comparison.new.model_id if comparison else "")
        )
        lay = QVBoxLayout(self)
        title = QLabel("New model vs active model")
        f = QFont(title.font())
        f.setBold(True)
        f.setPointSizeF(f.pointSizeF() * 1.2)
        title.setFont(f)
        lay.addWidget(title)
        grid = QGridLayout()
        grid.setHorizontalSpacing(24)
        lay.addLayout(grid)
        self.cells: dict[tuple[str, str], QLabel] = {}
        new = comparison.new if comparison else None
        act = comparison.active if comparison else None
        thr = new.threshold if new else None
        rows: list[tuple[str, str, str, int]] = [
            ("model", "Model", "", 0),
            ("created", "Created", "", 0),
            ("scans", "Training scans", "", 0),
            ("bags", "Held-out normal bags", "", 0),
            ("far", f"Bag false-alarm rate at {thr:.2f}" if thr is not None else "Bag false-alarm rate", "", -1),
            ("det", "Detection rate, projected threats", "", +1),
        ]  # fmt: skip
        for c, head in enumerate(("", "New", "Active", "New − active (95 %)")):
            h = QLabel(f"<b>{head}</b>")
            grid.addWidget(h, 0, c)
        values = {
            "new": self._column(new, new_record),
            "active": self._column(act, active_record),
        }
        for r, (key, label, _unit, better) in enumerate(rows, start=1):
            grid.addWidget(QLabel(label), r, 0)
            for c, side in enumerate(("new", "active"), start=1):
                cell = QLabel(values[side][key])
                cell.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
                grid.addWidget(cell, r, c)
                self.cells[(key, side)] = cell
            if better and comparison is not None:
                diff = comparison.difference(key)
                cell = QLabel(_difference_text(diff))
                cell.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
                grid.addWidget(cell, r, 3)
                self.cells[(key, "diff")] = cell
                self._colour(key, better, diff)
        note = QLabel(self._note(comparison))
        note.setWordWrap(True)
        note.setObjectName("compareNote")
        lay.addWidget(note)
        self.note = note
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.discard_button = QPushButton("Discard new model")
        self.activate_button = QPushButton("Activate new model")
        self.activate_button.setDefault(True)
        buttons.addWidget(self.discard_button)
        buttons.addWidget(self.activate_button)
        lay.addLayout(buttons)
        self.activate_button.clicked.connect(lambda: self.activate_requested.emit(self.new_id))
        self.discard_button.clicked.connect(lambda: self.discard_requested.emit(self.new_id))

    @staticmethod
    def _column(ev: ModelEvaluation | None, rec: Any) -> dict[str, str]:
        n_scans = getattr(rec, "n_scans", None)
        return {
            "model": str(getattr(rec, "model_id", None) or (ev.model_id if ev else "—")),
            "created": str(getattr(rec, "created", "") or "—"),
            "scans": str(n_scans) if n_scans is not None else "—",
            "bags": str(ev.n_bags) if ev else "—",
            "far": _count(ev, ev.bag_far if ev else None, ev.n_bags if ev else 0),
            "det": _count(ev, ev.detection_rate if ev else None, ev.n_threats if ev else 0),
        }

    def _colour(self, key: str, better: int, diff: dict | None) -> None:
        """Green / red only for a difference these bags can show: a paired interval
        that holds 0 (one bag of twenty, say) stays uncoloured."""
        if diff is None:
            return
        lo, hi = diff["ci"]
        if lo <= 0.0 <= hi:
            return
        new_better = diff["diff"] * better > 0
        colour = BETTER if new_better else WORSE
        for side in ("new", "diff"):
            self.cells[(key, side)].setStyleSheet(f"color: {colour.name()}; font-weight: bold;")

    @staticmethod
    def _note(comparison: Comparison | None) -> str:
        if comparison is None:
            return (
                "No comparison: the pool had no held-out bags. The new model is registered but "
                "not active."
            )
        parts = [
            "Both models scored the same held-out normal bags (never used for training)"
            + (" and the same projected threats." if comparison.new.n_threats else ".")
        ]
        if not comparison.new.tip_available:
            parts.append(
                "Threat projection (TIP) is not available in this build: no detection rate."
            )
        if comparison.active is None:
            parts.append("The active model could not be evaluated on these bags.")
        trained = [
            name
            for name, ev in (("new", comparison.new), ("active", comparison.active))
            if ev is not None and ev.tip_trained and ev.n_threats
        ]
        if len(trained) == 2:
            parts.append(
                "Both models' scores include a head trained on threats projected by the same "
                "simulator: their detection rates here are optimistic (the false-alarm rates "
                "are not affected)."
            )
        elif trained:
            parts.append(
                f"The {trained[0]} model's score includes a head trained on threats projected "
                "by the same simulator: its detection rate here is optimistic (the "
                "false-alarm rate is not affected)."
            )
        parts.append(
            "A difference is coloured only when its 95 % interval (the same bags resampled "
            "for both models) excludes zero; otherwise these bags cannot tell the models apart."
        )
        if comparison.new.n_bags < 20:
            parts.append(
                f"Only {comparison.new.n_bags} held-out bags: one bag moves the false-alarm rate "
                f"by {100.0 / max(comparison.new.n_bags, 1):.0f} points."
            )
        parts.append("Nothing changes until you press Activate.")
        return " ".join(parts)
