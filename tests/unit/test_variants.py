"""Research generator variants (issue 7): dispatch, shapes, skips, and that they can learn."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xrayscreen.errors import ConfigError
from xrayscreen.model.ganomaly import GANomalyConfig, Generator, GeneratorOutput
from xrayscreen.model.variants import UNetGenerator, build_generator, generator_kind


def _cfg(**extras) -> GANomalyConfig:
    return GANomalyConfig(isize=32, nc=3, nz=16, ngf=8, ndf=8, extras=extras)


def test_default_is_the_paper_generator():
    assert generator_kind(_cfg()) == "dcgan"
    assert type(build_generator(_cfg())) is Generator


def test_unknown_variant_is_refused():
    with pytest.raises(ConfigError, match="unknown generator variant"):
        build_generator(_cfg(generator="resnet"))


def test_unet_output_matches_generator_output():
    net = build_generator(_cfg(generator="unet")).eval()
    assert isinstance(net, UNetGenerator)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    out = net(x)
    assert isinstance(out, GeneratorOutput)
    assert out.x_hat.shape == x.shape
    assert out.z.shape == (4, 16, 1, 1) and out.z_hat.shape == (4, 16, 1, 1)
    assert out.x_hat.abs().max() <= 1.0


@pytest.mark.parametrize("isize", [16, 64])
def test_unet_builds_for_other_sizes(isize):
    cfg = GANomalyConfig(isize=isize, nc=1, nz=8, ngf=8, ndf=8, extras={"generator": "unet"})
    assert build_generator(cfg)(torch.zeros(2, 1, isize, isize)).x_hat.shape == (2, 1, isize, isize)


def test_skips_carry_information_the_latent_does_not():
    """With skips, two inputs with the SAME latent still reconstruct differently."""
    torch.manual_seed(0)
    net = build_generator(_cfg(generator="unet", skip_max_res=8)).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        feats, h = [], x
        for block in net.downs:
            h = block(h)
            feats.append(h)
        # Force the latent path to zero: only the skip path can tell the inputs apart.
        net.to_latent.weight.zero_()
        out = net(x)
    assert torch.allclose(out.z[0], out.z[1])
    assert not torch.allclose(out.x_hat[0], out.x_hat[1], atol=1e-4)

    plain = build_generator(_cfg(generator="unet", skip_max_res=0)).eval()
    with torch.no_grad():
        plain.to_latent.weight.zero_()
        out0 = plain(x)
    assert torch.allclose(out0.x_hat[0], out0.x_hat[1], atol=1e-6)


def test_unet_refuses_extra_layers():
    cfg = GANomalyConfig(
        isize=32, nc=3, nz=16, ngf=8, ndf=8, extra_layers=1, extras={"generator": "unet"}
    )
    with pytest.raises(ConfigError, match="extra_layers"):
        build_generator(cfg)


def test_unet_learns_to_reconstruct():
    torch.manual_seed(0)
    net = build_generator(_cfg(generator="unet"))
    # Smooth images (upsampled 4x4 noise): learnable structure, unlike white noise.
    x = F.interpolate(torch.rand(8, 3, 4, 4) * 2 - 1, size=32, mode="bilinear")
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    first = None
    for _ in range(30):
        loss = F.l1_loss(net(x).x_hat, x)
        first = first if first is not None else float(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * first


# -- research score kinds ------------------------------------------------------------------
import numpy as np  # noqa: E402

from xrayscreen.imaging.representation import model_input  # noqa: E402
from xrayscreen.imaging.scan import Scan, ScanKind  # noqa: E402
from xrayscreen.inference import research_scores as rs  # noqa: E402
from xrayscreen.inference import score_kinds  # noqa: E402


def _outputs(x_hat: torch.Tensor) -> GeneratorOutput:
    z = torch.zeros(len(x_hat), 4, 1, 1)
    return GeneratorOutput(x_hat, z, z)


def test_research_kinds_are_registered():
    assert {"residual_pool", "edge_excess", "density_conditional", "density_combined"} <= set(
        score_kinds.kinds()
    )


@pytest.mark.parametrize("rep", ["rgb", "rgb_attenuation"])
def test_grey_recovered_from_model_input(rep):
    rng = np.random.default_rng(0)
    rgb = rng.integers(1, 256, size=(16, 16, 3), dtype=np.uint8)
    x = torch.from_numpy(model_input(Scan(rgb=rgb, kind=ScanKind.PSEUDO_COLOUR), rep))[None]
    grey = rs.grey_of_input(x, rep)[0].numpy()
    np.testing.assert_allclose(grey, rgb.astype(np.float32).mean(2) / 255.0, atol=1e-4)


def test_residual_pool_finds_a_compact_blob_the_mean_dilutes():
    x = torch.zeros(2, 3, 32, 32)
    x_hat = x.clone()
    x_hat[0, :, 8:16, 8:16] = 0.5  # compact bad patch
    x_hat[1] = 0.5 * 64 / 1024  # same total residual, spread thin
    out = _outputs(x_hat)
    mean = score_kinds.get("residual")(x, out, {})
    pool = score_kinds.get("residual_pool")(x, out, {})
    assert torch.allclose(mean[0], mean[1], atol=1e-6)
    assert pool[0] > 5 * pool[1]


def test_density_conditional_asks_how_unusual_for_this_density():
    rng = np.random.default_rng(1)
    dens = rng.uniform(0, 1, 5000)
    base = 2.0 * dens + rng.normal(0, 0.05, 5000)  # normal windows: score tracks density
    params = {**rs.fit_density_params(base, dens), "base": "residual", "representation": "rgb"}
    # Two windows with the same mean residual: a light one (unusual) and a dense one (usual).
    x = torch.ones(2, 3, 8, 8)
    x[0, :, 0, 0] = 1.0 - 2 * 0.2  # grey min 0.8 -> density 0.2
    x[1, :, 0, 0] = 1.0 - 2 * 0.9  # density 0.9
    x_hat = x - 1.5  # |x - x_hat| = 1.5 everywhere
    out = _outputs(x_hat)
    np.testing.assert_allclose(rs.max_density(x, "rgb").numpy(), [0.2, 0.9], atol=1e-5)
    z = score_kinds.get("density_conditional")(x, out, params)
    assert z[0] > 10 and z[0] > z[1] + 5
    comb = score_kinds.get("density_combined")(x, out, params)
    assert torch.allclose(
        comb - z, (rs.max_density(x, "rgb") - params["dens_median"]) / params["dens_scale"]
    )


def test_edge_excess_discounts_edges_normal_windows_also_miss():
    torch.manual_seed(0)
    x = -torch.ones(64, 3, 32, 32)
    x[:, :, :, 16:] = 1.0  # a vertical edge in every window
    x_hat = x.clone()
    x_hat[:, :, :, 14:18] = 0.0  # normal: the model blurs the edge
    params = rs.fit_edge_params(x, _outputs(x_hat), "rgb")
    normal = score_kinds.get("edge_excess")(x[:4], _outputs(x_hat[:4]), params)
    odd = x_hat[:4].clone()
    odd[:, :, 2:8, 2:8] += 1.0  # a flat area that reconstructs badly
    anomalous = score_kinds.get("edge_excess")(x[:4], _outputs(odd), params)
    plain = score_kinds.get("residual")(x[:4], _outputs(x_hat[:4]), {})
    assert normal.abs().max() < 1e-4 < float(plain.min())
    assert float(anomalous.min()) > 0.01


def test_uncalibrated_density_kind_is_a_readable_error():
    with pytest.raises(ConfigError, match="calibrated"):
        score_kinds.get("density_conditional")(
            torch.zeros(1, 3, 8, 8), _outputs(torch.zeros(1, 3, 8, 8)), {}
        )


# -- research trainer ------------------------------------------------------------------------
from xrayscreen.model.variants import UNetGenerator as _UNet  # noqa: E402
from xrayscreen.training.config import TrainConfig  # noqa: E402
from xrayscreen.training.research import ResearchTrainer, trainer_for  # noqa: E402


def _tcfg(**research) -> TrainConfig:
    return TrainConfig(window=16, stride=8, ngf=8, ndf=8, nz=8, batch_size=4, research=research)


def test_plain_config_gets_the_plain_trainer():
    tr = trainer_for(_tcfg(), torch.device("cpu"))
    assert type(tr).__name__ == "GanomalyTrainer"


def test_research_trainer_hinge_unet_ttur_step():
    tr = trainer_for(
        _tcfg(d_loss="hinge", generator="unet", skip_max_res=4, lr_d=4e-4, lr_g=1e-4),
        torch.device("cpu"),
    )
    assert isinstance(tr, ResearchTrainer) and isinstance(tr.netg, _UNet)
    assert tr.model_config.extras["generator"] == "unet"
    assert tr.opt_d.param_groups[0]["lr"] == 4e-4 and tr.opt_g.param_groups[0]["lr"] == 1e-4
    losses = tr.train_step(torch.rand(4, 3, 16, 16) * 2 - 1, 0, 0)
    assert np.isfinite(losses["d"]) and losses["d"] >= 0.0


def test_stuck_discriminator_is_reset_only_when_asked():
    for flag, expected in ((False, 0), (True, 1)):
        tr = ResearchTrainer(_tcfg(reset_stuck=flag, stuck_steps=10), torch.device("cpu"))
        before = [p.detach().clone() for p in tr.netd.parameters()]
        for step in range(10):
            tr.maybe_reset_d(0.6931, 0, step)  # a constant loss: D gives no gradient
        assert tr.d_resets == expected
        changed = any(not torch.equal(a, b) for a, b in zip(before, tr.netd.parameters()))
        assert changed == bool(expected)


def test_windowed_reset_ignores_one_zero_hinge_batch_but_fires_on_a_run_of_them():
    per_batch = ResearchTrainer(_tcfg(d_loss="hinge"), torch.device("cpu"))
    windowed = ResearchTrainer(_tcfg(d_loss="hinge", reset_window=5), torch.device("cpu"))
    for tr in (per_batch, windowed):
        for step, loss in enumerate([0.8, 0.5, 0.0, 0.4, 0.6]):  # one batch won by the margin
            tr.maybe_reset_d(loss, 0, step)
    assert per_batch.d_resets == 1 and windowed.d_resets == 0
    for step in range(5):  # D wins every batch: the paper's collapse, seen over the window
        windowed.maybe_reset_d(0.0, 1, step)
    assert windowed.d_resets == 1
    with pytest.raises(ConfigError):
        ResearchTrainer(_tcfg(reset_window=0), torch.device("cpu"))


def test_unknown_research_option_is_refused():
    with pytest.raises(ConfigError, match="unknown research"):
        ResearchTrainer(_tcfg(d_los="hinge"), torch.device("cpu"))


def test_unet_bundle_roundtrip_rebuilds_the_variant(tmp_path):
    from xrayscreen.model.bundle import InputSpec, ModelBundle, load_bundle, save_bundle
    from xrayscreen.model.calibration import Calibration

    cfg = _tcfg(generator="unet", skip_max_res=8).model_config()
    assert cfg.extras == {"generator": "unet", "skip_max_res": 8}
    torch.manual_seed(0)
    g = build_generator(cfg).eval()
    b = ModelBundle(
        config=cfg,
        generator=g,
        input=InputSpec(window=16),
        calibration=Calibration.fit(np.random.default_rng(0).random(500)),
    )
    save_bundle(b, tmp_path / "m")
    loaded = load_bundle(tmp_path / "m")
    assert isinstance(loaded.generator, _UNet)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(loaded.generator.eval()(x).x_hat, g(x).x_hat, atol=1e-5)


def test_xray_preset_is_the_chosen_configuration_and_round_trips():
    cfg = TrainConfig.xray(epochs=2, ngf=8, ndf=8, nz=8, window=16)
    assert cfg.representation == "rgb_attenuation" and cfg.spectral_norm_d
    assert cfg.score_kind == "feature_knn_excess" and cfg.research["d_loss"] == "hinge"
    assert cfg.scan_norm == "robust_z" and cfg.context_px == 128.0 and cfg.context_self == 0.25
    assert cfg.bank_level == 2 and cfg.bank_k == 5
    # X-ray default threshold: 10 % of normal bags by a fitted Gumbel law; the plain
    # (paper) configuration keeps the window rule alone.
    assert cfg.target_bag_far == 0.10 and cfg.bag_rule == "gumbel"
    assert TrainConfig().target_bag_far is None and TrainConfig().bag_rule == "empirical"
    for bad in ({"context_self": 1.0}, {"target_bag_far": 1.0}, {"bag_rule": "max"}):
        with pytest.raises(ConfigError):
            cfg.replace(**bad)
    assert cfg.research["reset_window"] == 50
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    assert TrainConfig().research == {} and not TrainConfig().spectral_norm_d  # paper defaults
    cfg.research["lr_d"] = 1.0  # the preset's dict is a copy, not shared
    assert TrainConfig.xray().research["lr_d"] == 4e-4
    assert isinstance(trainer_for(cfg, torch.device("cpu")), ResearchTrainer)
