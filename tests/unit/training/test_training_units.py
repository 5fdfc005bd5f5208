"""Config round-trip, checkpoint atomicity / optimiser flattening, calibration on known scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from xrayscreen.errors import ConfigError
from xrayscreen.model.bundle import InputSpec, ModelBundle
from xrayscreen.model.ganomaly import build_generator
from xrayscreen.training import calibrate as calmod
from xrayscreen.training import checkpoint as ck
from xrayscreen.training.config import TrainConfig
from xrayscreen.training.data import WindowSet
from xrayscreen.training.loop import GanomalyTrainer


def test_config_json_roundtrip_and_validation(tmp_path):
    cfg = TrainConfig(epochs=3, ngf=32, betas=(0.4, 0.9), research={"variant": "x"})
    again = TrainConfig.from_json(cfg.to_json())
    assert again == cfg and again.betas == (0.4, 0.9)
    p = tmp_path / "c.json"
    p.write_text(cfg.to_json())
    assert TrainConfig.from_json(p) == cfg
    assert cfg.lr == 2e-4 and cfg.w_con == 50.0 and cfg.enc_norm == "l2"
    with pytest.raises(ConfigError, match="unknown"):
        TrainConfig.from_dict({**cfg.to_dict(), "epoch": 3})
    for bad in (
        {"window": 48},
        {"stride": 0},
        {"ngf": 7},
        {"val_fraction": 1.0},
        {"keep": "best_test"},
        {"representation": "xyz"},
    ):
        with pytest.raises(ConfigError):
            TrainConfig(**bad)


def _trainer(seed=0) -> GanomalyTrainer:
    cfg = TrainConfig(window=16, ngf=8, ndf=8, nz=4, seed=seed, device="cpu", batch_size=4)
    return GanomalyTrainer(cfg, torch.device("cpu"))


def test_optimizer_state_roundtrip_is_exact():
    a = _trainer()
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    for step in range(2):
        a.train_step(x, 0, step)
    tensors, meta = a.state_tensors()
    json.dumps(meta)  # JSON-able: no pickle needed
    b = _trainer(seed=99)  # different init, overwritten by the load
    b.load_state(tensors, meta)
    a.train_step(x, 0, 2)
    b.train_step(x, 0, 2)
    for (k, va), vb in zip(a.netg.state_dict().items(), b.netg.state_dict().values()):
        assert torch.equal(va, vb), k


def test_checkpoint_atomic_pointer(tmp_path, monkeypatch):
    t = {"w": torch.arange(4.0)}
    ck.save_checkpoint(tmp_path, 1, t, {"epochs_done": 1})
    ck.save_checkpoint(tmp_path, 2, {"w": torch.arange(4.0) + 1}, {"epochs_done": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0002", "latest.json"]
    # A crash while writing epoch 3 leaves epoch 2 loadable and no debris.
    monkeypatch.setattr(ck, "save_file", lambda *a, **k: (_ for _ in ()).throw(OSError("full")))
    with pytest.raises(OSError):
        ck.save_checkpoint(tmp_path, 3, t, {"epochs_done": 3})
    got = ck.load_latest(tmp_path)
    assert got.state["epochs_done"] == 2 and torch.equal(got.tensors["w"], torch.arange(4.0) + 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0002", "latest.json"]
    assert ck.load_latest(tmp_path / "none") is None


def test_calibration_quantiles_on_known_scores(monkeypatch):
    # 3 scans with known raw scores 0..999 / 1000 split across them.
    scores = np.arange(1000, dtype=np.float32) / 1000.0
    scan_of = np.repeat([0, 1, 2], [300, 300, 400])
    ws = WindowSet(
        data=torch.zeros(1000, 3, 16, 16, dtype=torch.uint8),
        scan_index=torch.from_numpy(scan_of),
        scan_ids=["a" * 64, "b" * 64, "c" * 64],
    )
    monkeypatch.setattr(calmod, "score_windows", lambda *a, **k: scores)
    cfg = TrainConfig(window=16, ngf=8, ndf=8, nz=4)
    bundle = ModelBundle(
        config=cfg.model_config(),
        generator=build_generator(cfg.model_config()),
        input=InputSpec(window=16),
    )
    cal, raw = calmod.calibrate_bundle(bundle, ws, 0.01, torch.device("cpu"))
    assert np.array_equal(raw, scores)
    assert cal.n_windows == 1000 and cal.default_threshold == pytest.approx(2.0)
    lv = np.asarray(cal.levels)
    for q in (0.5, 0.9, 0.99):
        i = int(np.argmin(abs(lv - q)))
        assert cal.values[i] == pytest.approx(np.quantile(scores, q), abs=1e-6)
    # Raw threshold for 1 % window FAR sits at the 99th percentile of normal scores.
    assert cal.raw_threshold(2.0) == pytest.approx(0.98901, abs=2e-3)
    assert float(np.mean(scores >= cal.raw_threshold(2.0))) == pytest.approx(0.01, abs=2e-3)
    # Per-scan peaks: the last scan holds the top score; the first scan's peak is 0.299.
    assert len(cal.bag_maxima) == 3
    assert cal.bag_maxima[2] == max(cal.bag_maxima)
    assert cal.bag_maxima[0] == pytest.approx(float(cal.calibrate(np.array([0.299]))[0]))
    with pytest.raises(ConfigError):
        calmod.calibrate_bundle(bundle, ws.subset_scans([]), 0.01, torch.device("cpu"))


def test_engine_and_direct_scores_agree():
    """Calibration scores through the scoring engine equal eval-mode latent scores
    (up to the engine's bf16 / folded-BN rounding)."""
    cfg = TrainConfig(window=16, ngf=8, ndf=8, nz=4)
    torch.manual_seed(0)
    gen = build_generator(cfg.model_config()).eval()
    bundle = ModelBundle(config=cfg.model_config(), generator=gen, input=InputSpec(window=16))
    data = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8)
    ws = WindowSet(data, torch.zeros(40, dtype=torch.int64), ["a" * 64])
    got = calmod.score_windows(bundle, ws, torch.device("cpu"))
    from xrayscreen.model.score import score_windows as direct

    ref = direct(gen, data.float() / 255 * 2 - 1).numpy()
    assert got.shape == (40,)
    assert np.corrcoef(got, ref)[0, 1] > 0.99


def test_device_resident_batches_train_exactly_as_the_host_loader(monkeypatch):
    """``iter_fit`` with the window cache resident on the device (the GPU path, forced here
    on the CPU) runs the same batches, renderings and steps as with the host loader: the
    trained weights are bit-identical. Catches a wrong epoch seed or jitter in the wiring."""
    from xrayscreen.training import loop

    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (48, 3, 16, 16), dtype=torch.uint8, generator=g)
    ws = WindowSet(data, torch.zeros(48, dtype=torch.int64), ["a" * 64])
    empty = WindowSet(data[:0], torch.zeros(0, dtype=torch.int64), [])
    cfg = TrainConfig(
        window=16, ngf=8, ndf=8, nz=4, seed=2, device="cpu", batch_size=8, epochs=2,
        jitter_gamma=1.25, jitter_hue=20.0, threads=1,
    )  # fmt: skip

    def weights() -> dict[str, torch.Tensor]:
        out = loop.fit(cfg, ws, empty)
        return {k: v.clone() for k, v in out.generator.state_dict().items()}

    host = weights()
    used = []

    def resident(data, device, free_bytes=None):
        used.append(device.type)
        return data  # "uploaded": the CPU tensor itself

    monkeypatch.setattr(loop, "resident_windows", resident)
    here = weights()
    assert used == ["cpu"]
    assert all(torch.equal(host[k], here[k]) for k in host)


def test_xray_default_is_the_measured_recipe():
    """The X-ray default trains what every SIXray figure of docs/BENCHMARKS.md was measured
    with (ngf = ndf = 32, 5 epochs, non-overlapping 64 px windows); the paper preset keeps
    the paper's size, length and overlap."""
    import argparse

    from xrayscreen.training.cli import add_arguments, config_from_args

    x, paper = TrainConfig.xray(), TrainConfig()
    assert (x.ngf, x.ndf, x.epochs, x.window, x.stride) == (32, 32, 5, 64, 64)
    assert (paper.ngf, paper.ndf, paper.epochs, paper.stride) == (64, 64, 25, 32)
    assert TrainConfig.xray(window=32).stride == 32  # still no overlap at another window
    assert TrainConfig.xray(window=32, stride=8).stride == 8
    parser = argparse.ArgumentParser()
    add_arguments(parser)

    def cli(*extra: str) -> TrainConfig:
        return config_from_args(parser.parse_args(["bags", "--out", "m", *extra]))

    assert x.bf16 is None and paper.bf16 is False  # auto: bf16 where the device has the units
    assert cli("--bf16").bf16 is True and cli("--fp32").bf16 is False
    with pytest.raises(SystemExit):
        cli("--bf16", "--fp32")
    with pytest.raises(ConfigError, match="bf16"):
        TrainConfig(bf16="yes")
    assert cli("--window", "32").stride == 32
    assert cli("--window", "32", "--preset", "paper").stride == 16
    assert cli().to_dict() == x.to_dict()


def test_bf16_auto_follows_the_device(monkeypatch):
    """``bf16=None`` trains in bf16 only where the device has bf16 units; an explicit
    setting wins; the outcome records what ran."""
    from xrayscreen.inference import engine
    from xrayscreen.training import loop

    cpu = torch.device("cpu")
    for has in (True, False):
        monkeypatch.setattr(engine, "cpu_has_bf16", lambda has=has: has)
        assert loop.resolve_bf16(None, cpu) is has
        assert loop.resolve_bf16(True, cpu) is True and loop.resolve_bf16(False, cpu) is False
    assert loop.resolve_bf16(None, torch.device("meta")) is False
    monkeypatch.setattr(engine, "cpu_has_bf16", lambda: False)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8, generator=g)
    ws = WindowSet(data, torch.zeros(16, dtype=torch.int64), ["a" * 64])
    empty = WindowSet(data[:0], torch.zeros(0, dtype=torch.int64), [])
    cfg = TrainConfig(window=16, ngf=8, ndf=8, nz=4, device="cpu", batch_size=8, epochs=1,
                      threads=1, bf16=None)  # fmt: skip
    assert loop.fit(cfg, ws, empty).precision == "fp32"
    assert loop.fit(cfg.replace(bf16=True), ws, empty).precision == "bf16"
