"""Research variant of the GANomaly trainer (issue 7), driven by ``TrainConfig.research``.

Keys (all optional; absent = the paper's behaviour):

* ``"d_loss"``: ``"bce"`` (paper) or ``"hinge"`` (hinge loss on D's logits; the generator
  keeps the paper's feature-matching adversarial term).
* ``"lr_d"``: discriminator learning rate (two-timescale update; default ``TrainConfig.lr``).
* ``"lr_g"``: generator learning rate (default ``TrainConfig.lr``).
* ``"reset_stuck"``: also re-initialise D when its loss has been stuck at a constant
  (range < ``"stuck_range"``, default 1e-4, over the last ``"stuck_steps"``, default 50,
  steps). The SIXray trial's D collapsed to a constant loss that the paper's ``< 1e-5``
  rule never sees.
* ``"reset_window"``: apply the paper's ``< d_reset_threshold`` rule to the mean of the
  last this many D losses (default 1: every batch, the paper's rule). With a hinge loss
  a single batch at exactly 0 is D winning by its margin, not a collapse: per batch the
  rule fired 84-117 times in 3-5 X-ray epochs; over 50 batches, twice, with the same
  scores (``docs/BENCHMARKS.md``, issue 7 row 7).
* ``"generator"``: ``"dcgan"`` or ``"unet"`` (:mod:`xrayscreen.model.variants`), with
  ``"skip_max_res"``.

Use it with ``train(..., trainer_factory=ResearchTrainer)`` or through
:func:`trainer_for`, which picks it whenever ``cfg.research`` is non-empty.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from xrayscreen.errors import ConfigError
from xrayscreen.model.ganomaly import GANomalyConfig, weights_init
from xrayscreen.model.variants import build_generator

from . import ddp
from .config import TrainConfig
from .loop import GanomalyTrainer, derived_seed

KNOWN_KEYS = {
    "d_loss",
    "lr_d",
    "lr_g",
    "reset_stuck",
    "stuck_range",
    "stuck_steps",
    "reset_window",
    "generator",
    "skip_max_res",
}


def research_model_config(cfg: TrainConfig) -> GANomalyConfig:
    """``cfg.model_config()`` plus the generator variant recorded in ``extras``."""
    base = cfg.model_config()
    r = cfg.research or {}
    extras = dict(base.extras)
    if r.get("generator", "dcgan") != "dcgan":
        extras["generator"] = r["generator"]
        if "skip_max_res" in r:
            extras["skip_max_res"] = int(r["skip_max_res"])
    return dataclasses.replace(base, extras=extras)


class ResearchTrainer(GanomalyTrainer):
    """:class:`GanomalyTrainer` with hinge D loss, TTUR, stuck-D reset and generator variants."""

    def __init__(
        self, cfg: TrainConfig, device: torch.device, info: ddp.DistInfo | None = None
    ) -> None:
        super().__init__(cfg, device, info)
        r = dict(cfg.research or {})
        unknown = set(r) - KNOWN_KEYS
        if unknown:
            raise ConfigError(f"unknown research training options: {sorted(unknown)}")
        self.d_loss_kind = r.get("d_loss", "bce")
        if self.d_loss_kind not in ("bce", "hinge"):
            raise ConfigError(f"research d_loss must be 'bce' or 'hinge', got {self.d_loss_kind!r}")
        self.reset_stuck = bool(r.get("reset_stuck", False))
        self.stuck_range = float(r.get("stuck_range", 1e-4))
        self.stuck_steps = int(r.get("stuck_steps", 50))
        self.reset_window = int(r.get("reset_window", 1))
        if self.reset_window < 1 or self.stuck_steps < 1:
            raise ConfigError("research reset_window and stuck_steps must be >= 1")
        self._d_hist: list[float] = []
        self.model_config = research_model_config(cfg)
        if self.model_config.extras.get("generator", "dcgan") != "dcgan":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derived_seed(cfg.seed, "init"))
                self.netg = build_generator(self.model_config).to(device)
            self.g = ddp.wrap(self.netg, self.info, device)
        self.lr_g = float(r.get("lr_g", cfg.lr))
        self.lr_d = float(r.get("lr_d", cfg.lr))
        self.opt_g = torch.optim.Adam(self.netg.parameters(), lr=self.lr_g, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.netd.parameters(), lr=self.lr_d, betas=cfg.betas)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """D's logits. Single process: straight from the head (no sigmoid round trip).
        Under DDP: through the wrapped module (so its gradient hooks see a normal
        forward), recovering the logit from the probability in float32."""
        if self.info.enabled:
            p = self.d(x).prob.float().clamp(1e-6, 1 - 1e-6)
            return torch.log(p) - torch.log1p(-p)
        head: nn.Module = self.netd.classifier[0]
        return head(self.netd.features(x)).reshape(-1)

    def d_step(self, x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, float]:
        """D update with the configured loss (BCE on logits, or hinge)."""
        self.opt_d.zero_grad(set_to_none=True)
        with self.autocast():
            l_real = self._logits(x).float()
            l_fake = self._logits(x_hat).float()
        if self.d_loss_kind == "hinge":
            loss = 0.5 * (F.relu(1 - l_real).mean() + F.relu(1 + l_fake).mean())
        else:
            loss = 0.5 * (
                F.binary_cross_entropy_with_logits(l_real, torch.ones_like(l_real))
                + F.binary_cross_entropy_with_logits(l_fake, torch.zeros_like(l_fake))
            )
        loss.backward()
        self.opt_d.step()
        return {"d": float(loss.detach())}

    def maybe_reset_d(self, d_loss: float, epoch: int, step: int) -> bool:
        """Paper rule (loss < threshold) or, with ``reset_stuck``, a loss stuck at a constant."""
        loss = ddp.mean_scalar(d_loss, self.info, self.device)
        self._d_hist.append(loss)
        del self._d_hist[: -max(self.stuck_steps, self.reset_window)]
        recent = self._d_hist[-self.stuck_steps :]
        stuck = (
            self.reset_stuck
            and len(recent) >= self.stuck_steps
            and max(recent) - min(recent) < self.stuck_range
        )
        window = self._d_hist[-self.reset_window :]
        low = len(window) >= self.reset_window and (
            sum(window) / len(window) < self.cfg.d_reset_threshold
        )
        if not (low or stuck):
            return False
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derived_seed(self.cfg.seed, "d_reset", epoch, step))
            self.netd.apply(weights_init)
        ddp.broadcast_module(self.netd, self.info)
        self.opt_d = torch.optim.Adam(self.netd.parameters(), lr=self.lr_d, betas=self.cfg.betas)
        self._d_hist.clear()
        self.d_resets += 1
        return True

    def state_tensors(self):
        """Parent state plus the recent D-loss history, so a resume stays bit-exact."""
        tensors, meta = super().state_tensors()
        meta["d_hist"] = list(self._d_hist)
        return tensors, meta

    def load_state(self, tensors, meta) -> None:
        """Inverse of :meth:`state_tensors`."""
        super().load_state(tensors, meta)
        self._d_hist = [float(v) for v in meta.get("d_hist", [])]


def trainer_for(cfg: TrainConfig, device: torch.device, info: ddp.DistInfo | None = None):
    """:class:`ResearchTrainer` when ``cfg.research`` is set, else the plain trainer."""
    if cfg.research:
        return ResearchTrainer(cfg, device, info)
    return GanomalyTrainer(cfg, device, info)
