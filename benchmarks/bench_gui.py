"""GUI responsiveness (issue 8): launch -> first heat map, and threshold redraw time.

Prints JSON. Two measurements:

1. ``launch``: runs ``python -m xrayscreen`` as a fresh process (offscreen Qt unless
   DISPLAY is set and --xcb is given) on the bundled demo scan with the active
   model (or ``--model``), and reports seconds from process start to the first heat
   map drawn and to scoring finished, as seen by the app (``--timing-json``).
2. ``threshold``: in-process, a 2000x1500 scan with a heat map at the bundle's
   working scale (800 px longer side -> 800x600) and at native scale (2000x1500,
   the worst case) is re-thresholded at many values; each redraw is timed from
   setting the threshold (synchronous, bypassing the slider's 16 ms throttle) to a
   finished repaint of the view (regions + overlay + frames
   + region list + paint). The heat map is a synthetic smooth field with blobs
   (the redraw path does not depend on the model); the model is never called
   (asserted by counting engine forward calls).

Usage: python benchmarks/bench_gui.py [--model DIR] [--repeats N] [--skip-launch]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np


def bench_launch(model: str | None, runs: int) -> dict:
    out = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            timing = Path(tmp) / "t.json"
            env = {**os.environ, "XRAYSCREEN_HOME": tmp}
            env.setdefault("QT_QPA_PLATFORM", "offscreen")
            cmd = [
                sys.executable,
                "-m",
                "xrayscreen",
                "--exit-after-scoring",
                "--timing-json",
                str(timing),
            ]
            if model:
                cmd += ["--model", model]
            t0 = time.time()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
            wall = time.time() - t0
            if proc.returncode != 0 or not timing.is_file():
                return {"error": proc.stderr[-2000:], "returncode": proc.returncode}
            t = json.loads(timing.read_text())
            out.append(
                {
                    "process_to_window_shown_s": round(t["window_shown_epoch"] - t0, 3),
                    "process_to_first_heat_map_s": round(t["first_heat_map_epoch"] - t0, 3),
                    "process_to_scored_s": round(t["scored_epoch"] - t0, 3),
                    "in_app_first_heat_map_s": round(t["first_heat_map_s"], 3),
                    "in_app_scored_s": round(t["scored_s"], 3),
                    "process_wall_s": round(wall, 3),
                    "model_id": t.get("model_id", ""),
                    "device": t.get("device", ""),
                }
            )
    best = min(out, key=lambda r: r["process_to_first_heat_map_s"])
    return {"runs": out, "best": best, "qpa": env["QT_QPA_PLATFORM"]}


def synthetic_heat(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth calibrated-looking field (0..~6) with a few strong blobs."""
    import cv2

    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.random((h, w), dtype=np.float32), (0, 0), sigmaX=max(h, w) / 80)
    base = (base - base.min()) / (np.ptp(base) + 1e-9) * 2.5
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(12):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(0.01, 0.05) * max(h, w)
        base += rng.uniform(1.5, 4.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return base.astype(np.float32)


def bench_threshold(model: str | None, repeats: int) -> dict:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    tmp = tempfile.mkdtemp()
    os.environ["XRAYSCREEN_HOME"] = tmp
    from PySide6.QtWidgets import QApplication

    from xrayscreen.gui import backend
    from xrayscreen.gui.main_window import MainWindow
    from xrayscreen.imaging.scan import Scan, ScanKind

    app = QApplication.instance() or QApplication([])
    path = model or backend.active_bundle_path()
    bundle = backend.load_bundle(path) if path else None
    win = MainWindow(bundle)
    win.resize(1500, 950)
    win.show()
    app.processEvents()
    rng = np.random.default_rng(1)
    rgb = (rng.random((1500, 2000, 3)) * 60 + 150).astype(np.uint8)
    bundle_for_scan, win.bundle = win.bundle, None  # open without scoring
    win.set_scan(Scan(rgb, ScanKind.PSEUDO_COLOUR), None)
    win.bundle = bundle_for_scan
    forwards = []
    module = win.engine_module() if win.bundle is not None else None
    hook = (
        module.register_forward_hook(lambda *a: forwards.append(1)) if module is not None else None
    )
    results = {}
    for label, (h, w) in {"working_800x600": (600, 800), "native_2000x1500": (1500, 2000)}.items():
        heat = synthetic_heat(h, w)
        # Only the fields the redraw reads (a ScanResult has more).
        res = SimpleNamespace(
            latent_map=heat, residual_map=None, scale_factor=w / 2000, complete=True
        )
        win._set_result(res)
        app.processEvents()
        ts = np.linspace(float(np.percentile(heat, 60)), float(heat.max()), 40)
        times, cpu_times, apply_times, n_regions = [], [], [], []
        for _ in range(repeats):
            for t in ts:
                c0, t0 = time.thread_time(), time.perf_counter()
                win.threshold = float(t)  # what the slider's (throttled) signal runs
                win.view.viewport().repaint()
                times.append(time.perf_counter() - t0)
                cpu_times.append(time.thread_time() - c0)
                apply_times.append(win.last_redraw_s)
                n_regions.append(len(win.regions))
        ms = np.asarray(times) * 1000
        cpu_ms = np.asarray(cpu_times) * 1000
        results[label] = {
            "heat_map_px": [h, w],
            "redraws": len(times),
            "redraw_with_paint_ms_median": round(float(np.median(ms)), 2),
            "redraw_with_paint_ms_p95": round(float(np.percentile(ms, 95)), 2),
            "redraw_with_paint_ms_max": round(float(ms.max()), 2),
            # CPU time of the GUI thread per redraw: what the redraw costs on an idle
            # core, unlike wall time, which on a shared machine includes waiting.
            "redraw_gui_thread_cpu_ms_median": round(float(np.median(cpu_ms)), 2),
            "redraw_gui_thread_cpu_ms_p95": round(float(np.percentile(cpu_ms, 95)), 2),
            "threshold_apply_ms_median": round(statistics.median(apply_times) * 1000, 2),
            "regions_min_max": [min(n_regions), max(n_regions)],
            "within_16ms_fraction_wall": round(float(np.mean(ms <= 16.0)), 3),
            "within_16ms_fraction_cpu": round(float(np.mean(cpu_ms <= 16.0)), 3),
        }
    if hook is not None:
        hook.remove()
    results["model_forward_calls_during_redraws"] = len(forwards)
    win.close()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="bundle dir (default: the active model)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--launch-runs", type=int, default=2)
    ap.add_argument("--skip-launch", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
    report = {
        "benchmark": "gui",
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
        },
    }
    if not args.skip_launch:
        report["launch"] = bench_launch(args.model, args.launch_runs)
    report["threshold_redraw_2000x1500_scan"] = bench_threshold(args.model, args.repeats)
    report["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
