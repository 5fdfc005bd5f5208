"""End-to-end training: normal scans -> windows -> GANomaly fit -> calibration -> bundle.

:func:`iter_train` is a generator of :class:`~xrayscreen.training.loop.TrainProgress`
events (the GUI streams them); the last event has ``phase == "done"`` and carries the
:class:`TrainResult`. :func:`train` is the blocking form with an optional callback.

Files: epoch checkpoints go to a work directory (default: the hidden sibling
``.<bundle name>.training`` of the output), removed after success unless asked to
keep them. The bundle is written atomically and never replaces an existing one
unless ``overwrite=True``; ``training_report.json`` and ``loss_curve.png`` are
written into the bundle directory (extra files that bundle loading ignores).
"""

from __future__ import annotations

import copy
import math
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from xrayscreen.errors import BundleError, ConfigError
from xrayscreen.inference.score_kinds import DENSER_SIGN, MEMORY_PLUS, uses_denser_sign
from xrayscreen.model.bundle import InputSpec, ModelBundle, ScoreSpec, save_bundle
from xrayscreen.model.feature_bank import FEATURE_KINDS

from . import ddp
from .calibrate import (
    calibrate_bundle,
    calibrate_on_scans,
    fit_component_scales,
    fit_dfeat_scale,
    fit_feature_bank,
)
from .config import TrainConfig
from .data import (
    LoadProgress,
    Source,
    WindowSet,
    iter_load_windows,
    iter_scans_of,
    read_cache,
    split_by_scan,
    write_cache,
)
from .loop import FitOutcome, GanomalyTrainer, TrainProgress, iter_fit, resolve_device
from .report import write_report
from .tip_head import fit_tip_head


@dataclass
class TrainResult:
    """What a finished training produced.

    Attributes:
        bundle_path: The saved bundle directory (``None`` on non-main DDP ranks).
        bundle: The bundle (generator in eval mode, discriminator included).
        history: Per-epoch loss records.
        kept_epoch: The epoch whose weights were kept.
        n_scans, n_train_scans, n_val_scans: Scan counts.
        n_train_windows, n_val_windows: Window counts.
        report_path, curve_path: ``training_report.json`` and ``loss_curve.png``.
        elapsed_s: Training time (fit only, summed over resumes).
        calibration_source: "validation" (held-out normal scans) or "training" (biased).
    """

    bundle_path: Path | None
    bundle: ModelBundle
    history: list[dict[str, Any]]
    kept_epoch: int
    n_scans: int
    n_train_scans: int
    n_val_scans: int
    n_train_windows: int
    n_val_windows: int
    report_path: Path | None = None
    curve_path: Path | None = None
    elapsed_s: float = 0.0
    calibration_source: str = "validation"
    warnings: list[str] = field(default_factory=list)


def default_work_dir(out_dir: str | Path) -> Path:
    """Where checkpoints of a training into ``out_dir`` go."""
    out = Path(out_dir)
    return out.parent / f".{out.name}.training"


def iter_train(
    config: TrainConfig,
    normal_sources: Iterable[Source] | Source,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    work_dir: str | Path | None = None,
    keep_checkpoints: bool = False,
    max_scans: int = 0,
    trainer_factory: Callable[[TrainConfig, torch.device, ddp.DistInfo], GanomalyTrainer]
    | None = None,
    windows: WindowSet | None = None,
) -> Iterator[TrainProgress]:
    """Train a GANomaly bundle on normal scans, yielding progress events.

    Args:
        config: Training settings.
        normal_sources: Folders, scan files, ``.txt`` file lists or ``Scan`` objects.
        out_dir: The bundle directory to create.
        resume: Continue from the newest checkpoint in the work directory.
        overwrite: Replace an existing bundle at ``out_dir`` (otherwise refused).
        work_dir: Checkpoint directory (default :func:`default_work_dir`).
        keep_checkpoints: Keep the work directory after success.
        max_scans: Use only the first N scans (0 = all).
        trainer_factory: Build a custom (research) trainer instead of :class:`GanomalyTrainer`.
        windows: Pre-cut windows (skips reading ``normal_sources``).

    Raises:
        BundleError: if ``out_dir`` exists and ``overwrite`` is False.
        ScanError: if sources are missing or unreadable.
        ConfigError: for impossible settings or a resume that does not match.
    """
    cfg = config
    cfg.validate()
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise BundleError(
            f"{out} already exists; choose another output folder or allow overwriting"
        )
    wdir = Path(work_dir) if work_dir else default_work_dir(out)
    device_type = resolve_device(cfg.device).type
    own_group = ddp.env_world_size() > 1 and not torch.distributed.is_initialized()
    info = ddp.init_from_env(device_type)
    device = resolve_device(cfg.device, info)
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        # -- windows --------------------------------------------------------------------
        ws = windows
        if ws is None and cfg.cache_file:
            ws = read_cache(cfg.cache_file, cfg)
        if ws is None:
            for item in iter_load_windows(normal_sources, cfg, max_scans):
                if isinstance(item, LoadProgress):
                    yield TrainProgress(
                        0,
                        cfg.epochs,
                        item.done,
                        item.total,
                        {},
                        None,
                        "loading",
                        message=f"read {item.name}: {item.n_windows} windows",
                    )
                else:
                    ws = item
            assert ws is not None
            if cfg.cache_file and info.is_main:
                write_cache(cfg.cache_file, ws, cfg)
        groups = _load_groups(cfg.groups)
        split = split_by_scan(ws, cfg.val_fraction, cfg.seed, cfg.min_val_scans, groups)
        fingerprint = ws.fingerprint()
        warnings: list[str] = []
        if groups is not None and not _names_in(groups, ws):
            warnings.append(
                f"the groups file {cfg.groups} names none of the training scans: the "
                "held-out split ignored it"
            )
        if len(split.val) == 0:
            warnings.append(
                "no held-out validation scans: calibration used TRAINING windows "
                "(thresholds will be optimistic); train on more scans"
            )
        # -- fit ------------------------------------------------------------------------
        if trainer_factory is None and cfg.research:
            from .research import ResearchTrainer  # hinge/TTUR/U-Net options (issue 7)

            trainer_factory = ResearchTrainer
        trainer = trainer_factory(cfg, device, info) if trainer_factory else None
        outcome: list[FitOutcome] = []
        yield from iter_fit(
            cfg,
            split.train,
            split.val,
            work_dir=wdir,
            resume=resume,
            info=info,
            trainer=trainer,
            fingerprint=fingerprint,
            outcome=outcome,
        )
        fo = outcome[0]
        # -- calibrate + save (main process only) ------------------------------------------
        bundle = _make_bundle(cfg, fo, ws, split, fingerprint)
        result = TrainResult(
            bundle_path=None,
            bundle=bundle,
            history=fo.history,
            kept_epoch=fo.kept_epoch,
            n_scans=len(ws.scan_ids),
            n_train_scans=len(split.train.scan_ids),
            n_val_scans=len(split.val.scan_ids),
            n_train_windows=len(split.train),
            n_val_windows=len(split.val),
            elapsed_s=fo.elapsed_s,
            calibration_source="validation" if len(split.val) >= 2 else "training",
            warnings=warnings,
        )
        if info.is_main:
            yield TrainProgress(
                cfg.epochs,
                cfg.epochs,
                0,
                0,
                {},
                None,
                "calibrate",
                message=(
                    "fitting the projected-threat head, then calibrating on held-out normal scans"
                    if cfg.tip_weight > 0
                    else "calibrating on held-out normal windows"
                ),
            )
            cal_windows = split.val if len(split.val) >= 2 else split.train
            result.warnings += fit_score(
                bundle, cfg, split.train, cal_windows, normal_sources, device
            )
            bundle.training["calibration_source"] = result.calibration_source
            bundle.generator.cpu()
            bundle.discriminator.cpu()  # type: ignore[union-attr]
            yield TrainProgress(
                cfg.epochs, cfg.epochs, 0, 0, {}, None, "saving", message=f"writing {out}"
            )
            result.bundle_path = save_bundle(
                bundle, out, half=cfg.half_weights, overwrite=overwrite
            )
            report = _report(cfg, result, split, fo)
            result.report_path, result.curve_path = write_report(out, report)
            if not keep_checkpoints:
                shutil.rmtree(wdir, ignore_errors=True)
        ddp.barrier(info)
        yield TrainProgress(
            cfg.epochs,
            cfg.epochs,
            0,
            0,
            {
                k: float(v)
                for k, v in (fo.history[-1] if fo.history else {}).items()
                if isinstance(v, (int, float))
            },
            0.0,
            "done",
            message=f"saved {out}" if info.is_main else "done",
            result=result,
        )
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)
        if own_group:
            ddp.shutdown(info)


def train(
    config: TrainConfig,
    normal_sources: Iterable[Source] | Source,
    out_dir: str | Path,
    *,
    callback: Callable[[TrainProgress], Any] | None = None,
    resume: bool = False,
    **kwargs: Any,
) -> TrainResult:
    """Blocking training; ``callback`` receives every :class:`TrainProgress`.

    Returning ``False`` from the callback does NOT stop training; to abort, iterate
    :func:`iter_train` and stop consuming (the last epoch checkpoint stays resumable).

    Returns:
        The :class:`TrainResult`.
    """
    result = None
    for ev in iter_train(config, normal_sources, out_dir, resume=resume, **kwargs):
        if callback is not None:
            callback(ev)
        if ev.phase == "done":
            result = ev.result
    assert result is not None
    return result


def _load_groups(path: str | None) -> dict[str, str] | None:
    """The rescan groups of ``cfg.groups`` (``None`` without a file)."""
    if not path:
        return None
    from xrayscreen.evaluation.groups import load_groups

    return load_groups(path)


def _names_in(groups: dict[str, str], ws: WindowSet) -> bool:
    """Whether the groups name any of the training scans (by file name or stem)."""
    from xrayscreen.evaluation.groups import group_of

    return any(group_of(n, groups) is not None for n in ws.scan_names)


def _make_bundle(cfg: TrainConfig, fo: FitOutcome, ws: WindowSet, split, fingerprint: str):
    gen = copy.deepcopy(fo.generator).eval()
    disc = copy.deepcopy(fo.discriminator).eval()
    if cfg.half_weights:
        # Calibrate the weights that will actually ship (float16-rounded).
        with torch.no_grad():
            for net in (gen, disc):
                for t in list(net.parameters()) + list(net.buffers()):
                    if t.is_floating_point():
                        t.copy_(t.half().float())
    return ModelBundle(
        config=cfg.model_config(),
        generator=gen,
        discriminator=disc,
        input=InputSpec(window=cfg.window, representation=cfg.representation, scale=cfg.scale),
        score=ScoreSpec(
            kind=cfg.score_kind,
            norm=cfg.score_norm,
            params=_score_params(cfg),
        ),
        training={
            "config": cfg.to_dict(),
            # Research runs may use two timescales (TrainConfig.research lr_g / lr_d):
            # record the rates the optimisers actually used.
            "optimizer": {
                "name": "adam",
                "lr_g": float((cfg.research or {}).get("lr_g", cfg.lr)),
                "lr_d": float((cfg.research or {}).get("lr_d", cfg.lr)),
                "betas": list(cfg.betas),
            },
            "loss_weights": {
                "w_adv": cfg.w_adv,
                "w_con": cfg.w_con,
                "w_enc": cfg.w_enc,
                "enc_norm": cfg.enc_norm,
            },
            "kept": cfg.keep,
            "kept_epoch": fo.kept_epoch,
            "epochs_run": fo.epochs_run,
            "d_resets": fo.d_resets,
        },
        provenance={
            "data_fingerprint": fingerprint,
            "n_scans": len(ws.scan_ids),
            "n_train_scans": len(split.train.scan_ids),
            "n_val_scans": len(split.val.scan_ids),
            "n_windows": len(ws),
            "n_train_windows": len(split.train),
            "n_val_windows": len(split.val),
            "epochs": fo.epochs_run,
            "kept_epoch": fo.kept_epoch,
            "seed": cfg.seed,
            "training_time_s": round(fo.elapsed_s, 1),
            "precision": fo.precision,
        },
    )


def _report(cfg: TrainConfig, r: TrainResult, split, fo: FitOutcome) -> dict[str, Any]:
    cal = r.bundle.calibration
    return {
        "bundle": str(r.bundle_path),
        "model_id": r.bundle.model_id,
        "config": cfg.to_dict(),
        "data_fingerprint": r.bundle.provenance.get("data_fingerprint"),
        "n_scans": r.n_scans,
        "train_scans": split.train.scan_ids,
        "val_scans": split.val.scan_ids,
        "train_scan_names": split.train.scan_names,
        "val_scan_names": split.val.scan_names,
        "n_train_windows": r.n_train_windows,
        "n_val_windows": r.n_val_windows,
        "epochs_run": fo.epochs_run,
        "kept_epoch": fo.kept_epoch,
        "stopped_early": fo.stopped_early,
        "d_resets": fo.d_resets,
        "elapsed_s": round(fo.elapsed_s, 1),
        "precision": fo.precision,
        "calibration_source": r.calibration_source,
        "calibration": None
        if cal is None
        else {
            "n_windows": cal.n_windows,
            "default_threshold": cal.default_threshold,
            "target_window_far": cal.target_window_far,
            "raw_threshold": _finite(cal.raw_threshold(cal.default_threshold)),
            "bag_far_at_default": cal.bag_far(cal.default_threshold),
            "bag_far_fitted_at_default": cal.bag_far_fitted(cal.default_threshold),
            "target_bag_far": cal.target_bag_far,
            "bag_rule": cal.bag_rule,
        },
        "tip_head": r.bundle.training.get("tip_head"),
        "warnings": r.warnings,
        "history": fo.history,
    }


def _finite(x: float) -> float | None:
    """JSON has no infinity; an unreachable threshold is reported as null."""
    return x if math.isfinite(x) else None


def _score_params(cfg: TrainConfig) -> dict[str, Any]:
    """The score settings a bundle carries from its training configuration."""
    params: dict[str, Any] = {}
    if cfg.scan_norm != "none":
        params["scan_norm"] = cfg.scan_norm
    if cfg.context_px > 0:
        params["context_px"] = float(cfg.context_px)
        if cfg.context_self > 0:
            params["context_self"] = float(cfg.context_self)
    if uses_denser_sign(cfg.score_kind):
        params["sign"] = DENSER_SIGN[cfg.representation]
    if cfg.zoom > 1:
        params["zoom"] = float(cfg.zoom)
        params["zoom_mix"] = cfg.zoom_mix
        if cfg.zoom_mix == "mean":
            params["zoom_weight"] = float(cfg.zoom_weight)
    if cfg.density_weight > 0:
        params["density_weight"] = float(cfg.density_weight)
    if cfg.dfeat_weight > 0:
        params["dfeat_weight"] = float(cfg.dfeat_weight)
    return params


def fit_score(
    bundle: ModelBundle,
    cfg: TrainConfig,
    train_windows: WindowSet,
    cal_windows: WindowSet,
    sources: Iterable[Source] | Source,
    device: torch.device,
) -> list[str]:
    """Fit everything the bundle's score needs after training; returns warnings.

    The feature memory on TRAINING windows (never the held-out ones, which calibrate
    the score), a memory-plus kind's component spreads and the calibration on the
    held-out windows, the projected-threat head on the TRAINING scans read again
    (``tip_weight``), and -- for a spatial-context score, which needs each window's
    neighbours -- the calibration again on the held-out scans read again and scored
    whole by the engine. Without those scans (pre-cut windows only) the window
    calibration stays, the head and the per-scan terms are left out, and a warning
    says so.
    """
    warnings: list[str] = []
    if cfg.score_kind in FEATURE_KINDS:
        bundle.feature_bank = fit_feature_bank(
            bundle,
            train_windows,
            device,
            level=cfg.bank_level,
            k=cfg.bank_k,
            max_size=cfg.bank_size,
            seed=cfg.seed,
            gammas=cfg.bank_gammas,
            hues=cfg.bank_hues,
        )
        bundle.score.params = {**bundle.score.params, **bundle.feature_bank.params()}
    if cfg.score_kind in MEMORY_PLUS:
        bundle.score.params = {
            **bundle.score.params,
            **fit_component_scales(bundle, cal_windows, device),
        }
    if cfg.dfeat_weight > 0:
        bundle.score.params = {
            **bundle.score.params,
            "dfeat_scale": fit_dfeat_scale(bundle, cal_windows, device),
        }
    if cfg.tip_weight > 0:
        warnings += _fit_tip(bundle, cfg, train_windows, sources, device)
    bundle.calibration, _ = calibrate_bundle(
        bundle, cal_windows, cfg.target_window_far, device, cfg.target_bag_far, cfg.bag_rule
    )
    if cfg.context_px > 0 or cfg.zoom > 1 or cfg.density_weight > 0 or bundle.tip_head:
        scans = iter_scans_of(sources, cal_windows.scan_ids, cal_windows.scan_names)
        try:
            bundle.calibration = calibrate_on_scans(
                bundle,
                scans,
                cfg.target_window_far,
                device,
                target_bag_far=cfg.target_bag_far,
                bag_rule=cfg.bag_rule,
            )
            bundle.training["calibration_context"] = "held-out scans scored whole"
        except ConfigError:
            if bundle.tip_head is not None:
                # Its logits are z-scores within whole scans: calibrated only on whole scans.
                _drop_tip(bundle)
                warnings.append(
                    "projected-threat head: the held-out scans could not be read again, so "
                    "the model's score does not add the head"
                )
            if cfg.density_weight > 0:
                # Densities are z-scores within whole scans: calibrated only on whole scans.
                params = dict(bundle.score.params)
                params.pop("density_weight", None)
                bundle.score.params = params
                warnings.append(
                    "window density: the held-out scans could not be read again, so the "
                    "model's score does not add window density"
                )
            if cfg.zoom > 1:
                # The zoomed view needs whole scans to be scored, calibrated and given
                # its own normalisation statistics; without them it is switched off
                # rather than shipped uncalibrated.
                params = dict(bundle.score.params)
                for key in ("zoom", "zoom_mix", "zoom_weight"):
                    params.pop(key, None)
                bundle.score.params = params
                warnings.append(
                    "zoomed-out view: the held-out scans could not be read again, so the "
                    "model scores windows at the working scale only"
                )
            if cfg.context_px > 0:
                warnings.append(
                    "spatial context: the held-out scans could not be read again, so the "
                    "calibration ignores the context (thresholds are conservative: fewer "
                    "alarms than stated)"
                )
            bundle.training["calibration_context"] = "windows only (context ignored)"
    return warnings


def _fit_tip(
    bundle: ModelBundle,
    cfg: TrainConfig,
    train_windows: WindowSet,
    sources: Iterable[Source] | Source,
    device: torch.device,
) -> list[str]:
    """Fit the projected-threat head on the TRAINING scans read again (``training.tip_head``)
    and switch it on in the bundle's score; without those scans, a warning instead."""
    try:
        head, info = fit_tip_head(
            bundle,
            lambda: iter_scans_of(sources, train_windows.scan_ids, train_windows.scan_names),
            device,
            per_bag=cfg.tip_per_bag,
            seed=cfg.seed,
            hard_per_bag=cfg.tip_hard_per_bag,
            members=cfg.tip_members,
            clutter=cfg.tip_clutter,
            cells=cfg.tip_cells,
            cell_max=cfg.tip_cell_max,
            conv=cfg.tip_conv,
            draws=cfg.tip_draws,
            size_range=cfg.tip_size_range,
            decoys=cfg.tip_decoys,
            thickness_range=cfg.tip_thickness_range,
        )
    except ConfigError as exc:
        return [f"projected-threat head not fitted ({exc}); the score does not add it"]
    # Calibrate the head that will ship (float16-rounded with half weights).
    bundle.tip_head = head.as_stored(cfg.half_weights)
    tip = {"tip_weight": float(cfg.tip_weight)}
    if cfg.tip_window_share != 1.0:  # the default stays out of model.json
        tip["tip_window_share"] = float(cfg.tip_window_share)
    if cfg.tip_cells:
        tip["tip_cells"] = int(cfg.tip_cells)
        if cfg.tip_cell_max:
            tip["tip_cell_max"] = True
    if cfg.tip_conv:
        tip["tip_conv"] = int(cfg.tip_conv)
    if cfg.tip_abs_share:  # its reference is fitted with the calibration on held-out scans
        tip["tip_abs_share"] = float(cfg.tip_abs_share)
    bundle.score.params = {**bundle.score.params, **tip}
    bundle.training["tip_head"] = info
    return []


def _drop_tip(bundle: ModelBundle) -> None:
    """Switch the projected-threat head off (and drop it from the bundle)."""
    bundle.tip_head = None
    params = dict(bundle.score.params)
    params.pop("tip_weight", None)
    params.pop("tip_window_share", None)
    params.pop("tip_cells", None)
    params.pop("tip_cell_max", None)
    params.pop("tip_conv", None)
    for key in ("tip_abs_share", "tip_abs_loc", "tip_abs_scale"):
        params.pop(key, None)
    bundle.score.params = params
    bundle.training.pop("tip_head", None)
