"""One evaluation pass: every scorer on every prepared scan, then every figure.

Window level (per score kind): positives = anomalous non-belt windows of
annotated threat bags; negatives in two pools kept apart: (a) non-belt windows
of benign bags, (b) non-belt threat-free windows of the threat bags. ROC AUC per
class and overall, and the detection rate at a 1 % window false-alarm rate.

Bag level: a bag's score is the peak of its heat map (the scorer's map, or the
window scores folded by overlap mean with belt windows at the scan's minimum,
kept exactly as stride-sized cells, see :mod:`xrayscreen.evaluation.heat`).
ROC AUC of threat bags (all, annotated or not) vs benign bags; the operating table
sets thresholds at benign-bag alarm rates and reports the share of threat bags
with an alarm *overlapping the threat* (peak of the heat map inside the boxes /
mask above the threshold; annotated bags only) and with any alarm.

Pixel level: pooled pixel AUROC of the heat map over the scans that have masks.

Intervals resample bags; given rescan groups (:mod:`xrayscreen.evaluation.groups`), they
resample physical bags (every scan of a drawn group comes along).

Heat-read windows (``heat_windows=True``): every kind also gets a ``<kind>@heat`` row
whose window score is the mean of its heat map over the window -- what the operator
sees there; for a model with spatial context, its context-averaged evidence. Bag
figures of these rows are the parent kind's (same heat map); no pixel figures.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from xrayscreen.evaluation import bootstrap
from xrayscreen.evaluation.dataset import BENIGN, THREAT, Dataset, PreparedScan
from xrayscreen.evaluation.floors import FLOOR_NAMES
from xrayscreen.evaluation.groups import group_labels
from xrayscreen.evaluation.heat import HeatMap, cell_mean, window_means
from xrayscreen.evaluation.metrics import detection_at_far, roc_auc, roc_curve
from xrayscreen.evaluation.scorers import KindScores, Scorer

POOLS = ("a", "b")
HEAT_SUFFIX = "@heat"
POOL_TEXT = {
    "a": "benign bags' windows",
    "b": "threat-free windows of the threat bags",
}
BAG_ALARM_TARGETS = (0.0, 0.01, 0.05, 0.10, 0.20, 0.50)
#: The operating point (share of benign bags alarmed) of the paired comparisons with the
#: floors: the issue's bag goal is read at 5 %.
PAIRED_TARGET = 0.05
MONTAGE_DOWNSAMPLE = 2


@dataclass
class _KindAcc:
    """Everything collected for one score kind during the pass."""

    scorer: str
    pos: list[np.ndarray] = field(default_factory=list)
    pos_cls: list[np.ndarray] = field(default_factory=list)
    pos_names: list[str] = field(default_factory=list)  # the bag of each ``pos`` entry
    neg: dict[str, list[np.ndarray]] = field(default_factory=lambda: {"a": [], "b": []})
    neg_names: dict[str, list[str]] = field(default_factory=lambda: {"a": [], "b": []})
    bag_peak: dict[str, float] = field(default_factory=dict)
    bag_hit: dict[str, float] = field(default_factory=dict)  # peak inside the threat
    bag_out: dict[str, float] = field(default_factory=dict)  # peak outside the threat
    pix_scores: list[np.ndarray] = field(default_factory=list)
    pix_truth: list[np.ndarray] = field(default_factory=list)
    heat_small: dict[str, HeatMap] = field(default_factory=dict)
    default_threshold: float | None = None  # the model's own, in its heat map's units


@dataclass
class Evaluation:
    """The figures of one pass (also the body of ``report.json``)."""

    summary: dict[str, Any]
    curves: dict[str, dict[str, Any]]
    heat_small: dict[str, dict[str, HeatMap]]
    montage_kind: str | None
    bags: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


def heat_map(scores: KindScores, scan: PreparedScan) -> HeatMap:
    """The heat map of a kind on a scan (scorer's own, else folded window scores)."""
    if scores.heat is not None:
        h = np.asarray(scores.heat, dtype=np.float64)
        if h.shape != scan.shape:
            raise ValueError(f"heat map {h.shape} != protocol image {scan.shape}")
        return HeatMap(h, 1, scan.shape)
    w = np.asarray(scores.window, dtype=np.float64).copy()
    belt = scan.labels.belt
    if belt.any() and (~belt).any():
        w[belt] = w[~belt].min()  # background scores as normal, like the engine
    return cell_mean(w, scan.grid)


def evaluate(
    dataset: Dataset,
    scorers: Sequence[Scorer],
    *,
    far: float = 0.01,
    montage_kind: str | None = None,
    progress: bool = True,
    heat_windows: bool = False,
    groups: Mapping[str, str] | None = None,
) -> Evaluation:
    """Run every scorer on every scan of ``dataset`` and compute every figure.

    Args:
        dataset: Prepared scans (:func:`~xrayscreen.evaluation.dataset.prepare_dataset`).
        scorers: Floors, models, research variants; kinds must have distinct names.
        far: Window false-alarm rate for the detection figure.
        montage_kind: Kind whose heat maps are kept for the montage (default: the
            first kind of the last scorer, i.e. the model's when one is given).
        progress: Show a tqdm bar.
        heat_windows: Add a ``<kind>@heat`` row per kind (window score = mean of the
            kind's heat map over the window).
        groups: Scan name -> physical-bag key (:func:`~xrayscreen.evaluation.groups.
            load_groups`): every interval resamples physical bags instead of scans.

    Returns:
        The evaluation.
    """
    kinds: dict[str, _KindAcc] = {}
    for sc in scorers:
        for k in sc.kinds:
            if k in kinds:
                raise ValueError(f"score kind {k!r} is produced by two scorers")
            kinds[k] = _KindAcc(scorer=sc.name)
            if heat_windows:
                kinds[k + HEAT_SUFFIX] = _KindAcc(scorer=sc.name)
    for sc in scorers:  # a model's own default threshold applies to its own kind's map
        thr = getattr(sc, "default_threshold", None)
        if thr is not None and sc.kinds:
            kinds[sc.kinds[0]].default_threshold = float(thr)
    if montage_kind is None and scorers:
        montage_kind = scorers[-1].kinds[0]
    timing = {sc.name: 0.0 for sc in scorers}
    contents: dict[str, str] = {}
    t0 = time.perf_counter()
    for scan in tqdm(dataset.scans, desc="scoring", unit="bag", disable=not progress):
        lab = scan.labels
        threat_px = scan.annotation.threat_pixels() if scan.annotated else None
        if scan.kind == THREAT and scan.annotated:
            contents[scan.name] = bag_contents(scan.annotation.classes())
        mask_truth = None
        if scan.annotation.has_mask:
            from xrayscreen.evaluation.annotations import rescale_mask

            mask_truth = rescale_mask(scan.annotation.mask, scan.shape) > 0
        for sc in scorers:
            t = time.perf_counter()
            result = sc.score(scan)
            timing[sc.name] += time.perf_counter() - t
            for k in sc.kinds:
                ks = result[k]
                acc = kinds[k]
                w = np.asarray(ks.window, dtype=np.float64)
                if w.shape != (len(scan.grid),):
                    raise ValueError(
                        f"{sc.name}/{k}: {w.shape} scores for {len(scan.grid)} windows"
                    )
                heat = heat_map(ks, scan)
                accs = [(acc, w)]
                if heat_windows:
                    accs.append((kinds[k + HEAT_SUFFIX], window_means(heat.full(), scan.grid)))
                for a, ws in accs:
                    if scan.kind == THREAT and lab.rule != "none":
                        a.pos.append(ws[lab.positives])
                        a.pos_cls.append(lab.cls[lab.positives])
                        a.pos_names.append(scan.name)
                        a.neg["b"].append(ws[lab.negatives])
                        a.neg_names["b"].append(scan.name)
                    elif scan.kind == BENIGN:
                        a.neg["a"].append(ws[lab.negatives])
                        a.neg_names["a"].append(scan.name)
                    a.bag_peak[scan.name] = heat.peak()
                    if threat_px is not None and threat_px.any():
                        a.bag_hit[scan.name] = heat.peak_where(threat_px)
                        out = heat.peak_where(~threat_px)
                        if out is not None:
                            a.bag_out[scan.name] = out
                if mask_truth is not None:
                    acc.pix_scores.append(heat.full().ravel().astype(np.float32))
                    acc.pix_truth.append(mask_truth.ravel())
                if k == montage_kind:
                    acc.heat_small[scan.name] = _small(heat)
        scan.release()
    wall = time.perf_counter() - t0
    summary, curves = _figures(dataset, kinds, far, contents, groups)
    summary["timing_s"] = {
        "scoring_pass": round(wall, 2),
        **{k: round(v, 2) for k, v in timing.items()},
    }
    heat_small = {k: acc.heat_small for k, acc in kinds.items() if acc.heat_small}
    bags = {
        k: {"peak": acc.bag_peak, "hit": acc.bag_hit, "out": acc.bag_out}
        for k, acc in kinds.items()
    }
    return Evaluation(
        summary=summary,
        curves=curves,
        heat_small=heat_small,
        montage_kind=montage_kind,
        bags=bags,
    )


def _small(heat: HeatMap) -> HeatMap:
    """A display copy for the montage (float16; per-pixel maps at half resolution)."""
    if heat.cell > 1:
        return HeatMap(heat.values.astype(np.float16), heat.cell, heat.shape)
    d = MONTAGE_DOWNSAMPLE
    return HeatMap(heat.values[::d, ::d].astype(np.float16), d, heat.shape)


def _cat(xs: list[np.ndarray], dtype: Any = np.float64) -> np.ndarray:
    return np.concatenate(xs).astype(dtype) if xs else np.zeros(0, dtype)


def _present_classes(dataset: Dataset, pos_cls: np.ndarray) -> list[str]:
    return [c for i, c in enumerate(dataset.classes) if (pos_cls == i).any()]


def bag_contents(classes: set[str]) -> str:
    """A threat bag's contents as one label, its threat classes sorted and joined
    (``"gun + knife"``, ``"knife"``): bag-level figures are broken down by it because a
    detector can carry every bag holding one class and miss the bags holding only another
    (issue 7: SIXray's knife-only bags)."""
    return " + ".join(sorted(classes)) or "unlabelled"


def _figures(
    dataset: Dataset,
    kinds: dict[str, _KindAcc],
    far: float,
    contents: dict[str, str] | None = None,
    groups: Mapping[str, str] | None = None,
) -> tuple[dict, dict]:
    benign = [s.name for s in dataset.scans if s.kind == BENIGN]
    threat = [s.name for s in dataset.scans if s.kind == THREAT]
    annotated = [s.name for s in dataset.scans if s.kind == THREAT and s.annotated]
    out: dict[str, Any] = {"kinds": {}}
    curves: dict[str, dict[str, Any]] = {}
    counts: dict[str, Any] | None = None
    for name, acc in kinds.items():
        pos, pos_cls = _cat(acc.pos), _cat(acc.pos_cls, np.int64)
        classes = _present_classes(dataset, pos_cls)
        if counts is None:
            counts = {
                "positives": {"all": int(len(pos))}
                | {c: int((pos_cls == dataset.classes.index(c)).sum()) for c in classes},
                "negatives": {p: int(sum(len(x) for x in acc.neg[p])) for p in POOLS},
            }
        window: dict[str, Any] = {}
        curves[name] = {}
        for pool in POOLS:
            neg = _cat(acc.neg[pool])
            cols: dict[str, Any] = {}
            for cname in ["all", *classes]:
                p = pos if cname == "all" else pos[pos_cls == dataset.classes.index(cname)]
                det = detection_at_far(p, neg, far)
                cols[cname] = {
                    "auc": _r(roc_auc(p, neg)),
                    # Bags resampled, not windows; the @heat rows (the same scores read
                    # off the map) are left out to keep the pass short.
                    "auc_ci": None
                    if "@" in name
                    else _ri(_window_auc_ci(acc, dataset, pool, cname, groups)),
                    "detection_at_far": _r(det.detection),
                    "threshold_at_far": _r(det.threshold, 6),
                    "achieved_far": _r(det.far),
                    "n_pos": int(len(p)),
                    "n_neg": int(len(neg)),
                }
            window[pool] = cols
            if len(pos) and len(neg):
                curves[name][f"window_{pool}"] = _thin(roc_curve(pos, neg))
        bag = _bag_figures(acc, benign, threat, annotated, contents or {}, groups)
        if bag.get("roc") is not None:
            curves[name]["bag"] = bag.pop("roc")
        else:
            bag.pop("roc", None)
        pix = None
        if acc.pix_scores:
            truth = _cat(acc.pix_truth, bool)
            scores = _cat(acc.pix_scores, np.float32)
            pix = {
                "auroc": _r(roc_auc(scores[truth], scores[~truth])),
                "n_scans": len(acc.pix_scores),
                "n_threat_pixels": int(truth.sum()),
                "n_pixels": int(truth.size),
            }
        out["kinds"][name] = {"scorer": acc.scorer, "window": window, "bag": bag, "pixel": pix}
    _paired_against_floors(out["kinds"], kinds, benign, threat, annotated, groups)
    out["counts"] = {
        "bags": {
            "benign": len(benign),
            "threat": len(threat),
            "threat_annotated": len(annotated),
            "threat_bag_level_only": len(threat) - len(annotated),
        },
        "windows": counts or {},
    }
    if groups:
        # How many independent bags the intervals rest on (scans in no group count alone).
        out["counts"]["physical_bags"] = {
            "benign": _n_groups(benign, groups),
            "threat": _n_groups(threat, groups),
        }
    return out, curves


def _n_groups(names: list[str], groups: Mapping[str, str]) -> int:
    return len(set(group_labels(names, groups).tolist()))


def _bag_groups(
    benign: list[str], threat: list[str], hits: list[str], groups: Mapping[str, str] | None
) -> bootstrap.BagGroups | None:
    """Group labels of a bag figure's three arrays (threat and on-threat peaks in one
    label space, so a drawn threat bag brings both); ``None`` without groups."""
    if not groups:
        return None
    lt = group_labels([*threat, *hits], groups)
    return group_labels(benign, groups), lt[: len(threat)], lt[len(threat) :]


def _bag_figures(
    acc: _KindAcc,
    benign: list[str],
    threat: list[str],
    annotated: list[str],
    contents: dict[str, str] | None = None,
    groups: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    b = np.array([acc.bag_peak[n] for n in benign], dtype=np.float64)
    t = np.array([acc.bag_peak[n] for n in threat], dtype=np.float64)
    hits = [n for n in annotated if n in acc.bag_hit]
    hit = np.array([acc.bag_hit[n] for n in hits], dtype=np.float64)
    res: dict[str, Any] = {
        "auc_peak": _r(roc_auc(t, b)),
        "auc_localised": _r(roc_auc(hit, b)),
        "n_benign": len(b),
        "n_threat": len(t),
        "n_threat_localisable": len(hit),
        "operating": [],
        "roc": _thin(roc_curve(t, b)) if len(b) and len(t) else None,
    }
    if len(b) == 0:
        return res
    if acc.default_threshold is not None:
        # What an operator gets without touching the slider: alarm = peak >= threshold.
        thr = acc.default_threshold
        res["at_default_threshold"] = {
            "threshold": _r(thr, 6),
            "benign_alarmed": _r(float((b >= thr).mean())),
            "threat_alarm_on_threat": _r(float((hit >= thr).mean())) if len(hit) else None,
            "threat_any_alarm": _r(float((t >= thr).mean())) if len(t) else None,
        }
    desc = np.sort(b)[::-1]
    for target in BAG_ALARM_TARGETS:
        k = int(np.floor(target * len(b) + 1e-9))
        thr = float(desc[min(k, len(desc) - 1)])
        res["operating"].append(
            {
                "target_benign_alarm": target,
                "threshold": _r(thr, 6),
                "benign_alarmed": _r(float((b > thr).mean())),
                "threat_alarm_on_threat": _r(float((hit > thr).mean())) if len(hit) else None,
                "threat_any_alarm": _r(float((t > thr).mean())) if len(t) else None,
                "on_threat_by_contents": _by_contents(acc, annotated, contents or {}, thr),
            }
        )
    # How much a few dozen bags can tell: bag-resampled percentile intervals (threshold
    # re-derived per resample), beside every bag figure.
    ci = bootstrap.bag_intervals(
        b, t, hit, BAG_ALARM_TARGETS, groups=_bag_groups(benign, threat, hits, groups)
    )
    unit = "physical bag (rescan groups)" if groups else "bag"
    res["ci"] = {"level": ci["level"], "resamples": ci["resamples"], "unit": unit}
    res["auc_peak_ci"] = _ri(ci["auc_peak"])
    for op in res["operating"]:
        iv = ci["operating"][op["target_benign_alarm"]]
        op["ci"] = {k: _ri(v) for k, v in iv.items()}
    return res


def _by_contents(
    acc: _KindAcc, annotated: list[str], contents: dict[str, str], thr: float
) -> dict[str, dict[str, int]]:
    """Per contents label (:func:`bag_contents`): annotated threat bags and how many of
    them alarm on the threat above ``thr``."""
    out: dict[str, dict[str, int]] = {}
    for name in annotated:
        if name not in acc.bag_hit or name not in contents:
            continue
        row = out.setdefault(contents[name], {"bags": 0, "alarmed_on_threat": 0})
        row["bags"] += 1
        row["alarmed_on_threat"] += int(acc.bag_hit[name] > thr)
    return dict(sorted(out.items()))


def _window_auc_ci(
    acc: _KindAcc,
    dataset: Dataset,
    pool: str,
    cname: str,
    groups: Mapping[str, str] | None = None,
) -> list[float] | None:
    """Bag-resampled 95 % interval of one window-AUC cell (:mod:`bootstrap`); with
    ``groups``, physical bags resampled."""
    pos = acc.pos
    if cname != "all":
        k = dataset.classes.index(cname)
        pos = [p[c == k] for p, c in zip(acc.pos, acc.pos_cls)]
    lp = ln = None
    if groups:
        lp = group_labels(acc.pos_names, groups)
        ln = group_labels(acc.neg_names[pool], groups)
    return bootstrap.clustered_auc_interval(
        pos, acc.neg[pool], same_bags=pool == "b", pos_groups=lp, neg_groups=ln
    )


def _paired_against_floors(
    figures: dict[str, Any],
    kinds: dict[str, _KindAcc],
    benign: list[str],
    threat: list[str],
    annotated: list[str],
    groups: Mapping[str, str] | None = None,
) -> None:
    """Each learned score against each non-learned floor on the same bags: a paired
    bootstrap of the bag-level differences at the 5 % operating point
    (``bag["vs_floors"]``). Bag figures are heat-map peaks whichever way the windows are
    read, so the ``@heat`` rows (the same bag figures) are not compared again."""
    hits = [n for n in annotated if all(n in a.bag_hit for a in kinds.values())]

    def peaks(acc: _KindAcc) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            np.array([acc.bag_peak[n] for n in benign], dtype=np.float64),
            np.array([acc.bag_peak[n] for n in threat], dtype=np.float64),
            np.array([acc.bag_hit[n] for n in hits], dtype=np.float64),
        )

    if not benign:
        return
    floors = {f: peaks(kinds[f]) for f in FLOOR_NAMES if f in kinds}
    labels = _bag_groups(benign, threat, hits, groups)
    for name, acc in kinds.items():
        if "@" in name or name in FLOOR_NAMES:
            continue
        mine = peaks(acc)
        vs = {}
        for other, theirs in floors.items():
            d = bootstrap.paired_difference(mine, theirs, PAIRED_TARGET, groups=labels)
            vs[other] = {
                k: None if d[k] is None else {"diff": _r(d[k]["diff"]), "ci": _ri(d[k]["ci"])}
                for k in ("auc_peak", "on_threat")
            } | {"target_benign_alarm": PAIRED_TARGET}
        figures[name]["bag"]["vs_floors"] = vs


def _ri(interval: list[float] | None) -> list[float | None] | None:
    return None if interval is None else [_r(v) for v in interval]


def _thin(curve: Any, max_points: int = 400) -> dict[str, list[float]]:
    """A ROC curve reduced to at most ``max_points`` points (for JSON and plots)."""
    n = len(curve.fpr)
    # Even spacing along the curve's length keeps the steep low-FAR part visible.
    d = np.r_[0.0, np.cumsum(np.abs(np.diff(curve.fpr)) + np.abs(np.diff(curve.tpr)))]
    marks = np.linspace(0.0, d[-1], min(n, max_points))
    idx = np.unique(np.r_[0, np.searchsorted(d, marks).clip(0, n - 1), n - 1])
    return {
        "fpr": [round(float(v), 5) for v in curve.fpr[idx]],
        "tpr": [round(float(v), 5) for v in curve.tpr[idx]],
    }


def _r(v: float, nd: int = 4) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), nd)
