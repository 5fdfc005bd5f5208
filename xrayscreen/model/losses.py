"""GANomaly losses (paper Eq. 1-4) as plain functions of tensors.

Generator loss ``L = w_adv * L_adv + w_con * L_con + w_enc * L_enc`` with
``L_adv`` = L2 between discriminator features of x and x_hat (feature matching),
``L_con`` = L1(x, x_hat), ``L_enc`` = distance between z and z_hat.

``L_enc`` norm: the paper's Eq. 3 writes L1 but the authors' code
(``lib/model.py``: ``l2_loss(latent_i, latent_o)``) trains with L2. **Default:
"l2"**, matching the code that produced the published numbers; "l1" follows the
text. The choice is stored in every bundle's training settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

EncNorm = Literal["l1", "l2"]


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator loss terms (paper: 1 / 50 / 1) and the L_enc norm."""

    w_adv: float = 1.0
    w_con: float = 50.0
    w_enc: float = 1.0
    enc_norm: EncNorm = "l2"


class GeneratorLosses(NamedTuple):
    """Weighted total and the three unweighted terms."""

    total: torch.Tensor
    adv: torch.Tensor
    con: torch.Tensor
    enc: torch.Tensor


def adversarial_feature_loss(feat_real: torch.Tensor, feat_fake: torch.Tensor) -> torch.Tensor:
    """L_adv: mean squared difference of discriminator features (feature matching)."""
    return F.mse_loss(feat_fake, feat_real)


def contextual_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """L_con: mean absolute reconstruction error."""
    return F.l1_loss(x_hat, x)


def encoder_loss(z: torch.Tensor, z_hat: torch.Tensor, norm: EncNorm = "l2") -> torch.Tensor:
    """L_enc: mean L1 or mean squared distance between the two latents."""
    if norm == "l1":
        return F.l1_loss(z_hat, z)
    if norm == "l2":
        return F.mse_loss(z_hat, z)
    raise ValueError(f"enc_norm must be 'l1' or 'l2', got {norm!r}")


def generator_loss(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    z: torch.Tensor,
    z_hat: torch.Tensor,
    feat_real: torch.Tensor,
    feat_fake: torch.Tensor,
    weights: LossWeights = LossWeights(),
) -> GeneratorLosses:
    """Weighted GANomaly generator loss.

    Args:
        x: Input windows.
        x_hat: Reconstructions.
        z: Latent of the input, ``G_E(x)``.
        z_hat: Latent of the reconstruction, ``E(x_hat)``.
        feat_real: Discriminator features of ``x`` (treated as a target; detach upstream).
        feat_fake: Discriminator features of ``x_hat``.
        weights: Term weights and the L_enc norm.

    Returns:
        The weighted total and each unweighted term.
    """
    adv = adversarial_feature_loss(feat_real, feat_fake)
    con = contextual_loss(x, x_hat)
    enc = encoder_loss(z, z_hat, weights.enc_norm)
    total = weights.w_adv * adv + weights.w_con * con + weights.w_enc * enc
    return GeneratorLosses(total, adv, con, enc)


def discriminator_loss(prob_real: torch.Tensor, prob_fake: torch.Tensor) -> torch.Tensor:
    """BCE of D on real (target 1) and fake (target 0), averaged as in the reference code."""
    real = F.binary_cross_entropy(
        prob_real.float(), torch.ones_like(prob_real, dtype=torch.float32)
    )
    fake = F.binary_cross_entropy(
        prob_fake.float(), torch.zeros_like(prob_fake, dtype=torch.float32)
    )
    return 0.5 * (real + fake)
