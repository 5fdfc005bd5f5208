"""How much do rescan groups widen the intervals? (issue 7, eighteenth session)

For each ``evidence_terms.py dump`` file (highest-window reading of the product's score),
the 95 % bootstrap intervals of the 5 % bag point, the bag AUC and the window AUC on benign
bags, resampling scans as independent bags and resampling the physical bags of a rescan
groups file (:mod:`xrayscreen.evaluation.groups`). Prints JSON::

    python benchmarks/research/grouped_intervals.py --groups benchmarks/sixray_rescans.txt \\
        /tmp/s13/dec_test_t12_s6.npz /tmp/s13/dec_test_t12_s5.npz /tmp/s13/dec_test_t12_s0.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evidence_terms as et

from xrayscreen.evaluation import bootstrap
from xrayscreen.evaluation.groups import group_labels, load_groups


def intervals(bags: list[dict], groups: dict[str, str] | None) -> dict[str, list[float]]:
    """The three intervals, scans or (with ``groups``) physical bags resampled."""
    ben = [b for b in bags if b["kind"] == "benign"]
    thr = [b for b in bags if b["kind"] != "benign"]
    hits = [b for b in thr if ((b["label"] == 1) & b["valid"]).any()]
    peak = np.array([b["out"][b["valid"]].max() for b in ben])
    tpeak = np.array([b["out"][b["valid"]].max() for b in thr])
    on = [b["out"][(b["label"] == 1) & b["valid"]] for b in hits]
    neg = [b["out"][b["valid"] & (b["label"] == 0)] for b in ben]
    lab = None
    if groups:
        lt = group_labels([b["name"] for b in thr + hits], groups)
        lab = (group_labels([b["name"] for b in ben], groups), lt[: len(thr)], lt[len(thr) :])
    ci = bootstrap.bag_intervals(peak, tpeak, np.array([o.max() for o in on]), (0.05,), groups=lab)
    win = bootstrap.clustered_auc_interval(
        on,
        neg,
        same_bags=False,
        pos_groups=None if lab is None else group_labels([b["name"] for b in hits], groups),
        neg_groups=None if lab is None else lab[0],
    )
    r = lambda iv: [round(float(v), 3) for v in iv]  # noqa: E731
    return {
        "bag5": r(ci["operating"][0.05]["threat_alarm_on_threat"]),
        "bag_auc": r(ci["auc_peak"]),
        "window_auc_a": r(win),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dumps", nargs="+")
    p.add_argument("--groups", required=True)
    a = p.parse_args()
    groups = load_groups(a.groups)
    out = {}
    for f in a.dumps:
        bags = et.load_terms(f)
        out[Path(f).name] = {"scans": intervals(bags, None), "groups": intervals(bags, groups)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
