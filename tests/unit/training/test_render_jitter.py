"""Rendering augmentation of the generator's training windows (``jitter_gamma``,
``jitter_hue``): the rendering itself, its draw, the loader and the settings."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from xrayscreen.errors import ConfigError
from xrayscreen.imaging.representation import model_input
from xrayscreen.imaging.scan import Scan, ScanKind
from xrayscreen.training.config import TrainConfig
from xrayscreen.training.data import (
    RenderJitter,
    device_batches,
    encode,
    epoch_batches,
    hue_rotation,
    make_loader,
    render_gamma,
    render_jitter,
    resident_windows,
)


def _x(representation: str, rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(model_input(Scan(rgb=rgb, kind=ScanKind.PSEUDO_COLOUR), representation))


def _rgb(seed: int = 0, shape=(6, 7)) -> np.ndarray:
    return np.random.default_rng(seed).integers(20, 250, (*shape, 3)).astype(np.uint8)


@pytest.mark.parametrize("representation", ["rgb", "rgb_attenuation"])
def test_identity_and_gamma_alone_match_render_gamma(representation):
    x = torch.stack([_x(representation, _rgb(s)) for s in range(3)])
    ones, zeros = torch.ones(3), torch.zeros(3)
    assert render_jitter(x, representation, ones, zeros).allclose(x, atol=1e-5)
    g = torch.tensor([0.8, 1.0, 1.25])
    got = render_jitter(x, representation, g, zeros)
    for i in range(3):
        assert got[i].allclose(
            render_gamma(x[i : i + 1], representation, float(g[i]))[0], atol=1e-5
        )


@pytest.mark.parametrize("representation", ["rgb", "rgb_attenuation"])
def test_hue_keeps_grey_and_air_and_turns_back(representation):
    rgb = _rgb(1)
    rgb[0, :] = 255  # air
    rgb[1, :] = [90, 90, 90]  # a grey (colourless) object
    x = _x(representation, rgb)[None]
    turned = render_jitter(x, representation, torch.ones(1), torch.tensor([25.0]))
    # Air and grey are unchanged; a coloured pixel changes.
    assert turned[..., :2, :].allclose(x[..., :2, :], atol=1e-5)
    assert (turned[..., 2:, :] - x[..., 2:, :]).abs().max() > 0.02
    # Turning back restores the window (these colours stay inside the cube both ways).
    mild = np.full((4, 4, 3), [150, 120, 100], np.uint8)
    xm = _x(representation, mild)[None]
    there = render_jitter(xm, representation, torch.ones(1), torch.tensor([15.0]))
    back = render_jitter(there, representation, torch.ones(1), torch.tensor([-15.0]))
    assert back.allclose(xm, atol=1e-4)


def test_hue_rotation_is_a_rotation_about_grey():
    r = hue_rotation(torch.tensor([0.0, 20.0, -75.0, 360.0]))
    eye = torch.eye(3).expand(4, 3, 3)
    assert torch.allclose(r @ r.transpose(1, 2), eye, atol=1e-6)  # orthogonal
    assert torch.allclose(r @ torch.ones(3), torch.ones(4, 3), atol=1e-6)  # grey axis fixed
    assert torch.allclose(r[0], torch.eye(3)) and torch.allclose(r[3], torch.eye(3), atol=1e-6)


def test_hue_turns_the_way_an_hsv_hue_shift_does():
    # SIXray's orange (organic) turned by +20 deg moves towards yellow, as OpenCV's HSV
    # hue shift (the rendering the robustness measurements use) does.
    orange = np.array([[[230, 140, 40]]], np.uint8)
    t = torch.from_numpy(orange / 255.0).float().permute(2, 0, 1)[None]
    lin = torch.einsum("nij,njhw->nihw", hue_rotation(torch.tensor([20.0])), t)
    lin_rgb = (lin[0].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    h0 = int(cv2.cvtColor(orange, cv2.COLOR_RGB2HSV)[0, 0, 0])
    h1 = int(cv2.cvtColor(lin_rgb, cv2.COLOR_RGB2HSV)[0, 0, 0])
    assert 5 <= (h1 - h0) * 2 <= 35  # OpenCV hue is in 2-degree steps


def test_jitter_draw_is_reproducible_and_in_range():
    x = torch.stack([_x("rgb_attenuation", _rgb(s)) for s in range(64)])
    j = RenderJitter(gamma=1.25, hue=0.0, representation="rgb_attenuation", seed=5)
    a, b, c = j.apply(x, 11), j.apply(x, 11), j.apply(x, 12)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Attenuation (-log T) scales by G in [0.8, 1.25]; pixels under the clip only.
    mu0, mu1 = x.add(1).double(), a.add(1).double()
    keep = (a < 0.999) & (mu0 > 0.05)
    ratio = (mu1[keep] / mu0[keep]).view(-1)
    assert ratio.min() >= 0.8 - 1e-3 and ratio.max() <= 1.25 + 1e-3
    assert ratio.max() - ratio.min() > 0.2  # the draw spreads over the range
    assert not RenderJitter(1.0, 0.0, "rgb", 0).active and RenderJitter(1.0, 5.0, "rgb", 0).active


def test_loader_renders_batches_only_when_jitter_is_on():
    x = torch.stack([_x("rgb_attenuation", _rgb(s, (16, 16))) for s in range(40)])
    data = encode(x, "rgb_attenuation")
    batches, codes = epoch_batches(40, 8, seed=1, epoch=0, augment_on=True)

    def run(jitter, epoch_seed=7):
        return [
            b.clone()
            for b in make_loader(data, batches, codes, jitter=jitter, epoch_seed=epoch_seed)
        ]

    plain = run(None)
    off = run(RenderJitter(1.0, 0.0, "rgb_attenuation", 0))
    on = run(RenderJitter(1.25, 20.0, "rgb_attenuation", 0))
    again = run(RenderJitter(1.25, 20.0, "rgb_attenuation", 0))
    other_epoch = run(RenderJitter(1.25, 20.0, "rgb_attenuation", 0), epoch_seed=8)
    assert all(torch.equal(p, o) for p, o in zip(plain, off, strict=True))
    assert all(torch.equal(p, q) for p, q in zip(on, again, strict=True))
    assert all(not torch.allclose(p, q) for p, q in zip(plain, on, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(on, other_epoch, strict=True))
    assert all(b.min() >= -1 and b.max() <= 1 for b in on)


@pytest.mark.parametrize("gamma, hue", [(1.0, 0.0), (1.25, 20.0)])
def test_device_batches_are_the_loaders_batches(gamma, hue):
    """The device-resident path (used on a GPU) makes exactly the host loader's batches:
    same windows, same dihedral turns, same rendering draws, for every batch."""
    x = torch.stack([_x("rgb", _rgb(s, (16, 16))) for s in range(40)])
    data = encode(x, "rgb")
    batches, codes = epoch_batches(40, 8, seed=3, epoch=2, augment_on=True)
    jitter = RenderJitter(gamma, hue, "rgb", 4)
    host = [b.clone() for b in make_loader(data, batches, codes, jitter=jitter, epoch_seed=9)]
    here = list(device_batches(data, batches, codes, jitter, epoch_seed=9))
    assert len(here) == len(host) == 5
    assert all(torch.equal(a, b) for a, b in zip(host, here, strict=True))
    other = list(device_batches(data, batches, codes, jitter, epoch_seed=10))
    assert (gamma, hue) == (1.0, 0.0) or not torch.equal(other[0], here[0])


def test_resident_windows_only_on_an_accelerator_with_room():
    data = torch.zeros(10, 3, 8, 8, dtype=torch.uint8)  # 1,920 bytes
    assert resident_windows(data, torch.device("cpu")) is None  # nothing to move
    assert resident_windows(data, torch.device("meta"), free_bytes=4 * 1_919) is None  # too big
    up = resident_windows(data, torch.device("meta"), free_bytes=4 * 1_920)
    assert up is not None and up.device.type == "meta" and up.shape == data.shape


def test_jitter_settings():
    assert TrainConfig().jitter_gamma == 1.0 and TrainConfig().jitter_hue == 0.0  # the paper's
    assert (TrainConfig.xray().jitter_gamma, TrainConfig.xray().jitter_hue) == (1.25, 20.0)
    cfg = TrainConfig.from_dict(TrainConfig.xray(jitter_gamma=1.3, jitter_hue=15).to_dict())
    assert (cfg.jitter_gamma, cfg.jitter_hue) == (1.3, 15)
    for bad in ({"jitter_gamma": 0.8}, {"jitter_gamma": 9.0}, {"jitter_hue": -1.0}):
        with pytest.raises(ConfigError, match="jitter_"):
            TrainConfig.xray(**bad)
    with pytest.raises(ConfigError, match="three-channel"):
        TrainConfig.xray(representation="log_attenuation", jitter_hue=10.0)
    with pytest.raises(ConfigError, match="three-channel"):
        TrainConfig(representation="log_attenuation", jitter_hue=10.0)
    # Raw dual-energy input has no false colours: the X-ray default drops its palette jitter
    # and keeps the density jitter.
    raw = TrainConfig.xray(representation="log_attenuation")
    assert (raw.jitter_gamma, raw.jitter_hue) == (1.25, 0.0)
