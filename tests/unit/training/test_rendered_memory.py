"""The feature memory's rendered copies (``bank_gammas``): the rendering, the memory
drawn from originals and copies, and the setting's validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from xrayscreen.errors import ConfigError
from xrayscreen.imaging.representation import WorkingScale, model_input
from xrayscreen.imaging.scan import Scan, ScanKind
from xrayscreen.model.bundle import InputSpec, ModelBundle, ScoreSpec
from xrayscreen.model.feature_bank import encoder_body, encoder_map, pool
from xrayscreen.model.ganomaly import GANomalyConfig, build_generator
from xrayscreen.training.calibrate import fit_feature_bank
from xrayscreen.training.config import TrainConfig
from xrayscreen.training.data import WindowSet, encode, render_gamma


@pytest.mark.parametrize("representation", ["rgb", "rgb_attenuation"])
@pytest.mark.parametrize("gamma", [0.8, 1.25])
def test_render_gamma_is_the_scan_rendered_with_transmission_to_the_power(representation, gamma):
    rng = np.random.default_rng(3)
    rgb = rng.integers(1, 256, (8, 9, 3)).astype(np.uint8)
    x = torch.from_numpy(model_input(Scan(rgb=rgb, kind=ScanKind.PSEUDO_COLOUR), representation))
    t = rgb.astype(np.float64) / 255.0
    # The same bag on a scanner that renders transmission as T ** gamma (no 8-bit rounding).
    if representation == "rgb":
        expect = 2.0 * t**gamma - 1.0
    else:
        mu = np.minimum(-gamma * np.log(t), np.log(255.0))
        expect = mu / np.log(255.0) * 2.0 - 1.0
    got = render_gamma(x, representation, gamma).numpy()
    np.testing.assert_allclose(got, np.moveaxis(expect, -1, 0), atol=1e-5)
    assert render_gamma(x, representation, 1.0).allclose(x, atol=1e-6)


def _bundle(representation: str = "rgb_attenuation") -> ModelBundle:
    cfg = GANomalyConfig(isize=16, ngf=8, ndf=8, nz=8)
    torch.manual_seed(0)
    g = build_generator(cfg).eval()
    for m in g.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
    return ModelBundle(
        config=cfg,
        generator=g,
        input=InputSpec(window=16, representation=representation, scale=WorkingScale()),
        score=ScoreSpec(kind="feature_knn"),
    )


def _windows(n: int = 40) -> WindowSet:
    x = torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return WindowSet(data=encode(x, "rgb_attenuation"), scan_index=torch.zeros(n, dtype=torch.long))


def test_memory_draws_from_the_windows_and_their_rendered_copies():
    b, ws = _bundle(), _windows()
    dev = torch.device("cpu")
    plain = fit_feature_bank(b, ws, dev, level=1, k=3, max_size=1000)
    both = fit_feature_bank(b, ws, dev, level=1, k=3, max_size=1000, gammas=[0.8, 1.25])
    assert plain.memory.shape[0] == 40 and both.memory.shape[0] == 120
    # Every copy's embedding is in the memory: candidates i = window i % n, copy i // n.
    x = ws.data.float()
    with torch.no_grad():
        raw = torch.cat(
            [
                pool(encoder_map(encoder_body(b.generator), v, 1))
                for v in (
                    x,
                    render_gamma(x, "rgb_attenuation", 0.8),
                    render_gamma(x, "rgb_attenuation", 1.25),
                )
            ]
        )
    torch.testing.assert_close(both.memory, (raw - raw.mean(0)) / raw.std(0), rtol=1e-4, atol=1e-4)
    # The size cap holds for originals and copies together (a seeded draw).
    capped = fit_feature_bank(b, ws, dev, level=1, k=3, max_size=50, gammas=[0.8, 1.25], seed=2)
    again = fit_feature_bank(b, ws, dev, level=1, k=3, max_size=50, gammas=[0.8, 1.25], seed=2)
    assert capped.memory.shape[0] == 50 and torch.equal(capped.memory, again.memory)


def test_bank_gammas_setting():
    assert TrainConfig().bank_gammas == [] and TrainConfig.xray().bank_gammas == [0.8, 1.25]
    cfg = TrainConfig.from_dict(TrainConfig.xray(bank_gammas=(0.7,)).to_dict())
    assert cfg.bank_gammas == [0.7]
    for bad in ([1.0], [0.1], [5.0]):
        with pytest.raises(ConfigError, match="bank_gammas"):
            TrainConfig(bank_gammas=bad)


def test_memory_palette_copies_follow_the_gamma_copies():
    from xrayscreen.training.data import render_jitter

    b, ws = _bundle(), _windows()
    dev = torch.device("cpu")
    got = fit_feature_bank(
        b, ws, dev, level=1, k=3, max_size=1000, gammas=[1.25], hues=[20.0, -20.0]
    )
    x = ws.data.float()
    n = len(x)

    def turned(h):
        return render_jitter(x, "rgb_attenuation", torch.ones(n), torch.full((n,), h))

    with torch.no_grad():
        raw = torch.cat(
            [
                pool(encoder_map(encoder_body(b.generator), v, 1))
                for v in (x, render_gamma(x, "rgb_attenuation", 1.25), turned(20.0), turned(-20.0))
            ]
        )
    assert got.memory.shape[0] == 4 * n
    torch.testing.assert_close(got.memory, (raw - raw.mean(0)) / raw.std(0), rtol=1e-4, atol=1e-4)


def test_bank_hues_setting():
    assert TrainConfig().bank_hues == []
    assert TrainConfig.from_dict(TrainConfig.xray(bank_hues=(15, -15)).to_dict()).bank_hues == [
        15.0,
        -15.0,
    ]
    for bad in ([0.0], [200.0]):
        with pytest.raises(ConfigError, match="bank_hues"):
            TrainConfig.xray(bank_hues=bad)
    with pytest.raises(ConfigError, match="three-channel"):
        TrainConfig.xray(representation="log_attenuation", bank_hues=[20.0])
