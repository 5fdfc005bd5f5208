"""``xrayscreen scan``: headless batch screening.

For every scan file given (folders are searched recursively) it writes, into
``--out``:

* ``<name>.overlay.png``: the scan with the calibrated heat map and alarm boxes;
* ``<name>.json``: scores (peak, per-window raw/calibrated), alarm regions with
  boxes in scan pixels, model id, threshold, timings;
* one ``summary.csv`` with a row per scan (failed files included, with the error).

A file that cannot be read is reported and skipped; the exit status is 1 when any
file failed, 2 when nothing could start (no model, no files), else 0.

Distributed: run the same command under ``torchrun`` (``WORLD_SIZE``/``RANK`` in the
environment). Each rank screens its shard of the sorted file list (on
``cuda:LOCAL_RANK`` with CUDA, else CPU); rank 0 gathers the rows over gloo (the
payload is a few KB, so no NCCL is needed even on GPUs) and writes the one
summary CSV. Every rank returns the same status.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xrayscreen.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from xrayscreen.errors import BundleError, ConfigError, ScanError, XrayscreenError

SUMMARY = "summary.csv"
# Compiling costs ~15-30 s once (less with a warm inductor cache) and measured ~1.5-2x
# eager throughput on CPU; below this many scans per rank it does not pay back.
COMPILE_MIN_FILES = 20
CSV_FIELDS = [
    "file",
    "status",
    "error",
    "alarm",
    "peak",
    "n_regions",
    "threshold",
    "model_id",
    "scan_h",
    "scan_w",
    "n_windows",
    "n_scored",
    "seconds",
    "overlay",
    "json",
    "rank",
]


# ----------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``xrayscreen scan``."""
    parser.add_argument("paths", nargs="+", metavar="PATH", help="scan files or folders")
    parser.add_argument(
        "--model", default=None, help="model bundle directory (default: the active model)"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="alarm threshold in calibrated units (default: the model's default threshold)",
    )
    parser.add_argument("--stride", type=int, default=16, help="window stride (default 16)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--batch", type=int, default=None, help="windows per forward pass")
    parser.add_argument(
        "--min-area", type=int, default=16, help="smallest alarm region, heat-map pixels"
    )
    parser.add_argument(
        "--reduce", choices=("mean", "max"), default="mean", help="overlap fold of window scores"
    )
    parser.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        default="auto",
        help=f"torch.compile the model (auto: when a rank has >= {COMPILE_MIN_FILES} scans, "
        "where the one-off compile time pays back)",
    )
    parser.add_argument(
        "--no-windows", action="store_true", help="leave per-window scores out of the JSON"
    )


def run(args: argparse.Namespace) -> int:
    """Run the batch; returns the exit status."""
    dist = _Distributed.from_env(args.device)
    try:
        return _run(args, dist)
    finally:
        dist.close()


def _run(args: argparse.Namespace, dist: _Distributed) -> int:
    import torch

    from xrayscreen.inference.engine import ScoringEngine
    from xrayscreen.model.bundle import load_bundle

    out_dir = Path(args.out)
    files, missing = collect_files(args.paths)
    if not files and not missing:
        _err(dist, "xrayscreen scan: no scan files found in the given paths")
        return 2
    try:
        model_path = resolve_model(args.model)
        bundle = load_bundle(model_path)
    except (BundleError, ConfigError) as exc:
        _err(dist, f"xrayscreen scan: {exc}")
        return 2
    threshold = args.threshold
    if threshold is None:
        if bundle.calibration is None:
            _err(dist, "xrayscreen scan: this model is not calibrated; pass --threshold")
            return 2
        threshold = float(bundle.calibration.default_threshold)
    if dist.world > 1 and dist.device_type == "cpu":
        # Ranks share the machine's cores.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.local_world))
    device = dist.device or args.device
    mine = files[dist.rank :: dist.world]
    compile_ = args.compile == "on" or (args.compile == "auto" and len(mine) >= COMPILE_MIN_FILES)
    try:
        engine = ScoringEngine(bundle, device, batch=args.batch, compile=compile_)
    except ConfigError as exc:
        _err(dist, f"xrayscreen scan: {exc}")
        return 2
    engine.warmup()
    out_dir.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, Any]] = (
        [_failed_row(p, f"no such file or folder: {p}", dist.rank) for p in missing]
        if dist.rank == 0
        else []
    )
    names = _unique_names(files)
    from tqdm import tqdm

    for path in tqdm(mine, desc="screening", unit="scan", disable=dist.rank != 0):
        rows.append(screen_one(path, names[path], engine, out_dir, threshold, args, rank=dist.rank))
        if rows[-1]["status"] != "ok":
            print(f"xrayscreen scan: skipped {path}: {rows[-1]['error']}", file=sys.stderr)
    all_rows = dist.gather_rows(rows)
    n_failed = dist.sum(sum(r["status"] != "ok" for r in rows))
    if dist.rank == 0:
        all_rows.sort(key=lambda r: r["file"])
        atomic_write_text(out_dir / SUMMARY, _csv_text(all_rows))
        n_alarm = sum(r["alarm"] is True for r in all_rows)
        print(
            f"xrayscreen scan: {len(all_rows)} scans, {n_alarm} alarms, {n_failed} failed "
            f"-> {out_dir / SUMMARY}",
            file=sys.stderr,
        )
    return 1 if n_failed else 0


# ----------------------------------------------------------------------------- pieces
def resolve_model(model: str | None) -> Path:
    """``--model`` or the active model (the registry's, else the bundled default).

    Raises:
        BundleError: when no model is given and none is installed.
    """
    if model:
        return Path(model)
    try:
        from xrayscreen.registry import active_bundle_path
    except ImportError:
        active_bundle_path = None
    if active_bundle_path is not None:
        path = Path(active_bundle_path())
    else:
        from importlib.resources import files

        path = Path(str(files("xrayscreen.resources") / "default_model"))
    if not path.is_dir():
        raise BundleError(
            f"no active model and the bundled default model is missing ({path}); "
            "pass --model BUNDLE"
        )
    return path


def collect_files(paths: list[str]) -> tuple[list[Path], list[Path]]:
    """Scan files under ``paths`` (folders recursively), sorted, one per dual-energy pair.

    Returns:
        ``(files, missing)``: found files and the given paths that do not exist.
    """
    is_scan, find_pair = _reader_helpers()
    found: dict[Path, None] = {}
    missing: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if is_scan(f):
                    found[f] = None
        elif p.is_file():
            found[p] = None  # named explicitly: try it even with an odd suffix
        else:
            missing.append(p)
    files: list[Path] = []
    seen_pairs: set[tuple[Path, Path]] = set()
    for f in found:
        pair = find_pair(f) if find_pair else None
        if pair is not None:
            key = (pair[0].resolve(), pair[1].resolve())
            if key in seen_pairs:
                continue  # the partner of a pair already listed
            seen_pairs.add(key)
        files.append(f)
    return sorted(files), missing


def _reader_helpers():
    try:
        from xrayscreen.imaging.readers import find_pair, is_scan_file
    except ImportError:  # imaging readers not installed: plain images only

        def is_scan_file(p: Path) -> bool:
            return p.is_file() and p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".tif"}

        find_pair = None
    return is_scan_file, find_pair


def open_any(path: Path):
    """Open a scan with the imaging readers (fallback: cv2 for plain images)."""
    try:
        from xrayscreen.imaging.readers import open_scan
    except ImportError:
        open_scan = None
    if open_scan is not None:
        return open_scan(path)
    import cv2

    from xrayscreen.imaging.scan import Scan, ScanKind

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ScanError(f"{path.name} is not a readable image")
    return Scan(
        rgb=cv2.cvtColor(img, cv2.COLOR_BGR2RGB), kind=ScanKind.PSEUDO_COLOUR, paths=(path,)
    )


def screen_one(
    path: Path,
    name: str,
    engine: Any,
    out_dir: Path,
    threshold: float,
    args: argparse.Namespace,
    rank: int = 0,
) -> dict[str, Any]:
    """Screen one file and write its overlay and JSON; returns its CSV row."""
    from xrayscreen.inference.heatmap import encode_png, render_overlay
    from xrayscreen.inference.regions import extract_regions

    t0 = time.perf_counter()
    try:
        scan = open_any(path)
        result = engine.score_scan_sync(scan, stride=args.stride, reduce=args.reduce)
        regions = extract_regions(
            result.latent_map, threshold, min_area=args.min_area, scale_factor=result.scale_factor
        )
        t_read_score = time.perf_counter() - t0
        overlay = render_overlay(
            scan.rgb, result.map_at_scan_resolution("latent"), threshold, regions
        )
        png = out_dir / f"{name}.overlay.png"
        js = out_dir / f"{name}.json"
        atomic_write_bytes(png, encode_png(overlay))
        doc = {
            "file": str(path),
            "sha256": scan.sha256,
            "scan_kind": scan.kind.value,
            "threshold": threshold,
            "alarm": bool(regions),
            "regions": [r.to_dict() for r in regions],
            **result.summary(),
        }
        doc["timings"]["read_score_regions_s"] = t_read_score
        if not args.no_windows:
            doc["windows"] = {
                "origins_yx_working_scale": result.window_origins.tolist(),
                "raw": np.round(result.window_scores, 6).tolist(),
                "calibrated": np.round(result.window_calibrated, 4).tolist(),
                "background": result.background.tolist(),
            }
        atomic_write_json(js, doc)
    except Exception as exc:
        msg = str(exc) if isinstance(exc, XrayscreenError) else f"{type(exc).__name__}: {exc}"
        return _failed_row(path, msg, rank)
    return {
        "file": str(path),
        "status": "ok",
        "error": "",
        "alarm": bool(regions),
        "peak": round(result.peak, 4),
        "n_regions": len(regions),
        "threshold": threshold,
        "model_id": result.model_id,
        "scan_h": scan.shape[0],
        "scan_w": scan.shape[1],
        "n_windows": len(result.grid),
        "n_scored": result.n_scored,
        "seconds": round(time.perf_counter() - t0, 4),
        "overlay": png.name,
        "json": js.name,
        "rank": rank,
    }


def _failed_row(path: Path, error: str, rank: int) -> dict[str, Any]:
    row: dict[str, Any] = {k: "" for k in CSV_FIELDS}
    row.update(file=str(path), status="failed", error=error, alarm="", rank=rank)
    return row


def _unique_names(files: list[Path]) -> dict[Path, str]:
    """Output base names: the file stem, disambiguated by its folder when stems repeat."""
    stems: dict[str, int] = {}
    for f in files:
        stems[f.stem] = stems.get(f.stem, 0) + 1
    names: dict[Path, str] = {}
    used: set[str] = set()
    for f in files:
        base = f.stem if stems[f.stem] == 1 else f"{f.parent.name}__{f.stem}"
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        names[f] = name
    return names


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in CSV_FIELDS})
    return buf.getvalue()


def _err(dist: _Distributed, msg: str) -> None:
    if dist.rank == 0:
        print(msg, file=sys.stderr)


# ----------------------------------------------------------------------------- torchrun
@dataclass
class _Distributed:
    """Rank/world from torchrun's environment; a no-op for a single process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    device: str | None = None
    device_type: str = "cpu"
    _pg: Any = field(default=None, repr=False)

    @classmethod
    def from_env(cls, device: str | None) -> _Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch
        import torch.distributed as tdist

        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        want_cuda = device != "cpu" and torch.cuda.is_available()
        dev = f"cuda:{local_rank % max(torch.cuda.device_count(), 1)}" if want_cuda else "cpu"
        if want_cuda:
            torch.cuda.set_device(dev)
        # Objects are gathered with gloo even on GPUs: the payload is a few KB of rows.
        tdist.init_process_group("gloo", rank=rank, world_size=world)
        return cls(rank, world, local_rank, local_world, dev, "cuda" if want_cuda else "cpu", True)

    def gather_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.world <= 1:
            return list(rows)
        import torch.distributed as tdist

        parts: list[Any] | None = [None] * self.world if self.rank == 0 else None
        tdist.gather_object(rows, parts, dst=0)
        return [r for part in (parts or []) for r in part]

    def sum(self, value: int) -> int:
        if self.world <= 1:
            return int(value)
        import torch
        import torch.distributed as tdist

        t = torch.tensor([int(value)], dtype=torch.int64)
        tdist.all_reduce(t)
        return int(t.item())

    def close(self) -> None:
        if self._pg:
            import torch.distributed as tdist

            tdist.destroy_process_group()
            self._pg = None
