"""GUI fixtures: a tiny calibrated model bundle, synthetic scan files, a main window
that is always shut down (worker threads joined) and checked for leaks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from xrayscreen.model.bundle import InputSpec, ModelBundle, load_bundle, save_bundle
from xrayscreen.model.calibration import Calibration
from xrayscreen.model.ganomaly import GANomalyConfig, build_generator

TINY = GANomalyConfig(isize=64, ngf=8, ndf=8, nz=16)


def synthetic_bag(h: int = 300, w: int = 400, seed: int = 0, threat: bool = True) -> np.ndarray:
    """A cartoon bag (RGB uint8): a case with a few objects, optionally a dark metal bar."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 245, np.uint8)
    cv2.rectangle(img, (w // 10, h // 8), (w - w // 10, h - h // 8), (160, 175, 215), -1)
    for _ in range(6):
        x, y = int(rng.integers(w // 6, w // 2)), int(rng.integers(h // 5, h // 2))
        cv2.rectangle(img, (x, y), (x + w // 6, y + h // 8), (230, 150, 60), -1)
    if threat:
        cv2.rectangle(
            img, (int(w * 0.6), int(h * 0.5)), (int(w * 0.8), int(h * 0.56)), (10, 20, 90), -1
        )
    return img


@pytest.fixture(scope="session")
def tiny_bundle_dir(tmp_path_factory):
    """A calibrated 64-px GANomaly bundle (untrained weights; calibrated on synthetic bags)."""
    torch.manual_seed(0)
    gen = build_generator(TINY).eval()
    bundle = ModelBundle(config=TINY, generator=gen, input=InputSpec(window=64))
    # Calibrate on windows of threat-free synthetic bags so the calibrated scale is real.
    from xrayscreen.imaging.representation import model_input
    from xrayscreen.imaging.scan import Scan, ScanKind
    from xrayscreen.model.score import score_windows

    scores = []
    for seed in range(3):
        scan = Scan(synthetic_bag(seed=seed + 10, threat=False), ScanKind.PSEUDO_COLOUR)
        x = torch.from_numpy(model_input(scan, "rgb", bundle.input.scale))
        wins = x.unfold(1, 64, 32).unfold(2, 64, 32).permute(1, 2, 0, 3, 4).reshape(-1, 3, 64, 64)
        scores.append(score_windows(gen, wins).numpy())
    bundle.calibration = Calibration.fit(np.concatenate(scores), scan_scores=scores)
    bundle.training = {"note": "test fixture: untrained weights"}
    return save_bundle(bundle, tmp_path_factory.mktemp("bundles") / "tiny")


@pytest.fixture
def tiny_bundle(tiny_bundle_dir):
    return load_bundle(tiny_bundle_dir)


@pytest.fixture
def scan_folder(tmp_path):
    """Three PNG bags in one folder (names sort a < b < c)."""
    d = tmp_path / "queue"
    d.mkdir()
    for i, name in enumerate(("a_bag.png", "b_bag.png", "c_bag.png")):
        cv2.imwrite(str(d / name), synthetic_bag(seed=i)[:, :, ::-1])
    return d


@pytest.fixture
def errors(monkeypatch):
    """Record error dialogs instead of blocking on them."""
    from PySide6.QtWidgets import QMessageBox

    seen: list[tuple[str, str]] = []

    def record(parent, title, text, *a, **k):
        seen.append((title, text))
        return QMessageBox.StandardButton.Ok

    monkeypatch.setattr(QMessageBox, "critical", record)
    monkeypatch.setattr(QMessageBox, "warning", record)
    return seen


@pytest.fixture
def window(qtbot, tiny_bundle, errors):
    """A main window with the tiny model, shut down and leak-checked after the test."""
    from PySide6.QtCore import QThreadPool

    from xrayscreen.gui.main_window import MainWindow

    win = MainWindow(tiny_bundle)
    qtbot.addWidget(win)
    win.resize(900, 650)
    win.show()
    yield win
    win.close()
    assert QThreadPool.globalInstance().waitForDone(15000)
    assert QThreadPool.globalInstance().activeThreadCount() == 0


def wait_scored(qtbot, win, timeout=60000):
    """Wait until the current scan's scoring has ended; fail with the error dialogs seen."""
    qtbot.waitUntil(lambda: not win.scoring, timeout=timeout)
    from PySide6.QtWidgets import QMessageBox

    seen = getattr(QMessageBox.critical, "__self__", None)
    assert win.result is not None and getattr(win.result, "complete", True), (
        f"scoring ended without a result: {win.message_label.text()!r} {seen}"
    )
