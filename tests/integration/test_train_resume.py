"""Crash safety: SIGKILL a real training process after its first epoch checkpoint,
``--resume``, and compare the final weights bit for bit with an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_cli import make_bags  # same folder (pytest prepends it to sys.path)

from xrayscreen.model.bundle import META, WEIGHTS
from xrayscreen.training.checkpoint import LATEST
from xrayscreen.training.pipeline import default_work_dir

ARGS = [
    "--epochs", "3", "--window", "32", "--stride", "16", "--ngf", "8", "--ndf", "8", "--nz", "8",
    "--batch-size", "16", "--longer-side", "128", "--val-fraction", "0.34", "--threads", "1",
    "--device", "cpu", "--quiet", "--seed", "3",
    # The rendering augmentation's draw must replay exactly after a resume too.
    "--jitter-gamma", "1.25", "--jitter-hue", "20",
]  # fmt: skip


def _cmd(bags: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "xrayscreen.training.cli",
        str(bags),
        "--out",
        str(out),
        *ARGS,
        *extra,
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(tmp_path):
    bags = make_bags(tmp_path / "normal", n=6, seed=2)
    ref_out, cut_out = tmp_path / "ref", tmp_path / "cut"

    # Run to be killed: wait for the first epoch checkpoint, then SIGKILL.
    proc = subprocess.Popen(
        _cmd(bags, cut_out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    ptr = default_work_dir(cut_out) / LATEST
    deadline = time.monotonic() + 240
    while not ptr.exists():
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = json.loads(ptr.read_text())["epoch"]
    assert 1 <= killed_at < 3, "training finished before the kill; make the test data larger"
    assert not cut_out.exists()  # no half bundle

    # Without --resume the checkpoint is not silently reused (fresh start would also be
    # valid); with --resume training continues from it.
    done = subprocess.run(
        _cmd(bags, cut_out, "--resume"), env=_env(), capture_output=True, timeout=600
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]

    ref = subprocess.run(_cmd(bags, ref_out), env=_env(), capture_output=True, timeout=600)
    assert ref.returncode == 0, ref.stderr.decode()[-2000:]

    a, b = load_file(str(ref_out / WEIGHTS)), load_file(str(cut_out / WEIGHTS))
    assert a.keys() == b.keys() and any(k.startswith("netd.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    ma, mb = (json.loads((d / META).read_text()) for d in (ref_out, cut_out))
    assert ma["calibration"]["values"] == mb["calibration"]["values"]
    assert ma["provenance"]["data_fingerprint"] == mb["provenance"]["data_fingerprint"]
    ra, rb = (json.loads((d / "training_report.json").read_text()) for d in (ref_out, cut_out))
    strip = ("time_s",)
    ha = [{k: v for k, v in r.items() if k not in strip} for r in ra["history"]]
    hb = [{k: v for k, v in r.items() if k not in strip} for r in rb["history"]]
    assert ha == hb and len(ha) == 3


def test_resume_refuses_changed_settings(tmp_path):
    from xrayscreen.errors import ConfigError
    from xrayscreen.training import TrainConfig, iter_train

    bags = make_bags(tmp_path / "normal", n=4, seed=3)
    cfg = TrainConfig(
        window=32,
        stride=16,
        ngf=8,
        ndf=8,
        nz=8,
        batch_size=16,
        longer_side=96,
        epochs=2,
        device="cpu",
        threads=1,
        val_fraction=0.25,
    )
    work = tmp_path / "work"
    gen = iter_train(cfg, [bags], tmp_path / "m", work_dir=work)
    for ev in gen:  # stop after epoch 1's checkpoint, like a crash
        if ev.phase == "validate" and ev.message:
            break
    gen.close()
    assert (work / LATEST).exists() and not (tmp_path / "m").exists()
    with pytest.raises(ConfigError, match="settings differ"):
        list(iter_train(cfg.replace(lr=1e-3), [bags], tmp_path / "m", work_dir=work, resume=True))
    res = [e for e in iter_train(cfg, [bags], tmp_path / "m", work_dir=work, resume=True)]
    assert res[-1].result.history[0]["epoch"] == 1 and len(res[-1].result.history) == 2
    # Only epoch 2 was trained in the resumed session.
    assert {e.epoch for e in res if e.phase == "train"} == {2}
