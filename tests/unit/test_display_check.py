import subprocess
import sys

from xrayscreen.gui.app import display_problem


def test_display_problem_rules():
    assert "no display" in display_problem({}, "linux")
    assert display_problem({"DISPLAY": ":0"}, "linux") == ""
    assert display_problem({"WAYLAND_DISPLAY": "wayland-0"}, "linux") == ""
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux") == ""
    assert display_problem({}, "darwin") == ""


def test_headless_launch_gives_a_clear_message_not_a_qt_abort(monkeypatch):
    env = {
        k: v
        for k, v in __import__("os").environ.items()
        if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")
    }
    out = subprocess.run(
        [sys.executable, "-m", "xrayscreen", "--no-demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "no display found" in out.stderr
    assert "xrayscreen scan" in out.stderr
    assert "Traceback" not in out.stderr
