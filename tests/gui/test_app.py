"""The ``gui`` sub-command: in-process (offscreen) and as a real process under Xvfb."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from xrayscreen.gui import app


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    app.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_launch_opens_demo_scores_and_saves_screenshot(qtbot, tiny_bundle_dir, tmp_path, errors):
    shot, timing = tmp_path / "shot.png", tmp_path / "t.json"
    launched = app.launch(
        _args(
            "--model",
            str(tiny_bundle_dir),
            "--screenshot",
            str(shot),
            "--timing-json",
            str(timing),
            "--size",
            "1000x700",
        )
    )
    win = launched.window
    qtbot.addWidget(win)
    try:
        assert win.scan is not None and win.scan.name.startswith("demo_")  # the bundled demo
        qtbot.waitUntil(timing.is_file, timeout=90000)
        img = cv2.imread(str(shot))
        assert img is not None and img.shape[:2] == (700, 1000)
        t = json.loads(timing.read_text())
        assert 0 < t["first_heat_map_s"] <= t["scored_s"]
        assert t["model_id"] == win.bundle.model_id
        assert t["window_shown_s"] <= t["model_loaded_s"] <= t["first_heat_map_s"]
        assert launched.state["rc"] == 0 and errors == []
    finally:
        win.close()


def test_launch_without_model_still_opens(qtbot, tmp_path, errors, monkeypatch):
    from xrayscreen.gui import backend

    monkeypatch.setattr(backend, "active_bundle_path", lambda: None)
    launched = app.launch(_args("--size", "800x600"))
    win = launched.window
    qtbot.addWidget(win)
    try:
        qtbot.waitUntil(lambda: "No model" in win.message_label.text(), timeout=20000)
        assert win.bundle is None and win.model_label.text() == "no model"
        assert win.scan is not None  # the demo scan is still shown
        assert not win.view.scan_item.pixmap().isNull()
        assert errors == []
    finally:
        win.close()


def _start_xvfb():
    r, w = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(w), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
        pass_fds=(w,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(w)
    deadline = time.monotonic() + 20
    buf = b""
    while time.monotonic() < deadline and not buf.endswith(b"\n"):
        chunk = os.read(r, 16)
        if not chunk:
            break
        buf += chunk
    os.close(r)
    if not buf.strip():
        proc.kill()
        pytest.skip("Xvfb did not start")
    return proc, f":{buf.decode().strip()}"


@pytest.mark.skipif(
    shutil.which("Xvfb") is None, reason="Xvfb is not on PATH (.ci/run installs it)"
)
def test_real_app_under_xvfb(tiny_bundle_dir, tmp_path, _isolated_home):
    """Launch ``python -m xrayscreen`` on a real X server: demo scan, scoring, screenshot."""
    xvfb, display = _start_xvfb()
    try:
        env = {
            **os.environ,
            "DISPLAY": display,
            "QT_QPA_PLATFORM": "xcb",
            "XRAYSCREEN_HOME": str(_isolated_home),
        }
        shot, timing = tmp_path / "xvfb.png", tmp_path / "t.json"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "xrayscreen",
                "--model",
                str(tiny_bundle_dir),
                "--screenshot",
                str(shot),
                "--exit-after-scoring",
                "--timing-json",
                str(timing),
                "--size",
                "1200x800",
                "--timeout",
                "150",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        xvfb.terminate()
        xvfb.wait(10)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (800, 1200)
    assert float(np.std(img)) > 10  # a real rendering, not a blank frame
    assert json.loads(timing.read_text())["scored_s"] > 0
