"""The feature-memory score (``feature_knn``): the bank itself, its storage in a bundle,
and that the engine (hooked, fused or not, compiled) and the evaluation scorer all give
the same score as computing it by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_testkit import memory_bundle
from torch import nn

from xrayscreen.errors import BundleError, ConfigError
from xrayscreen.imaging.representation import WorkingScale
from xrayscreen.inference import score_kinds
from xrayscreen.inference.engine import ScoringEngine
from xrayscreen.model.bundle import InputSpec, ModelBundle, ScoreSpec, load_bundle
from xrayscreen.model.feature_bank import FeatureBank, encoder_map, pool, tap_index
from xrayscreen.model.ganomaly import GANomalyConfig, build_generator

CFG = GANomalyConfig(isize=64, ngf=8, ndf=8, nz=16)


def test_knn_score_by_hand():
    rng = torch.Generator().manual_seed(0)
    maps = torch.randn(50, 3, 2, 2, generator=rng)
    emb = torch.cat([maps.mean((2, 3)), maps.amax((2, 3))], 1)
    torch.testing.assert_close(pool(maps), emb)
    bank = FeatureBank.fit(pool(maps), level=1, k=3, max_size=100)
    # Standardisation uses the memory's own statistics.
    torch.testing.assert_close(bank.mean, emb.mean(0))
    torch.testing.assert_close(bank.std, emb.std(0))
    q = torch.randn(4, 3, 2, 2, generator=rng)
    qe = (pool(q) - emb.mean(0)) / emb.std(0)
    me = (emb - emb.mean(0)) / emb.std(0)
    expect = [sorted(float(((a - b) ** 2).sum().sqrt()) for b in me)[:3] for a in qe]
    expect = torch.tensor([sum(v) / 3 for v in expect])
    torch.testing.assert_close(bank.score(q), expect, rtol=1e-5, atol=1e-5)


def test_a_normal_window_scores_lower_than_an_unlike_one():
    rng = torch.Generator().manual_seed(1)
    maps = torch.randn(400, 4, 3, 3, generator=rng)
    bank = FeatureBank.fit(pool(maps), level=1, k=1)
    s = bank.score(torch.cat([maps[:1], maps[1:2] + 8.0]))
    assert s[0] < 1e-3 and s[1] > 5.0


def test_fit_subsamples_and_refuses_too_few():
    bank = FeatureBank.fit(torch.randn(1000, 6), level=2, k=3, max_size=100, seed=1)
    assert bank.memory.shape == (100, 6)
    with pytest.raises(ConfigError, match="at least"):
        FeatureBank.fit(torch.randn(2, 6), level=2, k=5)


def test_tap_index_plain_and_levels():
    g = build_generator(CFG).eval()
    body = g.encoder1.body
    i1, i2 = tap_index(body, 1), tap_index(body, 2)
    assert isinstance(body[i1], nn.LeakyReLU) and i2 > i1
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert encoder_map(body, x, 1).shape == (2, CFG.ngf, 32, 32)
        assert encoder_map(body, x, 2).shape == (2, CFG.ngf * 2, 16, 16)
    with pytest.raises(ConfigError, match="levels"):
        tap_index(body, 9)


def _bank_bundle(tmp_path, level: int = 2) -> ModelBundle:
    return memory_bundle(tmp_path / "fk", CFG, level=level)


def _by_hand(bundle: ModelBundle, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        fmap = encoder_map(bundle.generator.encoder1.body, x, bundle.feature_bank.level)
    return bundle.feature_bank.score(fmap)


def test_bundle_roundtrip_keeps_the_bank(tmp_path):
    b = _bank_bundle(tmp_path)
    assert b.score.kind == "feature_knn" and b.feature_bank is not None
    assert b.feature_bank.memory.shape == (300, 4 * CFG.ngf)
    assert b.feature_bank.level == 2 and b.feature_bank.k == 3


def test_bundle_without_its_bank_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    b = _bank_bundle(tmp_path)
    w = b.path / "weights.safetensors"
    t = {k: v for k, v in load_file(str(w)).items() if not k.startswith("bank.")}
    save_file(t, str(w), metadata={"format": "xrayscreen-model"})
    with pytest.raises(BundleError, match="feature_knn"):
        load_bundle(b.path)


@pytest.mark.parametrize(
    "kw",
    [
        {"autocast": "off"},  # hook on the oneDNN-fused module
        {"autocast": "off", "fuse_act": False},  # hook on the plain module
        {"autocast": "off", "compile": True},  # no hook: recomputed
    ],
    ids=["fused", "plain", "compiled"],
)
def test_engine_feature_score_equals_by_hand(tmp_path, kw):
    b = _bank_bundle(tmp_path)
    x = (torch.rand(37, 3, 64, 64) * 2 - 1).contiguous(memory_format=torch.channels_last)
    eng = ScoringEngine(b, "cpu", batch=16, **kw)
    got = eng.score_windows(x, residual=False).latent
    torch.testing.assert_close(got, _by_hand(b, x), rtol=1e-4, atol=1e-4)
    # Nothing left over between forwards.
    assert eng._tap == []


def test_engine_scan_and_evaluation_scorer_agree(tmp_path):
    import cv2

    from xrayscreen.evaluation.dataset import ProtocolSettings, prepare_scan
    from xrayscreen.evaluation.scorers import ModelScorer

    b = _bank_bundle(tmp_path)
    b.input = InputSpec(scale=WorkingScale(longer_side=192))
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 200, (128, 192, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "bag.png"), rgb[:, :, ::-1])
    settings = ProtocolSettings(longer_side=192, window=64, stride=32)
    prepared = prepare_scan(tmp_path / "bag.png", "benign", None, ("gun",), settings)
    ev = ModelScorer(b, ["feature_knn", "latent"], protocol_longer_side=192, batch=7)
    ev._autocast = False  # compare at fp32 with the fp32 engine below
    got = ev.score(prepared)["feature_knn"].window
    res = ScoringEngine(b, "cpu", autocast="off").score_scan_sync(prepared.scan, stride=32)
    np.testing.assert_allclose(got, res.window_scores, rtol=1e-4, atol=1e-4)
    assert np.isfinite(got).all() and got.max() > 0


def test_feature_kind_without_context_is_a_clear_error():
    spec = ScoreSpec(kind="feature_knn")
    x = torch.zeros(1, 3, 64, 64)
    g = build_generator(CFG).eval()
    with torch.no_grad():
        out = g(x)
    with pytest.raises(ConfigError, match="feature bank"):
        score_kinds.compute(spec, x, out)


def test_unet_generator_with_a_feature_kind_is_a_clear_error():
    from xrayscreen.model.variants import build_generator as build_variant
    from xrayscreen.training.config import TrainConfig

    cfg = GANomalyConfig(isize=64, ngf=8, ndf=8, nz=16, extras={"generator": "unet"})
    bank = FeatureBank.fit(torch.randn(50, 32), level=2, k=3)
    b = ModelBundle(
        config=cfg,
        generator=build_variant(cfg).eval(),
        input=InputSpec(scale=WorkingScale()),
        score=ScoreSpec(kind="feature_knn", params=bank.params()),
        feature_bank=bank,
    )
    for compile_ in (False, True):
        with pytest.raises(ConfigError, match="G_E body"):
            ScoringEngine(b, "cpu", autocast="off", compile=compile_)
    with pytest.raises(ConfigError, match="DCGAN generator"):
        TrainConfig.xray(score_kind="feature_knn_residual", research={"generator": "unet"})


def test_training_refuses_a_feature_level_the_window_does_not_have():
    from xrayscreen.training.config import TrainConfig

    knn = TrainConfig.xray(score_kind="feature_knn_residual", window=16)
    assert knn.bank_level == 2  # 16 px: levels 1-2 exist
    knn.replace(window=64, bank_level=4)
    for changes in ({"window": 8, "stride": 8}, {"window": 64, "bank_level": 5}):
        with pytest.raises(ConfigError, match="activation levels"):
            knn.replace(**changes)


@pytest.mark.parametrize(
    "kind, extra, second, weight",
    [
        ("feature_knn_residual", {"res_weight": 2.0}, lambda d: d.abs(), 2.0),
        ("feature_knn_excess", {"sign": 1.0}, lambda d: d.clamp_min(0), 1.0),
    ],
)
def test_memory_plus_kinds_by_hand(tmp_path, kind, extra, second, weight):
    b = _bank_bundle(tmp_path)
    b.score = ScoreSpec(
        kind=kind,
        params={**b.feature_bank.params(), "knn_scale": 0.5, "res_scale": 0.25, **extra},
    )
    x = (torch.rand(20, 3, 64, 64) * 2 - 1).contiguous(memory_format=torch.channels_last)
    got = ScoringEngine(b, "cpu", autocast="off", batch=8).score_windows(x, residual=False)
    with torch.no_grad():
        x_hat = b.generator(x).x_hat
    part = second(x - x_hat).flatten(1).mean(1)
    expect = _by_hand(b, x) / 0.5 + weight * part / 0.25
    torch.testing.assert_close(got.latent, expect, rtol=1e-4, atol=1e-4)
