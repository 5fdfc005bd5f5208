"""Floors of the SIXray protocol vs the published table of ../shared/data/README.md; prints JSON.

Pool (b) (threat-free windows of the 64 boxed threat bags) is fully reproducible
from the folder, so it must match the README within +-0.01 under the README's
conventions (``--compat readme``: area resize, windows inside the image). Pool (a)
in the README used 120 benign bags that are *not* in the folder; here pool (a) is
the dev split's 120 held-out benign bags N0000181-N0000300, so (a) differences
are differences of negatives, not of the instrument. Also prints the product
conventions (engine resize, padded border windows) for the same bags::

    python benchmarks/sixray_floors.py [--data ../shared/data/sixray]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from xrayscreen.evaluation.annotations import AnnotationSource
from xrayscreen.evaluation.dataset import README_COMPAT, ProtocolSettings, prepare_dataset
from xrayscreen.evaluation.runner import evaluate
from xrayscreen.evaluation.scorers import FloorScorer
from xrayscreen.evaluation.splits import sixray_files

REPO = Path(__file__).resolve().parents[1]
README = {  # ../shared/data/README.md, "Floors to beat": all, gun, knife for (a) then (b)
    "max_density": {"a": (0.783, 0.824, 0.766), "b": (0.850, 0.874, 0.840)},
    "mean_darkness": {"a": (0.561, 0.576, 0.555), "b": (0.869, 0.897, 0.857)},
    "edge_density": {"a": (0.746, 0.716, 0.758), "b": (0.697, 0.667, 0.709)},
    "blue_fraction": {"a": (0.535, 0.578, 0.517), "b": (0.768, 0.800, 0.754)},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "sixray"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d = Path(args.data)
    benign, threat = sixray_files(d, "dev")
    source = AnnotationSource(labels=d / "threat" / "labels_yolo")  # boxes only, like the README
    out: dict = {"benign_bags": "N0000181-N0000300 (dev val+test)", "conventions": {}}
    for name, settings in (("readme", README_COMPAT), ("product", ProtocolSettings())):
        t = time.perf_counter()
        ds = prepare_dataset(benign, threat, source, settings, progress=False)
        ev = evaluate(ds, [FloorScorer()], progress=False)
        rows = {}
        for kind, ref in README.items():
            w = ev.summary["kinds"][kind]["window"]
            ours = {p: [w[p][c]["auc"] for c in ("all", "gun", "knife")] for p in ("a", "b")}
            diff = {p: [round(o - r, 4) for o, r in zip(ours[p], ref[p])] for p in ("a", "b")}
            rows[kind] = {"ours": ours, "readme": ref, "diff": diff}
        out["conventions"][name] = {
            "settings": settings.to_dict(),
            "floors": rows,
            "pool_b_max_abs_diff": max(abs(v) for r in rows.values() for v in r["diff"]["b"]),
            "pool_a_max_abs_diff": max(abs(v) for r in rows.values() for v in r["diff"]["a"]),
            "counts": ev.summary["counts"],
            "seconds": round(time.perf_counter() - t, 1),
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
