"""Retraining from the app, end to end, offscreen: prints JSON figures.

Simulated bags (the project's own simulator, never research data) are written as
PNG files; the Retrain dialog builds its pool from them and runs two real
training subprocesses: a short "v1" that is activated, then a longer "v2" that is
compared with it on the same held-out bags and TIP-projected threats. Measured:

* wall time of each run and its phases (from the worker's event timestamps);
* the warm-up time estimate vs the measured training phase (ratio);
* the GUI event loop's lag while training runs in the other process vs idle,
  measured by a 20 ms QTimer in the same run (the point of training out of process);
* registry operations: activate, roll back, export/import of the new bundle.

Optionally saves screenshots of the dialog (mid-training with its loss curve, and
at the end) and of the comparison card.

    python benchmarks/bench_retrain.py --screenshots docs/images
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _bags(folder: Path, n: int, size: tuple[int, int]) -> float:
    import cv2

    from xrayscreen.imaging.simulator import simulate_bag

    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i in range(n):
        scan = simulate_bag(1000 + i, size=size).scan
        cv2.imwrite(str(folder / f"sim_{i:03d}.png"), scan.rgb[:, :, ::-1])
    return time.perf_counter() - t0


class LagMeter:
    """Measures how late a 20 ms QTimer fires (event-loop responsiveness)."""

    def __init__(self, interval_ms: int = 20) -> None:
        from PySide6.QtCore import QTimer

        self.interval = interval_ms / 1000.0
        self.lags: list[float] = []
        self._last = None
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.lags.append(max(0.0, now - self._last - self.interval))
        self._last = now

    def start(self) -> None:
        self.lags, self._last = [], None
        self.timer.start()

    def stop(self) -> dict[str, float]:
        self.timer.stop()
        lags = sorted(self.lags) or [0.0]
        return {
            "ticks": len(self.lags),
            "median_ms": 1000 * statistics.median(lags),
            "p99_ms": 1000 * lags[min(len(lags) - 1, int(0.99 * len(lags)))],
            "max_ms": 1000 * lags[-1],
        }


def _phases(events: list[dict]) -> dict[str, float]:
    t = {}
    first = events[0]["t"]
    for e in events:
        key = e.get("phase") if e["event"] == "progress" else e["event"]
        t.setdefault(f"first_{key}", e["t"] - first)
        t[f"last_{key}"] = e["t"] - first
    out = {
        "startup_s": t.get("first_loading", 0.0),
        "loading_s": t.get("first_train", 0.0) - t.get("first_loading", 0.0),
        "training_s": t.get("first_calibrate", 0.0) - t.get("first_train", 0.0),
        "calibrate_save_s": t.get("first_trained", 0.0) - t.get("first_calibrate", 0.0),
        "evaluation_s": t.get("first_registered", 0.0) - t.get("first_trained", 0.0),
        "total_s": events[-1]["t"] - first,
    }
    return {k: round(v, 2) for k, v in out.items()}


def _run(app, dlg, lag: LagMeter | None, shot_at: float | None, shots: Path | None) -> dict:
    dlg.start_training()
    if lag:
        lag.start()
    shot_done = False
    t0 = time.perf_counter()
    while dlg.state in ("training", "evaluating"):
        app.processEvents()
        time.sleep(0.002)
        training = any(e.get("phase") == "train" for e in dlg.events)
        if (
            shots
            and shot_at is not None
            and not shot_done
            and training
            and dlg.progress_bar.value() >= shot_at * 1000
        ):
            dlg.grab().save(str(shots / "retrain_dialog_training.png"))
            shot_done = True
        if time.perf_counter() - t0 > 1800:
            raise TimeoutError("training did not finish in 30 min")
    res = {"state": dlg.state, "error": dlg.last_error, "phases": _phases(dlg.events)}
    if lag:
        res["gui_lag_while_training"] = lag.stop()
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bags", type=int, default=16)
    ap.add_argument("--size", default="300x400", help="HxW of the simulated bags")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--ngf", type=int, default=16)
    ap.add_argument("--longer-side", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--holdout", type=int, default=25, help="percent held out for the comparison")
    ap.add_argument("--screenshots", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    tmp = Path(tempfile.mkdtemp(prefix="bench-retrain-"))
    os.environ["XRAYSCREEN_HOME"] = str(tmp / "home")  # never the user's registry
    h, w = (int(v) for v in args.size.split("x"))
    gen_s = _bags(tmp / "bags", args.bags, (h, w))

    from PySide6.QtWidgets import QApplication

    from xrayscreen.gui.retrain import RetrainDialog
    from xrayscreen.registry import Registry

    app = QApplication.instance() or QApplication([])
    reg = Registry()
    dlg = RetrainDialog(None, reg)
    dlg.resize(820, 900)
    dlg.show()
    dlg.use_log.setChecked(False)
    dlg.holdout.setValue(args.holdout)
    dlg.add_folder(tmp / "bags")
    base = dict(window=args.window, stride=args.window // 2, ngf=args.ngf, nz=32,
                batch_size=32, threads=args.threads, longer_side=args.longer_side)  # fmt: skip
    out: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
        "(shared with other jobs)",
        "python": platform.python_version(),
        "bags": args.bags,
        "bag_size": [h, w],
        "holdout_percent": args.holdout,
        "settings": {**base, "epochs_v1": 2, "epochs_v2": args.epochs},
        "simulate_bags_s": round(gen_s, 1),
    }
    # idle baseline of the event loop
    lag = LagMeter()
    lag.start()
    t_end = time.perf_counter() + 3.0
    while time.perf_counter() < t_end:
        app.processEvents()
        time.sleep(0.002)
    out["gui_lag_idle"] = lag.stop()

    # v1: short run, activated
    dlg.set_config(**base, epochs=2)
    out["run_v1"] = _run(app, dlg, None, None, None)
    v1 = dlg.new_model_id
    t = time.perf_counter()
    dlg.activate_model(v1)
    out["activate_ms"] = round(1000 * (time.perf_counter() - t), 1)

    # v2: the estimate, then the run that is compared with v1
    dlg.set_config(**base, epochs=args.epochs)
    dlg.estimate_time()
    while dlg.estimate_process is not None:
        app.processEvents()
        time.sleep(0.01)
    est = getattr(dlg, "last_estimate", None)
    lag2 = LagMeter()
    shots = args.screenshots
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    out["run_v2"] = _run(app, dlg, lag2, 0.6, shots)
    if est:
        train_s = out["run_v2"]["phases"]["training_s"] + out["run_v2"]["phases"]["loading_s"]
        out["estimate"] = {
            "estimated_s": round(est["total_s"], 1),
            "measured_loading_plus_training_s": train_s,
            "measured_over_estimated": round(train_s / max(est["total_s"], 1e-9), 2),
            "step_s": round(est["step_s"], 4),
        }
    cmp = dlg.comparison
    if cmp is not None:
        out["comparison"] = {
            side: None if ev is None else {
                "model_id": ev.model_id, "threshold": ev.threshold, "n_bags": ev.n_bags,
                "bag_far": ev.bag_far, "n_threats": ev.n_threats,
                "detection_rate": ev.detection_rate,
            }
            for side, ev in (("new", cmp.new), ("active", cmp.active))
        }  # fmt: skip
    if shots and dlg.card is not None:
        app.processEvents()
        dlg.grab().save(str(shots / "retrain_dialog_done.png"))
        dlg.card.grab().save(str(shots / "retrain_compare_card.png"))
    v2 = dlg.new_model_id
    # registry operations on the new bundle
    t = time.perf_counter()
    f = reg.export(v2, tmp / "v2.xrsmodel")
    out["export_ms"] = round(1000 * (time.perf_counter() - t), 1)
    out["xrsmodel_bytes"] = f.stat().st_size
    other = Registry(tmp / "station2")
    t = time.perf_counter()
    other.import_(f)
    out["import_validate_ms"] = round(1000 * (time.perf_counter() - t), 1)
    t = time.perf_counter()
    reg.activate(v2)
    reg.rollback()
    out["activate_plus_rollback_ms"] = round(1000 * (time.perf_counter() - t), 1)
    out["active_after_rollback_is_v1"] = reg.active_id() == v1
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
