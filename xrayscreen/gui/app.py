"""``xrayscreen gui`` (the default command): the operator workstation.

``xrayscreen`` with no arguments opens the bundled demo scan, scored by the
active model. ``--screenshot PATH --exit-after-scoring`` saves the window once
scoring finishes and quits (used for docs and the Xvfb smoke test).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="*", help="scan file(s) to open (two files = a dual-energy pair)"
    )
    parser.add_argument("--pair", nargs=2, metavar=("HIGH", "LOW"), help="open a dual-energy pair")
    parser.add_argument(
        "--model", metavar="DIR", help="model bundle to use instead of the active one"
    )
    parser.add_argument(
        "--no-demo", action="store_true", help="start empty instead of on the demo scan"
    )
    parser.add_argument(
        "--threshold", type=float, help="start with this threshold (calibrated units)"
    )
    parser.add_argument(
        "--select-region", type=int, metavar="N", help="zoom to the N-th region after scoring"
    )
    parser.add_argument(
        "--screenshot", metavar="PNG", help="save a screenshot of the window after scoring"
    )
    parser.add_argument(
        "--exit-after-scoring", action="store_true", help="quit once the scan is scored"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="with --exit-after-scoring: give up after S s"
    )
    parser.add_argument("--size", default="1500x950", help="window size WxH")
    parser.add_argument(
        "--timing-json", metavar="FILE", help="write launch-to-first-heat-map timings here"
    )


class Launched(NamedTuple):
    """What :func:`launch` set up: the application, its window, timings and exit state."""

    app: Any
    window: Any
    timings: dict[str, Any]
    state: dict[str, int]


def display_problem(environ: dict[str, str] | None = None, platform: str = sys.platform) -> str:
    """A user-facing message when no screen can be reached, else ``""``.

    Without this, Qt aborts the process with a plugin error that reads like a broken
    install; on Linux with no X11/Wayland display and no platform chosen, say what to do.
    """
    env = environ if environ is not None else dict(os.environ)
    if not platform.startswith("linux") or env.get("QT_QPA_PLATFORM"):
        return ""
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return ""
    return (
        "xrayscreen: no display found (DISPLAY / WAYLAND_DISPLAY are not set), so the "
        "workstation window cannot open.\n"
        "  - run it from a desktop session, or under Xvfb: xvfb-run xrayscreen\n"
        "  - screen scans without a window: xrayscreen scan PATH... --out DIR\n"
        "  - render offscreen (screenshots): QT_QPA_PLATFORM=offscreen xrayscreen "
        "--screenshot shot.png --exit-after-scoring"
    )


def run(args: argparse.Namespace) -> int:
    """Open the workstation and run the event loop until it closes."""
    problem = display_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    launched = launch(args)
    rc = launched.app.exec()
    return launched.state["rc"] or int(rc)


def launch(args: argparse.Namespace) -> Launched:
    """Create the window, load the model, open the scan; everything but the event loop.

    Separate from :func:`run` so tests can drive a launched window in-process (a
    finished ``QApplication.exec()`` leaves Qt unable to run timers in that process).
    """
    t_launch = time.perf_counter()
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from xrayscreen.gui.dialogs import install_excepthook
    from xrayscreen.gui.main_window import MainWindow, _guard_pyside

    _guard_pyside()  # before the first Qt call (see xrayscreen.gui.pyside_refcount)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("xrayscreen")
    app.setOrganizationName("xrayscreen")
    win = MainWindow()
    install_excepthook(lambda: win)
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
        win.resize(w, h)
    except ValueError:
        pass
    timings: dict[str, float] = {}
    state = {"rc": 0}

    def first_heat() -> None:
        if "first_heat_map_s" not in timings and win.heat is not None:
            timings["first_heat_map_s"] = time.perf_counter() - t_launch
            timings["first_heat_map_epoch"] = time.time()  # lets a caller add interpreter start-up

    win.threshold_applied.connect(first_heat)

    def on_scored(_result) -> None:
        if "scored_s" not in timings:
            timings["scored_s"] = time.perf_counter() - t_launch
            timings["scored_epoch"] = time.time()
            timings["model_id"] = getattr(win.bundle, "model_id", "")
            timings["device"] = win.device_label.text()
        if args.threshold is not None:
            win.threshold = args.threshold
        if args.select_region is not None and win.regions:
            i = max(0, min(args.select_region - 1, len(win.regions) - 1))
            win.regions_panel.tree.setCurrentItem(win.regions_panel.tree.topLevelItem(i))
            win.view.select_frame(i)
        if args.screenshot or args.exit_after_scoring:
            QTimer.singleShot(300, finish)

    def finish() -> None:
        if args.screenshot:
            Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
            if not win.grab().save(args.screenshot):
                print(f"could not save screenshot {args.screenshot}", file=sys.stderr)
                state["rc"] = 1
        if args.timing_json:
            import json

            Path(args.timing_json).write_text(json.dumps(timings, indent=1))
        if args.exit_after_scoring:
            win.close()
            app.quit()

    win.scoring_finished.connect(on_scored)
    win.show()
    timings["window_shown_s"] = time.perf_counter() - t_launch
    timings["window_shown_epoch"] = time.time()

    # Show the scan first and load the model from the event loop, so the window
    # paints the bag while torch and the engine start up.
    win.model_pending = True
    if args.pair:
        opened = win.open_pair(*args.pair)
    elif args.paths:
        opened = win.open_files(args.paths)
    elif not args.no_demo:
        opened = win.open_demo()
    else:
        opened = False

    def load_model() -> None:
        win.model_pending = False
        loaded = win.load_bundle_path(args.model) if args.model else win.load_active_model()
        timings["model_loaded_s"] = time.perf_counter() - t_launch
        if args.threshold is not None:
            win.threshold = args.threshold
        if loaded and opened and not win.scoring and win.result is None:
            win.score_current()
        if args.exit_after_scoring:
            if not opened or win.bundle is None:
                # Nothing will be scored: take the screenshot now and report failure.
                state["rc"] = 1
                QTimer.singleShot(300, finish)
            else:

                def give_up() -> None:
                    print("timed out waiting for scoring", file=sys.stderr)
                    state["rc"] = 1
                    finish()

                QTimer.singleShot(int(args.timeout * 1000), give_up)

    QTimer.singleShot(0, load_model)
    return Launched(app, win, timings, state)
