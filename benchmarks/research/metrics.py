"""Score kinds and protocol metrics for the issue-7 ablation, from raw per-window arrays.

Every normalisation is fitted on the ``calib`` pool only (windows of 20 benign bags that
are neither trained on nor evaluated), never on evaluation windows or threats.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata, spearmanr

N_DENSITY_BINS = 10


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank statistic (ties count one half)."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    r = rankdata(np.concatenate([pos, neg]))
    return float((r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def robust_z(s: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(s - median(ref)) / (IQR(ref) / 1.349): a z-score that outliers cannot drag."""
    q1, med, q3 = np.percentile(ref, [25, 50, 75])
    return (s - med) / max((q3 - q1) / 1.349, 1e-9)


def density_conditional(s: np.ndarray, dens: np.ndarray, calib: np.ndarray) -> np.ndarray:
    """Robust z of ``s`` among calib windows of the same max-density decile.

    "How unusual is this score for a window this dense", from normal windows only.
    """
    edges = np.quantile(dens[calib], np.linspace(0, 1, N_DENSITY_BINS + 1)[1:-1])
    b = np.searchsorted(edges, dens, side="right")
    out = np.empty_like(s, dtype=np.float64)
    for k in range(N_DENSITY_BINS):
        m = b == k
        ref = s[calib & m]
        if len(ref) < 20:
            ref = s[calib]
        out[m] = robust_z(s[m], ref)
    return out


def score_kinds(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All score kinds of one run (GANomaly-only, density-conditional, combined, floors)."""
    calib = raw["pool"] == "calib"
    s: dict[str, np.ndarray] = {}
    for k in ("latent", "rec_mean", "rec_max", "rec_pool", "dfeat", "under_mean", "under_pool"):
        if k in raw:
            s[k] = raw[k].astype(np.float64)
    nb = raw["edge_hist"].shape[1] // 2
    sums, cnts = raw["edge_hist"][:, :nb], raw["edge_hist"][:, nb:]
    lut = sums[calib].sum(0) / np.maximum(cnts[calib].sum(0), 1)
    # Mean residual in excess of what normal windows show at the same edge strength.
    s["edge_excess"] = (sums - lut[None] * cnts).sum(1) / np.maximum(cnts.sum(1), 1)
    # Skip-GANomaly's 0.9 * reconstruction + 0.1 * latent, on calib-standardised scores.
    s["skip_0.9rec_0.1lat"] = 0.9 * robust_z(s["rec_mean"], s["rec_mean"][calib]) + 0.1 * (
        robust_z(s["latent"], s["latent"][calib])
    )
    s["lat_plus_rec"] = robust_z(s["rec_mean"], s["rec_mean"][calib]) + robust_z(
        s["latent"], s["latent"][calib]
    )
    dens = raw["maxdens"].astype(np.float64)
    for k in (
        "latent",
        "rec_mean",
        "rec_pool",
        "dfeat",
        "edge_excess",
        "lat_plus_rec",
        "under_mean",
        "under_pool",
    ):
        if k in s:
            s[f"cond_{k}"] = density_conditional(s[k], dens, calib)
    zd = robust_z(dens, dens[calib])
    for k in ("rec_pool", "edge_excess", "dfeat", "lat_plus_rec", "under_mean", "under_pool"):
        if f"cond_{k}" in s:
            s[f"combo_density+cond_{k}"] = zd + s[f"cond_{k}"]
    # Unconditional sum: density evidence + GANomaly residual evidence (equal weights).
    s["combo_density+rec_mean"] = zd + robust_z(s["rec_mean"], s["rec_mean"][calib])
    s["floor_maxdens"] = dens
    s["floor_meandark"] = raw["meandark"].astype(np.float64)
    s["floor_edge_sobel"] = raw["edgemean"].astype(np.float64)
    return s


def _rate_at_far(pos: np.ndarray, neg: np.ndarray, far: float) -> float:
    t = np.quantile(neg, 1 - far)
    return float((pos > t).mean()) if len(pos) else float("nan")


def _bag_level(score: np.ndarray, raw: dict[str, np.ndarray]) -> dict[str, float]:
    bags = raw["bag"]
    pool = raw["pool"]
    peaks_b = [score[(bags == n)].max() for n in np.unique(bags[pool == "a"])]
    peaks_t = [score[(bags == n)].max() for n in np.unique(bags[pool == "threat"])]
    peaks_b = np.sort(np.asarray(peaks_b))
    allowed = math.floor(0.05 * len(peaks_b))  # benign bags that may alarm
    t = peaks_b[len(peaks_b) - allowed - 1]
    return {
        "bag_auc": round(auc(np.asarray(peaks_t), peaks_b), 4),
        "bag_tpr_at_5pct": round(float((np.asarray(peaks_t) > t).mean()), 4),
    }


def evaluate(score: np.ndarray, raw: dict[str, np.ndarray]) -> dict[str, float]:
    """Window AUC per pool and class, detection at 1 % window FAR, bag level."""
    pool, lab, cls = raw["pool"], raw["label"], raw["cls"]
    pos = (pool == "threat") & (lab == 1)
    neg = {"a": pool == "a", "b": (pool == "threat") & (lab == 0)}
    out: dict[str, float] = {}
    for p, nm in neg.items():
        out[f"all_{p}"] = round(auc(score[pos], score[nm]), 4)
        out[f"gun_{p}"] = round(auc(score[pos & (cls == 0)], score[nm]), 4)
        out[f"knife_{p}"] = round(auc(score[pos & (cls == 1)], score[nm]), 4)
        out[f"det@1%far_{p}"] = round(_rate_at_far(score[pos], score[nm], 0.01), 4)
    out.update(_bag_level(score, raw))
    a = pool == "a"
    out["spearman_vs_maxdens_a"] = round(float(spearmanr(score[a], raw["maxdens"][a])[0]), 3)
    return out


def all_metrics(raw: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Metrics of every score kind, plus window counts."""
    kinds = score_kinds(raw)
    res = {k: evaluate(v, raw) for k, v in kinds.items()}
    pool, lab, cls = raw["pool"], raw["label"], raw["cls"]
    res["_counts"] = {
        "pos": int(((pool == "threat") & (lab == 1)).sum()),
        "pos_gun": int(((pool == "threat") & (lab == 1) & (cls == 0)).sum()),
        "pos_knife": int(((pool == "threat") & (lab == 1) & (cls == 1)).sum()),
        "neg_a": int((pool == "a").sum()),
        "neg_b": int(((pool == "threat") & (lab == 0)).sum()),
        "calib": int((pool == "calib").sum()),
    }
    return res
