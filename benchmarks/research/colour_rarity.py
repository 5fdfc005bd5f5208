"""Colour rarity given lightness as window evidence (issue 7, seventeenth session, C1).

SIXray shows its kitchen knives as a light, saturated teal (sixteenth session), a colour
that may be rare at that lightness in normal bags. A histogram of (grey, hue, saturation)
over the pixels of the benign TRAIN bags (16 x 30 x 8 bins, belt-white pixels left out)
gives each pixel's rarity ``-log p(hue, saturation | grey)``; a window's evidence is the mean
rarity over it (``c_mean``) or the share of pixels rarer than ``--rare`` (``c_frac``), as a
robust z within the scan. No threat is read to build it. Prints JSON: each term's window
AUC alone (threat windows of knife-only bags, and of all threat bags, against benign
windows; the dumps' own terms beside it) and the bag figures of the shipped formula with the
term added to both views at each weight (``evidence_terms.bag_figures``)::

    python benchmarks/research/colour_rarity.py --train /tmp/sixray_lists/benign_train.txt \\
        --normal /tmp/sixray_lists/benign_val.txt --threat /tmp/sixray_lists/threat_val.txt \\
        --terms /tmp/s12/dec_t12_s6.npz /tmp/s12/dec_t12_s5.npz /tmp/s12/dec_t12_s0.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from xrayscreen.evaluation.dataset import read_scan, to_protocol_scale
from xrayscreen.evaluation.metrics import roc_auc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evidence_terms as et

REPO = Path(__file__).resolve().parents[2]
GREY_BINS, HUE_BINS, SAT_BINS = 16, 30, 8
BELT = 0.9  # pixels at least this light are belt / air: no colour to judge
WEIGHTS = (0.25, 0.5, 1.0)


def bins(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: grey (0..1) and its (grey, hue, saturation) bin."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    grey = rgb.mean(axis=2) / 255.0
    gi = np.minimum((grey * GREY_BINS).astype(int), GREY_BINS - 1)
    hi = np.minimum(hsv[..., 0].astype(int) * HUE_BINS // 180, HUE_BINS - 1)
    si = np.minimum(hsv[..., 1].astype(int) * SAT_BINS // 256, SAT_BINS - 1)
    return grey, (gi * HUE_BINS + hi) * SAT_BINS + si


def protocol_rgb(path: str) -> np.ndarray:
    """The scan's RGB at the protocol scale (longer side 800, the engine's resize)."""
    return to_protocol_scale(read_scan(Path(path))).rgb


def rarity_table(paths: list[str]) -> np.ndarray:
    """``-log p(hue, saturation | grey band)`` per bin, from the pixels of ``paths``."""
    counts = np.zeros(GREY_BINS * HUE_BINS * SAT_BINS)
    for p in paths:
        grey, idx = bins(protocol_rgb(p))
        counts += np.bincount(idx[grey < BELT], minlength=counts.size)
    per_band = counts.reshape(GREY_BINS, -1) + 0.5  # a half count: no bin is impossible
    return -np.log(per_band / per_band.sum(axis=1, keepdims=True)).ravel()


def window_means(img: np.ndarray, grid) -> np.ndarray:
    """Mean of ``img`` over every window of ``grid`` (zero beyond the image)."""
    h, w = grid.padded_shape
    padded = np.zeros((h, w), np.float64)
    padded[: img.shape[0], : img.shape[1]] = img
    ii = cv2.integral(padded)
    o, k = grid.origins(), grid.window
    y, x = o[:, 0], o[:, 1]
    return (ii[y + k, x + k] - ii[y, x + k] - ii[y + k, x] + ii[y, x]) / (k * k)


def robust_z(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``x`` as a robust z within the scan's valid windows (0 elsewhere)."""
    med = np.median(x[valid])
    mad = np.median(np.abs(x[valid] - med)) * 1.4826
    return np.where(valid, (x - med) / max(mad, 1e-6), 0.0)


def add_terms(bags: list[dict], paths: dict[str, str], table: np.ndarray, rare: float) -> None:
    """Give every saved bag ``c_mean`` and ``c_frac`` on its own window grid."""
    for b in bags:
        grey, idx = bins(protocol_rgb(paths[b["name"]]))
        r = np.where(grey < BELT, table[idx], 0.0)
        b["c_mean"] = robust_z(window_means(r, b["grid"]), b["valid"])
        b["c_frac"] = robust_z(window_means((r > rare).astype(float), b["grid"]), b["valid"])


def term_aucs(bags: list[dict], term: str) -> dict[str, float]:
    """Window AUC of one term alone against the benign bags' windows."""
    neg = np.concatenate([b[term][b["valid"]] for b in bags if b["kind"] == "benign"])
    out = {}
    for name, want in (("knife_only_bags", "knife"), ("all_threat_bags", None)):
        pos = [
            b[term][(b["label"] == 1) & b["valid"]]
            for b in bags
            if b["kind"] == "threat" and (want is None or b.get("contents") == want)
        ]
        out[name] = round(float(roc_auc(np.concatenate(pos), neg)), 4)
    return out


def with_term(bags: list[dict], term: str, weight: float) -> list[dict]:
    """Copies of the bags whose GANomaly terms carry ``weight`` x the colour term (both
    views), so the shipped formula adds it to each view's evidence."""
    return [{**b, "m": b["m"] + weight * b[term], "mz": b["mz"] + weight * b[term]} for b in bags]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True, help="benign TRAIN list: the histogram's bags")
    p.add_argument("--normal", required=True)
    p.add_argument("--threat", required=True)
    p.add_argument("--terms", nargs="+", required=True, help="evidence_terms.py dumps")
    p.add_argument("--rare", type=float, default=6.0, help="rarity above which a pixel is rare")
    p.add_argument("--labels", default=str(REPO.parent / "shared/data/sixray/threat/labels_yolo"))
    p.add_argument("--masks", default=str(REPO.parent / "shared/data/sixray/threat/masks"))
    a = p.parse_args(argv)
    lines = {
        k: [ln.strip() for ln in open(v) if ln.strip()]
        for k, v in vars(a).items()
        if k in ("train", "normal", "threat")
    }
    table = rarity_table(lines["train"])
    paths = {Path(x).stem: x for x in lines["normal"] + lines["threat"]}
    out: dict[str, object] = {"rare": a.rare, "files": a.terms}
    rows: dict[str, list[dict]] = {}
    for f in a.terms:
        bags = et.load_terms(f)
        et.add_contents(bags, a.threat, a.labels, a.masks)
        add_terms(bags, paths, table, a.rare)
        out.setdefault(
            "window_auc_alone",
            {f: {t: term_aucs(bags, t) for t in ("c_mean", "c_frac", "m", "d", "h")}},
        )
        rows.setdefault("shipped", []).append(et.bag_figures(bags))
        for term in ("c_mean", "c_frac"):
            for w in WEIGHTS:
                rows.setdefault(f"{term}_{w}", []).append(et.bag_figures(with_term(bags, term, w)))
    for name, per_file in rows.items():
        mean = {
            k: round(float(np.mean([r[k] for r in per_file])), 4)
            for k in ("bag5", "bag_auc", "window_auc")
        }
        knives = [r["bag5_by_contents"].get("knife", [0, 0]) for r in per_file]
        out[name] = {"mean": mean, "knife_only": knives, "per_file": per_file}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
