"""The GANomaly fit: G step then D step per batch (as in the paper's code), epochs,
validation on normal scans only, per-epoch checkpoints and bit-exact resume.

:class:`GanomalyTrainer` holds the networks and optimisers and exposes one method
per step (:meth:`~GanomalyTrainer.g_step`, :meth:`~GanomalyTrainer.d_step`,
:meth:`~GanomalyTrainer.maybe_reset_d`) so research variants can subclass and
replace one piece. :func:`iter_fit` drives it and yields :class:`TrainProgress`.

Reproducibility: every random choice is a pure function of the seed and the
epoch/step (initialisation, each epoch's shuffle and augmentation, a
discriminator reset), so a run resumed from an epoch checkpoint makes exactly the
same updates as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call

from xrayscreen.errors import ConfigError
from xrayscreen.inference.engine import autocast_dtype
from xrayscreen.model.ganomaly import (
    Discriminator,
    Generator,
    build_discriminator,
    build_generator,
    weights_init,
)
from xrayscreen.model.losses import discriminator_loss, generator_loss
from xrayscreen.model.score import latent_score

from . import checkpoint as ckpt
from . import ddp
from .config import TrainConfig
from .data import (
    RenderJitter,
    WindowSet,
    decode,
    device_batches,
    epoch_batches,
    epoch_seed,
    make_loader,
    resident_windows,
)

PHASES = ("loading", "train", "validate", "calibrate", "saving", "done")


@dataclass
class TrainProgress:
    """One progress event (the GUI and the terminal read these).

    Attributes:
        epoch: Current epoch, 1-based (0 while loading).
        epochs: Total epochs.
        step: Steps done in this epoch (or scans loaded while ``phase == "loading"``).
        steps_per_epoch: Steps per epoch (or scans to load).
        losses: Latest losses (per step while training, epoch means/validation after).
        eta_s: Estimated seconds to the end of training (None until measurable).
        phase: One of :data:`PHASES`.
        message: Human-readable line.
        result: The :class:`~xrayscreen.training.pipeline.TrainResult` on the final event.
    """

    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int
    losses: dict[str, float]
    eta_s: float | None
    phase: str
    message: str = ""
    result: Any = None


@dataclass
class FitOutcome:
    """What :func:`iter_fit` leaves behind."""

    generator: Generator
    discriminator: Discriminator
    history: list[dict[str, Any]]
    kept_epoch: int
    epochs_run: int
    d_resets: int
    stopped_early: bool
    elapsed_s: float
    precision: str = "fp32"  # what the forward passes ran in ("bf16" / "fp32")


def resolve_device(name: str, info: ddp.DistInfo | None = None) -> torch.device:
    """ "auto" -> CUDA when available else CPU; under DDP with CUDA, the local rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and info is not None and info.enabled:
        dev = torch.device("cuda", info.local_rank)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available")
    return dev


def derived_seed(seed: int, *parts: Any) -> int:
    """A 63-bit seed from the run seed and a tag (pure: resumes reproduce it)."""
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


class GanomalyTrainer:
    """Networks, optimisers and the per-batch update of GANomaly.

    Args:
        cfg: Training settings.
        device: Where to train.
        info: Distributed-job description (single process by default).
    """

    def __init__(
        self, cfg: TrainConfig, device: torch.device, info: ddp.DistInfo | None = None
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.use_bf16 = resolve_bf16(cfg.bf16, device)
        self.info = info or ddp.DistInfo()
        self.model_config = cfg.model_config()
        self.weights = cfg.loss_weights()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derived_seed(cfg.seed, "init"))
            self.netg = build_generator(self.model_config).to(device)
            self.netd = build_discriminator(self.model_config).to(device)
        self.opt_g = torch.optim.Adam(self.netg.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.netd.parameters(), lr=cfg.lr, betas=cfg.betas)
        # DDP averages gradients; the raw modules stay reachable for checkpoints.
        self.g = ddp.wrap(self.netg, self.info, device)
        self.d = ddp.wrap(self.netd, self.info, device)
        self.d_resets = 0

    # -- pieces of one update ------------------------------------------------------------
    def autocast(self):
        """bf16 autocast context when enabled (:func:`resolve_bf16`), else a no-op."""
        if not self.use_bf16:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def d_features_frozen(self, x: torch.Tensor) -> torch.Tensor:
        """D's features with D's parameters treated as constants (gradient flows to ``x`` only).

        The generator step needs gradients through D into G but not into D; the
        reference code computes (and later discards) D's gradients. Skipping them is
        equivalent for the update, cheaper, and keeps DDP's gradient hooks on D quiet.
        """
        params = {n: p.detach() for n, p in self.netd.named_parameters()}
        return functional_call(self.netd, params, (x,)).features

    def g_step(self, x: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
        """One generator update. Returns its losses and the (detached) reconstruction."""
        self.opt_g.zero_grad(set_to_none=True)
        with self.autocast():
            x_hat, z, z_hat = self.g(x)
            feat_real = self.d_features_frozen(x).detach()
            feat_fake = self.d_features_frozen(x_hat)
        losses = generator_loss(
            x,
            x_hat.float(),
            z.float(),
            z_hat.float(),
            feat_real.float(),
            feat_fake.float(),
            self.weights,
        )
        losses.total.backward()
        self.opt_g.step()
        out = {
            "g": float(losses.total.detach()),
            "adv": float(losses.adv.detach()),
            "con": float(losses.con.detach()),
            "enc": float(losses.enc.detach()),
        }
        return out, x_hat.detach()

    def d_step(self, x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, float]:
        """One discriminator update on real windows and (stale, detached) reconstructions."""
        self.opt_d.zero_grad(set_to_none=True)
        with self.autocast():
            prob_real = self.d(x).prob
            prob_fake = self.d(x_hat).prob
        loss = discriminator_loss(prob_real.float(), prob_fake.float())
        loss.backward()
        self.opt_d.step()
        return {"d": float(loss.detach())}

    def maybe_reset_d(self, d_loss: float, epoch: int, step: int) -> bool:
        """Re-initialise D when its loss falls below the threshold (paper: 1e-5).

        Under DDP the decision uses the mean loss over processes so every rank agrees.
        """
        loss = ddp.mean_scalar(d_loss, self.info, self.device)
        if not loss < self.cfg.d_reset_threshold:
            return False
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derived_seed(self.cfg.seed, "d_reset", epoch, step))
            self.netd.apply(weights_init)
        ddp.broadcast_module(self.netd, self.info)
        self.d_resets += 1
        return True

    def train_step(self, x: torch.Tensor, epoch: int, step: int) -> dict[str, float]:
        """G step, D step, reset check. Returns the step's losses."""
        self.netg.train()
        self.netd.train()
        losses, x_hat = self.g_step(x)
        losses.update(self.d_step(x, x_hat))
        if self.maybe_reset_d(losses["d"], epoch, step):
            losses["d_reset"] = 1.0
        return losses

    # -- validation (normal windows only) ---------------------------------------------------
    @torch.no_grad()
    def validate(self, windows: WindowSet, batch: int = 256) -> dict[str, float]:
        """Mean validation losses in eval mode: L_con, L_enc, their weighted sum, latent score.

        Uses only held-out NORMAL windows; this is what model selection may look at.
        """
        if len(windows) == 0:
            return {}
        self.netg.eval()
        tot = {"val_con": 0.0, "val_enc": 0.0, "val_score": 0.0}
        n = len(windows)
        for i in range(0, n, batch):
            x = decode(windows.data[i : i + batch]).to(self.device)
            with self.autocast():
                x_hat, z, z_hat = self.netg(x)
            k = x.shape[0]
            tot["val_con"] += float((x_hat.float() - x).abs().mean()) * k
            d = (z.float() - z_hat.float()).flatten(1)
            enc = d.pow(2).mean() if self.cfg.enc_norm == "l2" else d.abs().mean()
            tot["val_enc"] += float(enc) * k
            tot["val_score"] += float(latent_score(z, z_hat, "l1").sum())
        self.netg.train()
        out = {k: v / n for k, v in tot.items()}
        out["val_loss"] = self.cfg.w_con * out["val_con"] + self.cfg.w_enc * out["val_enc"]
        return out

    # -- checkpoint state ------------------------------------------------------------------
    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything needed to continue bit-exactly: tensors and JSON-able optimiser meta."""
        t = {**ckpt.module_tensors(self.netg, "netg"), **ckpt.module_tensors(self.netd, "netd")}
        tg, mg = ckpt.flatten_optimizer(self.opt_g, "optg")
        td, md = ckpt.flatten_optimizer(self.opt_d, "optd")
        t.update(tg)
        t.update(td)
        return t, {"optg": mg, "optd": md, "d_resets": self.d_resets}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Inverse of :meth:`state_tensors`."""
        ckpt.load_module(self.netg, tensors, "netg")
        ckpt.load_module(self.netd, tensors, "netd")
        ckpt.unflatten_optimizer(self.opt_g, tensors, meta["optg"], "optg")
        ckpt.unflatten_optimizer(self.opt_d, tensors, meta["optd"], "optd")
        self.d_resets = int(meta.get("d_resets", 0))


def resolve_bf16(setting: bool | None, device: torch.device) -> bool:
    """Whether training runs its forward passes in bf16: ``True`` / ``False`` as set, and
    for ``None`` (auto) only where ``device`` has bf16 units -- a CPU with AMX or
    AVX512-BF16 (elsewhere bf16 is emulated and slow), or a CUDA GPU that supports it."""
    if setting is not None:
        return bool(setting)
    # The scoring engine's own "auto" rule; where it would pick float16 (a CUDA GPU without
    # bf16), training stays in float32 (float16 would need loss scaling).
    return autocast_dtype(device, "auto") is torch.bfloat16


def _mean_losses(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for r in rows for k in r if k != "d_reset"})
    out = {k: sum(r.get(k, 0.0) for r in rows) / max(len(rows), 1) for k in keys}
    out["d_resets"] = float(sum(r.get("d_reset", 0.0) for r in rows))
    return out


# Settings that may change between a run and its resume without changing the maths.
_RESUME_FREE = {"device", "num_workers", "threads", "cache_file", "epochs", "patience"}


def _check_resume(state: dict[str, Any], cfg: TrainConfig, fingerprint: str) -> None:
    old = dict(state.get("config", {}))
    new = cfg.to_dict()
    diff = sorted(
        k for k in set(old) | set(new) if k not in _RESUME_FREE and old.get(k) != new.get(k)
    )
    if diff:
        raise ConfigError(f"cannot resume: settings differ from the checkpoint ({', '.join(diff)})")
    if state.get("fingerprint") != fingerprint:
        raise ConfigError("cannot resume: the training scans differ from the checkpoint's")


def iter_fit(
    cfg: TrainConfig,
    train: WindowSet,
    val: WindowSet,
    *,
    work_dir: Path | None = None,
    resume: bool = False,
    info: ddp.DistInfo | None = None,
    trainer: GanomalyTrainer | None = None,
    fingerprint: str = "",
    outcome: list[FitOutcome] | None = None,
) -> Iterator[TrainProgress]:
    """Train, yielding progress; append the :class:`FitOutcome` to ``outcome`` at the end.

    Args:
        cfg: Settings.
        train: Training windows.
        val: Held-out normal windows (may be empty; then ``keep="best_val"`` acts as "final").
        work_dir: Where epoch checkpoints go (``None``: no checkpoints).
        resume: Continue from the newest checkpoint in ``work_dir`` (if any).
        info: Distributed-job description.
        trainer: A pre-built (e.g. research-variant) trainer; default builds one.
        fingerprint: Data identity, checked on resume.
        outcome: A list that receives the result (generators cannot return values nicely).
    """
    info = info or ddp.DistInfo()
    device = resolve_device(cfg.device, info)
    tr = trainer or GanomalyTrainer(cfg, device, info)
    history: list[dict[str, Any]] = []
    start_epoch, best_val, best_epoch, bad_epochs = 0, math.inf, 0, 0
    best_state: dict[str, torch.Tensor] | None = None
    elapsed_before = 0.0
    resumed_stopped = False
    if resume and work_dir is not None:
        found = ckpt.load_latest(work_dir)
        if found is not None:
            _check_resume(found.state, cfg, fingerprint)
            tr.load_state(found.tensors, found.state["trainer"])
            history = list(found.state["history"])
            start_epoch = int(found.state["epochs_done"])
            best_val = float(found.state.get("best_val", math.inf))
            best_epoch = int(found.state.get("best_epoch", 0))
            bad_epochs = int(found.state.get("bad_epochs", 0))
            elapsed_before = float(found.state.get("elapsed_s", 0.0))
            if "rng.torch" in found.tensors:
                torch.set_rng_state(found.tensors["rng.torch"])
            if any(k.startswith("best.") for k in found.tensors):
                best_state = {k[5:]: v for k, v in found.tensors.items() if k.startswith("best.")}
            resumed_stopped = bool(found.state.get("stopped_early"))
    use_best = cfg.keep == "best_val" and len(val) > 0
    stopped_early = resumed_stopped
    t0 = time.perf_counter()
    steps_this_session = 0
    epoch = start_epoch
    jitter = RenderJitter(
        float(cfg.jitter_gamma), float(cfg.jitter_hue), cfg.representation, int(cfg.seed)
    )
    # On an accelerator the window cache goes up once and batches are made there
    # (the host loader's workers are then not used).
    resident = resident_windows(train.data, device) if cfg.num_workers == 0 else None
    for epoch in range(start_epoch, cfg.epochs):
        if stopped_early:
            break
        batches, codes = epoch_batches(
            len(train),
            cfg.batch_size,
            cfg.seed,
            epoch,
            augment_on=cfg.augment,
            rank=info.rank,
            world=info.world,
        )
        spe = len(batches)
        seed_e = epoch_seed(cfg.seed, epoch) * 31 + info.rank
        if resident is not None:
            loader: Iterable[torch.Tensor] = device_batches(
                resident, batches, codes, jitter, seed_e
            )
        else:
            loader = make_loader(train.data, batches, codes, cfg.num_workers, jitter, seed_e)
        rows: list[dict[str, float]] = []
        t_epoch = time.perf_counter()
        for step, x in enumerate(loader):
            x = x.to(device, non_blocking=True)
            losses = tr.train_step(x, epoch, step)
            rows.append(losses)
            steps_this_session += 1
            rate = (time.perf_counter() - t0) / steps_this_session
            remaining = (cfg.epochs - epoch - 1) * spe + (spe - step - 1)
            yield TrainProgress(
                epoch + 1,
                cfg.epochs,
                step + 1,
                spe,
                losses,
                rate * remaining,
                "train",
            )
        # Keep batch-norm statistics identical on every rank (each saw its own batches).
        ddp.broadcast_module(tr.netg, info)
        ddp.broadcast_module(tr.netd, info)
        record: dict[str, Any] = {"epoch": epoch + 1, **_mean_losses(rows)}
        record["time_s"] = time.perf_counter() - t_epoch
        if len(val):
            yield TrainProgress(epoch + 1, cfg.epochs, spe, spe, {}, None, "validate")
            record.update(tr.validate(val))
            if record["val_loss"] < best_val:
                best_val, best_epoch, bad_epochs = record["val_loss"], epoch + 1, 0
                if use_best:
                    best_state = {
                        **ckpt.module_tensors(tr.netg, "netg"),
                        **ckpt.module_tensors(tr.netd, "netd"),
                    }
            else:
                bad_epochs += 1
            if use_best and cfg.patience and bad_epochs >= cfg.patience:
                stopped_early = True
        history.append(record)
        if work_dir is not None and info.is_main:
            tensors, meta = tr.state_tensors()
            tensors["rng.torch"] = ckpt.rng_tensor()
            if best_state is not None:
                tensors.update({f"best.{k}": v for k, v in best_state.items()})
            ckpt.save_checkpoint(
                work_dir,
                epoch + 1,
                tensors,
                {
                    "epochs_done": epoch + 1,
                    "history": history,
                    "best_val": best_val if math.isfinite(best_val) else None,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "stopped_early": stopped_early,
                    "config": cfg.to_dict(),
                    "fingerprint": fingerprint,
                    "elapsed_s": elapsed_before + time.perf_counter() - t0,
                    "trainer": meta,
                },
            )
        ddp.barrier(info)
        eta = (
            (time.perf_counter() - t0) / max(steps_this_session, 1) * spe * (cfg.epochs - epoch - 1)
        )
        yield TrainProgress(
            epoch + 1,
            cfg.epochs,
            spe,
            spe,
            {k: float(v) for k, v in record.items() if isinstance(v, (int, float))},
            eta,
            "validate",
            message=_epoch_line(record),
        )
    kept = len(history)
    if use_best and best_state is not None:
        ckpt.load_module(tr.netg, best_state, "netg")
        ckpt.load_module(tr.netd, best_state, "netd")
        kept = best_epoch
    tr.netg.eval()
    tr.netd.eval()
    if outcome is not None:
        outcome.append(
            FitOutcome(
                generator=tr.netg,
                discriminator=tr.netd,
                history=history,
                kept_epoch=kept,
                epochs_run=len(history),
                d_resets=tr.d_resets,
                stopped_early=stopped_early or (len(history) < cfg.epochs),
                elapsed_s=elapsed_before + time.perf_counter() - t0,
                precision="bf16" if tr.use_bf16 else "fp32",
            )
        )


def _epoch_line(r: dict[str, Any]) -> str:
    parts = [f"epoch {r['epoch']}"]
    for k in ("g", "con", "enc", "adv", "d", "val_loss"):
        if k in r:
            parts.append(f"{k} {r[k]:.4g}")
    if r.get("d_resets"):
        parts.append(f"D resets {int(r['d_resets'])}")
    return "  ".join(parts)


def fit(cfg: TrainConfig, train: WindowSet, val: WindowSet, **kw: Any) -> FitOutcome:
    """Blocking :func:`iter_fit`."""
    out: list[FitOutcome] = []
    for _ in iter_fit(cfg, train, val, outcome=out, **kw):
        pass
    return out[0]
