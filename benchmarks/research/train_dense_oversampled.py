"""Train the X-ray GANomaly with its densest normal windows oversampled (issue 7,
"hard-negative awareness without ever training on threats").

The shipped model's worst false alarms are dense benign structures (clusters of
objects, corner hardware, dense blocks) whose density the generator under-draws, so
they show up as *unexplained density*. This run repeats the training windows whose
mean attenuation is in the top ``--top`` share ``--extra`` more times (within their own
scans, so the split by scan is unchanged) and otherwise trains exactly like the
reference run whose configuration it copies. The memory and the calibration are then
fitted by ``rescore_bundle.py`` on the plain windows, so only the generator differs::

    python benchmarks/research/train_dense_oversampled.py --like /tmp/models/xray_ex_s0 \\
        --sources /tmp/sixray_lists/benign_train.txt --out /tmp/models/dense_s0
    python benchmarks/research/rescore_bundle.py --bundle /tmp/models/dense_s0 ...

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from xrayscreen.model.bundle import load_bundle
from xrayscreen.training.config import TrainConfig
from xrayscreen.training.data import WindowSet, decode, load_windows, split_by_scan
from xrayscreen.training.pipeline import train


def oversample_dense(ws: WindowSet, top: float, extra: int) -> tuple[WindowSet, int]:
    """``ws`` with the windows of the top ``top`` share of mean input value (attenuation:
    denser = higher) repeated ``extra`` more times, each copy kept with its scan."""
    dens = torch.cat(
        [decode(ws.data[i : i + 4096]).mean(dim=(1, 2, 3)) for i in range(0, len(ws), 4096)]
    )
    cut = torch.quantile(dens.float(), 1.0 - top)
    idx = torch.nonzero(dens >= cut).flatten()
    reps = idx.repeat(extra)
    data = torch.cat([ws.data, ws.data[reps]])
    scan_index = torch.cat([ws.scan_index, ws.scan_index[reps]])
    return WindowSet(data, scan_index, list(ws.scan_ids), list(ws.scan_names)), int(len(reps))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--like", required=True, help="bundle whose training configuration to copy")
    p.add_argument("--sources", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--top", type=float, default=0.25)
    p.add_argument("--extra", type=int, default=2)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    cfg = TrainConfig.from_dict(load_bundle(a.like).training["config"])
    ws = load_windows(a.sources, cfg)
    before = split_by_scan(ws, cfg.val_fraction, cfg.seed, cfg.min_val_scans)
    aug, added = oversample_dense(ws, a.top, a.extra)
    after = split_by_scan(aug, cfg.val_fraction, cfg.seed, cfg.min_val_scans)
    if sorted(after.val.scan_ids) != sorted(before.val.scan_ids):
        raise SystemExit("oversampling changed the split; refusing")
    res = train(cfg, a.sources, a.out, windows=aug, overwrite=True)
    print(
        json.dumps(
            {
                "out": a.out,
                "like": a.like,
                "windows": len(ws),
                "added": added,
                "train_windows": res.n_train_windows,
                "d_resets": res.bundle.training.get("d_resets"),
                "training_s": round(res.elapsed_s, 1),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
