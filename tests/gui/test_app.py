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


def test_run_opens_demo_scores_and_saves_screenshot(qtbot, tiny_bundle_dir, tmp_path, errors):
    shot, timing = tmp_path / "shot.png", tmp_path / "t.json"
    rc = app.run(
        _args(
            "--model",
            str(tiny_bundle_dir),
            "--screenshot",
            str(shot),
            "--exit-after-scoring",
            "--timing-json",
            str(timing),
            "--size",
            "1000x700",
            "--timeout",
            "120",
        )
    )
    assert rc == 0, errors
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (700, 1000)
    t = json.loads(timing.read_text())
    assert 0 < t["first_heat_map_s"] <= t["scored_s"]
    assert errors == []


def test_run_without_model_still_opens(qtbot, tmp_path, errors, monkeypatch):
    from xrayscreen.gui import backend

    monkeypatch.setattr(backend, "active_bundle_path", lambda: None)
    shot = tmp_path / "shot.png"
    rc = app.run(_args("--screenshot", str(shot), "--exit-after-scoring", "--size", "800x600"))
    assert rc == 1  # nothing could be scored: reported, not crashed
    assert cv2.imread(str(shot)) is not None
    assert errors == []


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
