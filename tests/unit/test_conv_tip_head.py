"""The convolutional projected-threat head (issue 7, twelfth session): storage, scoring
through the engine, fitting, folding and the settings that refuse it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from model_testkit import memory_bundle
from test_tip_head import _scan, _scored_windows
from torch import nn

from xrayscreen.errors import BundleError, ConfigError
from xrayscreen.imaging.simulator import simulate_bag
from xrayscreen.inference import tip_evidence
from xrayscreen.inference.engine import ScoringEngine
from xrayscreen.model import tip_head as tip_head_model
from xrayscreen.model.bundle import META, load_bundle, save_bundle
from xrayscreen.model.ganomaly import GANomalyConfig
from xrayscreen.model.tip_head import CONV_PREFIX, ConvTipHead, TipHead
from xrayscreen.training import tip_head as fit
from xrayscreen.training.config import TrainConfig

CFG = GANomalyConfig(isize=64, ngf=8, ndf=8, nz=16)


def _conv_nets(channels: int, hidden: int = 5, kernel: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    return [
        nn.Sequential(
            nn.Conv2d(channels, hidden, kernel), nn.ReLU(), nn.Conv2d(hidden, 1, 1)
        ).eval()
        for _ in range(2)
    ]


def _conv_bundle(path, side=4):
    """A tiny memory bundle with a random convolutional head on its encoder map pooled
    to ``side`` x ``side``."""
    b = memory_bundle(
        path / "plain", CFG, kind="feature_knn", params={"scan_norm": "robust_z", "zoom": 2.0}
    )
    channels = b.feature_bank.memory.shape[1] // 2
    b.tip_head = ConvTipHead.from_modules(_conv_nets(channels))
    b.score.params = {**b.score.params, "tip_weight": 1.0, "tip_conv": side}
    save_bundle(b, path / "conv")
    return load_bundle(path / "conv")


def test_logits_are_the_log_sum_exp_of_each_views_detector_over_positions():
    nets = _conv_nets(6)
    head = ConvTipHead.from_modules(nets)
    assert (head.views, head.dim, head.kernel) == (2, 6, 3)
    x = torch.randn(4, 6, 5, 5)
    with torch.no_grad():
        for v, net in enumerate(nets):
            pos = net(x).flatten(1)  # (4, 9): 3 x 3 positions, no padding
            assert pos.shape[1] == 9
            want = torch.logsumexp(pos, dim=1) - math.log(9)
            torch.testing.assert_close(head.logits(x)[:, v], want, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(head.position_logits(x)[v].flatten(1), pos)
    # A map where one position alone is strongly anomalous: the window logit follows it.
    assert ConvTipHead(
        torch.zeros(1, 1, 1, 1, 1), torch.zeros(1, 1), torch.ones(1, 1), torch.zeros(1)
    ).logits(torch.zeros(1, 1, 3, 3)).item() == pytest.approx(0.0)
    with pytest.raises(ConfigError, match="convolutional"):
        ConvTipHead.from_modules([nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))])


def test_an_averaged_conv_head_averages_the_position_logits():
    a = ConvTipHead.from_modules(_conv_nets(6, seed=1))
    b = ConvTipHead.from_modules(_conv_nets(6, seed=2))
    avg = ConvTipHead.average([a, b])
    x = torch.randn(3, 6, 6, 6)
    torch.testing.assert_close(
        avg.position_logits(x), (a.position_logits(x) + b.position_logits(x)) / 2
    )
    with pytest.raises(ConfigError, match="same views"):
        ConvTipHead.average([a, ConvTipHead.from_modules(_conv_nets(6, kernel=1))])


def test_conv_tensors_round_trip_and_bad_ones_are_refused():
    head = ConvTipHead.from_modules(_conv_nets(6))
    t = head.tensors()
    assert all(k.startswith(CONV_PREFIX) for k in t)
    assert ConvTipHead.present(t) and not TipHead.present(t)
    back = ConvTipHead.from_tensors(t, channels=6, side=4)
    x = torch.randn(2, 6, 4, 4)
    torch.testing.assert_close(back.logits(x), head.logits(x))
    with pytest.raises(ConfigError, match="do not fit"):
        ConvTipHead.from_tensors(t, channels=7, side=4)
    with pytest.raises(ConfigError, match="do not fit"):
        ConvTipHead.from_tensors(t, channels=6, side=2)  # the kernel would not fit
    bad = dict(t)
    bad[f"{CONV_PREFIX}b1"] = torch.full_like(t[f"{CONV_PREFIX}b1"], float("nan"))
    with pytest.raises(ConfigError, match="NaN"):
        ConvTipHead.from_tensors(bad, channels=6, side=4)
    del bad[f"{CONV_PREFIX}w2"]
    with pytest.raises(ConfigError, match="missing"):
        ConvTipHead.from_tensors(bad, channels=6, side=4)
    half = head.as_stored(True)
    torch.testing.assert_close(half.w1, head.w1.half().float())


def test_head_input_for_a_conv_head_is_the_max_pooled_map():
    emb = torch.randn(2, 8)
    fmap = torch.randn(2, 4, 8, 8)
    x = tip_head_model.head_input(emb, fmap, 0, conv=4)
    assert x.shape == (2, 4, 4, 4)
    torch.testing.assert_close(x[:, :, 1, 2], fmap[:, :, 2:4, 4:6].amax(dim=(2, 3)))


def test_engine_feeds_a_conv_head_the_same_input_as_training(tmp_path):
    b = _conv_bundle(tmp_path)
    scan = _scan(5)
    eng = ScoringEngine(b, "cpu", autocast="off", batch=23)
    r = eng.score_scan_sync(scan, stride=16)
    fg = ~r.background
    assert r.raw_head is not None and r.raw_head_zoom is not None
    windows, _, _ = _scored_windows(b, scan, r)
    inp = eng.embed_windows(windows, conv=4)
    assert inp.shape[1:] == (b.tip_head.dim, 4, 4)
    np.testing.assert_allclose(
        r.raw_head[fg], b.tip_head.logits(inp)[:, 0].numpy(), rtol=1e-4, atol=1e-4
    )
    assert eng.embed_windows(windows[:0], conv=4).shape == (0, b.tip_head.dim, 4, 4)
    # The settings a conv head's model.json must satisfy, refused when loading.
    meta = json.loads((tmp_path / "conv" / META).read_text())
    meta["score"]["params"]["tip_conv"] = 2  # pooled smaller than the 3 x 3 kernel
    (tmp_path / "conv" / META).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="do not fit"):
        load_bundle(tmp_path / "conv")
    meta["score"]["params"]["tip_conv"] = 4
    meta["score"]["params"]["tip_cells"] = 2
    (tmp_path / "conv" / META).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="two kinds of head"):
        load_bundle(tmp_path / "conv")
    meta["score"]["params"].pop("tip_cells")
    meta["score"]["params"]["tip_conv"] = 0  # an MLP head asked for, a conv head stored
    (tmp_path / "conv" / META).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="no head weights"):
        load_bundle(tmp_path / "conv")
    meta["score"]["params"]["tip_conv"] = 2.5
    (tmp_path / "conv" / META).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="tip_conv"):
        load_bundle(tmp_path / "conv")


def test_folded_conv_standardisation_is_the_same_net_on_raw_maps():
    torch.manual_seed(0)
    net = fit.ConvNet(5, hidden=4).eval()
    mean, std = torch.randn(5), torch.rand(5) + 0.5
    x = torch.randn(7, 5, 6, 6)
    with torch.no_grad():
        folded = fit.fold_conv_standardisation(net, mean, std)
        torch.testing.assert_close(
            folded(x), net.body((x - mean[:, None, None]) / std[:, None, None])
        )
        head = ConvTipHead.from_modules([folded, folded])
        torch.testing.assert_close(
            head.logits(x)[:, 0], net((x - mean[:, None, None]) / std[:, None, None])[:, 0]
        )


def test_standardise_maps_per_channel():
    rows = fit.TipRows(
        [torch.randn(50, 3, 4, 4).half() * 3 + 2, torch.randn(50, 3, 4, 4).half()],
        torch.zeros(50),
        torch.zeros(50),
        1,
        1,
    )
    raw = rows.x[0].float().clone()
    rows.standardise()
    m, sd = rows.scale[0]
    assert m.shape == (3,) and sd.shape == (3,)
    torch.testing.assert_close(m, raw.mean(dim=(0, 2, 3)))
    z = rows.x[0].float()
    assert (
        z.mean(dim=(0, 2, 3)).abs().max() < 0.02 and (z.std(dim=(0, 2, 3)) - 1).abs().max() < 0.02
    )


def test_fit_a_conv_head_on_simulated_bags(tmp_path, monkeypatch):
    monkeypatch.setattr(fit, "CONV_EPOCHS", 4)
    b = memory_bundle(
        tmp_path / "m", CFG, kind="feature_knn", params={"scan_norm": "robust_z", "zoom": 2.0}
    )
    scans = [simulate_bag(i, size=(200, 260)).scan for i in range(10)]
    # Three threats a bag: with two, a draw's two held-out tiny bags can hold no threat window.
    head, info = fit.fit_tip_head(b, scans, torch.device("cpu"), per_bag=3, seed=0, conv=8, draws=2)
    assert isinstance(head, ConvTipHead)
    assert info["conv"] == 8 and info["draws"] == 2
    assert head.dim == b.feature_bank.memory.shape[1] // 2
    assert head.w1.shape[1] == 2 * fit.CONV_HIDDEN  # two draws side by side
    # A random-weight encoder and two bags held out: above chance for every view.
    for draw in info["heldout_auc_draws"]:
        for v in ("window", "zoomed"):
            assert draw[v] is not None and draw[v] > 0.7
    with pytest.raises(ConfigError, match="convolutional head"):
        fit.fit_tip_head(b, scans, torch.device("cpu"), conv=8, cells=4)


def test_config_refuses_a_conv_head_beside_a_grid():
    assert TrainConfig.xray().tip_conv == 0
    assert TrainConfig.xray(tip_cells=0, tip_conv=8).tip_conv == 8
    with pytest.raises(ConfigError, match="excludes tip_cells"):
        TrainConfig.xray(tip_conv=8)  # the X-ray default grid is still set
    with pytest.raises(ConfigError, match="tip_conv must be"):
        TrainConfig.xray(tip_cells=0, tip_conv=17)
    spec = type("S", (), {"params": {"tip_conv": 8, "tip_cells": 4}})()
    with pytest.raises(ConfigError, match="two kinds"):
        tip_evidence.conv_of(spec)
