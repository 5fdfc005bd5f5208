"""Score-kind registry: the paper's latent score, extension by registration."""

from __future__ import annotations

import pytest
import torch

from xrayscreen.errors import ConfigError
from xrayscreen.inference import score_kinds
from xrayscreen.model.bundle import ScoreSpec
from xrayscreen.model.ganomaly import GeneratorOutput


def _outputs():
    torch.manual_seed(0)
    x = torch.rand(5, 3, 8, 8)
    out = GeneratorOutput(torch.rand(5, 3, 8, 8), torch.randn(5, 4, 1, 1), torch.randn(5, 4, 1, 1))
    return x, out


def test_latent_l1_and_l2_by_hand():
    x, out = _outputs()
    d = (out.z - out.z_hat).flatten(1)
    l1 = score_kinds.compute(ScoreSpec("latent", "l1"), x, out)
    l2 = score_kinds.compute(ScoreSpec("latent", "l2"), x, out)
    torch.testing.assert_close(l1, d.abs().mean(1))
    torch.testing.assert_close(l2, (d**2).mean(1))
    assert l1.shape == (5,) and l1.dtype == torch.float32


def test_residual_kind():
    x, out = _outputs()
    got = score_kinds.compute(ScoreSpec("residual"), x, out)
    torch.testing.assert_close(got, (x - out.x_hat).abs().mean(dim=(1, 2, 3)))


def test_residual_excess_counts_only_unexplained_density():
    x, out = _outputs()
    att = score_kinds.compute(ScoreSpec("residual_excess", params={"sign": 1.0}), x, out)
    rgb = score_kinds.compute(ScoreSpec("residual_excess", params={"sign": -1.0}), x, out)
    d = x - out.x_hat
    torch.testing.assert_close(att, d.clamp_min(0).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(rgb, (-d).clamp_min(0).mean(dim=(1, 2, 3)))
    # The two signs split the plain residual between them.
    plain = score_kinds.compute(ScoreSpec("residual"), x, out)
    torch.testing.assert_close(att + rgb, plain)
    # A window the model draws too dense is no evidence; one denser than drawn is.
    over = GeneratorOutput(x + 0.5, out.z, out.z_hat)
    under = GeneratorOutput(x - 0.5, out.z, out.z_hat)
    spec = ScoreSpec("residual_excess", params={"sign": 1.0})
    assert float(score_kinds.compute(spec, x, over).max()) == 0.0
    torch.testing.assert_close(score_kinds.compute(spec, x, under), torch.full((5,), 0.5))
    assert set(score_kinds.DENSER_SIGN) == {"rgb", "rgb_attenuation", "log_attenuation"}


def test_register_a_new_kind_with_params():
    @score_kinds.register("test_scaled_latent")
    def scaled(x, outputs, params):
        return params["k"] * score_kinds.latent(x, outputs, params)

    try:
        x, out = _outputs()
        spec = ScoreSpec("test_scaled_latent", "l1", {"k": 3.0})
        torch.testing.assert_close(
            score_kinds.compute(spec, x, out), 3.0 * score_kinds.compute(ScoreSpec(), x, out)
        )
        assert "test_scaled_latent" in score_kinds.kinds()
        with pytest.raises(ValueError, match="already registered"):
            score_kinds.register("test_scaled_latent")(lambda x, o, p: x)
    finally:
        score_kinds._KINDS.pop("test_scaled_latent", None)


def test_unknown_kind_is_a_clear_config_error():
    x, out = _outputs()
    with pytest.raises(ConfigError, match="score kind 'nope'"):
        score_kinds.compute(ScoreSpec("nope"), x, out)
