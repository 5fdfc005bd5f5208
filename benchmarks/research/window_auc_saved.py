"""Window AUCs of dumped raw scores (``dump_scores.py``), alone or averaged over several
dumps of the same scans (test-time augmentation: ``--flip h`` / ``v`` dumps), through the
product's per-scan normalisation and context. Research for issue 7.

    python benchmarks/research/window_auc_saved.py --dumps /tmp/dump_val.npz \\
        /tmp/dump_val_h.npz --only-kinds benign threat

Raw scores of the dumps are averaged BEFORE normalisation (as an engine averaging
mirrored windows would). Prints one JSON line per bundle.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from calib_analysis import finish, load

from xrayscreen.evaluation.metrics import detection_at_far, roc_auc
from xrayscreen.model.bundle import load_bundle


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--dumps", nargs="+", required=True)
    p.add_argument("--benign-list", help="only these benign scans (default: all in the dump)")
    a = p.parse_args(argv)
    sets = [load(d) for d in a.dumps]
    z = np.load(a.dumps[0])
    keep = None
    if a.benign_list:
        from pathlib import Path

        keep = {Path(x.strip()).stem for x in open(a.benign_list) if x.strip()}
    base = sets[0]
    index = [{b.name: b for b in s} for s in sets]
    for j, bpath in enumerate(z["bundles"]):
        spec = load_bundle(str(bpath)).score
        pos, pos_cls, neg_a, neg_b = [], [], [], []
        for b in base:
            if b.kind == "benign" and keep is not None and b.name not in keep:
                continue
            raws = [ix[b.name].raw[j] for ix in index]
            mixed = type(b)(**{**b.__dict__, "raw": [np.mean(raws, axis=0)] * len(b.raw)})
            s = finish(spec, mixed, j)
            if b.kind == "threat":
                pos.append(s[b.pos])
                pos_cls.append(b.cls[b.pos])
                neg_b.append(s[b.neg])
            else:
                neg_a.append(s[b.neg])
        pos_a = np.concatenate(pos)
        cls = np.concatenate(pos_cls)
        out = {"bundle": str(bpath), "dumps": len(a.dumps)}
        for pool, neg in (("a", np.concatenate(neg_a)), ("b", np.concatenate(neg_b))):
            out[f"all_{pool}"] = round(roc_auc(pos_a, neg), 4)
            for c, name in ((0, "gun"), (1, "knife")):
                out[f"{name}_{pool}"] = round(roc_auc(pos_a[cls == c], neg), 4)
            out[f"det@1%_{pool}"] = round(detection_at_far(pos_a, neg, 0.01).detection, 4)
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
