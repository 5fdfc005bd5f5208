import pytest
import torch

from xrayscreen.errors import ConfigError
from xrayscreen.model.ganomaly import (
    GANomalyConfig,
    build_discriminator,
    build_generator,
    count_parameters,
)
from xrayscreen.model.losses import (
    LossWeights,
    discriminator_loss,
    encoder_loss,
    generator_loss,
)
from xrayscreen.model.score import latent_score, score_windows


@pytest.mark.parametrize("isize", [16, 32, 64, 128])
@pytest.mark.parametrize("nc", [1, 2, 3])
def test_shapes(isize, nc):
    cfg = GANomalyConfig(isize=isize, nc=nc, nz=20, ngf=8, ndf=8)
    g, d = build_generator(cfg), build_discriminator(cfg)
    x = torch.randn(2, nc, isize, isize)
    x_hat, z, z_hat = g(x)
    assert x_hat.shape == x.shape
    assert z.shape == z_hat.shape == (2, 20, 1, 1)
    assert x_hat.abs().max() <= 1.0  # tanh output
    prob, feats = d(x)
    assert prob.shape == (2,)
    assert ((prob >= 0) & (prob <= 1)).all()
    assert feats.shape[0] == 2 and feats.shape[-1] == 4  # last feature map is 4x4


def test_extra_layers_shapes():
    cfg = GANomalyConfig(isize=32, nc=1, nz=10, ngf=8, ndf=8, extra_layers=2)
    x = torch.randn(3, 1, 32, 32)
    assert build_generator(cfg)(x).x_hat.shape == x.shape


@pytest.mark.parametrize("bad", [0, 4, 48, 63, 100, -64, "64"])
def test_invalid_sizes_raise(bad):
    with pytest.raises(ConfigError):
        GANomalyConfig(isize=bad)


def test_invalid_channels_raise():
    with pytest.raises(ConfigError):
        GANomalyConfig(nc=4)


def test_parameter_counts_match_hand_count():
    # ngf = ndf = 64, nz = 100, 64x64x3 (4x4 kernels, no biases):
    # Encoder: 3*64*16 = 3,072 | 64*128*16 = 131,072 + BN 256 | 128*256*16 = 524,288 + BN 512
    #          | 256*512*16 = 2,097,152 + BN 1,024 | final 512*100*16 = 819,200  => 3,576,576
    # Decoder (mirror image, 4 -> 8 -> 16 -> 32 -> 64):
    #          100*512*16 = 819,200 + BN 1,024 | 512*256*16 = 2,097,152 + BN 512
    #          | 256*128*16 = 524,288 + BN 256 | 128*64*16 = 131,072 + BN 128
    #          | 64*3*16 = 3,072                                                 => 3,576,704
    # Generator = 2 encoders + decoder = 10,729,856
    # Discriminator = encoder body 2,757,376 + head 512*1*16 = 8,192           => 2,765,568
    cfg = GANomalyConfig()
    assert count_parameters(build_generator(cfg)) == 10_729_856
    assert count_parameters(build_discriminator(cfg)) == 2_765_568


def test_dcgan_init_statistics():
    torch.manual_seed(0)
    g = build_generator(GANomalyConfig(ngf=64))
    w = g.encoder1.body[2].weight  # second conv
    bn = g.encoder1.body[3].weight
    assert abs(w.mean().item()) < 2e-3 and abs(w.std().item() - 0.02) < 2e-3
    assert abs(bn.mean().item() - 1.0) < 1e-2 and abs(bn.std().item() - 0.02) < 1e-2


def test_gradients_reach_every_subnetwork():
    cfg = GANomalyConfig(isize=32, nc=3, nz=16, ngf=8, ndf=8)
    g, d = build_generator(cfg), build_discriminator(cfg)
    x = torch.randn(4, 3, 32, 32)
    x_hat, z, z_hat = g(x)
    fr, ff = d(x).features.detach(), d(x_hat).features
    loss = generator_loss(x, x_hat, z, z_hat, fr, ff).total
    loss.backward()
    for name, sub in [("encoder1", g.encoder1), ("decoder", g.decoder), ("encoder2", g.encoder2)]:
        grads = [p.grad for p in sub.parameters()]
        assert all(gr is not None and gr.abs().sum() > 0 for gr in grads), name
    d.zero_grad()
    discriminator_loss(d(x).prob, d(x_hat.detach()).prob).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.parameters())


def test_losses_equal_hand_computed_values():
    x = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])
    x_hat = torch.tensor([[[[0.5, 1.0], [0.0, 0.0]]]])  # |diff| = .5, 0, 1, 0 -> L1 0.375
    z = torch.tensor([[1.0, 2.0]])
    z_hat = torch.tensor([[2.0, 0.0]])  # diffs 1, 2 -> L1 1.5, L2 2.5
    fr = torch.tensor([[1.0, 1.0]])
    ff = torch.tensor([[0.0, 3.0]])  # sq diffs 1, 4 -> 2.5
    out = generator_loss(x, x_hat, z, z_hat, fr, ff, LossWeights(1, 50, 1, "l2"))
    assert out.con.item() == pytest.approx(0.375)
    assert out.enc.item() == pytest.approx(2.5)
    assert out.adv.item() == pytest.approx(2.5)
    assert out.total.item() == pytest.approx(2.5 + 50 * 0.375 + 2.5)
    assert encoder_loss(z, z_hat, "l1").item() == pytest.approx(1.5)
    # BCE: real p = .5 -> ln2 ; fake p = .5 -> ln2 ; mean of the two = ln 2
    d = discriminator_loss(torch.tensor([0.5]), torch.tensor([0.5]))
    assert d.item() == pytest.approx(0.693147, abs=1e-5)
    assert latent_score(z, z_hat, "l1").item() == pytest.approx(1.5)
    assert latent_score(z, z_hat, "l2").item() == pytest.approx(2.5)


def test_eval_scores_independent_of_batch_composition():
    torch.manual_seed(0)
    cfg = GANomalyConfig(isize=32, nc=3, nz=16, ngf=8, ndf=8)
    g = build_generator(cfg)
    g.train()
    # Move BN running statistics away from their initial values.
    for _ in range(3):
        g(torch.randn(16, 3, 32, 32) * 2 + 0.5)
    a = torch.randn(4, 3, 32, 32)
    others = torch.randn(12, 3, 32, 32) * 5
    s_alone = score_windows(g, a)
    s_mixed = score_windows(g, torch.cat([a, others]))[:4]
    torch.testing.assert_close(s_alone, s_mixed, rtol=1e-4, atol=1e-5)
    assert g.training  # mode restored
    # ...whereas train-mode batch statistics would make them depend on the batch.
    with torch.no_grad():
        _, z1, zh1 = g(a)
        _, z2, zh2 = g(torch.cat([a, others]))
    assert not torch.allclose(latent_score(z1, zh1), latent_score(z2[:4], zh2[:4]), atol=1e-4)


def test_determinism_under_seed():
    cfg = GANomalyConfig(isize=32, nc=2, nz=8, ngf=8, ndf=8)
    torch.manual_seed(123)
    g1 = build_generator(cfg)
    torch.manual_seed(123)
    g2 = build_generator(cfg)
    x = torch.randn(2, 2, 32, 32)
    g1.eval(), g2.eval()
    torch.testing.assert_close(g1(x).x_hat, g2(x).x_hat)


def test_spectral_norm_option_builds_and_inits():
    cfg = GANomalyConfig(isize=32, nc=3, nz=8, ngf=8, ndf=8, spectral_norm_d=True)
    d = build_discriminator(cfg)
    assert d(torch.randn(2, 3, 32, 32)).prob.shape == (2,)


def test_config_roundtrip_refuses_unknown_keys():
    cfg = GANomalyConfig(isize=32, nz=7)
    assert GANomalyConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError):
        GANomalyConfig.from_dict({**cfg.to_dict(), "evil": 1})
