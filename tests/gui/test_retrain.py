"""Retraining from the app: pool, a real training subprocess, cancel/resume, SIGKILL,
activation and roll back. Tiny settings (32-px windows, ngf 8, small bags) keep each
training run to a few seconds of CPU."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import wait_scored

from xrayscreen import retrain_worker as rw
from xrayscreen.decisions.log import Decision, DecisionLog
from xrayscreen.pool import file_sha256
from xrayscreen.registry import Registry
from xrayscreen.training.config import TrainConfig

TINY = dict(
    window=32, stride=32, ngf=8, epochs=2, batch_size=16, threads=1,
    nz=16, longer_side=128, augment=False, val_fraction=0.25,
)  # fmt: skip
TRAIN_TIMEOUT = 180_000


def _bag(seed: int, h: int = 96, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 245, np.uint8)
    cv2.rectangle(img, (8, 10), (w - 8, h - 10), (215, 175, 160), -1)  # BGR
    for _ in range(4):
        x, y = int(rng.integers(10, w - 40)), int(rng.integers(12, h - 30))
        cv2.rectangle(img, (x, y), (x + 26, y + 14), (60, 150, 230), -1)
    return img


@pytest.fixture
def bags(tmp_path):
    d = tmp_path / "normal"
    d.mkdir()
    for i in range(6):
        cv2.imwrite(str(d / f"n{i}.png"), _bag(i))
    return d


def _dialog(qtbot, main_window=None, log=None):
    from xrayscreen.gui.retrain import RetrainDialog

    dlg = RetrainDialog(main_window, Registry(), decision_log=log)
    qtbot.addWidget(dlg)
    dlg.set_config(**TINY)
    return dlg


def _wait_state(qtbot, dlg, states, timeout=TRAIN_TIMEOUT):
    qtbot.waitUntil(lambda: dlg.state in states, timeout=timeout)


def _stop(dlg):
    """Never leave a training process behind."""
    pid = dlg.child_pid()
    if dlg.process is not None and dlg.process.state() != dlg.process.ProcessState.NotRunning:
        dlg.process.kill()
        dlg.process.waitForFinished(5000)
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_dialog_builds_pool_from_decision_log_and_folders(qtbot, tmp_path, bags):
    cleared = tmp_path / "cleared"
    cleared.mkdir()
    paths = [cleared / f"c{i}.png" for i in range(4)]
    for i, p in enumerate(paths):
        cv2.imwrite(str(p), _bag(100 + i))
    dup = cleared / "copy_of_n0.png"
    dup.write_bytes((bags / "n0.png").read_bytes())
    log = DecisionLog(tmp_path / "log.sqlite3")

    def decide(p, verdict, op, day):
        log.record(
            Decision(
                scan_sha256=file_sha256(p), verdict=verdict, scan_path=str(p), operator_id=op,
                opened_at=f"{day}T09:00:00+00:00", decided_at=f"{day}T09:00:04+00:00",
            )
        )  # fmt: skip

    decide(paths[0], "Clear", "ana", "2026-11-02")
    decide(paths[1], "Clear", "ben", "2026-11-05")
    decide(paths[2], "Clear", "ana", "2026-11-06")
    decide(paths[2], "Suspect", "ben", "2026-11-07")
    decide(paths[3], "Suspect", "ana", "2026-11-06")
    decide(dup, "Clear", "ana", "2026-11-06")  # same bytes as a folder scan

    dlg = _dialog(qtbot, log=log)
    assert dlg.use_log.isChecked()
    assert [dlg.operator.itemData(i) for i in range(dlg.operator.count())] == ["", "ana", "ben"]
    assert {p.name for p in dlg.pool.paths()} == {"c0.png", "c1.png", "copy_of_n0.png"}
    dlg.add_folder(bags)
    assert len(dlg.pool) == 6 + 2  # the copy of n0 counts once
    assert dlg.pool.counts.duplicates == 1 and dlg.pool.counts.excluded_suspect == 1
    assert "8 scans" in dlg.counts_label.text()
    assert dlg.preview.count() == 8
    dlg.exclude_suspect.setChecked(False)
    assert len(dlg.pool) == 9
    dlg.exclude_suspect.setChecked(True)
    dlg.operator.setCurrentIndex(dlg.operator.findData("ben"))
    assert len(dlg.pool) == 6 + 1
    dlg.operator.setCurrentIndex(0)
    from PySide6.QtCore import QDate

    dlg.since_edit.setDate(QDate(2026, 11, 3))
    dlg.until_edit.setDate(QDate(2026, 11, 5))
    dlg.since_check.setChecked(True)
    dlg.until_check.setChecked(True)
    assert {p.name for p in dlg.pool.paths()} - {f"n{i}.png" for i in range(6)} == {"c1.png"}
    dlg.use_log.setChecked(False)
    assert len(dlg.pool) == 6 and dlg.start_button.isEnabled()
    cfg = dlg.train_config()
    assert cfg["window"] == 32 and cfg["ngf"] == cfg["ndf"] == 8 and cfg["epochs"] == 2
    # The window-density weight starts at the X-ray default and is a site's choice.
    assert cfg["density_weight"] == 0.5 and dlg.density_weight.value() == 0.5
    dlg.density_weight.setValue(0.0)
    assert dlg.density_weight.text() == "off" and dlg.train_config()["density_weight"] == 0.0
    dlg.set_config(density_weight=1.25)
    assert dlg.train_config()["density_weight"] == 1.25
    # So is the projected-threat head (X-ray default: see TrainConfig.xray).
    assert cfg["tip_weight"] == dlg.tip_weight.value() == TrainConfig.xray().tip_weight
    dlg.tip_weight.setValue(0.0)
    assert dlg.tip_weight.text() == "off" and dlg.train_config()["tip_weight"] == 0.0
    dlg.set_config(tip_weight=0.75)
    assert dlg.train_config()["tip_weight"] == 0.75
    # Retraining from the app trains for other scanners' renderings, as the CLI does.
    assert (cfg["jitter_gamma"], cfg["jitter_hue"]) == (1.25, 20.0)


def test_training_subprocess_registers_then_activate_and_roll_back(
    qtbot, window, bags, tiny_bundle, errors
):
    """Real MainWindow (its guarded import installed our menu actions)."""
    actions = window.retrain_actions
    texts = [a.text() for a in window.model_menu.actions()]
    assert "&Retrain…" in texts and "Roll &back to previous model" in texts
    dlg = actions.controller.open_dialog()
    dlg.set_config(**TINY)
    dlg.use_log.setChecked(False)
    dlg.add_folder(bags)
    reg = dlg.registry
    before = reg.active_id()
    try:
        assert dlg.start_training()
        _wait_state(qtbot, dlg, {"finished", "failed", "cancelled"})
    finally:
        _stop(dlg)
    assert dlg.state == "finished", dlg.last_error
    new_id = dlg.new_model_id
    assert new_id and reg.get(new_id).path.parent == reg.root
    assert reg.active_id() == before  # registered, NOT activated
    assert window.bundle.model_id == tiny_bundle.model_id
    assert dlg.loss_plot.n_points() > 0
    # same held-out bags for both models; the card shows both
    cmp = dlg.comparison
    assert cmp is not None and cmp.active is not None
    assert cmp.new.holdout_fingerprint == cmp.active.holdout_fingerprint and cmp.new.n_bags >= 1
    assert cmp.active.model_id == tiny_bundle.model_id
    ev = json.loads((reg.root / new_id / "evaluation.json").read_text())
    assert ev["model_id"] == new_id and ev["n_bags"] == cmp.new.n_bags
    assert dlg.card is not None
    dlg.card.activate_button.click()
    assert reg.active_id() == new_id
    assert window.bundle.model_id == new_id
    # the next scan is scored, and decided, with the new model
    assert window.open_path(bags / "n1.png")
    wait_scored(qtbot, window)
    assert window.result.model_id == new_id
    window.decide("Clear")
    assert window.decision_log.query()[-1].model_id == new_id
    # one click back
    actions.rollback.trigger()
    assert window.bundle.model_id == tiny_bundle.model_id
    assert reg.active_id() == tiny_bundle.model_id  # the folder bundle was registered for this
    wait_scored(qtbot, window)
    assert window.result.model_id == tiny_bundle.model_id
    assert not errors


def test_cancel_leaves_checkpoint_and_resume_completes(qtbot, bags):
    dlg = _dialog(qtbot)
    dlg.set_config(epochs=12)
    dlg.add_folder(bags)
    try:
        assert dlg.start_training()
        job_dir = Path(dlg.job.job_dir)
        qtbot.waitUntil(lambda: rw.checkpoint_epoch(job_dir) is not None, timeout=TRAIN_TIMEOUT)
        dlg.cancel_training()
        _wait_state(qtbot, dlg, {"cancelled", "finished", "failed"})
        assert dlg.state == "cancelled", dlg.last_error
        ep = rw.checkpoint_epoch(job_dir)
        assert ep is not None and 1 <= ep < 12
        assert dlg.resume_button.isEnabled()
        assert Registry().list(include_default=False) == []
        dlg.resume_button.click()
        _wait_state(qtbot, dlg, {"finished", "failed", "cancelled"})
    finally:
        _stop(dlg)
    assert dlg.state == "finished", dlg.last_error
    started = [e for e in dlg.events if e["event"] == "started"]
    assert started and started[0]["resume"] is True
    first_epoch = next(e["epoch"] for e in dlg.events if e.get("phase") == "train")
    assert first_epoch == ep + 1  # continued, not restarted
    assert [r.model_id for r in Registry().list(include_default=False)] == [dlg.new_model_id]


def test_sigkill_of_training_leaves_registry_and_active_model_intact(qtbot, bags, tiny_bundle_dir):
    reg = Registry()
    active = reg.register(tiny_bundle_dir).model_id
    reg.activate(active)
    pointer = reg.pointer_path.read_bytes()
    dlg = _dialog(qtbot)
    dlg.set_config(epochs=50)
    dlg.add_folder(bags)
    try:
        assert dlg.start_training()
        job_dir = Path(dlg.job.job_dir)
        qtbot.waitUntil(
            lambda: any(e.get("phase") == "train" for e in dlg.events), timeout=TRAIN_TIMEOUT
        )
        qtbot.waitUntil(lambda: rw.checkpoint_epoch(job_dir) is not None, timeout=TRAIN_TIMEOUT)
        os.kill(dlg.child_pid(), signal.SIGKILL)
        _wait_state(qtbot, dlg, {"failed", "finished", "cancelled"}, timeout=60_000)
    finally:
        _stop(dlg)
    assert dlg.state == "failed" and "killed" in dlg.last_error
    assert reg.pointer_path.read_bytes() == pointer
    assert [r.model_id for r in reg.list(include_default=False)] == [active]
    assert sorted(p.name for p in reg.root.iterdir() if not p.name.startswith(".")) == sorted(
        [active, "active.json"]
    )
    assert dlg.resume_button.isEnabled()  # the last epoch checkpoint survived the kill


def test_close_app_while_training_keep_or_cancel(qtbot, window, bags, monkeypatch):
    import xrayscreen.gui.retrain as rt

    dlg = window.retrain_actions.controller.open_dialog()
    dlg.set_config(**{**TINY, "epochs": 200})
    dlg.use_log.setChecked(False)
    dlg.add_folder(bags)
    try:
        assert dlg.start_training()
        qtbot.waitUntil(lambda: dlg.child_pid() is not None, timeout=60_000)
        monkeypatch.setattr(rt, "ask_close_choice", lambda parent: rt.STAY)
        window.close()
        assert window.isVisible() and dlg.is_running()
        # keep: the GUI goes away, the trainer (own session) keeps going
        monkeypatch.setattr(rt, "ask_close_choice", lambda parent: rt.KEEP)
        child = dlg.child_pid()
        window.close()
        assert not window.isVisible()
        assert rt._pid_alive(child)
        # a new dialog (next app start) attaches to the background run and can cancel it
        again = rt.RetrainDialog(None, Registry())
        qtbot.addWidget(again)
        assert again.state == "training" and again.is_running()  # attached in __init__
        n = len(rw.read_events(again.job.job_dir))
        qtbot.waitUntil(lambda: len(rw.read_events(again.job.job_dir)) > n, timeout=60_000)
        again.cancel_training()
        _wait_state(qtbot, again, {"cancelled", "failed", "finished"}, timeout=60_000)
        assert again.state == "cancelled"
        assert not rt._pid_alive(child)
    finally:
        _stop(dlg)


def test_menu_import_export_and_refusal(qtbot, window, tiny_bundle_dir, tmp_path, errors):
    ctl = window.retrain_actions.controller
    reg = Registry()
    mid = reg.register(tiny_bundle_dir).model_id
    assert ctl.activate(mid) and window.bundle.model_id == mid
    out = ctl.export_bundle(str(tmp_path / "m.xrsmodel"))
    assert out is not None and out.is_file()
    bad = tmp_path / "bad.xrsmodel"
    import zipfile

    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("model.json", "{}")
        zf.writestr("../../evil.sh", "echo")
    assert ctl.import_bundle(str(bad)) is None
    assert errors and "exactly" in errors[-1][1]
    assert not (tmp_path.parent / "evil.sh").exists()
    assert ctl.import_bundle(str(out)) == mid  # same model again: accepted, nothing duplicated
    assert [r.model_id for r in reg.list(include_default=False)] == [mid]


def test_time_estimate_from_warmup(qtbot, bags):
    dlg = _dialog(qtbot)
    dlg.add_folder(bags)
    assert dlg.estimate_time()
    qtbot.waitUntil(lambda: dlg.estimate_process is None, timeout=120_000)
    ev = getattr(dlg, "last_estimate", None)
    assert ev is not None, dlg.estimate_label.text()
    assert ev["step_s"] > 0 and ev["steps_per_epoch"] >= 1 and ev["epochs"] == TINY["epochs"]
    assert ev["total_s"] >= ev["step_s"] * ev["steps_per_epoch"] * ev["epochs"]
    assert "on this machine" in dlg.estimate_label.text()
    assert dlg.state == "idle"


def test_reopened_dialog_offers_result_of_a_background_run(qtbot, tiny_bundle_dir, tmp_path):
    """A run that finished after the app closed: its comparison card comes back."""
    from xrayscreen.gui.retrain import RetrainDialog
    from xrayscreen.retrain_eval import Comparison, ModelEvaluation

    reg = Registry()
    mid = reg.register(tiny_bundle_dir).model_id
    job = rw.RetrainJob(
        job_dir=str(rw.new_job_dir(reg.root.parent / "retrain")), config={}, sources=[]
    )
    job.save()
    ev = ModelEvaluation(mid, 2.0, 4, 0.25, [1.0, 3.0, 0.5, 1.5], "fp")
    emit = rw.Emitter(None, job.dir)
    emit("started", pid=999999, job=job.job_dir, resume=False, epochs=1)
    emit("evaluation", comparison=Comparison(ev, None).to_dict())
    emit("registered", model_id=mid, path=str(reg.root / mid))
    emit("done")
    (job.dir / rw.PID).write_text("999999")  # long gone
    dlg = RetrainDialog(None, reg)
    qtbot.addWidget(dlg)
    assert dlg.state == "finished" and dlg.new_model_id == mid
    assert dlg.card is not None and "25.0 %" in dlg.card.cells[("far", "new")].text()
    dlg.card.discard_button.click()
    assert reg.list(include_default=False) == []
    assert json.loads((job.dir / "decision.json").read_text())["action"] == "discarded"
    again = RetrainDialog(None, reg)  # decided: not offered again
    qtbot.addWidget(again)
    assert again.state == "idle" and again.card is None


def test_reopened_dialog_offers_resume_of_an_interrupted_run(qtbot):
    from xrayscreen.gui.retrain import RetrainDialog

    reg = Registry()
    job = rw.RetrainJob(
        job_dir=str(rw.new_job_dir(reg.root.parent / "retrain")), config={}, sources=[]
    )
    job.save()
    (job.dir / rw.WORK).mkdir()
    (job.dir / rw.WORK / "latest.json").write_text(
        json.dumps({"checkpoint": "epoch-0003", "epoch": 3})
    )
    dlg = RetrainDialog(None, reg)
    qtbot.addWidget(dlg)
    assert dlg.state == "cancelled" and dlg.resume_button.isEnabled()
    assert "epoch 3" in dlg.status_label.text()
