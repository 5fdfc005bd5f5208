"""Research generator variants of GANomaly (issue 7), selected by ``GANomalyConfig.extras``.

``extras["generator"]``:

* ``"dcgan"`` (default): the paper's generator, :class:`xrayscreen.model.ganomaly.Generator`.
* ``"unet"``: a Skip-GANomaly-style U-Net generator (Akcay et al., 2019). The encoder is the
  paper's DCGAN encoder down to the ``nz x 1 x 1`` latent; the decoder mirrors it and
  concatenates the encoder's feature map at every resolution ``<= extras["skip_max_res"]``
  (default 16). Skips at the two finest resolutions (32, 64) are left out on purpose: with
  them the network can copy its input and reconstructs a threat as well as a strap
  (the identity shortcut), without them the fine detail must come through coarse features
  learned on normal bags. ``z_hat`` comes from a second DCGAN encoder on ``x_hat``, so the
  output matches :class:`~xrayscreen.model.ganomaly.GeneratorOutput` and every GANomaly
  score (latent, residual) works unchanged.

Build through :func:`build_generator`, which dispatches on the config, so bundles that
record ``extras`` rebuild the right network.
"""

from __future__ import annotations

import torch
from torch import nn

from xrayscreen.errors import ConfigError
from xrayscreen.model.ganomaly import (
    Encoder,
    GANomalyConfig,
    Generator,
    GeneratorOutput,
    weights_init,
)

GENERATORS = ("dcgan", "unet")


def generator_kind(config: GANomalyConfig) -> str:
    """The generator variant named by ``config.extras`` (default ``"dcgan"``)."""
    kind = config.extras.get("generator", "dcgan")
    if kind not in GENERATORS:
        raise ConfigError(f"unknown generator variant {kind!r}; known: {list(GENERATORS)}")
    return kind


class UNetGenerator(nn.Module):
    """U-Net GANomaly generator with skips at coarse resolutions only (see module doc)."""

    def __init__(self, config: GANomalyConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.skip_max_res = int(c.extras.get("skip_max_res", 16))
        if c.extra_layers:
            raise ConfigError("the U-Net generator does not support extra_layers")
        # Down path: explicit blocks so intermediate maps can be tapped.
        downs: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(c.nc, c.ngf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True))
        ]
        res, ch = c.isize // 2, c.ngf
        self.down_res = [res]
        self.down_ch = [ch]
        while res > 4:
            downs.append(
                nn.Sequential(
                    nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False),
                    nn.BatchNorm2d(ch * 2),
                    nn.LeakyReLU(0.2, True),
                )
            )
            ch *= 2
            res //= 2
            self.down_res.append(res)
            self.down_ch.append(ch)
        self.downs = nn.ModuleList(downs)
        self.to_latent = nn.Conv2d(ch, c.nz, 4, 1, 0, bias=False)
        # Up path: latent -> 4x4, then doubling, concatenating skips where allowed.
        self.from_latent = nn.Sequential(
            nn.ConvTranspose2d(c.nz, ch, 4, 1, 0, bias=False), nn.BatchNorm2d(ch), nn.ReLU(True)
        )
        ups: list[nn.Module] = []
        # Walk resolutions 4 -> isize/2; at each, input = current (+ skip of the same res).
        for i in range(len(self.down_res) - 1, 0, -1):
            r, cin = self.down_res[i], self.down_ch[i]
            skip = self.down_ch[i] if r <= self.skip_max_res else 0
            cout = self.down_ch[i - 1]
            ups.append(
                nn.Sequential(
                    nn.ConvTranspose2d(cin + skip, cout, 4, 2, 1, bias=False),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(True),
                )
            )
        r0, c0 = self.down_res[0], self.down_ch[0]
        skip0 = c0 if r0 <= self.skip_max_res else 0
        self.ups = nn.ModuleList(ups)
        self.final = nn.Sequential(
            nn.ConvTranspose2d(c0 + skip0, c.nc, 4, 2, 1, bias=False), nn.Tanh()
        )
        self.encoder2 = Encoder(c.isize, c.nz, c.nc, c.ngf, 0)

    def forward(self, x: torch.Tensor) -> GeneratorOutput:
        feats = []
        h = x
        for block in self.downs:
            h = block(h)
            feats.append(h)
        z = self.to_latent(h)
        h = self.from_latent(z)
        for j, block in enumerate(self.ups):
            i = len(self.down_res) - 1 - j
            if self.down_res[i] <= self.skip_max_res:
                h = torch.cat([h, feats[i]], dim=1)
            h = block(h)
        if self.down_res[0] <= self.skip_max_res:
            h = torch.cat([h, feats[0]], dim=1)
        x_hat = self.final(h)
        z_hat = self.encoder2(x_hat)
        return GeneratorOutput(x_hat, z, z_hat)


def build_generator(config: GANomalyConfig, init: bool = True) -> nn.Module:
    """Generator for ``config`` (paper DCGAN or a research variant), DCGAN-initialised."""
    kind = generator_kind(config)
    net: nn.Module = Generator(config) if kind == "dcgan" else UNetGenerator(config)
    if init:
        net.apply(weights_init)
    return net
