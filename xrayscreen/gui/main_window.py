"""The operator workstation's main window.

Data flow: open -> Scan -> (worker thread) engine.score_scan -> heat map at the
working scale -> HeatOverlay (quantised once) -> threshold -> regions + frames.
The threshold path never touches the model: it re-thresholds the stored heat map.
"""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDockWidget,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import qthrottled

from xrayscreen import paths
from xrayscreen.decisions.log import Decision, DecisionLog, utc_now
from xrayscreen.gui import backend
from xrayscreen.gui.dialogs import DecisionLogDialog, ModelCardDialog, PairDialog, show_error
from xrayscreen.gui.overlay import HeatOverlay, reduce_max
from xrayscreen.gui.panels import (
    DecisionPanel,
    DisplayPanel,
    HeatPanel,
    RegionsPanel,
    ThresholdPanel,
)
from xrayscreen.gui.scan_view import ScanView
from xrayscreen.gui.workers import ScoringJob, wait_for_workers
from xrayscreen.settings import STRIDES, Preferences, load_preferences, save_preferences

APP_TITLE = "xrayscreen"
MIN_REGION_AREA = 16  # working-scale pixels; smaller specks are noise, not a frame
# Heat maps larger than this are max-pooled before labelling regions, so a threshold
# move stays within a frame on native-resolution maps; peaks are kept exactly, boxes
# grow by at most the pooling factor (a few working pixels).
MAX_REGION_PIXELS = 500_000


def _guard_pyside() -> None:
    # PySide6 6.12 on CPython 3.11 loses a reference to None on every void Qt call;
    # a session of threshold moves would abort the interpreter (see pyside_refcount).
    try:
        from xrayscreen.gui.pyside_refcount import guard_none_refcount
    except ImportError:
        return
    guard_none_refcount()


def geometry_settings() -> QSettings:
    """Window geometry only, in an INI file under the per-user config dir (XRAYSCREEN_HOME in tests)."""
    return QSettings(str(paths.config_dir() / "window.ini"), QSettings.Format.IniFormat)


class MainWindow(QMainWindow):
    """The workstation. Public hooks for other GUI modules (e.g. retraining):
    ``set_bundle(bundle)``, ``bundle``, ``threshold``, ``decision_log``, ``score_current()``,
    ``model_menu``."""

    scan_opened = Signal(object)
    scoring_started = Signal()
    scoring_finished = Signal(object)
    scoring_ended = Signal()
    threshold_applied = Signal()

    def __init__(
        self,
        bundle: Any = None,
        *,
        prefs: Preferences | None = None,
        decision_log: DecisionLog | None = None,
    ) -> None:
        _guard_pyside()
        super().__init__()
        self.setWindowTitle(APP_TITLE)
        self.setAcceptDrops(True)
        self.prefs = prefs if prefs is not None else load_preferences()
        self.scan: Any = None
        self.scan_source: str | tuple[str, str] | None = None
        self.opened_at = utc_now()
        self.bundle: Any = None
        self.engine: Any = None
        self.result: Any = None
        self.heat: np.ndarray | None = None
        self.overlay: HeatOverlay | None = None
        self.regions: list[Any] = []
        self.last_redraw_s = 0.0
        self.model_pending = False  # set by the app while the model loads after the window shows
        self._job: ScoringJob | None = None
        self._jobs: set[ScoringJob] = set()
        self._progress_seen = 0
        self.decision_log: DecisionLog | None = decision_log
        if self.decision_log is None:
            try:
                self.decision_log = DecisionLog()
            except Exception as exc:  # the window must still open without a log
                err = exc
                QTimer.singleShot(0, lambda: show_error(self, "Decision log unavailable", err))

        self._build_ui()
        self._build_menus()
        self._restore_geometry()
        self._set_model_status()
        if bundle is not None:
            self.set_bundle(bundle, rescore=False)

    # ================================================================== UI
    def _build_ui(self) -> None:
        self.view = ScanView(self)
        self.view.files_dropped.connect(self.open_files)
        self.setCentralWidget(self.view)

        self.display_panel = DisplayPanel()
        self.display_panel.set_mode(self.prefs.display_mode)
        self.heat_panel = HeatPanel()
        self.heat_panel.opacity.setValue(int(round(self.prefs.heat_opacity * 100)))
        i = self.heat_panel.colour_map.findText(self.prefs.colour_map)
        if i >= 0:
            self.heat_panel.colour_map.setCurrentIndex(i)
        self.threshold_panel = ThresholdPanel()
        self.regions_panel = RegionsPanel()
        self.decision_panel = DecisionPanel()
        self.decision_panel.setEnabled(False)

        side = QWidget()
        lay = QVBoxLayout(side)
        for w in (
            self.decision_panel,
            self.threshold_panel,
            self.regions_panel,
            self.heat_panel,
            self.display_panel,
        ):
            lay.addWidget(w)
        lay.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(side)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(330)
        dock = QDockWidget("Controls", self)
        dock.setObjectName("controls")
        dock.setWidget(scroll)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)

        self.display_panel.changed.connect(self._refresh_display)
        self.heat_panel.changed.connect(self._on_heat_settings)
        # A slider drag emits a flood of values; redraw at most once per frame, always
        # ending on the last value (leading + trailing edge).
        self._throttled_threshold = qthrottled(
            self._apply_threshold, timeout=16, leading=True, parent=self
        )
        self.threshold_panel.slider.valueChanged.connect(self._throttled_threshold)
        self.threshold_panel.default_button.clicked.connect(self._default_threshold)
        self.regions_panel.region_clicked.connect(self.view.select_frame)
        self.decision_panel.decided.connect(self.decide)

        sb = self.statusBar()
        self.message_label = QLabel("Open a scan (Ctrl+O) or drop one here")
        self.device_label = QLabel("")
        self.model_label = QLabel("")
        self.speed_label = QLabel("")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(160)
        self.progress.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel_scoring)
        sb.addWidget(self.message_label, 1)
        for w in (
            self.progress,
            self.cancel_button,
            self.speed_label,
            self.device_label,
            self.model_label,
        ):
            sb.addPermanentWidget(w)

    def _action(
        self, menu: QMenu, text: str, slot, shortcut: Any = None, checkable: bool = False
    ) -> QAction:
        act = QAction(text, self)
        if shortcut is not None:
            keys = shortcut if isinstance(shortcut, (list, tuple)) else [shortcut]
            act.setShortcuts([QKeySequence(k) for k in keys])
        act.setCheckable(checkable)
        if checkable:
            act.toggled.connect(slot)
        else:
            act.triggered.connect(lambda *_: slot())
        menu.addAction(act)
        return act

    def _build_menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        self._action(f, "&Open…", self.open_dialog, QKeySequence.StandardKey.Open)
        self._action(f, "Open dual-energy &pair…", self.open_pair_dialog, "Ctrl+Shift+O")
        self.recent_menu = f.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        self._action(f, "Open &demo scan", self.open_demo)
        f.addSeparator()
        self.next_action = self._action(f, "&Next scan in folder", self.next_scan, ["N", "PgDown"])
        self.prev_action = self._action(
            f, "Pre&vious scan in folder", self.previous_scan, ["P", "PgUp"]
        )
        f.addSeparator()
        self._action(f, "Decision &log…", self.show_decision_log, "Ctrl+L")
        self._action(f, "&Export decisions CSV…", self.export_decisions)
        self._action(
            f, "Pr&eferences…", self.edit_preferences, QKeySequence.StandardKey.Preferences
        )
        f.addSeparator()
        self._action(f, "&Quit", self.close, QKeySequence.StandardKey.Quit)

        v = mb.addMenu("&View")
        self._action(v, "&Fit to window", self.view.fit, "F")
        self._action(v, "&Actual size (1:1)", self.view.actual_size, "Ctrl+0")
        self._action(
            v, "Zoom &in", lambda: self.view.zoom_by(1.25), QKeySequence.StandardKey.ZoomIn
        )
        self._action(
            v, "Zoom &out", lambda: self.view.zoom_by(0.8), QKeySequence.StandardKey.ZoomOut
        )
        v.addSeparator()
        self.heat_action = QAction("&Heat map", self)
        self.heat_action.setCheckable(True)
        self.heat_action.setChecked(True)
        self.heat_action.setShortcut(QKeySequence("H"))
        self.heat_action.toggled.connect(self.heat_panel.visible.setChecked)
        self.heat_panel.visible.toggled.connect(self.heat_action.setChecked)
        v.addAction(self.heat_action)
        modes = v.addMenu("Display &mode")
        group = QActionGroup(self)
        self.mode_actions: dict[str, QAction] = {}
        keys = [str(i) for i in range(1, 10)] + ["0", "-", "="]
        for i, m in enumerate(backend.display_modes()):
            act = QAction(backend.mode_label(m), self)
            act.setCheckable(True)
            if i < len(keys):
                act.setShortcut(QKeySequence(keys[i]))
            act.triggered.connect(lambda _=False, mode=m: self.display_panel.set_mode(mode))
            group.addAction(act)
            modes.addAction(act)
            self.mode_actions[m] = act
        self.display_panel.mode.currentIndexChanged.connect(self._sync_mode_actions)
        self._sync_mode_actions()

        d = mb.addMenu("&Decide")
        self._action(d, "&Clear", lambda: self.decide("Clear"), "C")
        self._action(d, "&Suspect", lambda: self.decide("Suspect"), "S")

        self.model_menu = mb.addMenu("&Model")
        self._action(self.model_menu, "&Load bundle…", self.load_bundle_dialog)
        self._action(self.model_menu, "Model &card…", self.show_model_card)
        self.score_action = self._action(self.model_menu, "&Score again", self.score_current, "F5")
        self._action(self.model_menu, "Ca&ncel scoring", self.cancel_scoring, "Esc")
        self.models_menu = self.model_menu.addMenu("&Registered models")
        self.models_menu.aboutToShow.connect(self._fill_models)
        self.model_menu.addSeparator()
        try:
            from xrayscreen.gui.retrain import install_retrain_actions
        except ImportError:
            pass
        else:
            install_retrain_actions(self)

    def _sync_mode_actions(self, *_: Any) -> None:
        act = self.mode_actions.get(self.display_panel.current_mode())
        if act is not None:
            act.setChecked(True)

    # ================================================================== geometry
    def _restore_geometry(self) -> None:
        s = geometry_settings()
        geo = s.value("geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        else:
            self.resize(1400, 900)
        state = s.value("state")
        if state is not None:
            self.restoreState(state)

    def closeEvent(self, event) -> None:
        self.shutdown()
        s = geometry_settings()
        s.setValue("geometry", self.saveGeometry())
        s.setValue("state", self.saveState())
        s.sync()
        self._save_prefs()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Cancel scoring and wait for the worker threads to finish (no leaked threads)."""
        for job in list(self._jobs):
            job.cancel()
        wait_for_workers(15000)

    def _save_prefs(self) -> None:
        self.prefs.display_mode = self.display_panel.current_mode()
        self.prefs.colour_map = self.heat_panel.colour_map.currentText()
        self.prefs.heat_opacity = self.heat_panel.opacity.value() / 100.0
        try:
            save_preferences(self.prefs)
        except OSError as exc:
            self.message(f"Could not save preferences: {exc}")

    # ================================================================== opening
    def message(self, text: str) -> None:
        self.message_label.setText(text)

    def open_dialog(self) -> None:
        start = (
            str(Path(self.scan.paths[0]).parent)
            if self.scan is not None and self.scan.paths
            else ""
        )
        path, _ = QFileDialog.getOpenFileName(
            self, "Open scan", start, ";;".join(backend.file_filters())
        )
        if path:
            self.open_path(path)

    def open_pair_dialog(self) -> None:
        dlg = PairDialog(backend.file_filters(), self)
        if dlg.exec() == QDialog.DialogCode.Accepted:
            high, low = dlg.paths()
            if high and low:
                self.open_pair(high, low)

    def open_demo(self) -> bool:
        demos = backend.demo_scan_paths()
        return bool(demos) and self.open_path(demos[0])

    def open_files(self, files: list[str]) -> bool:
        """Open dropped / command-line files: a matching dual-energy pair, else the first file."""
        files = [str(f) for f in files]
        if len(files) == 2:
            pair = backend.find_pair(files[0])
            if pair and {str(p) for p in pair} == {str(Path(f)) for f in files}:
                return self.open_pair(str(pair[0]), str(pair[1]))
        return self.open_path(files[0]) if files else False

    def open_path(self, path: str | Path) -> bool:
        """Open one scan file; errors become a dialog. Returns whether it opened."""
        try:
            scan = backend.open_scan(str(path))
        except Exception as exc:
            show_error(self, "Cannot open scan", exc)
            return False
        self.set_scan(scan, str(Path(path)))
        return True

    def open_pair(self, high: str | Path, low: str | Path) -> bool:
        """Open a dual-energy (high, low) pair."""
        try:
            scan = backend.open_scan((str(high), str(low)))
        except Exception as exc:
            show_error(self, "Cannot open dual-energy pair", exc)
            return False
        self.set_scan(scan, (str(Path(high)), str(Path(low))))
        return True

    def set_scan(self, scan: Any, source: str | tuple[str, str] | None = None) -> None:
        """Show ``scan`` and start scoring it with the active model."""
        self.cancel_scoring()
        self.scan, self.scan_source = scan, source
        self.opened_at = utc_now()
        self.result, self.heat, self.overlay, self.regions = None, None, None, []
        self.view.set_heat_pixmap(None)
        self.view.set_frames([])
        self.regions_panel.set_regions([])
        self._refresh_display(keep_view=False)
        self.setWindowTitle(f"{scan.name} - {APP_TITLE}")
        self.decision_panel.setEnabled(True)
        self.decision_panel.note.clear()
        self._show_history()
        if source is not None:
            self.prefs.add_recent(source if isinstance(source, str) else "|".join(source))
            self._save_prefs()
        h, w = scan.shape
        info = f"{scan.name}: {w}×{h} px, {getattr(scan.kind, 'value', scan.kind)}"
        if self.bundle is None:
            info += (
                " - loading the model…"
                if self.model_pending
                else " - No model: viewing only (Model ▸ Load bundle…)"
            )
        self.message(info)
        self.scan_opened.emit(scan)
        if self.bundle is not None:
            self.score_current()

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        entries = self.prefs.existing_recent()
        if not entries:
            a = self.recent_menu.addAction("(none)")
            a.setEnabled(False)
            return
        for e in entries:
            act = self.recent_menu.addAction(" + ".join(Path(p).name for p in e.split("|")))
            act.setToolTip(e)
            act.triggered.connect(lambda _=False, e=e: self.open_recent(e))

    def open_recent(self, entry: str) -> bool:
        parts = entry.split("|")
        return self.open_pair(*parts) if len(parts) == 2 else self.open_path(parts[0])

    def folder_scans(self) -> list[Path]:
        """Scan files in the current scan's folder, sorted by name."""
        if self.scan is None or not self.scan.paths:
            return []
        folder = Path(self.scan.paths[0]).parent
        try:
            return sorted(p for p in folder.iterdir() if p.is_file() and backend.is_scan_file(p))
        except OSError:
            return []

    def _step(self, delta: int) -> bool:
        files = self.folder_scans()
        if not files:
            self.message("No folder to step through: open a scan from a folder first")
            return False
        current = Path(self.scan.paths[0])
        skip = {Path(p) for p in self.scan.paths}
        try:
            i = files.index(current)
        except ValueError:
            i = -1 if delta > 0 else len(files)
        j = i + delta
        while 0 <= j < len(files) and files[j] in skip:
            j += delta
        if not 0 <= j < len(files):
            self.message("Last scan in this folder" if delta > 0 else "First scan in this folder")
            return False
        pair = backend.find_pair(files[j])
        if pair and all(p.is_file() for p in pair):
            return self.open_pair(*pair)
        return self.open_path(files[j])

    def next_scan(self) -> bool:
        """Open the next scan file in the same folder (the operator's queue)."""
        return self._step(+1)

    def previous_scan(self) -> bool:
        return self._step(-1)

    # ================================================================== drag & drop on the window
    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        files = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if files:
            event.acceptProposedAction()
            self.open_files(files)

    # ================================================================== display
    def _refresh_display(self, *_: Any, keep_view: bool = True) -> None:
        if self.scan is None:
            return
        try:
            rgb = backend.render(
                self.scan, self.display_panel.current_mode(), **self.display_panel.values()
            )
        except Exception as exc:
            self.message(f"Display mode unavailable for this scan: {exc}")
            rgb = self.scan.rgb
        self.view.set_scan_image(rgb, keep_view=keep_view)

    def _on_heat_settings(self) -> None:
        self.view.set_heat_visible(self.heat_panel.visible.isChecked())
        kind_changed = self.result is not None and self._heat_kind != self.heat_panel.map_kind()
        if kind_changed:
            self._set_result(self.result)
        else:
            self._apply_threshold()

    # ================================================================== model
    @property
    def threshold(self) -> float:
        """The alarm threshold in calibrated units."""
        return float(self.threshold_panel.slider.value())

    @threshold.setter
    def threshold(self, value: float) -> None:
        s = self.threshold_panel.slider
        s.blockSignals(True)  # apply once, synchronously, instead of via the throttle
        try:
            if value > s.maximum():
                s.setMaximum(float(np.ceil(value)))
            s.setValue(float(value))
        finally:
            s.blockSignals(False)
        self._apply_threshold()

    def engine_module(self) -> Any:
        """The torch module the engine runs (for tests and diagnostics)."""
        return getattr(self.engine, "generator", None) or self.bundle.generator

    def set_bundle(self, bundle: Any, rescore: bool = True) -> None:
        """Use ``bundle`` for scoring (and its calibration for the threshold); rescores the scan."""
        self.cancel_scoring()
        try:
            engine = backend.make_engine(bundle, device=backend.resolve_device(self.prefs.device))
        except Exception as exc:
            show_error(self, "Cannot use this model", exc)
            return
        self.bundle, self.engine = bundle, engine
        spec = getattr(bundle, "score", None)
        params = getattr(spec, "params", None) or {}
        self.heat_panel.set_score_label(
            str(getattr(spec, "kind", "latent")), params.get("scan_norm", "none") != "none"
        )
        cal = getattr(bundle, "calibration", None)
        if cal is not None:
            self.threshold_panel.slider.setValue(float(cal.default_threshold))
        self.threshold_panel.default_button.setToolTip(
            f"{cal.default_threshold:.2f}: {cal.default_rule()}"
            if cal is not None
            else "model not calibrated"
        )
        self._set_model_status()
        self._update_meaning()
        if rescore and self.scan is not None:
            self.score_current()

    def load_bundle_path(self, path: str | Path) -> bool:
        try:
            bundle = backend.load_bundle(path)
        except Exception as exc:
            show_error(self, "Cannot load model bundle", exc)
            return False
        self.set_bundle(bundle)
        return True

    def load_active_model(self) -> bool:
        """Load the registry's active model (or the bundled default); 'no model' otherwise."""
        path = backend.active_bundle_path()
        if path is None:
            self.message("No model: scans can be viewed, but not scored (Model ▸ Load bundle…)")
            self._set_model_status()
            return False
        return self.load_bundle_path(path)

    def load_bundle_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(
            self, "Load model bundle (a folder with model.json)"
        )
        if path:
            self.load_bundle_path(path)

    def show_model_card(self) -> None:
        if self.bundle is None:
            show_error(self, "No model", "No model is loaded. Use Model ▸ Load bundle….")
            return
        ModelCardDialog(self.bundle, self).exec()

    def _fill_models(self) -> None:
        self.models_menu.clear()
        entries = backend.list_models()
        if not entries:
            a = self.models_menu.addAction("(no registry or no registered models)")
            a.setEnabled(False)
            return
        current = getattr(self.bundle, "model_id", None)
        for e in entries:
            mid = e.get("model_id") if isinstance(e, dict) else getattr(e, "model_id", str(e))
            act = self.models_menu.addAction(str(mid))
            act.setCheckable(True)
            act.setChecked(mid == current)
            act.triggered.connect(lambda _=False, m=mid: self.switch_model(m))

    def switch_model(self, model_id: str) -> bool:
        try:
            path = backend.activate_model(model_id)
        except Exception as exc:
            show_error(self, "Cannot switch model", exc)
            return False
        return self.load_bundle_path(path) if path else False

    def _set_model_status(self) -> None:
        if self.bundle is None:
            self.model_label.setText("no model")
            self.device_label.setText("")
            self.threshold_panel.meaning.setText("no model")
            self.score_action.setEnabled(False) if hasattr(self, "score_action") else None
            return
        self.model_label.setText(f"model {self.bundle.model_id}")
        dev = str(getattr(self.engine, "device", "cpu"))
        self.device_label.setText("CUDA" if dev.startswith("cuda") else "CPU")
        if hasattr(self, "score_action"):
            self.score_action.setEnabled(True)

    def _default_threshold(self) -> None:
        cal = getattr(self.bundle, "calibration", None)
        if cal is not None:
            self.threshold = cal.default_threshold

    # ================================================================== scoring
    def score_current(self) -> bool:
        """Score the current scan in the background (progressive heat map)."""
        if self.scan is None:
            return False
        if self.bundle is None or self.engine is None:
            self.message("No model: load a bundle to score scans")
            return False
        self.cancel_scoring()
        job = ScoringJob(self.engine, self.scan, int(self.prefs.stride), self)
        self._job = job
        self._jobs.add(job)
        job.progress.connect(lambda d, t, p, job=job: self._on_progress(job, d, t, p))
        job.finished.connect(lambda r, job=job: self._on_finished(job, r))
        job.failed.connect(lambda e, job=job: self._on_failed(job, e))
        job.cancelled.connect(lambda job=job: self._on_cancelled(job))
        job.ended.connect(lambda job=job: self._on_ended(job))
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.cancel_button.setVisible(True)
        self._progress_seen = 0
        self.message(f"Scoring {self.scan.name} with {self.bundle.model_id}…")
        job.start()
        self.scoring_started.emit()
        return True

    def cancel_scoring(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self._job = None
            self.progress.setVisible(False)
            self.cancel_button.setVisible(False)
            self.message("Scoring cancelled")

    @property
    def scoring(self) -> bool:
        return self._job is not None

    def _on_progress(self, job: ScoringJob, done: int, total: int, partial: Any) -> None:
        if job is not self._job:
            return
        self._progress_seen += 1
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        dt = max(time.perf_counter() - job.started_at, 1e-6)
        self.speed_label.setText(f"{done / dt:,.0f} windows/s")
        if partial is not None:
            self._set_result(partial, final=False)

    def _on_finished(self, job: ScoringJob, result: Any) -> None:
        if job is not self._job:
            return
        self._job = None
        self.progress.setVisible(False)
        self.cancel_button.setVisible(False)
        self._set_result(result, final=True)
        n = self.progress.maximum()
        speed = f"{n / job.elapsed:,.0f} windows/s" if job.elapsed > 0 and n > 1 else ""
        self.speed_label.setText(f"{speed}  {job.elapsed:.2f} s".strip())
        dev = str(getattr(result, "device", getattr(self.engine, "device", "cpu")))
        self.device_label.setText("CUDA" if dev.startswith("cuda") else "CPU")
        alarm = f"{len(self.regions)} alarm region(s)" if self.regions else "no alarm"
        self.message(f"{self.scan.name}: scored in {job.elapsed:.2f} s - {alarm}")
        self.scoring_finished.emit(result)

    def _on_failed(self, job: ScoringJob, exc: Exception) -> None:
        if job is not self._job:
            return
        self._job = None
        self.progress.setVisible(False)
        self.cancel_button.setVisible(False)
        self.message("Scoring failed")
        show_error(self, "Scoring failed", exc)

    def _on_cancelled(self, job: ScoringJob) -> None:
        if job is self._job:
            self._job = None

    def _on_ended(self, job: ScoringJob) -> None:
        self._jobs.discard(job)
        job.deleteLater()
        self.scoring_ended.emit()

    # ================================================================== heat map + threshold
    _heat_kind = "latent"

    def _set_result(self, result: Any, final: bool = True) -> None:
        # Regions always come from the calibrated latent map (the threshold's units);
        # the overlay shows whichever map the analyst picked.
        latent = backend.heat_map(result, "latent")
        if latent is None:
            return
        self.result, self.heat = result, latent
        sf = float(getattr(result, "scale_factor", latent.shape[1] / self.scan.shape[1]))
        k = int(np.ceil(np.sqrt(latent.size / MAX_REGION_PIXELS)))
        self._region_map = reduce_max(latent, k) if k > 1 else latent
        self._region_sf = sf / k
        kind = self.heat_panel.map_kind()
        self._heat_kind = kind
        shown = backend.heat_map(result, kind) if kind != "latent" else latent
        calibrated = kind == "latent" or getattr(result, "residual_map", None) is None
        hi = float(np.nanmax(shown)) if shown.size else 1.0
        s = self.threshold_panel.slider
        lat_hi = float(np.nanmax(latent)) if latent.size else 0.0
        if final and lat_hi > s.maximum():
            s.setMaximum(float(np.ceil(lat_hi)))
        self.overlay = HeatOverlay(shown, top=hi, thresholded=calibrated)
        self._apply_threshold()

    def _apply_threshold(self, *_: Any) -> None:
        """Threshold -> mask -> regions -> overlay + frames. Never runs the model."""
        self._update_meaning()
        if self.heat is None or self.overlay is None or self.scan is None:
            return
        t0 = time.perf_counter()
        t = self.threshold
        sf = float(getattr(self.result, "scale_factor", self.heat.shape[1] / self.scan.shape[1]))
        self.regions = backend.extract_regions(
            self.heat, t, min_area=MIN_REGION_AREA, scale_factor=sf
        )
        pix = self.overlay.pixmap(
            t, self.heat_panel.opacity.value() / 100.0, self.heat_panel.colour_map.currentText()
        )
        self.view.set_heat_pixmap(pix, self.scan.shape)
        self.view.set_heat_visible(self.heat_panel.visible.isChecked())
        self.view.set_frames(
            [backend.region_box(r) for r in self.regions],
            [str(i + 1) for i in range(len(self.regions))],
        )
        self.regions_panel.set_regions(self.regions)
        self.last_redraw_s = time.perf_counter() - t0
        self.threshold_applied.emit()

    def _update_meaning(self) -> None:
        if self.bundle is None:
            self.threshold_panel.meaning.setText("no model")
            return
        self.threshold_panel.meaning.setText(
            ThresholdPanel.describe(getattr(self.bundle, "calibration", None), self.threshold)
        )

    # ================================================================== decisions
    def _show_history(self) -> None:
        if self.scan is None or self.decision_log is None:
            self.decision_panel.set_history([])
            return
        try:
            self.decision_panel.set_history(self.decision_log.for_scan(self.scan.sha256))
        except Exception as exc:
            self.message(f"Decision log unreadable: {exc}")

    def decide(self, verdict: str) -> Decision | None:
        """Record Clear / Suspect for the current scan in the decision log."""
        if self.scan is None:
            self.message("Open a scan first")
            return None
        if self.decision_log is None:
            show_error(self, "Decision not saved", "The decision log is unavailable.")
            return None
        src = self.scan_source
        decision = Decision(
            scan_sha256=self.scan.sha256,
            verdict=verdict,
            scan_path=(" | ".join(src) if isinstance(src, tuple) else src) or "",
            operator_id=self.prefs.operator_id,
            note=self.decision_panel.note.text().strip(),
            threshold=self.threshold if self.bundle is not None else None,
            model_id=getattr(self.bundle, "model_id", "") or "",
            regions=[backend.region_dict(r) for r in self.regions],
            opened_at=self.opened_at,
            decided_at=utc_now(),
        )
        try:
            stored = self.decision_log.record(decision)
        except Exception as exc:
            show_error(self, "Decision not saved", exc)
            return None
        self.decision_panel.note.clear()
        self._show_history()
        self.message(
            f"{verdict} recorded for {self.scan.name} ({stored.seconds_spent or 0:.1f} s on this bag)"
        )
        if self.decision_panel.advance.isChecked():
            QTimer.singleShot(0, self.next_scan)
        return stored

    def show_decision_log(self) -> None:
        if self.decision_log is None:
            show_error(self, "Decision log", "The decision log is unavailable.")
            return
        DecisionLogDialog(self.decision_log, self).exec()

    def export_decisions(self) -> None:
        if self.decision_log is None:
            return
        stamp = _dt.date.today().isoformat()
        path, _ = QFileDialog.getSaveFileName(
            self, "Export decisions", f"decisions-{stamp}.csv", "CSV (*.csv)"
        )
        if path:
            try:
                n = self.decision_log.export_csv(path)
            except Exception as exc:
                show_error(self, "Export failed", exc)
                return
            self.message(f"Exported {n} decisions to {path}")

    # ================================================================== preferences
    def edit_preferences(self) -> None:
        dlg = QDialog(self)
        dlg.setWindowTitle("Preferences")
        form = QFormLayout(dlg)
        op = QLineEdit(self.prefs.operator_id)
        stride = QComboBox()
        for s in STRIDES:
            stride.addItem(str(s), s)
        stride.setCurrentIndex(max(0, stride.findData(self.prefs.stride)))
        device = QComboBox()
        device.addItems(["auto", "cpu", "cuda"])
        device.setCurrentText(self.prefs.device)
        form.addRow("Operator id", op)
        form.addRow("Window stride (px)", stride)
        form.addRow("Device", device)
        box = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        box.accepted.connect(dlg.accept)
        box.rejected.connect(dlg.reject)
        form.addRow(box)
        if dlg.exec() != QDialog.DialogCode.Accepted:
            return
        self.prefs.operator_id = op.text().strip() or self.prefs.operator_id
        self.prefs.stride = int(stride.currentData())
        device_changed = device.currentText() != self.prefs.device
        self.prefs.device = device.currentText()
        self._save_prefs()
        if device_changed and self.bundle is not None:
            self.set_bundle(self.bundle)
