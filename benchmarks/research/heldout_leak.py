"""Do the held-out calibration scans of a trained bundle have rescans among its training
scans? And how far does that move what is fitted on them? (issue 7, eighteenth session)

``xrayscreen train`` holds out a share of the scans (by scan, seeded) to fit the score's
units and the calibration: the spreads of the feature-memory distance and of the residual
(``knn_scale``, ``res_scale``: the units in which the memory-plus score adds them) and the
default threshold. A held-out scan whose rescan (the same bag scanned again) is among the
training scans finds its twin's windows in the feature memory, so its memory distances are
those of a seen bag, not of a new one. This script names the bundle's held-out scans, marks
those with a twin in its training scans by a rescan groups file
(``benchmarks/sixray_rescans.txt``), and prints JSON: the median memory distance and the
two spreads on the held-out windows of the twins, of the others, and of a reference set of
scans the bundle never saw (the val benign block), computed as training computes them::

    python benchmarks/research/heldout_leak.py --bundle /tmp/models/t12_s6 \\
        --train /tmp/sixray_lists/benign_train.txt --reference /tmp/sixray_lists/benign_val.txt \\
        --groups benchmarks/sixray_rescans.txt
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from xrayscreen.evaluation.groups import load_groups
from xrayscreen.inference.score_kinds import MEMORY_PLUS
from xrayscreen.model.bundle import ScoreSpec, load_bundle
from xrayscreen.training.calibrate import _spread, score_windows
from xrayscreen.training.config import TrainConfig
from xrayscreen.training.data import load_windows


def _files(list_file: str) -> list[Path]:
    return [Path(x.strip()) for x in Path(list_file).read_text().splitlines() if x.strip()]


def _parts(bundle, files: list[Path], cfg: TrainConfig, device) -> dict[str, np.ndarray]:
    """Per-window memory distance and residual of the scans' training-cut windows."""
    ws = load_windows([str(f) for f in files], cfg)
    own = bundle.score
    # As training fits the spreads: before the head exists (its settings left out).
    params = {
        k: v for k, v in own.params.items() if k != "dfeat_weight" and not k.startswith("tip")
    }
    out = {}
    try:
        for kind, key in (("feature_knn", "knn"), (MEMORY_PLUS[own.kind], "res")):
            bundle.score = ScoreSpec(kind=kind, norm=own.norm, params=dict(params))
            out[key] = score_windows(bundle, ws, device).astype(np.float64)
    finally:
        bundle.score = own
    return out


def _summary(parts: dict[str, np.ndarray], n_scans: int) -> dict[str, float]:
    return {
        "scans": n_scans,
        "windows": int(len(parts["knn"])),
        "knn_median": round(float(np.median(parts["knn"])), 4),
        "knn_scale": round(_spread(parts["knn"]), 4),
        "res_scale": round(_spread(parts["res"]), 6),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--train", required=True, help="list of the scans the bundle was trained on")
    p.add_argument("--reference", required=True, help="list of scans it never saw")
    p.add_argument("--groups", required=True)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    b = load_bundle(a.bundle)
    report = json.loads((Path(a.bundle) / "training_report.json").read_text())
    cfg = TrainConfig.from_dict(b.training["config"])
    groups = load_groups(a.groups)
    by_hash = {hashlib.sha256(f.read_bytes()).hexdigest(): f for f in _files(a.train)}
    held = [by_hash[h] for h in report["val_scans"]]
    fit = {by_hash[h].stem for h in report["train_scans"]}
    twin = {
        f.stem: sorted(n for n in fit if f.stem in groups and groups.get(n) == groups[f.stem])
        for f in held
    }
    twins = [f for f in held if twin[f.stem]]
    others = [f for f in held if not twin[f.stem]]
    dev = torch.device("cpu")
    out = {
        "bundle": b.model_id,
        "stored": {k: b.score.params[k] for k in ("knn_scale", "res_scale")},
        "held_out": {f.stem: twin[f.stem] for f in held},
        "held_out_all": _summary(_parts(b, held, cfg, dev), len(held)),
        "held_out_with_twin": _summary(_parts(b, twins, cfg, dev), len(twins)) if twins else None,
        "held_out_without_twin": _summary(_parts(b, others, cfg, dev), len(others))
        if others
        else None,
    }
    ref = _files(a.reference)
    out["reference_unseen"] = _summary(_parts(b, ref, cfg, dev), len(ref))
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
