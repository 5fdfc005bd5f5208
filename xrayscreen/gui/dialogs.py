"""Dialogs: readable error messages, the model card, the decision log view, the pair opener."""

from __future__ import annotations

import html
import logging
import sys
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from PySide6.QtCore import QDate
from PySide6.QtWidgets import (
    QComboBox,
    QDateEdit,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from xrayscreen.errors import XrayscreenError

log = logging.getLogger("xrayscreen.gui")


def readable(exc: BaseException) -> str:
    """A message for a person: our typed errors verbatim, anything else summarised."""
    if isinstance(exc, XrayscreenError):
        return str(exc)
    if isinstance(exc, OSError):
        name = getattr(exc, "filename", None)
        return f"{exc.strerror or exc}" + (f": {name}" if name else "")
    if isinstance(exc, MemoryError):
        return "Not enough memory for this operation (try a larger stride or a smaller scan)."
    text = str(exc) or exc.__class__.__name__
    return f"Unexpected problem ({exc.__class__.__name__}): {text}"


def show_error(parent: QWidget | None, title: str, exc_or_text: BaseException | str) -> None:
    """Show a readable error; the traceback (if any) goes to the log, never to the user."""
    if isinstance(exc_or_text, BaseException):
        log.warning("%s: %s", title, "".join(traceback.format_exception(exc_or_text)).rstrip())
        text = readable(exc_or_text)
    else:
        text = exc_or_text
    QMessageBox.critical(parent, title, text)


def install_excepthook(parent_getter) -> None:
    """Route uncaught exceptions (slots included) to a dialog instead of a crash."""

    def hook(exc_type, exc, tb):  # pragma: no cover - exercised by the app, not in-process tests
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
        try:
            show_error(parent_getter(), "xrayscreen", exc)
        except Exception:
            pass

    sys.excepthook = hook


# ---------------------------------------------------------------------- model card
def _score_steps(params: dict[str, Any]) -> str:
    """What happens to a window's raw score before calibration, in one line."""
    # Imported here: the score settings' readers pull in torch, which the window does
    # not need before a model is loaded.
    from xrayscreen.inference import context, density, tip_evidence, zoom

    spec = SimpleNamespace(params=params)
    steps = []
    if params.get("scan_norm", "none") != "none":
        steps.append(f"normalised within the scan ({params['scan_norm']})")
    if density.enabled(spec):
        steps.append(f"plus {density.weight_of(spec):g} x window density (within the scan)")
    if tip_evidence.enabled(spec):
        cells = tip_evidence.cells_of(spec)
        how = " (cell means and maxima)" if tip_evidence.cell_max_of(spec) else ""
        reads = f"; reads a {cells} x {cells} grid of the encoder map too{how}" if cells else ""
        if conv := tip_evidence.conv_of(spec):
            reads = f"; a small convolution over the encoder map at {conv} x {conv} positions"
        if a := tip_evidence.abs_share_of(spec):
            reads += f"; {a:.0%} of its weight on its logit against the held-out normal bags'"
        steps.append(
            f"plus {tip_evidence.weight_of(spec):g} x the projected-threat head "
            f"(within the scan; trained on simulated threats in the normal training bags{reads})"
        )
    if zoom.enabled(spec):
        how = (
            "the larger of the two"
            if zoom.mix_of(spec) == "max"
            else f"weight {zoom.weight_of(spec):g}"
        )
        steps.append(f"also scored on the scan shrunk {zoom.factor_of(spec):g}x ({how})")
    r = context.radius_of(spec)
    if r > 0:
        own = context.self_weight_of(spec)
        steps.append(f"averaged with neighbours within {r:g} px (own weight {own:g})")
    return "; ".join(steps)


def model_card_html(bundle: Any, path: str | Path | None = None) -> str:
    """The active model's card: identity, training summary, calibration, input spec."""
    esc = html.escape
    rows: list[tuple[str, str]] = [
        ("Model id", bundle.model_id),
        ("Created", bundle.created),
        ("Bundle", str(path or getattr(bundle, "path", "") or "(in memory)")),
    ]
    cfg = bundle.config
    rows.append(
        (
            "Architecture",
            f"GANomaly isize={cfg.isize} nc={cfg.nc} nz={cfg.nz} ngf={cfg.ngf} ndf={cfg.ndf}",
        )
    )
    inp = bundle.input
    rows.append(
        ("Input", f"{inp.representation}, window {inp.window}, scale {inp.scale.to_dict()}")
    )
    rows.append(("Score", f"{bundle.score.kind} ({bundle.score.norm})"))
    steps = _score_steps(bundle.score.params or {})
    if steps:
        rows.append(("Score steps", steps))
    cal = bundle.calibration
    if cal is not None:
        rows.append(
            (
                "Calibration",
                f"{cal.n_windows} held-out normal windows; {len(cal.bag_maxima)} normal bags",
            )
        )
        t = cal.default_threshold
        bag = cal.bag_far(t)
        rows.append(
            (
                "Default threshold",
                f"{t:.2f} (≈ {cal.window_far(t) * 100:.2g} % of normal windows"
                + (f", ≈ {bag * 100:.1f} % of normal bags alarm)" if bag is not None else ")"),
            )
        )
        rows.append(("Default threshold rule", cal.default_rule()))
    else:
        rows.append(
            ("Calibration", "none - scores are raw, thresholds have no false-alarm meaning")
        )
    for section, data in (("Training", bundle.training), ("Provenance", bundle.provenance)):
        for k, v in (data or {}).items():
            rows.append((f"{section}: {k}", str(v)))
    body = "".join(f"<tr><td><b>{esc(k)}</b></td><td>{esc(v)}</td></tr>" for k, v in rows)
    return f"<h3>Model card</h3><table cellspacing=4>{body}</table>"


class ModelCardDialog(QDialog):
    def __init__(self, bundle: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Model card")
        self.resize(640, 480)
        lay = QVBoxLayout(self)
        self.text = QTextBrowser()
        self.text.setHtml(model_card_html(bundle))
        lay.addWidget(self.text)
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        box.rejected.connect(self.reject)
        lay.addWidget(box)


# ---------------------------------------------------------------------- decision log
class DecisionLogDialog(QDialog):
    """Browse the decision log with filters; export what is shown to CSV."""

    COLUMNS = (
        "decided_at",
        "verdict",
        "operator_id",
        "scan_path",
        "threshold",
        "model_id",
        "seconds_spent",
        "note",
    )

    def __init__(self, decision_log: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.log = decision_log
        self.setWindowTitle(f"Decision log - {decision_log.path}")
        self.resize(980, 520)
        lay = QVBoxLayout(self)
        filt = QHBoxLayout()
        self.since = QDateEdit(QDate.currentDate().addMonths(-1))
        self.until = QDateEdit(QDate.currentDate().addDays(1))
        for d in (self.since, self.until):
            d.setCalendarPopup(True)
            d.setDisplayFormat("yyyy-MM-dd")
        self.operator = QLineEdit()
        self.operator.setPlaceholderText("any operator")
        self.verdict = QComboBox()
        self.verdict.addItems(["any verdict", "Clear", "Suspect"])
        for label, w in (
            ("From", self.since),
            ("before", self.until),
            ("Operator", self.operator),
            ("", self.verdict),
        ):
            if label:
                filt.addWidget(QLabel(label))
            filt.addWidget(w)
        refresh = QPushButton("Apply")
        refresh.clicked.connect(self.refresh)
        filt.addWidget(refresh)
        lay.addLayout(filt)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels([c.replace("_", " ") for c in self.COLUMNS])
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        lay.addWidget(self.table)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.export_button = buttons.addButton(
            "Export CSV…", QDialogButtonBox.ButtonRole.ActionRole
        )
        self.export_button.clicked.connect(self.export)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        self.shown: list[Any] = []
        self.refresh()

    def filters(self) -> dict[str, Any]:
        v = self.verdict.currentText()
        return {
            "since": self.since.date().toString("yyyy-MM-dd"),
            "until": self.until.date().toString("yyyy-MM-dd"),
            "operator_id": self.operator.text().strip() or None,
            "verdict": v if v in ("Clear", "Suspect") else None,
        }

    def refresh(self) -> None:
        self.shown = self.log.query(**self.filters())
        self.table.setRowCount(len(self.shown))
        for r, d in enumerate(self.shown):
            for c, col in enumerate(self.COLUMNS):
                val = getattr(d, col)
                text = "" if val is None else (f"{val:.2f}" if isinstance(val, float) else str(val))
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()

    def export(self, path: str | None = None) -> int:
        if not path:
            path, _ = QFileDialog.getSaveFileName(
                self, "Export decisions", "decisions.csv", "CSV (*.csv)"
            )
        if not path:
            return 0
        try:
            return self.log.export_csv(path, self.shown)
        except Exception as exc:
            show_error(self, "Export failed", exc)
            return 0


# ---------------------------------------------------------------------- pair opener
class PairDialog(QDialog):
    """Pick the high- and low-energy files of a dual-energy scan."""

    def __init__(self, filters: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Open dual-energy pair")
        self._filters = ";;".join(filters)
        form = QFormLayout(self)
        self.high, self.low = QLineEdit(), QLineEdit()
        for label, edit in (("High energy", self.high), ("Low energy", self.low)):
            row = QHBoxLayout()
            row.addWidget(edit)
            b = QPushButton("Browse…")
            b.clicked.connect(lambda _=False, e=edit: self._browse(e))
            row.addWidget(b)
            form.addRow(label, row)
        box = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel
        )
        box.accepted.connect(self.accept)
        box.rejected.connect(self.reject)
        form.addRow(box)
        self.setMinimumWidth(520)

    def _browse(self, edit: QLineEdit) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose file", edit.text(), self._filters)
        if path:
            edit.setText(path)
            if edit is self.high and not self.low.text():
                from xrayscreen.gui.backend import find_pair

                pair = find_pair(path)
                if pair:
                    self.high.setText(str(pair[0]))
                    self.low.setText(str(pair[1]))

    def paths(self) -> tuple[str, str]:
        return self.high.text().strip(), self.low.text().strip()


def confirm(parent: QWidget | None, title: str, text: str) -> bool:
    return (
        QMessageBox.question(
            parent, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No
        )
        == QMessageBox.StandardButton.Yes
    )


__all__ = [
    "DecisionLogDialog",
    "ModelCardDialog",
    "PairDialog",
    "install_excepthook",
    "model_card_html",
    "readable",
    "show_error",
]
