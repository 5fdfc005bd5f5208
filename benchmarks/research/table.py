"""Summarise ``runs/research.jsonl`` as the ablation table (markdown) and JSON.

Rows with the same ``--tag`` stem (``..._s0``, ``..._s1``) are averaged: mean +- half the
range over seeds. Scores can be re-derived from saved raw arrays (``--rescore``) when a
score kind is added to ``metrics.py`` after the run.

    python benchmarks/research/table.py --kinds latent rec_mean cond_rec_pool
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data as D
import metrics as M

COLS = ["all_a", "gun_a", "knife_a", "all_b", "gun_b", "knife_b", "bag_tpr_at_5pct"]


def load_rows(path: Path, rescore: bool) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if rescore:
        for r in rows:
            f = D.CACHE / "scores" / f"{r['tag']}.npz"
            if f.exists():
                with np.load(f) as z:
                    r["metrics"] = M.all_metrics({k: z[k] for k in z.files})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", default=str(D.REPO / "runs" / "research.jsonl"))
    p.add_argument("--kinds", nargs="*", default=None)
    p.add_argument("--rescore", action="store_true")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    rows = load_rows(Path(a.results), a.rescore)
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[
            re.sub(r"_s\d+$", "", r["tag"].split("@")[0])
            + ("@" + r["tag"].split("@")[1] if "@" in r["tag"] else "")
        ].append(r)
    out = {}
    for g, rs in groups.items():
        kinds = a.kinds or [k for k in rs[0]["metrics"] if not k.startswith("_")]
        out[g] = {"seeds": len(rs), "train_s": [r.get("train_s") for r in rs]}
        for k in kinds:
            vals = {c: [r["metrics"][k][c] for r in rs if k in r["metrics"]] for c in COLS}
            out[g][k] = {
                c: (round(float(np.mean(v)), 3), round(float(np.ptp(v) / 2), 3))
                for c, v in vals.items()
                if v
            }
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    print("| run | score | seeds | " + " | ".join(COLS) + " |")
    print("|" + "---|" * (len(COLS) + 3))
    for g, d in out.items():
        for k, v in d.items():
            if k in ("seeds", "train_s"):
                continue
            cells = [f"{m:.3f}" + (f" ± {s:.3f}" if d["seeds"] > 1 else "") for m, s in v.values()]
            print(f"| {g} | {k} | {d['seeds']} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
