"""GANomaly networks (Akcay et al., 2018), faithful to the paper's reference code.

Pure ``nn.Module`` s with no training logic, so they export and load cleanly:

* :class:`Encoder` -- conv 4x4 stride 2 blocks, BN + LeakyReLU(0.2) (no BN on the
  first block), a last 4x4 conv down to an ``nz x 1 x 1`` latent.
* :class:`Decoder` -- DCGAN generator: ConvTranspose + BN + ReLU, Tanh out.
* :class:`Generator` -- G_E -> G_D -> E, returning ``(x_hat, z, z_hat)``.
* :class:`Discriminator` -- the encoder body with a 1-unit sigmoid head; its
  ``features`` output feeds the adversarial feature-matching loss.

Options beyond the paper (all off by default, used by the ablations of issue 7)
are explicit fields of :class:`GANomalyConfig` so a bundle records them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from xrayscreen.errors import ConfigError


@dataclass(frozen=True)
class GANomalyConfig:
    """Architecture hyper-parameters.

    Attributes:
        isize: Input window side in pixels; must be ``4 * 2**k`` with k >= 1 (8, 16, 32, 64, ...).
        nc: Input channels: 1 (grey), 2 (raw dual-energy) or 3 (false-colour RGB).
        nz: Latent size.
        ngf: Generator base width.
        ndf: Discriminator base width.
        extra_layers: Extra 3x3 conv blocks at full resolution (paper: 0).
        spectral_norm_d: Spectral normalisation on the discriminator's convolutions.
    """

    isize: int = 64
    nc: int = 3
    nz: int = 100
    ngf: int = 64
    ndf: int = 64
    extra_layers: int = 0
    spectral_norm_d: bool = False
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_isize(self.isize)
        for name in ("nc", "nz", "ngf", "ndf"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.nc not in (1, 2, 3):
            raise ConfigError(f"nc must be 1, 2 or 3 channels, got {self.nc}")
        if self.ngf % 2:
            raise ConfigError(f"ngf must be even (the decoder starts at ngf/2), got {self.ngf}")
        if not isinstance(self.extra_layers, int) or self.extra_layers < 0:
            raise ConfigError(f"extra_layers must be >= 0, got {self.extra_layers!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GANomalyConfig:
        """Build from :meth:`to_dict` output; unknown keys are refused, not ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown GANomaly config keys: {sorted(unknown)}")
        return cls(**data)


def validate_isize(isize: int) -> None:
    """Raise :class:`ConfigError` unless ``isize`` is ``4 * 2**k`` with k >= 1.

    The reference code loops forever on other sizes (its ``while csize > 4``
    never reaches 4), so this check runs before any layer is built.
    """
    ok = isinstance(isize, int) and isize >= 8 and (isize & (isize - 1)) == 0
    if not ok:
        raise ConfigError(f"input size must be 4*2^k (8, 16, 32, 64, 128, ...), got {isize!r}")


class Encoder(nn.Module):
    """DCGAN encoder mapping ``(N, nc, isize, isize)`` to ``(N, nz, 1, 1)``."""

    def __init__(
        self,
        isize: int,
        nz: int,
        nc: int,
        ndf: int,
        extra_layers: int = 0,
        add_final_conv: bool = True,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        validate_isize(isize)
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        layers: list[nn.Module] = [
            sn(nn.Conv2d(nc, ndf, 4, 2, 1, bias=False)),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        csize, cndf = isize // 2, ndf
        for _ in range(extra_layers):
            layers += [
                sn(nn.Conv2d(cndf, cndf, 3, 1, 1, bias=False)),
                nn.BatchNorm2d(cndf),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        while csize > 4:
            layers += [
                sn(nn.Conv2d(cndf, cndf * 2, 4, 2, 1, bias=False)),
                nn.BatchNorm2d(cndf * 2),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            cndf *= 2
            csize //= 2
        self.body = nn.Sequential(*layers)
        self.out_channels = cndf
        self.final = sn(nn.Conv2d(cndf, nz, 4, 1, 0, bias=False)) if add_final_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return self.final(h) if self.final is not None else h


class Decoder(nn.Module):
    """DCGAN generator mapping ``(N, nz, 1, 1)`` to ``(N, nc, isize, isize)`` in [-1, 1]."""

    def __init__(self, isize: int, nz: int, nc: int, ngf: int, extra_layers: int = 0) -> None:
        super().__init__()
        validate_isize(isize)
        cngf, tisize = ngf // 2, 4
        while tisize != isize:
            cngf *= 2
            tisize *= 2
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz, cngf, 4, 1, 0, bias=False),
            nn.BatchNorm2d(cngf),
            nn.ReLU(True),
        ]
        csize = 4
        while csize < isize // 2:
            layers += [
                nn.ConvTranspose2d(cngf, cngf // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(cngf // 2),
                nn.ReLU(True),
            ]
            cngf //= 2
            csize *= 2
        for _ in range(extra_layers):
            layers += [
                nn.Conv2d(cngf, cngf, 3, 1, 1, bias=False),
                nn.BatchNorm2d(cngf),
                nn.ReLU(True),
            ]
        layers += [nn.ConvTranspose2d(cngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class GeneratorOutput(NamedTuple):
    """What the generator returns: reconstruction and both latents."""

    x_hat: torch.Tensor
    z: torch.Tensor
    z_hat: torch.Tensor


class Generator(nn.Module):
    """GANomaly generator: ``z = G_E(x)``, ``x_hat = G_D(z)``, ``z_hat = E(x_hat)``."""

    def __init__(self, config: GANomalyConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.encoder1 = Encoder(c.isize, c.nz, c.nc, c.ngf, c.extra_layers)
        self.decoder = Decoder(c.isize, c.nz, c.nc, c.ngf, c.extra_layers)
        self.encoder2 = Encoder(c.isize, c.nz, c.nc, c.ngf, c.extra_layers)

    def forward(self, x: torch.Tensor) -> GeneratorOutput:
        z = self.encoder1(x)
        x_hat = self.decoder(z)
        z_hat = self.encoder2(x_hat)
        return GeneratorOutput(x_hat, z, z_hat)


class DiscriminatorOutput(NamedTuple):
    """Discriminator probability (N,) and its last feature map (for feature matching)."""

    prob: torch.Tensor
    features: torch.Tensor


class Discriminator(nn.Module):
    """DCGAN discriminator: the encoder body plus a 1-unit sigmoid head."""

    def __init__(self, config: GANomalyConfig) -> None:
        super().__init__()
        c = config
        enc = Encoder(
            c.isize,
            1,
            c.nc,
            c.ndf,
            c.extra_layers,
            add_final_conv=True,
            spectral_norm=c.spectral_norm_d,
        )
        self.features = enc.body
        self.classifier = nn.Sequential(enc.final, nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> DiscriminatorOutput:
        feats = self.features(x)
        logits_prob = self.classifier(feats)
        return DiscriminatorOutput(logits_prob.reshape(-1), feats)


def weights_init(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), BN weight N(1, 0.02), BN bias 0."""
    name = module.__class__.__name__
    if "Conv" in name:
        # With spectral norm the trainable tensor is the parametrization's original.
        if nn.utils.parametrize.is_parametrized(module, "weight"):
            weight = module.parametrizations.weight.original
        else:
            weight = module.weight
        with torch.no_grad():
            nn.init.normal_(weight, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build_generator(config: GANomalyConfig, init: bool = True) -> Generator:
    """Construct a generator, DCGAN-initialised unless ``init`` is False."""
    net = Generator(config)
    if init:
        net.apply(weights_init)
    return net


def build_discriminator(config: GANomalyConfig, init: bool = True) -> Discriminator:
    """Construct a discriminator, DCGAN-initialised unless ``init`` is False."""
    net = Discriminator(config)
    if init:
        net.apply(weights_init)
    return net


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
