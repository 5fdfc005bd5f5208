"""``xrayscreen train`` / ``xrayscreen-train``: fit a GANomaly bundle on curated normal scans.

Runs the same under ``torchrun`` (DistributedDataParallel, one process per GPU or
gloo processes on CPU); only rank 0 prints and writes files.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from xrayscreen.errors import XrayscreenError

from .config import TrainConfig, xray_settings


def _on_off(text: str) -> bool:
    """``on`` / ``off`` (or true / false, yes / no, 1 / 0) as a bool, for argparse."""
    value = text.strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")


# CLI flag -> TrainConfig field (flags left unset keep the --config file's / default value).
_FLAGS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "epochs": ("epochs", int, "training epochs (X-ray default 5; --preset paper 25)"),
    "window": ("window", int, "window side in pixels (default 64)"),
    "stride": (
        "stride",
        int,
        "stride between training windows (X-ray default: the window, 64; --preset paper: half of it)",
    ),
    "ngf": ("ngf", int, "generator width (X-ray default 32; --preset paper 64)"),
    "ndf": ("ndf", int, "discriminator width (X-ray default 32; --preset paper 64)"),
    "nz": ("nz", int, "latent size (default 100)"),
    "batch_size": ("batch_size", int, "windows per step (default 64)"),
    "lr": ("lr", float, "Adam learning rate (default 2e-4, the paper's)"),
    "device": ("device", str, "cpu, cuda, cuda:N or auto (default)"),
    "seed": ("seed", int, "random seed (default 0)"),
    "representation": (
        "representation",
        str,
        "model input: rgb_attenuation (X-ray default), rgb (--preset paper), log_attenuation",
    ),
    "longer_side": ("longer_side", int, "working scale: longer image side in px (default 800)"),
    "jitter_gamma": (
        "jitter_gamma",
        float,
        "render each training window with transmission T**G, G log-uniform in "
        "[1/J, J] (another scanner's density; 1 = off)",
    ),
    "jitter_hue": (
        "jitter_hue",
        float,
        "turn each training window's colours by up to this many degrees (another palette; 0 = off)",
    ),
    "val_fraction": ("val_fraction", float, "fraction of scans held out (default 0.1)"),
    "keep": ("keep", str, "final (default) or best_val"),
    "patience": ("patience", int, "early-stop patience in epochs with keep=best_val"),
    "threads": ("threads", int, "CPU threads (default: torch's)"),
    "num_workers": ("num_workers", int, "DataLoader workers (default 0)"),
    "max_windows_per_scan": ("max_windows_per_scan", int, "cap windows per scan (0 = all)"),
    "cache_file": ("cache_file", str, "window cache file (.safetensors) to reuse"),
    "groups": (
        "groups",
        str,
        "rescan groups file (one physical bag per line, the names of its scans): a bag's "
        "scans stay on one side of the held-out split",
    ),
    "score_kind": (
        "score_kind",
        str,
        "anomaly score: latent (the paper's), residual, residual_excess (attenuation the "
        "reconstruction does not explain), feature_knn (G_E features vs a memory of normal "
        "training windows), feature_knn_residual",
    ),
    "scan_norm": (
        "scan_norm",
        str,
        "per-scan score normalisation: none (default) or robust_z",
    ),
    "context_px": (
        "context_px",
        float,
        "spatial context radius in working-scale px (0 = off): window evidence averaged "
        "with its neighbours'",
    ),
    "context_self": (
        "context_self",
        float,
        "weight in [0, 1) kept on a window's own score inside the context (default 0)",
    ),
    "zoom": (
        "zoom",
        float,
        "zoomed-out view: also score every window on the scan shrunk this many times (1 = off)",
    ),
    "zoom_mix": (
        "zoom_mix",
        str,
        "how the two views combine: max (the larger; default) or mean (--zoom-weight)",
    ),
    "zoom_weight": (
        "zoom_weight",
        float,
        "weight in (0, 1] of the zoomed-out view in a mean mix (default 0.5)",
    ),
    "density_weight": (
        "density_weight",
        float,
        "weight of the window's density (robust z within the scan) added to the model's "
        "per-scan score (0 = off)",
    ),
    "tip_weight": (
        "tip_weight",
        float,
        "weight of a head trained on simulated threats projected into the normal training "
        "scans, read on the feature memory's embeddings and added to each view's per-scan "
        "score (0 = off)",
    ),
    "tip_window_share": (
        "tip_window_share",
        float,
        "share of that weight the working-scale view's head gets beside the zoomed-out "
        "view's (default 1)",
    ),
    "tip_per_bag": (
        "tip_per_bag",
        int,
        "threats projected into each training scan for that head (default 2)",
    ),
    "tip_hard_per_bag": (
        "tip_hard_per_bag",
        int,
        "threat-free windows per training scan that head's first fit scores highest, "
        "added for a refit (hard-negative mining; 0 = off)",
    ),
    "tip_cells": (
        "tip_cells",
        int,
        "that head also reads the encoder map averaged over a grid of this many cells a "
        "side (X-ray default 4; 0 = the pooled embedding alone)",
    ),
    "tip_cell_max": (
        "tip_cell_max",
        _on_off,
        "on / off: that head also reads each grid cell's maximum",
    ),
    "tip_conv": (
        "tip_conv",
        int,
        "that head is a small convolution over the encoder map max-pooled to this many "
        "positions a side (0 = the MLP head, the default; needs --tip-cells 0)",
    ),
    "tip_abs_share": (
        "tip_abs_share",
        float,
        "share of that head's weight on its logit read absolutely (against the held-out "
        "normal scans, not within the scan); the rest on its within-scan z (default 0)",
    ),
    "tip_clutter": (
        "tip_clutter",
        float,
        "place that head's projected threats toward the bags' dense contents "
        "(opacity to this power; 0 = anywhere in the bag, the default)",
    ),
    "tip_draws": (
        "tip_draws",
        int,
        "heads averaged into that head, each on its own draw of projected threats (default 1)",
    ),
    "tip_decoys": (
        "tip_decoys",
        int,
        "benign dense objects projected into each training scan as that head's negatives "
        "(default 0)",
    ),
    "tip_members": (
        "tip_members",
        int,
        "nets averaged into that head per view, each on its own sub-sample of the bags (default 1)",
    ),
    "dfeat_weight": (
        "dfeat_weight",
        float,
        "weight of the discriminator-feature residual added to a memory-plus score (0 = off)",
    ),
    "bank_level": ("bank_level", int, "feature_knn: encoder activation level (default 2)"),
    "bank_k": ("bank_k", int, "feature_knn: neighbours averaged (default 5)"),
    "bank_size": ("bank_size", int, "feature_knn: most training windows kept (default 20000)"),
    "target_bag_far": (
        "target_bag_far",
        float,
        "share of held-out normal bags allowed to alarm at the default threshold (default: "
        "off, the window rule alone)",
    ),
    "bag_rule": (
        "bag_rule",
        str,
        "how --target-bag-far reads the held-out bags' peaks: gumbel (a fitted Gumbel law) "
        "or empirical (at most that share of them)",
    ),
    "target_far": (
        "target_window_far",
        float,
        "window false-alarm rate of the default threshold (default 0.01)",
    ),
}


#: Two-number ``LOW HIGH`` flags, each named after the TrainConfig field it sets.
_RANGE_FLAGS: dict[str, str] = {
    "tip_size_range": "range of the factor a training scan's pixel pitch is multiplied by for "
    "the projected-threat head's threats (1 = physical size, 2 = half as large; default 1 2)",
    "tip_thickness_range": "range (log-uniform) of the factor on that head's projected "
    "threats' areal density (1 = the simulator's steel, smaller = lighter; default 0.25 1)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``train`` options."""
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="NORMAL_DIR",
        help="folders / scan files / .txt lists of NORMAL scans",
    )
    parser.add_argument(
        "--out", required=True, metavar="BUNDLE_DIR", help="model bundle directory to create"
    )
    parser.add_argument("--config", metavar="JSON", help="training settings file (TrainConfig)")
    parser.add_argument(
        "--preset",
        choices=("xray", "paper"),
        default="xray",
        help="base settings without --config: xray (default; stable D, -log RGB input, "
        "feature_knn score normalised per scan: docs/BENCHMARKS.md issue 7) or paper "
        "(Akcay et al. 2018 as published, latent score)",
    )
    for flag, (_field, typ, help_text) in _FLAGS.items():
        parser.add_argument("--" + flag.replace("_", "-"), type=typ, default=None, help=help_text)
    parser.add_argument(
        "--bank-gammas",
        nargs="*",
        type=float,
        default=None,
        metavar="G",
        help="feature_knn: the memory also draws from training windows rendered with "
        "transmission T**G (another scanner; X-ray default 0.8 1.25; no values = none)",
    )
    parser.add_argument(
        "--bank-hues",
        nargs="*",
        type=float,
        default=None,
        metavar="DEG",
        help="feature_knn: the memory also draws from training windows whose colours are "
        "turned by these angles (another palette; no values = none)",
    )
    for flag, help_text in _RANGE_FLAGS.items():
        parser.add_argument(
            "--" + flag.replace("_", "-"),
            nargs=2,
            type=float,
            default=None,
            metavar=("LOW", "HIGH"),
            help=help_text,
        )
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument(
        "--bf16",
        action="store_true",
        default=None,
        help="bf16 autocast (the X-ray default uses it where the device has bf16 units)",
    )
    precision.add_argument(
        "--fp32", action="store_true", default=None, help="float32 throughout, bf16 units or not"
    )
    parser.add_argument("--no-augment", action="store_true", help="no flips / rotations")
    parser.add_argument(
        "--half", action="store_true", default=None, help="store float16 weights (half the size)"
    )
    parser.add_argument("--max-scans", type=int, default=0, help="use only the first N scans")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the last epoch checkpoint"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    parser.add_argument(
        "--work-dir",
        default=None,
        help="checkpoint folder (default: hidden .<BUNDLE_DIR>.training beside the bundle)",
    )
    parser.add_argument("--keep-checkpoints", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Build the :class:`TrainConfig` from ``--config`` plus explicit flags."""
    if args.config:
        base = TrainConfig.from_json(args.config).to_dict()
    elif getattr(args, "preset", "xray") == "paper":
        base = TrainConfig().to_dict()
    else:  # the X-ray configuration chosen by the issue-7 ablation
        base = TrainConfig.xray().to_dict()
    for flag, (name, _t, _h) in _FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            base[name] = value
    if getattr(args, "bank_gammas", None) is not None:
        base["bank_gammas"] = list(args.bank_gammas)
    if getattr(args, "bank_hues", None) is not None:
        base["bank_hues"] = list(args.bank_hues)
    for flag in _RANGE_FLAGS:
        if getattr(args, flag, None) is not None:
            base[flag] = list(getattr(args, flag))
    if args.window is not None and args.stride is None and not args.config:
        # The default stride follows the window: the paper's overlap (window // 2), or the
        # X-ray default's non-overlapping windows.
        paper = getattr(args, "preset", "xray") == "paper"
        base["stride"] = None if paper else args.window
    if args.bf16:
        base["bf16"] = True
    if getattr(args, "fp32", None):
        base["bf16"] = False
    if args.half:
        base["half_weights"] = True
    if args.no_augment:
        base["augment"] = False
    # A config file or the flag asks for a palette jitter explicitly; the X-ray default's
    # is dropped for raw dual-energy input (no false colours to turn).
    # Likewise the projected-threat head for a score without a feature memory.
    explicit = {
        key
        for key in ("jitter_hue", "tip_weight")
        if args.config or getattr(args, key, None) is not None
    }
    return TrainConfig.from_dict(xray_settings(base, explicit))


def run(args: argparse.Namespace) -> int:
    """Run training; returns the exit status (errors are printed, not raised)."""
    from . import ddp
    from .pipeline import default_work_dir, iter_train

    try:
        cfg = config_from_args(args)
        if cfg.groups:  # a broken groups file is a setting error, found before any work
            from xrayscreen.evaluation.groups import load_groups

            load_groups(cfg.groups)
    except XrayscreenError as exc:
        print(f"xrayscreen train: {exc}", file=sys.stderr)
        return 2
    main_rank = int(__import__("os").environ.get("RANK", "0")) == 0
    show = main_rank and not args.quiet
    bars = _Bars(show)
    result = None
    try:
        for ev in iter_train(
            cfg,
            args.sources,
            args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            work_dir=args.work_dir,
            keep_checkpoints=args.keep_checkpoints,
            max_scans=args.max_scans,
        ):
            bars.update(ev)
            if ev.phase == "done":
                result = ev.result
    except XrayscreenError as exc:
        bars.close()
        print(f"xrayscreen train: {exc}", file=sys.stderr)
        if args.resume is False:
            print(
                f"(checkpoints, if any: {args.work_dir or default_work_dir(args.out)}; "
                "rerun with --resume to continue)",
                file=sys.stderr,
            )
        return 1
    except KeyboardInterrupt:
        bars.close()
        print("\ninterrupted; rerun with --resume to continue from the last epoch", file=sys.stderr)
        return 130
    bars.close()
    if main_rank and result is not None:
        summary = {
            "bundle": str(result.bundle_path),
            "model_id": result.bundle.model_id,
            "scans": result.n_scans,
            "train_windows": result.n_train_windows,
            "val_windows": result.n_val_windows,
            "kept_epoch": result.kept_epoch,
            "default_threshold": result.bundle.calibration.default_threshold
            if result.bundle.calibration
            else None,
            "report": str(result.report_path),
            "warnings": result.warnings,
        }
        if "tip_head" in result.bundle.training:
            summary["tip_head"] = result.bundle.training["tip_head"]
        print(json.dumps(summary, indent=1))
    del ddp
    return 0


class _Bars:
    """tqdm bars for loading and training (silent when disabled)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None
        self.kind = ""

    def _new(self, kind: str, total: int, desc: str) -> None:
        from tqdm import tqdm

        self.close()
        self.kind = kind
        self.bar = tqdm(
            total=total,
            desc=desc,
            unit="step" if kind == "train" else "scan",
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def update(self, ev) -> None:
        if not self.enabled:
            return
        if ev.phase == "loading":
            if self.kind != "loading":
                self._new("loading", ev.steps_per_epoch, "reading scans")
            self.bar.update(ev.step - self.bar.n)
        elif ev.phase == "train":
            if self.kind != "train":
                self._new("train", ev.steps_per_epoch * ev.epochs, "training")
                self.bar.update((ev.epoch - 1) * ev.steps_per_epoch + ev.step - 1)
            self.bar.update(1)
            if ev.step % 10 == 0 or ev.step == ev.steps_per_epoch:
                self.bar.set_postfix(
                    epoch=ev.epoch,
                    g=f"{ev.losses.get('g', 0):.3g}",
                    d=f"{ev.losses.get('d', 0):.3g}",
                    refresh=False,
                )
        elif ev.message and ev.phase in ("validate", "calibrate", "saving", "done"):
            if self.bar is not None:
                self.bar.write(ev.message)
            else:
                print(ev.message, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = None
        self.kind = ""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``xrayscreen-train`` console script."""
    parser = argparse.ArgumentParser(prog="xrayscreen-train", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
