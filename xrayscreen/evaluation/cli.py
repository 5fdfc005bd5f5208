"""``xrayscreen evaluate``: the X-ray benchmark protocol on labelled bags, as a command.

Example (the SIXray dev folder, test split, with a model)::

    xrayscreen evaluate --model BUNDLE \\
        --normal ../shared/data/sixray/normal --threat ../shared/data/sixray/threat/images \\
        --labels ../shared/data/sixray/threat/labels_yolo --masks ../shared/data/sixray/threat/masks \\
        --split test --out reports/test

Without ``--model`` only the four floors are evaluated.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from xrayscreen.errors import XrayscreenError

SPLIT_CHOICES = ("all", "train", "val", "test", "dev")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``xrayscreen evaluate``."""
    parser.add_argument(
        "--model",
        help="model bundle folder, or 'default' for the bundled model; omit for floors only",
    )
    parser.add_argument(
        "--normal", nargs="+", default=[], metavar="PATH", help="benign scans (files or folders)"
    )
    parser.add_argument(
        "--threat", nargs="+", default=[], metavar="PATH", help="threat scans (files or folders)"
    )
    parser.add_argument(
        "--labels", help="YOLO label folder (with classes.txt) or CSV of pixel boxes"
    )
    parser.add_argument(
        "--masks", help="folder of class-id mask images (any size; rescaled to the scan)"
    )
    parser.add_argument(
        "--mask-classes",
        default="gun,knife",
        help="names of mask ids 1, 2, ... (default gun,knife)",
    )
    parser.add_argument("--out", required=True, help="report folder (created)")
    parser.add_argument(
        "--split",
        choices=SPLIT_CHOICES,
        default="all",
        help="keep only the bags of this SIXray dev split (xrayscreen.evaluation.splits); default all",
    )
    parser.add_argument(
        "--far", type=float, default=0.01, help="window false-alarm rate for the detection figure"
    )
    parser.add_argument(
        "--compat",
        choices=("product", "readme"),
        default="product",
        help="'product': the engine's resize and padded border windows (default); 'readme': area "
        "resize and full windows only, the convention of the published floor table",
    )
    parser.add_argument(
        "--kinds",
        help="comma-separated registered score kinds computed from one forward pass (research); "
        "default: the engine's kinds (bundle kind, residual, residual_max)",
    )
    parser.add_argument(
        "--force-protocol-scale",
        action="store_true",
        help="score a model with another working scale at the protocol scale",
    )
    parser.add_argument(
        "--heat-windows",
        action="store_true",
        help="also report each kind's window scores read off its heat map (<kind>@heat: mean "
        "of the map over the window, what the operator sees there)",
    )
    parser.add_argument(
        "--context-px",
        type=float,
        default=None,
        help="override the model's spatial context radius (working-scale pixels; 0 = off)",
    )
    parser.add_argument(
        "--context-self",
        type=float,
        default=None,
        help="override the weight a window keeps on its own score inside the context",
    )
    parser.add_argument(
        "--groups",
        metavar="FILE",
        help="rescan groups: one physical bag per line, the names of its scans "
        "(xrayscreen.evaluation.groups); intervals then resample physical bags, and a group "
        "that straddles the SIXray dev splits is reported",
    )
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--montage-kind", help="score kind shown in the montage (default: the model's)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _resolve_model(arg: str) -> Path:
    if arg == "default":
        from importlib.resources import files

        return Path(str(files("xrayscreen.resources") / "default_model"))
    return Path(arg)


def run(args: argparse.Namespace) -> int:
    """Run the evaluation; 0 on success, 2 on a user-facing error."""
    try:
        return _run(args)
    except XrayscreenError as exc:
        print(f"xrayscreen evaluate: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import torch

    from xrayscreen.errors import ConfigError
    from xrayscreen.evaluation import splits
    from xrayscreen.evaluation.annotations import AnnotationSource, parse_mask_classes
    from xrayscreen.evaluation.dataset import (
        README_COMPAT,
        ProtocolSettings,
        list_scans,
        prepare_dataset,
    )
    from xrayscreen.evaluation.groups import load_groups
    from xrayscreen.evaluation.report import write_report
    from xrayscreen.evaluation.runner import evaluate
    from xrayscreen.evaluation.scorers import EngineScorer, FloorScorer, ModelScorer
    from xrayscreen.inference import context

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.normal and not args.threat:
        raise ConfigError("give benign scans (--normal) and/or threat scans (--threat)")
    if not 0 < args.far < 1:
        raise ConfigError(f"--far must be between 0 and 1, got {args.far}")
    t0 = time.perf_counter()
    normal = list_scans(args.normal)
    threat = list_scans(args.threat)
    if args.split != "all":
        chosen = splits.SPLITS[args.split]
        normal = splits.select(normal, chosen["benign"])
        threat = splits.select(threat, chosen["threat"])
        if not normal and not threat:
            raise ConfigError(f"no scan of split {args.split!r} found among the given files")
    groups = None
    group_info: dict[str, Any] | None = None
    if args.groups:
        groups = load_groups(args.groups)
        group_info = _group_info(args.groups, groups, [*normal, *threat], args.split)
        for g in group_info["straddling"]:
            print(
                f"warning: rescan group {g['group']} straddles splits {g['splits']}: the "
                "later split is not held out from the earlier",
                file=sys.stderr,
            )
    source = None
    if args.labels or args.masks:
        source = AnnotationSource(
            labels=args.labels, masks=args.masks, mask_classes=parse_mask_classes(args.mask_classes)
        )
    settings = README_COMPAT if args.compat == "readme" else ProtocolSettings()
    scorers: list[Any] = [FloorScorer()]
    model_info = None
    if args.model:
        from xrayscreen.model.bundle import load_bundle

        path = _resolve_model(args.model)
        bundle = load_bundle(path, device=args.device)
        if args.context_px is not None:
            if not args.context_px >= 0:
                raise ConfigError(f"--context-px must be >= 0, got {args.context_px}")
            bundle.score.params = {**bundle.score.params, "context_px": float(args.context_px)}
        if args.context_self is not None:
            bundle.score.params = {**bundle.score.params, "context_self": args.context_self}
            context.self_weight_of(bundle.score)  # refuse a bad weight before any work
        if args.kinds:
            kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
            scorer = ModelScorer(
                bundle, kinds, device=args.device, force_protocol_scale=args.force_protocol_scale
            )
        else:
            scorer = EngineScorer(
                bundle, device=args.device, force_protocol_scale=args.force_protocol_scale
            )
        scorers.append(scorer)
        model_info = {
            "model_id": bundle.model_id,
            "path": str(path),
            "created": bundle.created,
            "score": bundle.score.to_dict(),
            "input": bundle.input.to_dict(),
            "architecture": bundle.config.to_dict(),
            "calibrated": bundle.calibration is not None,
            "provenance": bundle.provenance,
            "scorer": type(scorer).__name__,
            "kinds": scorer.kinds,
            "forced_protocol_scale": bool(args.force_protocol_scale),
        }
    dataset = prepare_dataset(normal, threat, source, settings, progress=not args.quiet)
    for k in dataset.skipped:
        print(f"skipped {k.path}: {k.reason}", file=sys.stderr)
    if not dataset.scans:
        raise ConfigError("no usable scan")
    overlap = None
    if args.model:
        from xrayscreen.evaluation.overlap import OVERLAP_TEXT, training_overlap

        overlap = training_overlap(_resolve_model(args.model), dataset.scans, groups)
        for key, text in OVERLAP_TEXT.items():
            if overlap and overlap[key]:
                print(
                    f"warning: {len(overlap[key])} evaluated scan(s) {text}: "
                    f"{', '.join(overlap[key][:8])}",
                    file=sys.stderr,
                )
    t_prep = time.perf_counter() - t0
    ev = evaluate(
        dataset,
        scorers,
        far=args.far,
        montage_kind=args.montage_kind,
        progress=not args.quiet,
        heat_windows=args.heat_windows,
        groups=groups,
    )
    ev.summary["timing_s"]["prepare"] = round(t_prep, 2)
    ev.summary["timing_s"]["total"] = round(time.perf_counter() - t0, 2)
    report = write_report(
        ev,
        dataset,
        args.out,
        model=model_info,
        command=_command(args),
        extra_settings={"far": args.far, "split": args.split, "compat": args.compat}
        | ({"groups": group_info} if group_info else {})
        | ({"training_overlap": overlap} if overlap else {}),
        plots=not args.no_plots,
    )
    _print_summary(report)
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def _group_info(path: str, groups: dict[str, str], files: list[Path], split: str) -> dict[str, Any]:
    """What the report says of the groups file: its path, how many groups touch the
    evaluated scans, and the groups that straddle the SIXray dev splits (only groups
    holding an evaluated scan, and only when a split was chosen)."""
    from xrayscreen.evaluation import splits
    from xrayscreen.evaluation.groups import straddling

    mine = {groups[Path(f).stem] for f in files if Path(f).stem in groups}
    info: dict[str, Any] = {
        "file": str(path),
        "groups_with_evaluated_scans": len(mine),
        "straddling": [],
    }
    if split != "all":
        parts = {k: [*v["benign"], *v["threat"]] for k, v in splits.SPLITS.items() if k != "dev"}
        info["straddling"] = [g for g in straddling(groups, parts) if g["group"] in mine]
    return info


def _command(args: argparse.Namespace) -> list[str]:
    """The command line that reproduces this run (from the parsed options)."""
    cmd = ["xrayscreen", "evaluate"]
    for key, value in vars(args).items():
        if value in (None, False, []) or key == "func":
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd.append(flag)
        elif isinstance(value, list):
            cmd += [flag, *map(str, value)]
        else:
            cmd += [flag, str(value)]
    return cmd


def _print_summary(report: dict[str, Any]) -> None:
    for name, k in report["kinds"].items():
        cells = []
        for pool in ("a", "b"):
            a = k["window"].get(pool, {}).get("all", {}).get("auc")
            cells.append(f"({pool}) {a:.3f}" if a is not None else f"({pool}) n/a")
        bag = k["bag"]["auc_peak"]
        print(
            f"{name:>16}: window AUC {'  '.join(cells)}  bag AUC {bag if bag is not None else 'n/a'}"
        )
