"""Rescore a bundle with a feature memory that also holds its training windows rendered
denser and thinner (research for issue 7: robustness to another scanner's rendering).

Each ``-log`` RGB training window is copied with transmission ``T -> T ** g`` for every
``g`` in ``--gammas`` (the attenuation scaled by ``g``, clipped at the representation's
ceiling); the memory is fitted on the originals and the copies together, at the run's own
size cap (so the bundle and the scoring cost do not grow), and the memory-plus component
scales are refitted on the protocol-rendered held-out windows. The run's split (by scan
and seed) is reproduced from the bundle's stored configuration::

    python benchmarks/research/augment_bank.py --bundle /tmp/models/ke_s0_w0.25 \\
        --sources /tmp/sixray_lists/benign_train.txt --gammas 0.8 1.25 --out /tmp/models/ab_s0

Then ``dump_scores.py [--gamma G | --hue H]`` and ``density_saved.py``. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from xrayscreen.model.bundle import load_bundle, save_bundle
from xrayscreen.training.calibrate import fit_component_scales, fit_feature_bank
from xrayscreen.training.config import TrainConfig
from xrayscreen.training.data import WindowSet, load_windows, render_gamma, split_by_scan


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--sources", nargs="+", required=True, help="the run's training sources")
    p.add_argument("--gammas", nargs="+", type=float, default=[0.8, 1.25])
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    b = load_bundle(a.bundle, with_discriminator=True)
    cfg = TrainConfig.from_dict(b.training["config"])
    if cfg.representation != "rgb_attenuation":
        raise SystemExit("only the -log RGB input scales linearly with a rendering gamma")
    split = split_by_scan(
        load_windows(a.sources, cfg), cfg.val_fraction, cfg.seed, cfg.min_val_scans
    )
    tr = split.train
    x = tr.data.float()
    copies = [render_gamma(x, cfg.representation, g).to(tr.data.dtype) for g in a.gammas]
    both = WindowSet(
        data=torch.cat([tr.data, *copies]),
        scan_index=tr.scan_index.repeat(1 + len(copies)),
        scan_ids=tr.scan_ids,
        scan_names=tr.scan_names,
    )
    dev = torch.device("cpu")
    b.feature_bank = fit_feature_bank(
        b, both, dev, level=cfg.bank_level, k=cfg.bank_k, max_size=cfg.bank_size, seed=cfg.seed
    )
    b.score.params = {
        **b.score.params,
        **b.feature_bank.params(),
        **fit_component_scales(b, split.val, dev),
    }
    b.training["rescored_from"] = str(a.bundle)
    b.training["bank_gammas"] = list(a.gammas)
    save_bundle(b, a.out, overwrite=True)
    print(
        json.dumps(
            {
                "bundle": a.out,
                "from": a.bundle,
                "memory_windows_offered": len(both),
                "gammas": a.gammas,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
