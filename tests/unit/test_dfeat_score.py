"""The discriminator-feature part of a score (issue 7): GANomaly's L_adv layer on a window
and on its reconstruction, added to a memory-plus score in units of its spread."""

from __future__ import annotations

import json

import pytest
import torch
from model_testkit import memory_bundle

from xrayscreen.errors import BundleError, ConfigError
from xrayscreen.inference import score_kinds
from xrayscreen.inference.engine import ScoringEngine
from xrayscreen.model.bundle import (
    META,
    ModelBundle,
    ScoreSpec,
    load_bundle,
    save_bundle,
)
from xrayscreen.model.ganomaly import GANomalyConfig, build_discriminator
from xrayscreen.model.score import discriminator_feature_residual
from xrayscreen.training.config import TrainConfig

CFG = GANomalyConfig(isize=64, ngf=8, ndf=8, nz=16, spectral_norm_d=True)


def _bundle(tmp_path, dfeat_weight: float = 0.5) -> ModelBundle:
    params = {"knn_scale": 0.5, "res_scale": 0.25, "sign": 1.0}
    if dfeat_weight:
        params.update(dfeat_weight=dfeat_weight, dfeat_scale=0.2)
    # Loaded without with_discriminator: a score with a D part asks for it.
    return memory_bundle(
        tmp_path / "df", CFG, kind="feature_knn_excess", params=params, discriminator=True
    )


def test_residual_is_zero_for_a_perfect_reconstruction_and_grows_with_the_difference():
    torch.manual_seed(1)
    d = build_discriminator(CFG).eval()
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(discriminator_feature_residual(d.features, x, x), torch.zeros(4))
        near = discriminator_feature_residual(d.features, x, x + 0.01)
        far = discriminator_feature_residual(d.features, x, x + 0.5)
    assert (near > 0).all() and (far > near).all()


@pytest.mark.parametrize("kw", [{"autocast": "off"}, {"autocast": "off", "fuse_act": False}])
def test_engine_adds_the_weighted_part_exactly(tmp_path, kw):
    b = _bundle(tmp_path)
    assert b.discriminator is not None  # loaded because the score needs it
    x = (torch.rand(21, 3, 64, 64) * 2 - 1).contiguous(memory_format=torch.channels_last)
    got = ScoringEngine(b, "cpu", batch=8, **kw).score_windows(x, residual=False).latent
    base = ScoreSpec(kind=b.score.kind, params={**b.score.params, "dfeat_weight": 0.0})
    plain = ModelBundle(**{**b.__dict__, "score": base})
    without = ScoringEngine(plain, "cpu", batch=8, **kw).score_windows(x, residual=False).latent
    with torch.no_grad():
        x_hat = b.generator(x).x_hat
        d = discriminator_feature_residual(b.discriminator.features, x, x_hat)
    torch.testing.assert_close(got, without + 0.5 * d / 0.2, rtol=1e-4, atol=1e-3)


def test_missing_discriminator_is_a_clear_error(tmp_path):
    b = _bundle(tmp_path)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = b.generator(x)
    spec = ScoreSpec(kind="residual", params={"dfeat_weight": 0.5, "dfeat_scale": 1.0})
    with pytest.raises(ConfigError, match="discriminator-feature"):
        score_kinds.compute(spec, x, out, None)
    no_d = ModelBundle(**{**b.__dict__, "discriminator": None})
    with pytest.raises(ConfigError, match="without its discriminator"):
        ScoringEngine(no_d, "cpu")
    with pytest.raises(BundleError, match="discriminator"):
        save_bundle(no_d, tmp_path / "nod")


def test_a_file_whose_score_needs_d_but_lacks_it_is_refused(tmp_path):
    b = _bundle(tmp_path, dfeat_weight=0.0)
    meta = json.loads((b.path / META).read_text())
    meta["score"]["params"]["dfeat_weight"] = 0.5
    (b.path / META).write_text(json.dumps(meta))
    assert load_bundle(b.path).discriminator is not None  # D is in the file: fine
    plain = ModelBundle(**{**b.__dict__, "discriminator": None})
    save_bundle(plain, tmp_path / "noD")
    meta = json.loads((tmp_path / "noD" / META).read_text())
    meta["score"]["params"]["dfeat_weight"] = 0.5
    (tmp_path / "noD" / META).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="no discriminator weights"):
        load_bundle(tmp_path / "noD")


def test_config_accepts_the_weight_only_on_memory_plus_scores():
    cfg = TrainConfig.xray(ngf=8, ndf=8, nz=8, window=16, bank_level=1)
    assert cfg.replace(dfeat_weight=0.0).dfeat_weight == 0.0
    with pytest.raises(ConfigError, match=">= 0"):
        cfg.replace(dfeat_weight=-1.0)
    with pytest.raises(ConfigError, match="memory-plus"):
        cfg.replace(dfeat_weight=0.5, score_kind="residual_excess", tip_weight=0.0)


def test_training_fits_the_spread_and_keeps_the_parts_apart(tmp_path):
    import numpy as np

    from xrayscreen.training.calibrate import fit_component_scales, fit_dfeat_scale
    from xrayscreen.training.data import WindowSet

    b = _bundle(tmp_path)
    x = torch.rand(90, 3, 64, 64) * 2 - 1
    ws = WindowSet(x.to(torch.float16), torch.arange(3).repeat_interleave(30), ["a", "b", "c"])
    scale = fit_dfeat_scale(b, ws, torch.device("cpu"))
    with torch.no_grad():
        d = discriminator_feature_residual(b.discriminator.features, x, b.generator(x).x_hat)
    q1, q3 = np.percentile(d.numpy().astype(np.float64), [25, 75])
    assert scale == pytest.approx((q3 - q1) / 1.349, rel=1e-2)
    # The memory and residual spreads are those of the parts alone, with or without a
    # discriminator-feature part in the spec.
    with_d = fit_component_scales(b, ws, torch.device("cpu"))
    b.score = ScoreSpec(kind=b.score.kind, params={**b.score.params, "dfeat_weight": 0.0})
    without = fit_component_scales(b, ws, torch.device("cpu"))
    assert with_d == pytest.approx(without)
    no_d = ModelBundle(**{**b.__dict__, "discriminator": None})
    with pytest.raises(ConfigError, match="discriminator"):
        fit_dfeat_scale(no_d, ws, torch.device("cpu"))


def test_a_malformed_weight_is_a_bundle_error(tmp_path):
    b = _bundle(tmp_path)
    meta = json.loads((b.path / META).read_text())
    meta["score"]["params"]["dfeat_weight"] = "lots"
    (b.path / META).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="dfeat_weight"):
        load_bundle(b.path)
