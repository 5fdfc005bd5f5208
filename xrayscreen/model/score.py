"""Anomaly scores of GANomaly outputs. Callers put the model in ``eval()`` first;
:func:`score_windows` does it for them and restores the previous mode."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

LatentNorm = Literal["l1", "l2"]


def latent_score(z: torch.Tensor, z_hat: torch.Tensor, norm: LatentNorm = "l1") -> torch.Tensor:
    """Per-window A(x) = mean |z - z_hat| (``l1``, the paper) or mean (z - z_hat)^2 (``l2``).

    Args:
        z: ``(N, nz, 1, 1)`` or ``(N, nz)`` latents of the input.
        z_hat: Latents of the reconstruction, same shape.
        norm: ``"l1"`` or ``"l2"``.

    Returns:
        ``(N,)`` float32 scores.
    """
    diff = (z.float() - z_hat.float()).flatten(1)
    if norm == "l1":
        return diff.abs().mean(dim=1)
    if norm == "l2":
        return diff.pow(2).mean(dim=1)
    raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")


def dfeat_weight_of(params: dict | None) -> float:
    """Weight of a score's discriminator-feature part, ``params["dfeat_weight"]``
    (0 or absent: none; then scoring does not need the discriminator).

    Raises:
        ValueError: not a number.
    """
    raw = (params or {}).get("dfeat_weight", 0.0)
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"score parameter dfeat_weight is not a number: {raw!r}") from None


def discriminator_feature_residual(
    features: nn.Module, x: torch.Tensor, x_hat: torch.Tensor
) -> torch.Tensor:
    """Per-window mean squared difference of the discriminator's last feature map on the
    window and on its reconstruction: ``mean((f(x) - f(x_hat))^2)``.

    ``f`` is the layer the adversarial feature-matching loss L_adv reads, so this is
    L_adv at test time, per window: what the trained discriminator still tells apart
    between a window and GANomaly's normal-bag rendering of it.

    Args:
        features: ``Discriminator.features`` (eval mode).
        x: ``(N, C, w, w)`` model input.
        x_hat: Its reconstruction, same shape.

    Returns:
        ``(N,)`` float32.
    """
    fx = features(x).float()
    fh = features(x_hat.to(x.dtype)).float()
    return (fx - fh).pow(2).flatten(1).mean(dim=1)


def residual_map(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Per-pixel reconstruction residual |x - x_hat| averaged over channels: ``(N, H, W)``."""
    return (x.float() - x_hat.float()).abs().mean(dim=1)


@torch.inference_mode()
def score_windows(
    generator: nn.Module, windows: torch.Tensor, norm: LatentNorm = "l1"
) -> torch.Tensor:
    """Latent anomaly scores of a batch with the generator in eval mode.

    Eval mode matters: in train mode batch-norm uses the batch's own statistics,
    so a window's score would depend on which other windows share its batch
    (a known fault of the reference code).
    """
    was_training = generator.training
    generator.eval()
    try:
        _, z, z_hat = generator(windows)
        return latent_score(z, z_hat, norm)
    finally:
        generator.train(was_training)
