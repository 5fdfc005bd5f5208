"""Helpers for the scoring-engine tests (imported by conftest.py and the tests):
a stub generator with a known score, tiny real GANomaly bundles, synthetic scans."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from xrayscreen.imaging.representation import WorkingScale
from xrayscreen.imaging.scan import Scan, ScanKind
from xrayscreen.model.bundle import InputSpec, ModelBundle, load_bundle, save_bundle
from xrayscreen.model.ganomaly import GANomalyConfig, GeneratorOutput, build_generator

TINY = GANomalyConfig(isize=64, ngf=8, ndf=8, nz=16)


class StubGenerator(nn.Module):
    """z = window mean (repeated), z_hat = 0, x_hat = 0: latent score = |window mean|,
    residual = |x|. Counts the windows it sees in a class attribute (shared by the
    engine's deep copy)."""

    seen = 0
    calls = 0

    def __init__(self, nz: int = 4) -> None:
        super().__init__()
        self.nz = nz
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> GeneratorOutput:
        type(self).seen += int(x.shape[0])
        type(self).calls += 1
        m = x.float().mean(dim=(1, 2, 3))
        z = m[:, None, None, None].expand(-1, self.nz, 1, 1)
        return GeneratorOutput(torch.zeros_like(x), z, torch.zeros_like(z))


def window_mean_score(window: np.ndarray) -> float:
    """What the stub scores for a (C, w, w) window."""
    return abs(float(window.astype(np.float64).mean()))


def make_stub_bundle() -> ModelBundle:
    StubGenerator.seen = 0
    StubGenerator.calls = 0
    return ModelBundle(
        config=TINY,
        generator=StubGenerator(),  # type: ignore[arg-type]
        input=InputSpec(window=64, representation="rgb", scale=WorkingScale()),
    )


def make_tiny_bundle(tmp_path) -> ModelBundle:
    """A real (random-weight) tiny GANomaly, saved and loaded through the bundle format."""
    torch.manual_seed(0)
    g = build_generator(TINY)
    # Non-trivial batch-norm statistics so BN folding is really exercised.
    for m in g.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    b = ModelBundle(config=TINY, generator=g, input=InputSpec(scale=WorkingScale()))
    save_bundle(b, tmp_path / "tiny")
    return load_bundle(tmp_path / "tiny")


def make_scan(h: int, w: int, seed: int = 0, belt_cols: int = 0) -> Scan:
    """A dark random 'bag' with ``belt_cols`` columns of empty belt (white) on the left."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 200, (h, w, 3), dtype=np.uint8)
    if belt_cols:
        rgb[:, :belt_cols] = 250
    return Scan(rgb=rgb, kind=ScanKind.PSEUDO_COLOUR)


def run_to_end(gen) -> tuple[list, object]:
    """Drain a ``score_scan`` generator: its progress reports and its return value."""
    reports = []
    while True:
        try:
            reports.append(next(gen))
        except StopIteration as stop:
            return reports, stop.value
