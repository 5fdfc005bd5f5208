"""Offline analysis of dumped raw scores (``dump_scores.py``): calibration stability and
default-threshold rules, through the product's own ``scan_norm``, ``context`` and ``Calibration``.

    python benchmarks/research/calib_analysis.py --dump /tmp/dump_val.npz \\
        --heldout /tmp/heldout_s0.txt /tmp/heldout_s1.txt /tmp/heldout_s2.txt \\
        --val /tmp/sixray_lists/benign_val.txt --bootstrap 150

``--heldout`` gives, per bundle in the dump (same order), the list of its held-out
calibration scans; every other benign scan of the dump is an evaluation bag. Prints
JSON lines.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from xrayscreen.evaluation import bootstrap as bag_bootstrap
from xrayscreen.evaluation.metrics import detection_at_far, roc_auc
from xrayscreen.inference import context, scan_norm
from xrayscreen.inference.windows import WindowGrid, fold_mean
from xrayscreen.model.bundle import load_bundle
from xrayscreen.model.calibration import Calibration


@dataclass
class Bag:
    name: str
    kind: str
    grid: WindowGrid
    belt: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    cls: np.ndarray
    tpx: np.ndarray | None
    raw: list[np.ndarray]
    maxd: np.ndarray
    meand: np.ndarray | None = None


def load(path: str) -> list[Bag]:
    z = np.load(path)
    bags = []
    nb = len(z["bundles"])
    for i, (name, kind) in enumerate(zip(z["names"], z["kinds"])):
        k = f"s{i}"
        h, w, win, s, _, _ = (int(v) for v in z[f"{k}_grid"])
        g = WindowGrid(h, w, win, s)
        tpx = None
        if f"{k}_tpx" in z:
            tpx = np.unpackbits(z[f"{k}_tpx"])[: h * w].reshape(h, w).astype(bool)
        bags.append(
            Bag(
                str(name),
                str(kind),
                g,
                z[f"{k}_belt"],
                z[f"{k}_pos"],
                z[f"{k}_neg"],
                z[f"{k}_cls"],
                tpx,
                [z[f"{k}_m{j}"] for j in range(nb)],
                z[f"{k}_maxd"],
                z[f"{k}_meand"] if f"{k}_meand" in z else None,
            )
        )
    return bags


def bag_threshold(neg_peaks: np.ndarray, far: float = 0.05) -> float:
    """The lowest threshold that alarms at most ``far`` of the benign bags."""
    neg = np.sort(np.asarray(neg_peaks))[::-1]
    k = int(np.floor(far * len(neg)))
    return float(neg[k]) if k < len(neg) else -np.inf


@dataclass
class Tally:
    """Finished per-window scores gathered bag by bag, and the protocol's window and bag
    figures from them (the research scripts that rescore dumps share it)."""

    pos: list[np.ndarray] = field(default_factory=list)
    cls: list[np.ndarray] = field(default_factory=list)
    neg_a: list[np.ndarray] = field(default_factory=list)
    neg_b: list[np.ndarray] = field(default_factory=list)
    peaks_t: list[float] = field(default_factory=list)  # threat bags: peak on the threat
    peaks_t_any: list[float] = field(default_factory=list)  # the same bags: peak anywhere
    peaks_b: list[float] = field(default_factory=list)  # benign bags: peak anywhere

    def add(self, bag: Bag, s: np.ndarray) -> None:
        """Add one bag's finished scores ``s`` (one per window)."""
        valid = s[~bag.belt]
        peak = float(valid.max()) if len(valid) else float("-inf")
        if bag.kind == "threat":
            self.pos.append(s[bag.pos])
            self.cls.append(bag.cls[bag.pos])
            self.neg_b.append(s[bag.neg])
            if bag.pos.any():
                self.peaks_t.append(float(s[bag.pos].max()))
                self.peaks_t_any.append(peak)
        else:
            self.neg_a.append(s[bag.neg])
            self.peaks_b.append(peak)

    def window_figures(self) -> dict[str, float]:
        """AUC per class and pool and detection at 1 % window false alarms per pool."""
        pa, c = np.concatenate(self.pos), np.concatenate(self.cls)
        out: dict[str, float] = {}
        for pool, neg in (("a", np.concatenate(self.neg_a)), ("b", np.concatenate(self.neg_b))):
            out[f"all_{pool}"] = round(roc_auc(pa, neg), 4)
            for k, name in ((0, "gun"), (1, "knife")):
                out[f"{name}_{pool}"] = round(roc_auc(pa[c == k], neg), 4)
            out[f"det@1%_{pool}"] = round(detection_at_far(pa, neg, 0.01).detection, 4)
        return out

    def bag_point(self, far: float = 0.05) -> tuple[float, float, float, float]:
        """At the threshold that alarms ``far`` of benign bags: that threshold, the share of
        threat bags alarmed on the threat, and the shares of benign (pool a) windows and of
        threat windows above it (where the bag goal sits at window level)."""
        thr = bag_threshold(np.array(self.peaks_b), far)
        return (
            thr,
            float(np.mean(np.array(self.peaks_t) > thr)),
            float(np.mean(np.concatenate(self.neg_a) > thr)),
            float(np.mean(np.concatenate(self.pos) > thr)),
        )

    def window_auc_interval(
        self, pool: str, cls: int | None = None, resamples: int = 2000, seed: int = 0
    ) -> list[float] | None:
        """95 % bootstrap interval of a window AUC with the *bags* resampled
        (``xrayscreen.evaluation.bootstrap.clustered_auc_interval``); ``cls`` 0 / 1 keeps
        gun / knife positives only."""
        pos = [p if cls is None else p[c == cls] for p, c in zip(self.pos, self.cls)]
        iv = bag_bootstrap.clustered_auc_interval(
            pos,
            self.neg_a if pool == "a" else self.neg_b,
            same_bags=pool == "b",
            resamples=resamples,
            seed=seed,
        )
        return None if iv is None else [round(v, 4) for v in iv]

    def bag_interval(self, far: float = 0.05) -> list[float] | None:
        """95 % bag-resampled bootstrap interval of the share of threat bags alarmed on
        the threat at ``far`` (``xrayscreen.evaluation.bootstrap``)."""
        ci = bag_bootstrap.bag_intervals(
            np.array(self.peaks_b), np.array(self.peaks_t_any), np.array(self.peaks_t), (far,)
        )
        iv = ci["operating"].get(far, {}).get("threat_alarm_on_threat")
        return None if iv is None else [round(v, 4) for v in iv]


def paired_bag(a: Tally, b: Tally, far: float = 0.05) -> dict:
    """Tally ``a`` minus tally ``b`` (the same bags, in the same order) at the bag point:
    the paired bootstrap of ``xrayscreen.evaluation.bootstrap.paired_difference``."""

    def peaks(t: Tally):
        return np.array(t.peaks_b), np.array(t.peaks_t_any), np.array(t.peaks_t)

    d = bag_bootstrap.paired_difference(peaks(a), peaks(b), far)
    return {
        k: None if d[k] is None else [round(d[k]["diff"], 4), [round(v, 4) for v in d[k]["ci"]]]
        for k in ("auc_peak", "on_threat")
    }


def finish(spec, bag: Bag, j: int) -> np.ndarray:
    """Per-scan normalisation and context, as the engine applies them."""
    valid = torch.from_numpy(~bag.belt)
    s = scan_norm.normalise(spec, torch.from_numpy(bag.raw[j]), valid)
    s = context.apply(spec, s, bag.grid, valid)
    return s.double().numpy()


def heat(cal: Calibration, scores: np.ndarray, bag: Bag) -> np.ndarray:
    c = np.asarray(cal.calibrate(scores), dtype=np.float64)
    c[bag.belt] = float(cal.calibrate(np.asarray([cal.values[0]]))[0])
    return fold_mean(torch.from_numpy(c), bag.grid).numpy()


def _rule_threshold(cal: Calibration, peaks: np.ndarray, rule: str, target: float) -> float:
    """The default threshold a rule gives from calibration ``cal`` and held-out ``peaks``."""
    if rule == "window":
        return cal.default_threshold
    c = Calibration(**{**cal.__dict__, "bag_maxima": [float(v) for v in peaks]})
    c.set_bag_target(target, rule)
    return c.default_threshold


RULES = (
    ("window", 0.0),
    ("empirical", 0.05),
    ("empirical", 0.10),
    ("gumbel", 0.05),
    ("gumbel", 0.10),
)


def own_heldout(
    bags: list[Bag], z, heldout: list[str], val: set[str], ev_bags: list[Bag] | None = None
) -> None:
    """Each bundle's own held-out bags: every rule's threshold, and what it does on the
    val bags (benign bags alarmed, threat bags alarmed on the threat), or on every bag of
    ``ev_bags`` (another dump of the same bundles, e.g. the test split)."""
    for j, (bpath, hpath) in enumerate(zip(z["bundles"], heldout)):
        bundle = load_bundle(str(bpath))
        spec = bundle.score
        held = {Path(line.strip()).stem for line in open(hpath) if line.strip()}
        cal_bags = [b for b in bags if b.name in held]
        if ev_bags is None:
            ev_benign = [b for b in bags if b.kind == "benign" and b.name in val]
            ev_threat = [
                b for b in bags if b.kind == "threat" and b.tpx is not None and b.tpx.any()
            ]
        else:
            ev_benign = [b for b in ev_bags if b.kind == "benign" and b.name not in held]
            ev_threat = [
                b for b in ev_bags if b.kind == "threat" and b.tpx is not None and b.tpx.any()
            ]
        fin = {b.name: finish(spec, b, j) for b in cal_bags + ev_benign + ev_threat}
        per = [fin[b.name][~b.belt] for b in cal_bags]
        cal = Calibration.fit(np.concatenate(per), 0.01, per)
        peaks = np.array([heat(cal, fin[b.name], b).max() for b in cal_bags])
        ev_w = np.concatenate([fin[b.name][~b.belt] for b in ev_benign])
        pb = np.array([heat(cal, fin[b.name], b).max() for b in ev_benign])
        hit = np.array([heat(cal, fin[b.name], b)[b.tpx].max() for b in ev_threat])
        stored = bundle.calibration
        out = {
            "bundle": str(bpath),
            "n_heldout": len(cal_bags),
            "n_eval_benign": len(ev_benign),
            "n_eval_threat": len(ev_threat),
            "stored_values_max_abs_diff": round(
                float(np.max(np.abs(np.asarray(cal.values) - np.asarray(stored.values)))), 4
            ),
            "eval_window_far_at_2": round(float(np.mean(ev_w >= cal.raw_threshold(2.0))), 4),
            "rules": {},
        }
        for rule, target in RULES:
            t = _rule_threshold(cal, peaks, rule, target)
            out["rules"][f"{rule}@{target:g}"] = {
                "threshold": round(t, 3),
                "eval_benign_bags_alarmed": round(float(np.mean(pb >= t)), 3),
                "eval_threat_on_threat": round(float(np.mean(hit >= t)), 3),
            }
        print(json.dumps(out))


def bootstrap(
    bags: list[Bag], z, heldout: list[str], val: set[str], n_cal: int, draws: int, seed: int
) -> None:
    """Random draws of ``n_cal`` calibration bags among the bags each bundle never
    trained on (its own held-out bags and the val benign bags); every rule's threshold
    from the draw, applied to the remaining bags: the spread of the achieved bag rate."""
    rng = np.random.default_rng(seed)
    for j, (bpath, hpath) in enumerate(zip(z["bundles"], heldout)):
        spec = load_bundle(str(bpath)).score
        held = {Path(line.strip()).stem for line in open(hpath) if line.strip()}
        use = [b for b in bags if b.kind == "benign" and (b.name in held or b.name in val)]
        fin = [finish(spec, b, j) for b in use]
        achieved: dict[str, list[float]] = {f"{r}@{t:g}": [] for r, t in RULES}
        for _ in range(draws):
            idx = rng.permutation(len(use))
            ci, ei = idx[:n_cal], idx[n_cal:]
            per = [fin[i][~use[i].belt] for i in ci]
            cal = Calibration.fit(np.concatenate(per), 0.01)
            pk = np.array([heat(cal, fin[i], use[i]).max() for i in range(len(use))])
            for rule, target in RULES:
                t = _rule_threshold(cal, pk[ci], rule, target)
                achieved[f"{rule}@{target:g}"].append(float(np.mean(pk[ei] >= t)))
        print(
            json.dumps(
                {
                    "bundle": str(bpath),
                    "bags": len(use),
                    "n_cal": n_cal,
                    "draws": draws,
                    "achieved_bag_far_q10_q50_q90": {
                        k: [round(float(v), 3) for v in np.quantile(x, [0.1, 0.5, 0.9])]
                        for k, x in achieved.items()
                    },
                }
            )
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--dump", required=True)
    p.add_argument("--heldout", nargs="+", required=True)
    p.add_argument("--val", required=True, help="list of the val benign scans")
    p.add_argument("--bootstrap", type=int, default=0, help="draws (0 = off)")
    p.add_argument("--n-cal", type=int, default=18)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-dump", help="evaluate the thresholds on this dump's bags instead")
    a = p.parse_args(argv)
    bags = load(a.dump)
    z = np.load(a.dump)
    val = {Path(line.strip()).stem for line in open(a.val) if line.strip()}
    own_heldout(bags, z, a.heldout, val, load(a.eval_dump) if a.eval_dump else None)
    if a.bootstrap:
        bootstrap(bags, z, a.heldout, val, a.n_cal, a.bootstrap, a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
