"""The CUDA path, on a real GPU: the shipped model scores alike on the GPU and the CPU, the
scan goes up once and the windows never leave the device, and a model trained on the GPU
loads and scores on a CPU.

Every test here skips on a machine without CUDA (the CI machine has none); they run on the
lent GPU machine through ``benchmarks/gpu_check.sh`` (figures in docs/BENCHMARKS.md).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from xrayscreen.imaging.simulator import simulate_bag
from xrayscreen.inference.engine import ScoringEngine
from xrayscreen.model.bundle import load_bundle

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA GPU (none here); benchmarks/gpu_check.sh runs these on one",
    ),
]

DEFAULT = Path(str(resources.files("xrayscreen.resources") / "default_model"))
STRIDE = 16


@pytest.fixture
def exact_fp32():
    """fp32 really fp32 on the GPU (no TF32 convolutions or matmuls) for the parity test."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _agreement(a, b, threshold: float) -> dict[str, float]:
    fg = ~a.background
    sa, sb = a.window_calibrated[fg], b.window_calibrated[fg]
    return {
        "windows": int(fg.sum()),
        "corr": float(np.corrcoef(sa, sb)[0, 1]),
        "max_abs_diff": float(np.abs(sa - sb).max()),
        "alarm_agreement": float(np.mean((sa >= threshold) == (sb >= threshold))),
        "map_corr": float(np.corrcoef(a.latent_map.ravel(), b.latent_map.ravel())[0, 1]),
    }


def test_shipped_model_scores_alike_on_cuda_and_cpu(exact_fp32):
    """The shipped bundle (feature memory, zoomed view, density, projected-threat head)
    gives the same window scores, alarms and heat map on the GPU as on the CPU: exactly
    up to rounding in fp32, and closely in the GPU's default bf16."""
    bundle = load_bundle(DEFAULT)
    scan = simulate_bag(7, threats=("gun", "knife")).scan
    cpu = ScoringEngine(bundle, "cpu", autocast="off").score_scan_sync(scan, stride=STRIDE)
    gpu32 = ScoringEngine(bundle, "cuda", autocast="off").score_scan_sync(scan, stride=STRIDE)
    gpu16 = ScoringEngine(bundle, "cuda").score_scan_sync(scan, stride=STRIDE)
    assert gpu32.device.startswith("cuda") and cpu.device == "cpu"
    assert np.array_equal(cpu.background, gpu32.background)
    thr = bundle.calibration.default_threshold
    fp32 = _agreement(cpu, gpu32, thr)
    bf16 = _agreement(cpu, gpu16, thr)
    print(json.dumps({"cuda_fp32_vs_cpu_fp32": fp32, "cuda_bf16_vs_cpu_fp32": bf16}))
    assert fp32["corr"] > 0.999 and fp32["alarm_agreement"] > 0.99, fp32
    assert fp32["map_corr"] > 0.999, fp32
    assert bf16["corr"] > 0.99 and bf16["alarm_agreement"] > 0.97, bf16
    assert bf16["map_corr"] > 0.99, bf16


def test_scan_goes_up_once_and_windows_stay_on_the_device(monkeypatch):
    """Host<->device traffic of one scan is a few bytes per pixel, far below what cutting
    the windows on the host would move (64*64*3*4 bytes per window = 192 bytes per pixel
    at stride 16): the windows, the model and the maps stay on the GPU."""
    bundle = load_bundle(DEFAULT)
    engine = ScoringEngine(bundle, "cuda")
    engine.warmup()
    scan = simulate_bag(3, size=(600, 800)).scan
    moved = {"up": 0, "down": 0, "up_calls": 0}
    orig_to, orig_cpu = torch.Tensor.to, torch.Tensor.cpu

    def count(src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if src.device.type == "cpu" and out.device.type == "cuda":
            moved["up"] += src.nbytes
            moved["up_calls"] += 1
        elif src.device.type == "cuda" and out.device.type == "cpu":
            moved["down"] += out.nbytes
        return out

    monkeypatch.setattr(
        torch.Tensor, "to", lambda self, *a, **k: count(self, orig_to(self, *a, **k))
    )
    monkeypatch.setattr(
        torch.Tensor, "cpu", lambda self, *a, **k: count(self, orig_cpu(self, *a, **k))
    )
    res = engine.score_scan_sync(scan, stride=STRIDE)
    monkeypatch.undo()
    pixels = res.latent_map.size  # working-scale pixels (this bundle works at 800 px)
    per_px = {k: moved[k] / pixels for k in ("up", "down")}
    print(json.dumps({"bytes_per_working_pixel": per_px, "uploads": moved["up_calls"]}))
    # The counter sees the scan itself go up (uint8 RGB at least), so it is not vacuous.
    assert moved["up"] >= 3 * pixels, moved
    # uint8 RGB (3 B/px) and its zoomed-out view (0.75): the input is made on the device.
    assert per_px["up"] < 5, per_px
    assert per_px["down"] < 40, per_px


def _write_bags(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rgb = simulate_bag(500 + i, size=(240, 320)).scan.rgb
        cv2.imwrite(str(folder / f"bag{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return folder


def test_model_trained_on_cuda_loads_and_scores_on_cpu(tmp_path, capsys):
    """``xrayscreen train --device cuda`` (X-ray configuration, bf16, with the head):
    the bundle says where it was trained, loads on a CPU and scores a scan there."""
    from xrayscreen.cli import main

    bags = _write_bags(tmp_path / "normal", 6)
    out = tmp_path / "model"
    args = [
        "train", str(bags), "--out", str(out), "--epochs", "2", "--window", "32",
        "--stride", "16", "--ngf", "8", "--ndf", "8", "--nz", "8", "--batch-size", "16",
        "--longer-side", "256", "--val-fraction", "0.34", "--device", "cuda", "--bf16",
        "--tip-per-bag", "2", "--quiet",
    ]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    report = json.loads((out / "training_report.json").read_text())
    assert report["config"]["device"] == "cuda" and report["config"]["bf16"] is True
    b = load_bundle(out)
    assert all(torch.isfinite(p).all() for p in b.generator.parameters())
    assert all(p.device.type == "cpu" for p in b.generator.parameters())
    scan = simulate_bag(900, size=(240, 320), threats=("knife",)).scan
    res = ScoringEngine(b, "cpu").score_scan_sync(scan, stride=16)
    assert res.device == "cpu" and np.isfinite(res.latent_map).all()
    assert b.tip_head is not None


def test_training_batches_made_on_the_gpu_match_the_host_loader():
    """The training window cache goes up once and batches are made on the GPU: the same
    windows, turns and renderings as the host loader's, up to float rounding."""
    from xrayscreen.training.data import (
        RenderJitter,
        device_batches,
        epoch_batches,
        make_loader,
        resident_windows,
    )

    g = torch.Generator().manual_seed(1)
    data = torch.randint(0, 256, (256, 3, 64, 64), dtype=torch.uint8, generator=g)
    batches, codes = epoch_batches(256, 64, seed=5, epoch=1, augment_on=True)
    jitter = RenderJitter(1.25, 20.0, "rgb", 5)
    up = resident_windows(data, torch.device("cuda"))
    assert up is not None and up.is_cuda
    host = list(make_loader(data, batches, codes, jitter=jitter, epoch_seed=3))
    gpu = list(device_batches(up, batches, codes, jitter, epoch_seed=3))
    assert all(b.is_cuda for b in gpu)
    for a, b in zip(host, gpu, strict=True):
        assert torch.allclose(a, b.cpu(), atol=1e-5)
