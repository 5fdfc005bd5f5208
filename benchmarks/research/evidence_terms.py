"""Each evidence term of a bundle's score, per window, on the protocol's bags; and the
bag and window figures of other ways to combine them (issue 7, tenth session).

``dump`` scores every bag as ``xrayscreen evaluate`` does (its ``ModelScorer``) and saves,
per window, each term as its robust z within the scan -- GANomaly's score (``m``, zoomed
``mz``), window density (``d``, ``dz``), the projected-threat head (``h``, ``hz``) -- with
the score the product computed (``out``), the labels and the grid. ``sweep`` recombines
them with the product's formula (each view: ``m + wd*d + wh*h``; the views' max or mean;
the spatial context) under other settings, and prints JSON. The bag point is read at each
bag's highest window rather than at the heat map's peak (no calibration, no folding),
which reproduced the reports' window AUC to 0.0004 and their bag point to one or two bags::

    python benchmarks/research/evidence_terms.py dump --bundle /tmp/models/jt1_s6 \\
        --normal /tmp/sixray_lists/benign_val.txt --threat /tmp/sixray_lists/threat_val.txt \\
        --out /tmp/s10/dec_jt1_s6.npz
    python benchmarks/research/evidence_terms.py sweep /tmp/s10/dec_jt1_s6.npz ...
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xrayscreen.evaluation.metrics import roc_auc
from xrayscreen.inference import context
from xrayscreen.inference.windows import WindowGrid
from xrayscreen.model.bundle import ScoreSpec

TERMS = ("m", "mz", "d", "dz", "h", "hz")


def dump(a: argparse.Namespace) -> None:
    """Score the bags and save their per-window terms (``--out`` .npz)."""
    from xrayscreen.evaluation import scorers
    from xrayscreen.evaluation.annotations import AnnotationSource
    from xrayscreen.evaluation.dataset import prepare_scan
    from xrayscreen.inference import density, scan_norm, tip_evidence, zoom
    from xrayscreen.model.bundle import load_bundle

    b = load_bundle(a.bundle)
    scorer = scorers.ModelScorer(b)
    cap: dict[str, Any] = {}
    real = zoom.evidence

    def spy(spec, raw, raw_zoom, grid, valid, dens, dens_zoom, head, head_zoom):
        out = real(spec, raw, raw_zoom, grid, valid, dens, dens_zoom, head, head_zoom)
        cap.update(raw=raw, rz=raw_zoom, v=valid, d=dens, dz=dens_zoom, h=head, hz=head_zoom)
        cap.update(out=out, grid=grid)
        return out

    scorers.zoom.evidence = spy  # the scorer's own call, inputs kept
    src = AnnotationSource(labels=a.labels, masks=a.masks)
    zspec = zoom.zoom_spec(b.score)
    save: dict[str, np.ndarray] = {}
    names, kinds = [], []
    lists = (("benign", a.normal), ("threat", a.threat))
    for kind, path in lists:
        for line in Path(path).read_text().splitlines():
            if not line.strip():
                continue
            ps = prepare_scan(
                Path(line.strip()), kind, src if kind == "threat" else None, tuple(src.classes)
            )
            scorer.score(ps)
            v, i = cap["v"], len(names)
            names.append(ps.name)
            kinds.append(kind)
            terms = {
                "m": scan_norm.normalise(b.score, cap["raw"], v),
                "mz": scan_norm.normalise(zspec, cap["rz"], v),
                "d": density.normalise(cap["d"], v),
                "dz": density.normalise(cap["dz"], v),
                "h": tip_evidence.normalise(cap["h"], v),
                "hz": tip_evidence.normalise(cap["hz"], v),
            }
            for k, t in terms.items():
                save[f"{i}_{k}"] = t.numpy().astype(np.float32)
            # The head's raw logits too (twelfth session: an absolute reading of the head
            # beside its within-scan z); absent from older dumps.
            for k, c in (("h", "h"), ("hz", "hz"), ("m", "raw"), ("mz", "rz")):
                if cap[c] is not None:
                    save[f"{i}_{k}_raw"] = cap[c].numpy().astype(np.float32)
            g = cap["grid"]
            save[f"{i}_out"] = cap["out"].numpy()
            save[f"{i}_valid"] = v.numpy()
            save[f"{i}_label"] = ps.labels.label
            save[f"{i}_grid"] = np.array([g.height, g.width, g.window, g.stride])
    np.savez_compressed(a.out, names=np.array(names), kinds=np.array(kinds), **save)
    print(json.dumps({"bundle": a.bundle, "bags": len(names), "out": a.out}))


def add_probe_args(p: argparse.ArgumentParser) -> None:
    """The arguments every head probe takes: the bundle, its training sources, its dump
    and the dump's bag lists."""
    p.add_argument("--bundle", required=True)
    p.add_argument("--sources", nargs="+", required=True)
    p.add_argument("--terms", required=True, help="evidence_terms.py output for the same bundle")
    add_bag_lists(p)


def add_bag_lists(p: argparse.ArgumentParser) -> None:
    """The arguments that name a dump's bags: the benign and threat lists, in the order
    ``dump`` reads them, and the threat bags' boxes and masks."""
    p.add_argument("--normal", required=True)
    p.add_argument("--threat", required=True)
    p.add_argument("--labels", default="../shared/data/sixray/threat/labels_yolo")
    p.add_argument("--masks", default="../shared/data/sixray/threat/masks")


def bag_views(
    bundle: Any, bags: list[dict[str, Any]], normal: str, threat: str, labels: str, masks: str
) -> Iterator[tuple[dict[str, Any], torch.Tensor, list[torch.Tensor]]]:
    """Each bag saved by ``dump`` (from :func:`load_terms`, in its order) with the indices
    of its valid windows and those windows' two views as the product cuts them (the
    window, its zoomed-out view), for probes that re-read the bags with another head.

    Raises:
        SystemExit: when the lists do not name the saved bags in the saved order.
    """
    from xrayscreen.evaluation.annotations import AnnotationSource
    from xrayscreen.evaluation.dataset import prepare_scan
    from xrayscreen.imaging.representation import model_input
    from xrayscreen.inference import zoom
    from xrayscreen.inference.engine import air_value
    from xrayscreen.inference.windows import gather_windows, pad_with_air

    src = AnnotationSource(labels=labels, masks=masks)
    air = torch.tensor(air_value(bundle.input.representation))
    paths = [(ln.strip(), "benign") for ln in open(normal) if ln.strip()]
    paths += [(ln.strip(), "threat") for ln in open(threat) if ln.strip()]
    if len(paths) != len(bags):
        raise SystemExit(f"{len(paths)} bags listed, {len(bags)} saved")
    rep = bundle.input.representation
    for bag, (path, kind) in zip(bags, paths):
        ps = prepare_scan(Path(path), kind, src if kind == "threat" else None, tuple(src.classes))
        if ps.name != bag["name"]:
            raise SystemExit(f"bag order differs: {ps.name} vs {bag['name']}")
        x = torch.from_numpy(model_input(ps.scan, rep, bundle.input.scale))
        idx = torch.nonzero(torch.from_numpy(bag["valid"])).flatten()
        zv = zoom.ZoomedView(ps.scan, ps.grid, zoom.factor_of(bundle.score), rep, air)
        yield (
            bag,
            idx,
            [gather_windows(pad_with_air(x, ps.grid, air), ps.grid, idx), zv.windows(idx)],
        )


def head_logits(
    bundle: Any, bags: list[dict[str, Any]], heads: list[Any], cells: int, a: argparse.Namespace
) -> list[dict[str, torch.Tensor]]:
    """Every head's logits on the saved bags' windows: per bag, view key (``h``, ``hz``) ->
    ``(len(heads), windows)`` (0 where a window is not valid); ``a`` names the bag lists
    (:func:`add_bag_lists`)."""
    from xrayscreen.inference.engine import ScoringEngine

    engine = ScoringEngine(bundle, torch.device("cpu"))
    out = []
    for bag, idx, views in bag_views(bundle, bags, a.normal, a.threat, a.labels, a.masks):
        kept: dict[str, torch.Tensor] = {}
        for v, (key, w) in enumerate(zip(("h", "hz"), views)):
            inp = engine.embed_windows(w, cells)
            kept[key] = torch.zeros(len(heads), len(bag["valid"]))
            kept[key][:, idx] = torch.stack([h.logits(inp)[:, v] for h in heads])
        out.append(kept)
    return out


def figures_with_heads(
    bags: list[dict[str, Any]], logits: list[dict[str, torch.Tensor]], which: Any, **kw: Any
) -> dict[str, float]:
    """:func:`bag_figures` (``kw`` passed on) with each bag's head terms replaced by the
    within-scan z of the mean logit of the heads ``which`` selects (an index, slice or list
    into :func:`head_logits`' first axis)."""
    from xrayscreen.inference import tip_evidence

    for bag, kept in zip(bags, logits):
        valid = torch.from_numpy(bag["valid"])
        for key, lg in kept.items():
            sel = lg[which]
            logit = sel.mean(0) if sel.ndim == 2 else sel
            bag[key] = tip_evidence.normalise(logit, valid).numpy()
    return bag_figures(bags, **kw)


def load_terms(path: str) -> list[dict[str, Any]]:
    """The bags saved by ``dump``, in their order."""
    z = np.load(path)
    bags = []
    for i in range(len(z["names"])):
        bag = {k: z[f"{i}_{k}"] for k in (*TERMS, "out", "valid", "label")}
        bag.update({f"{k}_raw": z[f"{i}_{k}_raw"] for k in TERMS if f"{i}_{k}_raw" in z})
        bag.update(kind=str(z["kinds"][i]), name=str(z["names"][i]))
        bag["grid"] = WindowGrid(*(int(v) for v in z[f"{i}_grid"]))
        bags.append(bag)
    return bags


#: The four directions of the window grid a line runs along (0, 90, 45 and 135 degrees).
LINE_DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))


def line_max(
    s: np.ndarray, valid: np.ndarray, grid: WindowGrid, reach: int, flank: int = 0
) -> np.ndarray:
    """Per window, the largest mean of ``s`` along a straight line of ``2 * reach + 1``
    windows centred on it, over :data:`LINE_DIRECTIONS` (sixteenth session: a long blade is
    moderately unusual along its whole length). Windows that are not valid, and the space
    beyond the grid, count 0 (a scan's median in robust z). With ``flank`` > 0 each
    direction's mean is a ridge: less the larger of the two parallel lines ``flank`` windows
    to either side (taken as 0 when below it), so a wide object (a row of bottles) scores
    less than a narrow one (a blade)."""
    rows, cols = grid.rows, grid.cols
    pad = reach + flank
    padded = np.pad(np.where(valid, s, 0.0).reshape(rows, cols).astype(np.float64), pad)

    def mean_along(dy: int, dx: int, oy: int, ox: int) -> np.ndarray:
        acc = np.zeros((rows, cols))
        for k in range(-reach, reach + 1):
            y0, x0 = pad + k * dy + oy, pad + k * dx + ox
            acc += padded[y0 : y0 + rows, x0 : x0 + cols]
        return acc / (2 * reach + 1)

    best = np.full((rows, cols), -np.inf)
    for dy, dx in LINE_DIRECTIONS:
        line = mean_along(dy, dx, 0, 0)
        if flank:
            py, px = dx * flank, -dy * flank  # perpendicular offset
            side = np.maximum(mean_along(dy, dx, py, px), mean_along(dy, dx, -py, -px))
            line = line - np.maximum(side, 0.0)
        best = np.maximum(best, line)
    return best.ravel()


def combine(
    bag: dict[str, Any],
    wd: float = 0.5,
    wh: float = 1.0,
    whz: float = 1.0,
    mix: str = "max",
    cap: float | None = None,
    context_px: float = 128.0,
    context_self: float = 0.25,
    wa: float = 0.0,
    wma: float = 0.0,
    head_after: float = 0.0,
    line_reach: int = 0,
    line_mix: float | None = None,
    line_flank: int = 0,
    line_head: bool = True,
) -> np.ndarray:
    """The product's window score from saved terms under the given settings; ``wa`` /
    ``wma`` add the head's / GANomaly's ABSOLUTE reading (``h_abs``, ``m_abs``: the raw
    value standardised across bags, :func:`add_absolute`) at that weight; ``head_after``
    adds the head's larger view z at that weight AFTER the spatial context (probe of the
    thirteenth session: a compact threat's head evidence kept out of the neighbours' mean).
    ``line_reach`` > 0 (sixteenth session) also reads the pre-context score along lines
    (:func:`line_max`) and takes the max of it and the context's score, or with
    ``line_mix`` a blend ``(1 - line_mix) * context + line_mix * line``; ``line_flank``
    makes the line a ridge (:func:`line_max`); ``line_head=False`` reads the line on
    GANomaly's terms and density alone (the head's terms left out of it)."""
    h, hz = bag["h"], bag["hz"]
    if cap is not None:
        h, hz = np.minimum(h, cap), np.minimum(hz, cap)
    fine = bag["m"] + wd * bag["d"] + wh * h
    coarse = bag["mz"] + wd * bag["dz"] + whz * hz
    if wa:
        fine, coarse = fine + wa * bag["h_abs"], coarse + wa * bag["hz_abs"]
    if wma:
        fine, coarse = fine + wma * bag["m_abs"], coarse + wma * bag["mz_abs"]
    s = np.maximum(fine, coarse) if mix == "max" else 0.5 * (fine + coarse)
    spec = ScoreSpec(
        params={"scan_norm": "robust_z", "context_px": context_px, "context_self": context_self}
    )
    valid = torch.from_numpy(bag["valid"])
    s = torch.from_numpy(s.astype(np.float32))
    out = context.apply(spec, s, bag["grid"], valid).numpy()
    if line_reach:
        src = s.numpy()
        if not line_head:
            src = np.maximum(bag["m"] + wd * bag["d"], bag["mz"] + wd * bag["dz"])
        line = line_max(src, bag["valid"], bag["grid"], line_reach, line_flank)
        out = np.maximum(out, line) if line_mix is None else (1 - line_mix) * out + line_mix * line
        out = out.astype(np.float32)
    if head_after:
        out = out + head_after * np.maximum(bag["h"], bag["hz"])
    return out


def bag_figures(
    bags: list[dict[str, Any]], saved: bool = False, far: float = 0.05, **kw: Any
) -> dict[str, float]:
    """Share of threat bags alarmed on the threat at 5 % of benign bags (highest-window
    reading; ``far`` another share, the key stays ``bag5``), bag AUC and window AUC against
    benign bags' windows; ``saved`` reads the product's own saved score instead of
    recombining."""
    benign, on_threat, peaks, wn, wt, held = [], [], [], [], [], []
    for bag in bags:
        s = bag["out"] if saved else combine(bag, **kw)
        v = bag["valid"]
        if bag["kind"] == "benign":
            benign.append(s[v].max())
            wn.append(s[v])
            continue
        peaks.append(s[v].max())
        lab = (bag["label"] == 1) & v
        if lab.any():
            on_threat.append(s[lab].max())
            wt.append(s[lab])
            held.append(bag.get("contents"))
    benign_sorted = np.sort(benign)
    allowed = int(np.floor(far * len(benign_sorted) + 1e-9))
    threshold = benign_sorted[-allowed - 1]  # alarm strictly above: <= far of benign bags
    hit = np.array(on_threat) > threshold
    out = {
        "bag5": round(float(np.mean(hit)), 4),
        "bag_auc": round(float(roc_auc(np.array(peaks), benign_sorted)), 4),
        "window_auc": round(float(roc_auc(np.concatenate(wt), np.concatenate(wn))), 4),
    }
    if any(h is not None for h in held):  # fifteenth session: knife-only bags are the gap
        out["bag5_by_contents"] = {
            c: [int(hit[[h == c for h in held]].sum()), sum(h == c for h in held)]
            for c in sorted({h for h in held if h is not None})
        }
    return out


def add_contents(bags: list[dict[str, Any]], threat: str, labels: str, masks: str) -> None:
    """Give every saved threat bag its ``contents`` (its threat classes joined, as
    ``xrayscreen evaluate`` breaks bag alarms down), read from its annotation."""
    import cv2

    from xrayscreen.evaluation.annotations import AnnotationSource
    from xrayscreen.evaluation.runner import bag_contents

    src = AnnotationSource(labels=labels, masks=masks)
    paths = {Path(ln.strip()).stem: ln.strip() for ln in open(threat) if ln.strip()}
    for bag in bags:
        if bag["kind"] == "threat" and bag["name"] in paths:
            img = cv2.imread(paths[bag["name"]], cv2.IMREAD_REDUCED_GRAYSCALE_2)
            shape = (img.shape[0] * 2, img.shape[1] * 2)
            bag["contents"] = bag_contents(src.load(bag["name"], shape).classes())


SWEEP: dict[str, dict[str, Any]] = {
    "shipped": {},
    "views_mean": {"mix": "mean"},
    "views_mean_density_1": {"mix": "mean", "wd": 1.0},
    "density_0.75": {"wd": 0.75},
    "density_1": {"wd": 1.0},
    "density_1.5": {"wd": 1.5},
    "head_0.5": {"wh": 0.5, "whz": 0.5},
    "head_1.5": {"wh": 1.5, "whz": 1.5},
    "head_2": {"wh": 2.0, "whz": 2.0},
    "head_window_0.5": {"wh": 0.5},
    "head_window_1.5": {"wh": 1.5},
    "head_zoomed_1.5": {"whz": 1.5},
    "density_1_head_1.5": {"wd": 1.0, "wh": 1.5, "whz": 1.5},
    "head_cap_2": {"cap": 2.0},
    "head_cap_3": {"cap": 3.0},
    "head_cap_4": {"cap": 4.0},
    "context_64": {"context_px": 64.0},
    "context_192": {"context_px": 192.0},
    "context_256": {"context_px": 256.0},
    "context_self_0.1": {"context_self": 0.1},
    "context_self_0.5": {"context_self": 0.5},
    "context_192_self_0.5": {"context_px": 192.0, "context_self": 0.5},
    "context_256_self_0.5": {"context_px": 256.0, "context_self": 0.5},
}


def add_absolute(bags: list[dict[str, Any]]) -> None:
    """Give every bag ``<term>_abs`` for the raw head logits and GANomaly scores: the raw
    value minus the median over the BENIGN bags' valid windows, over 1.4826 x their MAD
    (one location and scale per term for all bags, so a bag's level survives, where the
    within-scan z forgets it). Probe only: the two numbers come from the benign val bags
    the figures are read on; a product version would take them from the held-out normal
    training scans."""
    for k in ("h", "hz", "m", "mz"):
        vals = np.concatenate([b[f"{k}_raw"][b["valid"]] for b in bags if b["kind"] == "benign"])
        med = float(np.median(vals))
        mad = float(np.median(np.abs(vals - med))) * 1.4826
        for b in bags:
            b[f"{k}_abs"] = np.where(b["valid"], (b[f"{k}_raw"] - med) / max(mad, 1e-6), 0.0)


#: Twelfth session: absolute readings beside the within-scan terms (rule in BENCHMARKS).
SWEEP_ABS: dict[str, dict[str, Any]] = {
    "shipped": {},
    "head_abs_0.5": {"wa": 0.5},
    "head_abs_1": {"wa": 1.0},
    "head_abs_1_only": {"wa": 1.0, "wh": 0.0, "whz": 0.0},
    "head_abs_2_only": {"wa": 2.0, "wh": 0.0, "whz": 0.0},
    "model_abs_0.5": {"wma": 0.5},
    "model_abs_1": {"wma": 1.0},
    "both_abs_0.5": {"wa": 0.5, "wma": 0.5},
    # Thirteenth session: a partial share of the head's weight 1 on its absolute reading.
    "head_abs_share_0.25": {"wa": 0.25, "wh": 0.75, "whz": 0.75},
    "head_abs_share_0.5": {"wa": 0.5, "wh": 0.5, "whz": 0.5},
}

#: Fifteenth session: bag figures by contents, with and without the head.
SWEEP_CONTENTS: dict[str, dict[str, Any]] = {
    "shipped": {},
    "no_head": {"wh": 0.0, "whz": 0.0},
    "shipped_at_10pc": {"far": 0.10},
    "shipped_at_20pc": {"far": 0.20},
}

#: Sixteenth session: line evidence beside the spatial context (rules L1-L4 in BENCHMARKS).
SWEEP_LINE: dict[str, dict[str, Any]] = {
    "shipped": {},
    **{
        f"line_r{r}_blend_{m}": {"line_reach": r, "line_mix": m}
        for r, m in ((3, 0.5), (3, 1.0), (6, 0.5), (6, 1.0), (9, 1.0), (12, 1.0), (9, 0.5))
    },
    **{f"line_r{r}_max": {"line_reach": r} for r in (6, 9, 12)},
    **{f"ridge_r9_flank{f}_max": {"line_reach": 9, "line_flank": f} for f in (3, 4)},
    **{f"line_no_head_r{r}_max": {"line_reach": r, "line_head": False} for r in (6, 9, 12)},
}

#: Thirteenth session: the head's evidence kept (partly) out of the spatial context.
SWEEP_HEAD_AFTER: dict[str, dict[str, Any]] = {
    "shipped": {},
    "head_after_0.5": {"wh": 0.0, "whz": 0.0, "head_after": 0.5},
    "head_after_1": {"wh": 0.0, "whz": 0.0, "head_after": 1.0},
    "head_split_0.5": {"wh": 0.5, "whz": 0.5, "head_after": 0.5},
}


def sweep(a: argparse.Namespace) -> None:
    """Figures of each :data:`SWEEP` setting per file, and their mean."""
    data = [load_terms(f) for f in a.terms]
    out: dict[str, Any] = {"files": a.terms, "saved": [bag_figures(d, saved=True) for d in data]}
    table = SWEEP
    if a.absolute:
        for d in data:
            add_absolute(d)
        table = SWEEP_ABS
    elif a.head_after:
        table = SWEEP_HEAD_AFTER
    elif a.contents or a.line:
        for d in data:
            add_contents(d, a.contents or a.line, a.labels, a.masks)
        table = SWEEP_LINE if a.line else SWEEP_CONTENTS
    keep = set(a.only.split(",")) if a.only else set(table)
    for name, kw in table.items():
        if name not in keep:
            continue
        rows = [bag_figures(d, **kw) for d in data]
        mean = {
            k: round(float(np.mean([r[k] for r in rows])), 4)
            for k in rows[0]
            if k != "bag5_by_contents"
        }
        out[name] = {"per_file": rows, "mean": mean}
    print(json.dumps(out))


def misses(a: argparse.Namespace) -> None:
    """Per dump (shipped formula): the 5 % threshold, the benign bags that set it, and for
    every threat bag missed at it the terms at its best on-threat window, the head's best
    per view on the threat, and whether that window is the bag's highest (fifteenth session);
    with ``--ensemble`` also the figures of the dumps' scores averaged (same bags)."""
    data = [load_terms(f) for f in a.terms]
    out: dict[str, Any] = {}
    for path, bags in zip(a.terms, data):
        scores = [combine(b) for b in bags]
        peaks = sorted(
            (float(s[b["valid"]].max()), b["name"])
            for b, s in zip(bags, scores)
            if b["kind"] == "benign"
        )
        thr = peaks[-int(np.floor(0.05 * len(peaks))) - 1][0]
        missed = []
        for b, s in zip(bags, scores):
            lab = (b["label"] == 1) & b["valid"]
            if b["kind"] == "benign" or not lab.any() or s[lab].max() > thr:
                continue
            i = int(np.flatnonzero(lab)[np.argmax(s[lab])])
            top = int(np.flatnonzero(b["valid"])[np.argmax(s[b["valid"]])])
            missed.append(
                {
                    "bag": b["name"],
                    "on_threat": round(float(s[i]), 2),
                    "terms": {
                        t: round(float(b[t][i]), 2) for t in ("m", "d", "h", "mz", "dz", "hz")
                    },
                    "head_max_on_threat": [round(float(b[t][lab].max()), 2) for t in ("h", "hz")],
                    "best_is_bag_top": bool(lab[top]),
                }
            )
        out[path] = {"threshold": round(thr, 2), "top_benign": peaks[-5:], "missed": missed}
    if a.ensemble:
        ens = []
        for group in zip(*data):
            if len({b["name"] for b in group}) != 1:
                raise SystemExit("the dumps do not hold the same bags in the same order")
            ens.append({**group[0], "out": np.mean([combine(b) for b in group], axis=0)})
        out["ensemble"] = bag_figures(ens, saved=True)
    print(json.dumps(out))


def scene(a: argparse.Namespace) -> None:
    """Per dump (shipped formula): whether each named threat bag is alarmed on the threat
    at 5 % of benign bags (eighteenth session: one staged scene, caught all or nothing)."""
    names = [n.strip() for n in a.bags.split(",") if n.strip()]
    out: dict[str, Any] = {}
    for path in a.terms:
        bags = load_terms(path)
        scores = [combine(b) for b in bags]
        peaks = sorted(
            float(s[b["valid"]].max()) for b, s in zip(bags, scores) if b["kind"] == "benign"
        )
        thr = peaks[-int(np.floor(0.05 * len(peaks))) - 1]
        out[path] = {
            b["name"]: bool(s[(b["label"] == 1) & b["valid"]].max() > thr)
            for b, s in zip(bags, scores)
            if b["name"] in names and ((b["label"] == 1) & b["valid"]).any()
        }
    print(json.dumps(out))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("--bundle", required=True)
    add_bag_lists(d)
    d.add_argument("--out", required=True)
    d.add_argument("--threads", type=int, default=2)
    s = sub.add_parser("sweep")
    s.add_argument("terms", nargs="+")
    s.add_argument(
        "--absolute",
        action="store_true",
        help="sweep absolute readings of the head and GANomaly (needs dumps with raw terms)",
    )
    s.add_argument(
        "--head-after",
        action="store_true",
        help="sweep the head's evidence added after the spatial context",
    )
    s.add_argument(
        "--contents",
        default=None,
        metavar="THREAT_LIST",
        help="the dumps' threat list: bag figures by what each threat bag holds, with and "
        "without the head (fifteenth session; needs --labels and --masks)",
    )
    s.add_argument(
        "--line",
        default=None,
        metavar="THREAT_LIST",
        help="the dumps' threat list: line evidence beside the context (sixteenth session; "
        "by contents, needs --labels and --masks)",
    )
    s.add_argument(
        "--only", default=None, metavar="NAMES", help="just these settings (comma-separated)"
    )
    s.add_argument("--labels", default=None)
    s.add_argument("--masks", default=None)
    m = sub.add_parser("misses")
    m.add_argument("terms", nargs="+")
    m.add_argument("--ensemble", action="store_true", help="also the dumps' scores averaged")
    c = sub.add_parser("scene")
    c.add_argument("terms", nargs="+")
    c.add_argument("--bags", required=True, help="comma-separated threat bag names")
    a = p.parse_args(argv)
    if a.cmd == "scene":
        scene(a)
    elif a.cmd == "misses":
        misses(a)
    elif a.cmd == "dump":
        torch.set_num_threads(a.threads)
        dump(a)
    else:
        sweep(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
