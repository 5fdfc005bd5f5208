"""Model menu, model card, registry switching, decision-log view/export, error paths, leaks."""

from __future__ import annotations

import csv
import html
import sys
import threading

import pytest
from conftest import wait_scored
from PySide6.QtCore import QThreadPool, QTimer
from PySide6.QtWidgets import QApplication

from xrayscreen.gui.dialogs import DecisionLogDialog, install_excepthook, model_card_html, readable
from xrayscreen.gui.main_window import MainWindow


def test_model_card_shows_identity_training_and_calibration(tiny_bundle):
    text = model_card_html(tiny_bundle)
    assert tiny_bundle.model_id in text and tiny_bundle.created in text
    assert "held-out normal windows" in text and "normal bags alarm" in text
    assert "untrained weights" in text  # the training summary of the fixture
    assert "Default threshold rule" in text
    assert html.escape(tiny_bundle.calibration.default_rule()) in text


def test_model_card_says_how_the_score_is_made(tiny_bundle):
    assert "Score steps" not in model_card_html(tiny_bundle)  # a plain score: no steps
    tiny_bundle.score.params = {
        **tiny_bundle.score.params,
        "scan_norm": "robust_z",
        "zoom": 2.0,
        "zoom_mix": "max",
        "context_px": 128.0,
        "context_self": 0.25,
    }
    text = model_card_html(tiny_bundle)
    assert "Score steps" in text and "normalised within the scan (robust_z)" in text
    assert "shrunk 2x (the larger of the two)" in text
    assert "within 128 px (own weight 0.25)" in text
    assert "density" not in text
    tiny_bundle.score.params = {**tiny_bundle.score.params, "density_weight": 0.5}
    assert "plus 0.5 x window density (within the scan)" in model_card_html(tiny_bundle)
    assert "projected-threat head" not in model_card_html(tiny_bundle)
    tiny_bundle.score.params = {**tiny_bundle.score.params, "tip_weight": 0.5}
    assert "plus 0.5 x the projected-threat head (within the scan" in model_card_html(tiny_bundle)
    assert "grid of the encoder map" not in model_card_html(tiny_bundle)
    tiny_bundle.score.params = {**tiny_bundle.score.params, "tip_cells": 4}
    assert "reads a 4 x 4 grid of the encoder map too)" in model_card_html(tiny_bundle)
    tiny_bundle.score.params = {**tiny_bundle.score.params, "tip_cell_max": True}
    assert "grid of the encoder map too (cell means and maxima))" in model_card_html(tiny_bundle)
    params = {k: v for k, v in tiny_bundle.score.params.items() if not k.startswith("tip_cell")}
    tiny_bundle.score.params = {**params, "tip_conv": 8}
    assert "a small convolution over the encoder map at 8 x 8 positions)" in model_card_html(
        tiny_bundle
    )
    tiny_bundle.score.params = {**params, "tip_abs_share": 1.0}
    assert "100% of its weight on its logit against the held-out normal bags" in (
        model_card_html(tiny_bundle)
    )


def test_model_menu_has_load_card_and_registered_models(window):
    texts = [a.text().replace("&", "") for a in window.model_menu.actions()]
    assert any("Load bundle" in t for t in texts) and any("Model card" in t for t in texts)
    assert window.models_menu.menuAction() in window.model_menu.actions()


def test_switch_between_registered_models(qtbot, window, tiny_bundle_dir, scan_folder, tmp_path):
    registry = pytest.importorskip("xrayscreen.registry")
    import shutil
    import uuid

    from xrayscreen.model.bundle import load_bundle, save_bundle

    # Two registered models: the fixture and a copy with a new id.
    other = load_bundle(tiny_bundle_dir)
    other.model_id = f"gan-test-{uuid.uuid4().hex[:6]}"
    save_bundle(other, tmp_path / "other")
    reg = registry.Registry()
    first = reg.register(tiny_bundle_dir)
    reg.register(tmp_path / "other")
    window._fill_models()
    ids = [a.text() for a in window.models_menu.actions()]
    assert first.model_id in ids and other.model_id in ids
    window.open_path(scan_folder / "a_bag.png")
    wait_scored(qtbot, window)
    assert window.switch_model(other.model_id)
    assert window.bundle.model_id == other.model_id
    assert registry.active_bundle_path().name == other.model_id or other.model_id in str(
        registry.active_bundle_path()
    )
    wait_scored(qtbot, window)
    assert window.result.model_id == other.model_id
    assert window.model_label.text().endswith(other.model_id)
    shutil.rmtree(tmp_path / "other")


def test_load_bundle_errors_are_dialogs(window, errors, tmp_path):
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "model.json").write_text("{}")
    (tmp_path / "evil" / "weights.safetensors").write_bytes(b"\x80\x04pickle")
    before = window.bundle
    assert not window.load_bundle_path(tmp_path / "evil")
    assert errors and errors[0][0] == "Cannot load model bundle"
    assert "Traceback" not in errors[0][1]
    assert window.bundle is before


def test_scoring_failure_in_worker_is_a_dialog(qtbot, window, errors, scan_folder):
    class Broken:
        device = "cpu"

        def score_scan(self, scan, stride=16, cancel=None):
            yield None
            raise MemoryError("boom")

    window.engine = Broken()
    window.open_path(scan_folder / "a_bag.png")
    qtbot.waitUntil(lambda: len(errors) == 1, timeout=20000)
    assert errors[0][0] == "Scoring failed" and "Not enough memory" in errors[0][1]
    assert not window.scoring


def test_decision_log_dialog_filters_and_exports(qtbot, window, scan_folder, tmp_path):
    window.open_path(scan_folder / "a_bag.png")
    window.prefs.operator_id = "ann"
    window.decide("Clear")
    window.open_path(scan_folder / "b_bag.png")
    window.prefs.operator_id = "bob"
    window.decide("Suspect")
    dlg = DecisionLogDialog(window.decision_log, window)
    qtbot.addWidget(dlg)
    assert dlg.table.rowCount() == 2
    dlg.verdict.setCurrentText("Suspect")
    dlg.refresh()
    assert dlg.table.rowCount() == 1 and dlg.table.item(0, 2).text() == "bob"
    out = tmp_path / "x.csv"
    assert dlg.export(str(out)) == 1
    rows = list(csv.DictReader(out.open()))
    assert rows[0]["verdict"] == "Suspect" and rows[0]["scan_path"].endswith("b_bag.png")


def test_excepthook_shows_a_dialog_not_a_traceback(window, errors, monkeypatch):
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored after the test
    install_excepthook(lambda: window)
    try:
        raise ValueError("the threshold went sideways")
    except ValueError:
        sys.excepthook(*sys.exc_info())
    assert errors == [
        ("xrayscreen", "Unexpected problem (ValueError): the threshold went sideways")
    ]
    assert readable(FileNotFoundError(2, "No such file or directory", "/x.png")).endswith("/x.png")


def test_no_leaked_threads_or_widgets(qtbot, tiny_bundle, errors, scan_folder):
    threads_before = threading.active_count()
    for _ in range(2):
        win = MainWindow(tiny_bundle)
        win.show()
        win.open_path(scan_folder / "a_bag.png")
        win.next_scan()  # cancels the first run mid-way, starts another
        wait_scored(qtbot, win)
        win.close()
        win.deleteLater()
    QTimer.singleShot(0, lambda: None)
    qtbot.wait(50)
    QApplication.sendPostedEvents(None, 0)
    assert QThreadPool.globalInstance().waitForDone(15000)
    assert QThreadPool.globalInstance().activeThreadCount() == 0
    assert not [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow)]
    assert not [w for w in QApplication.topLevelWidgets() if w.isVisible()]
    assert threading.active_count() <= threads_before
    assert errors == []
