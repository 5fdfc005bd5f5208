"""Helpers for model-level tests (imported by the tests in this folder): a tiny real
GANomaly with a feature memory, saved and loaded through the bundle format."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from xrayscreen.imaging.representation import WorkingScale
from xrayscreen.model.bundle import InputSpec, ModelBundle, ScoreSpec, load_bundle, save_bundle
from xrayscreen.model.feature_bank import FeatureBank, encoder_map, pool
from xrayscreen.model.ganomaly import GANomalyConfig, build_discriminator, build_generator


def memory_bundle(
    path,
    config: GANomalyConfig,
    *,
    level: int = 2,
    kind: str = "feature_knn",
    params: dict[str, Any] | None = None,
    discriminator: bool = False,
) -> ModelBundle:
    """A random-weight GANomaly (non-trivial batch-norm statistics, so BN folding is
    exercised) whose feature memory holds 300 random windows at ``level`` (k = 3),
    scored as ``kind`` with ``params`` added, saved to ``path`` and loaded back."""
    torch.manual_seed(0)
    g = build_generator(config).eval()
    for m in g.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.rand(300, 3, config.isize, config.isize) * 2 - 1
    with torch.no_grad():
        bank = FeatureBank.fit(pool(encoder_map(g.encoder1.body, x, level)), level=level, k=3)
    b = ModelBundle(
        config=config,
        generator=g,
        discriminator=build_discriminator(config).eval() if discriminator else None,
        input=InputSpec(scale=WorkingScale()),
        score=ScoreSpec(kind=kind, params={**bank.params(), **(params or {})}),
        feature_bank=bank,
    )
    save_bundle(b, path)
    return load_bundle(path)
