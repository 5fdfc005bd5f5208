"""Retraining out of the GUI process: ``python -m xrayscreen.retrain_worker --job JOB.json``.

The GUI starts this module with ``QProcess``; a crash in training (or an
out-of-memory kill) can then never take the operator's window down. Protocol:
one JSON object per line on stdout, each with an ``"event"`` key:

* ``started`` (pid, job), ``progress`` (phase, epoch, epochs, step,
  steps_per_epoch, losses, eta_s, message), ``estimate`` (warm-up timing),
  ``trained`` (bundle path), ``evaluation`` (the comparison), ``registered``
  (model_id, path), ``cancelled`` (checkpoint epoch or null), ``error`` (message),
  and finally ``done``.

Every event is also appended to ``events.jsonl`` in the job folder, so a GUI that
was closed while training "in the background" can pick the result up later.

Process layout: the process the GUI starts is a small **supervisor**; it runs the
actual training in a **child** process in its own session and relays its lines.
SIGTERM to the supervisor is forwarded (Cancel); if the supervisor itself is killed
(the GUI quit and chose "keep running"), the child carries on, writing only to
``events.jsonl``. ``--inline`` runs the training in this process (no child).

Cancel (SIGTERM) stops after the current step; the per-epoch checkpoint in the
job's ``work/`` folder stays, and ``--resume`` continues from it. Nothing here
activates a model: a finished model is registered (not active) with its
``evaluation.json``, and the analyst decides on the comparison card.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, TextIO

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CANCELLED = 3

EVENTS = "events.jsonl"
JOB = "job.json"
WORK = "work"
BUNDLE = "bundle"
COMPARISON = "comparison.json"
PID = "worker.pid"


# ------------------------------------------------------------------------------ job
@dataclasses.dataclass
class RetrainJob:
    """Everything one retraining run needs (written to ``job.json``).

    Attributes:
        job_dir: Folder for this job (checkpoints, bundle, events).
        config: ``TrainConfig.to_dict()`` settings.
        sources: Training scan files (the pool minus the hold-out).
        holdout: Held-out normal scan files for the comparison.
        threshold: Calibrated threshold the comparison is read at.
        active_bundle: Bundle directory of the model to compare against (None: skip).
        registry_root: Registry folder (None: the per-user default).
        register: Register the finished model (not activate).
        tip_per_bag: Threats projected per held-out bag (0: no detection figure).
        eval_stride: Window stride for the comparison.
        threads: torch threads for the worker (0: leave torch's default).
        pool_fingerprint: sha256 over the training scans' hashes (for the record).
        pool_summary: Human-readable pool counts.
    """

    job_dir: str
    config: dict[str, Any]
    sources: list[str]
    holdout: list[str] = dataclasses.field(default_factory=list)
    threshold: float = 2.0
    active_bundle: str | None = None
    registry_root: str | None = None
    register: bool = True
    tip_per_bag: int = 1
    eval_stride: int = 32
    threads: int = 0
    pool_fingerprint: str = ""
    pool_summary: str = ""

    @property
    def dir(self) -> Path:
        return Path(self.job_dir)

    def save(self) -> Path:
        """Write ``job.json`` atomically; returns its path."""
        from xrayscreen.atomic import atomic_write_json

        self.dir.mkdir(parents=True, exist_ok=True)
        return atomic_write_json(self.dir / JOB, dataclasses.asdict(self))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RetrainJob:
        """Read ``job.json``; unknown keys are refused."""
        from xrayscreen.errors import ConfigError

        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read retraining job {path}: {exc}") from None
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) - known:
            raise ConfigError(f"{path} is not a retraining job")
        return cls(**data)


def new_job_dir(root: Path | None = None) -> Path:
    """A fresh folder under ``data_dir()/retrain`` (sortable by time)."""
    from xrayscreen.paths import data_dir

    base = root or data_dir() / "retrain"
    d = base / (time.strftime("job-%Y%m%d-%H%M%S-", time.gmtime()) + uuid.uuid4().hex[:6])
    d.mkdir(parents=True, exist_ok=False)
    return d


def read_events(job_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All events recorded for a job (skips a torn last line)."""
    out = []
    try:
        lines = (Path(job_dir) / EVENTS).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        with contextlib.suppress(json.JSONDecodeError):
            ev = json.loads(line)
            if isinstance(ev, dict):
                out.append(ev)
    return out


def checkpoint_epoch(job_dir: str | os.PathLike[str]) -> int | None:
    """Epochs completed in the job's newest checkpoint (None when there is none)."""
    p = Path(job_dir) / WORK / "latest.json"
    try:
        return int(json.loads(p.read_text(encoding="utf-8"))["epoch"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def worker_command(job_path: str | os.PathLike[str], *, resume: bool = False) -> list[str]:
    """Arguments (after ``sys.executable``) that run a job, for QProcess/subprocess."""
    args = ["-m", "xrayscreen.retrain_worker", "--job", str(job_path)]
    return args + (["--resume"] if resume else [])


# --------------------------------------------------------------------------- output
class Emitter:
    """Writes protocol lines to stdout (while it is open) and to ``events.jsonl``."""

    def __init__(self, stream: TextIO | None, job_dir: Path | None) -> None:
        self.stream = stream
        self.events = job_dir / EVENTS if job_dir else None
        self._lock = threading.Lock()

    def __call__(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, "t": round(time.time(), 3), **fields}, default=_jsonable)
        with self._lock:
            if self.events is not None:
                with open(self.events, "a", encoding="utf-8") as fh:
                    fh.write(line + "\n")
            if self.stream is not None:
                try:
                    self.stream.write(line + "\n")
                    self.stream.flush()
                except (BrokenPipeError, OSError, ValueError):
                    self.stream = None  # the GUI went away; keep going, file only


def _jsonable(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    return str(o)


def _finite(d: dict[str, Any] | None) -> dict[str, float]:
    out = {}
    for k, v in (d or {}).items():
        with contextlib.suppress(TypeError, ValueError):
            f = float(v)
            if math.isfinite(f):
                out[k] = f
    return out


# ---------------------------------------------------------------------------- child
class _Cancel:
    """Set by SIGTERM/SIGINT; polled between training steps."""

    def __init__(self) -> None:
        self.flag = False

    def __call__(self, *_: Any) -> None:
        self.flag = True


def run_job(job: RetrainJob, emit: Emitter, *, resume: bool, cancel: _Cancel) -> int:
    """Train, evaluate and register one job. Returns the exit code."""
    import torch

    from xrayscreen import training
    from xrayscreen.training.config import TrainConfig

    if job.threads:
        torch.set_num_threads(job.threads)
    cfg = TrainConfig.from_dict(job.config)
    work, out = job.dir / WORK, job.dir / BUNDLE
    emit("started", pid=os.getpid(), job=str(job.dir), resume=resume, epochs=cfg.epochs)
    kwargs = _train_kwargs(training.iter_train, work, resume)
    gen = training.iter_train(cfg, list(job.sources), out, **kwargs)
    result = None
    try:
        for p in gen:
            if cancel.flag:
                break
            emit(
                "progress",
                phase=p.phase,
                epoch=p.epoch,
                epochs=p.epochs,
                step=p.step,
                steps_per_epoch=p.steps_per_epoch,
                losses=_finite(p.losses),
                eta_s=p.eta_s,
                message=p.message,
            )
            if p.result is not None:
                result = p.result
            if cancel.flag:
                break
    finally:
        gen.close()
    if cancel.flag:
        emit("cancelled", checkpoint_epoch=checkpoint_epoch(job.dir))
        return EXIT_CANCELLED
    bundle_dir = _bundle_dir(result, out)
    emit("trained", bundle=str(bundle_dir))
    # A cancel during the comparison only cuts the comparison short: the model is
    # trained, so it is still registered (inactive) rather than thrown away.
    _evaluate(job, bundle_dir, emit, cancel)
    if job.register:
        from xrayscreen.registry import Registry

        rec = Registry(job.registry_root).register(bundle_dir)
        emit("registered", model_id=rec.model_id, path=str(rec.path))
    emit("done")
    return EXIT_OK


def _train_kwargs(fn: Any, work: Path, resume: bool) -> dict[str, Any]:
    params = inspect.signature(fn).parameters
    kw: dict[str, Any] = {"resume": resume}
    for name in ("work_dir", "checkpoint_dir"):
        if name in params:
            kw[name] = work
            break
    return kw


def _bundle_dir(result: Any, out: Path) -> Path:
    for attr in ("bundle_path", "bundle_dir", "path", "out_dir"):
        v = getattr(result, attr, None)
        if v is not None and (Path(v) / "model.json").is_file():
            return Path(v)
    return out


def _evaluate(job: RetrainJob, bundle_dir: Path, emit: Emitter, cancel: _Cancel) -> Any:
    """Compare the new model with the active one; store evaluation.json with the bundle."""
    from xrayscreen.atomic import atomic_write_json
    from xrayscreen.errors import XrayscreenError
    from xrayscreen.model.bundle import load_bundle
    from xrayscreen.retrain_eval import compare_models

    if not job.holdout:
        emit("evaluation", comparison=None, message="no held-out bags: comparison skipped")
        return None
    new = load_bundle(bundle_dir)
    active = None
    if job.active_bundle:
        try:
            active = load_bundle(job.active_bundle)
        except XrayscreenError as exc:
            emit("log", message=f"active model not comparable: {exc}")

    def progress(what: str, done: int, total: int) -> None:
        emit("progress", phase="evaluate", epoch=0, epochs=0, step=done,
             steps_per_epoch=total, losses={}, eta_s=None, message=what)  # fmt: skip

    try:
        cmp = compare_models(
            new, active, job.holdout, job.threshold, tip_per_bag=job.tip_per_bag,
            stride=job.eval_stride, progress=progress, cancel=lambda: cancel.flag,
            device=_eval_device(job),
        )  # fmt: skip
    except XrayscreenError as exc:
        emit("evaluation", comparison=None, message=f"evaluation failed: {exc}")
        return None
    if cancel.flag:
        emit("evaluation", comparison=None, message="comparison cancelled")
        return None
    atomic_write_json(bundle_dir / "evaluation.json", cmp.new.to_dict())
    atomic_write_json(job.dir / COMPARISON, cmp.to_dict())
    emit("evaluation", comparison=cmp.to_dict())
    return cmp


def _eval_device(job: RetrainJob) -> str:
    """Score the comparison where training ran ("auto": CUDA when available)."""
    dev = str(job.config.get("device", "auto"))
    if dev == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return dev


def run_warmup(job: RetrainJob, emit: Emitter, steps: int) -> int:
    """Time a few training steps on a sample of the pool; emit an ``estimate`` event.

    The estimate scales the measured seconds per step and per scan loaded to the
    whole pool and all epochs; it is a rough guide (the CPU may be shared).
    """
    import torch

    from xrayscreen.training.config import TrainConfig
    from xrayscreen.training.data import load_windows
    from xrayscreen.training.loop import GanomalyTrainer, resolve_device

    if job.threads:
        torch.set_num_threads(job.threads)
    cfg = TrainConfig.from_dict(job.config)
    # An evenly spread sample: bags in one folder are often sorted by size or date.
    k = max(1, min(6, len(job.sources)))
    sample = [job.sources[round(i * (len(job.sources) - 1) / max(k - 1, 1))] for i in range(k)]
    sample = list(dict.fromkeys(sample))
    t0 = time.perf_counter()
    ws = load_windows(sample, cfg)
    load_s = (time.perf_counter() - t0) / len(sample)
    per_scan = len(ws) / len(sample)
    device = resolve_device(cfg.device)
    trainer = GanomalyTrainer(cfg, device)
    from xrayscreen.training.data import decode

    n = len(ws)
    times = []
    for i in range(steps + 1):
        idx = torch.randint(0, max(n, 1), (min(cfg.batch_size, max(n, 1)),))
        x = decode(ws.data[idx]).to(device)
        t = time.perf_counter()
        trainer.train_step(x, 0, i)
        if i:  # the first step pays one-off allocations
            times.append(time.perf_counter() - t)
    step_s = statistics.median(times) if times else 0.0  # robust to one slow step
    n_scans = len(job.sources)
    # The training module holds out max(min_val_scans, round(val_fraction * n)) scans.
    n_val = 0
    if cfg.val_fraction > 0 and n_scans >= 2:
        n_val = min(
            n_scans - 1, max(cfg.min_val_scans, math.floor(cfg.val_fraction * n_scans + 0.5))
        )
    train_windows = per_scan * max(n_scans - n_val, 1)
    spe = max(1, math.ceil(train_windows / cfg.batch_size))
    total = load_s * n_scans + step_s * spe * cfg.epochs
    emit(
        "estimate",
        step_s=step_s,
        load_s_per_scan=load_s,
        windows_per_scan=per_scan,
        steps_per_epoch=spe,
        epochs=cfg.epochs,
        total_s=total,
    )
    return EXIT_OK


def child_main(job_path: Path, resume: bool, warmup: int, stream: TextIO) -> int:
    """Run the job in this process (the child, or ``--inline``)."""
    from xrayscreen.errors import XrayscreenError

    cancel = _Cancel()
    signal.signal(signal.SIGTERM, cancel)
    signal.signal(signal.SIGINT, cancel)
    try:
        job = RetrainJob.load(job_path)
    except XrayscreenError as exc:
        Emitter(stream, None)("error", message=str(exc))
        return EXIT_ERROR
    emit = Emitter(stream, job.dir if not warmup else None)
    (job.dir / PID).write_text(str(os.getpid()), encoding="utf-8")
    try:
        if warmup:
            return run_warmup(job, emit, warmup)
        return run_job(job, emit, resume=resume, cancel=cancel)
    except XrayscreenError as exc:
        emit("error", message=str(exc))
        return EXIT_ERROR
    except Exception as exc:  # report, never a silent death; details go to stderr
        traceback.print_exc()
        emit("error", message=f"training failed: {type(exc).__name__}: {exc}")
        return EXIT_ERROR


# ----------------------------------------------------------------------- supervisor
def supervise(argv: list[str], stream: TextIO) -> int:
    """Run the child in its own session, relay its lines, forward SIGTERM/SIGINT."""
    child = subprocess.Popen(
        [sys.executable, "-m", "xrayscreen.retrain_worker", *argv, "--inline"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
        start_new_session=True,  # survives the GUI (and this supervisor) going away
    )

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    assert child.stdout is not None
    for line in child.stdout:
        try:
            stream.write(line)
            stream.flush()
        except (BrokenPipeError, OSError):
            pass  # nobody listens; the child still writes events.jsonl
    rc = child.wait()
    if rc < 0:
        # Killed by a signal (OOM killer, kill -9): the child could not say so itself.
        msg = f"the training process was killed (signal {-rc}); the registry is unchanged"
        line = json.dumps({"event": "error", "t": round(time.time(), 3), "message": msg})
        with contextlib.suppress(BrokenPipeError, OSError):
            stream.write(line + "\n")
            stream.flush()
        return EXIT_ERROR
    return rc


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m xrayscreen.retrain_worker``."""
    parser = argparse.ArgumentParser(prog="python -m xrayscreen.retrain_worker")
    parser.add_argument("--job", required=True, help="job.json written by the Retrain dialog")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    parser.add_argument("--warmup", type=int, default=0, help="only time N steps (estimate)")
    parser.add_argument("--inline", action="store_true", help="train in this process")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    # Protocol lines go to the real stdout; anything else printed (tqdm, warnings,
    # stray prints in libraries) is sent to stderr so it cannot corrupt the protocol.
    proto = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    if args.inline or args.warmup:
        return child_main(Path(args.job), args.resume, args.warmup, proto)
    return supervise([a for a in argv if a != "--inline"], proto)


if __name__ == "__main__":
    sys.exit(main())
