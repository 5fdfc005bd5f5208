"""Ranking metrics: ROC AUC (ties count half), ROC curves, detection at a false-alarm rate.

Plain numpy, no scikit-learn. Scores: higher = more anomalous. Non-finite scores
are a bug upstream and are refused rather than silently ranked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata


def _check(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pos = np.asarray(pos, dtype=np.float64).ravel()
    neg = np.asarray(neg, dtype=np.float64).ravel()
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise ValueError("scores contain NaN or Inf")
    return pos, neg


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Area under the ROC curve = P(pos > neg) + 0.5 P(pos == neg) (Mann-Whitney U).

    Args:
        pos: Scores of anomalous items.
        neg: Scores of normal items.

    Returns:
        AUC in [0, 1], or NaN when either side is empty.
    """
    pos, neg = _check(pos, neg)
    n_pos, n_neg = len(pos), len(neg)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]), method="average")
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


@dataclass
class RocCurve:
    """ROC points for decreasing thresholds (ties form one diagonal step)."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


def roc_curve(pos: np.ndarray, neg: np.ndarray) -> RocCurve:
    """ROC curve: one point per distinct score, from (0, 0) to (1, 1).

    A threshold t alarms on scores ``>= t``.
    """
    pos, neg = _check(pos, neg)
    scores = np.concatenate([pos, neg])
    truth = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = np.argsort(-scores, kind="mergesort")
    scores, truth = scores[order], truth[order]
    last = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
    tp = np.cumsum(truth)[last]
    fp = (last + 1) - tp
    tpr = np.r_[0.0, tp / max(len(pos), 1)]
    fpr = np.r_[0.0, fp / max(len(neg), 1)]
    return RocCurve(fpr=fpr, tpr=tpr, thresholds=np.r_[np.inf, scores[last]])


@dataclass
class Detection:
    """Detection rate at a false-alarm budget."""

    far_target: float
    threshold: float
    far: float
    detection: float


def detection_at_far(pos: np.ndarray, neg: np.ndarray, far: float = 0.01) -> Detection:
    """Fraction of anomalous items scoring above the threshold that keeps false alarms <= ``far``.

    The threshold is the ``floor(far * n_neg) + 1``-th highest normal score; an
    item alarms when its score is strictly above it, so the achieved false-alarm
    rate never exceeds ``far`` even with tied scores.
    """
    pos, neg = _check(pos, neg)
    if len(pos) == 0 or len(neg) == 0:
        return Detection(far, float("nan"), float("nan"), float("nan"))
    k = int(np.floor(far * len(neg) + 1e-9))
    desc = np.sort(neg)[::-1]
    thr = float(desc[min(k, len(desc) - 1)])
    return Detection(
        far_target=far,
        threshold=thr,
        far=float((neg > thr).mean()),
        detection=float((pos > thr).mean()),
    )
