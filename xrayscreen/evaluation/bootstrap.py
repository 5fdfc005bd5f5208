"""Bootstrap intervals for the bag-level figures: how far a result on a few dozen bags
can be trusted.

A bag-level operating point rests on few bags twice over: the threshold that alarms on
at most 5 % of 60 benign bags is the 4th-highest benign peak (set by three or four
bags), and each threat bag is 100 / n_threat percentage points. So the figures are
resampled *by bag* (windows of one bag are not independent; bags are the unit the
goal counts): benign and threat bags are drawn with replacement, independently, the
threshold is re-derived from each resampled benign set by the same rule as the point
figure (the ``floor(target * n)``-th highest peak; alarm = peak above it), and the
interval is the percentile interval of the resampled figures. The threshold's own
uncertainty is therefore part of the interval, which is what a site deciding whether
"78 % vs a 90 % goal" is a real gap needs to see.

Percentile intervals from a few dozen bags are approximate (they can be too narrow
for extreme proportions; a share of 0 % or 100 % gives a zero-width interval); they
say how much the folder can tell, not a guarantee.

Rescans (:mod:`xrayscreen.evaluation.groups`): where several scans are one physical bag,
pass their group labels and the *groups* are resampled (a cluster bootstrap: each draw
brings all scans of its group, weighted by how often the group was drawn), since five
scans of one suitcase are one piece of evidence, not five. A threat bag's peak anywhere
and its peak on the threat are then drawn together (same groups).
"""

from __future__ import annotations

import numpy as np

#: Resamples per interval: enough for stable 2.5 / 97.5 percentiles (about +-1 point).
RESAMPLES = 2000
LEVEL = 0.95


def _interval(values: np.ndarray, level: float) -> list[float]:
    lo, hi = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return [float(lo), float(hi)]


def _check(resamples: int, level: float) -> None:
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    if not 0.0 < level < 1.0:
        raise ValueError("level must be in (0, 1)")


def _draw(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray | None:
    """``(resamples, n)`` indices drawn with replacement (``None`` for ``n = 0``)."""
    return rng.integers(0, n, (resamples, n)) if n else None


def _aucs(bs_desc: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """AUC = P(t > b) + 0.5 P(t == b) per resample (rows), from descending benign peaks."""
    asc = bs_desc[:, ::-1]
    lt = np.stack([np.searchsorted(asc[r], ts[r], "left") for r in range(len(asc))])
    le = np.stack([np.searchsorted(asc[r], ts[r], "right") for r in range(len(asc))])
    return (lt + 0.5 * (le - lt)).mean(axis=1) / asc.shape[1]


def _shares(bs_desc: np.ndarray, pos: np.ndarray, target: float) -> np.ndarray:
    """Share of ``pos`` above the target's threshold, per resample (the point rule)."""
    k = min(int(np.floor(target * bs_desc.shape[1] + 1e-9)), bs_desc.shape[1] - 1)
    return (pos > bs_desc[:, k][:, None]).mean(axis=1)


#: Group labels of the three bag arrays of a bag figure: benign peaks, threat peaks
#: anywhere, threat peaks on the threat (the last two in one label space).
BagGroups = tuple[np.ndarray, np.ndarray, np.ndarray]


def _compact(*labels: np.ndarray) -> tuple[int, list[np.ndarray]]:
    """Labels renumbered ``0 .. g - 1`` over all arrays together; ``g``."""
    flat = np.concatenate([np.asarray(x, dtype=np.int64).ravel() for x in labels])
    uniq, inv = np.unique(flat, return_inverse=True)
    cuts = np.cumsum([len(np.ravel(x)) for x in labels])[:-1]
    return len(uniq), np.split(inv, cuts)


def _group_weights(
    rng: np.random.Generator, g: int, labels: list[np.ndarray], resamples: int
) -> list[np.ndarray]:
    """Per array of ``labels``, ``(resamples, n)`` multiplicities: ``g`` groups drawn with
    replacement, each item weighted by how often its group was drawn."""
    if g == 0:
        return [np.zeros((resamples, 0)) for _ in labels]
    draws = rng.integers(0, g, (resamples, g))
    counts = np.stack([np.bincount(r, minlength=g) for r in draws]).astype(np.float64)
    return [counts[:, lab] for lab in labels]


def _w_thresholds(desc: np.ndarray, w_desc: np.ndarray, target: float) -> np.ndarray:
    """The point rule on weighted samples: per resample, the ``floor(target * W)``-th
    highest value (0-based) of ``desc`` repeated by its weights (``W`` their sum)."""
    total = w_desc.sum(axis=1)
    k = np.minimum(np.floor(target * total + 1e-9), total - 1)
    return desc[(np.cumsum(w_desc, axis=1) <= k[:, None]).sum(axis=1)]


def _w_shares(pos: np.ndarray, w: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """Weighted share of ``pos`` above each resample's threshold (NaN: no weight)."""
    tot = w.sum(axis=1)
    above = ((pos[None, :] > thr[:, None]) * w).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, above / np.where(tot > 0, tot, 1.0), np.nan)


def _w_aucs(t: np.ndarray, wt: np.ndarray, b: np.ndarray, wb: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUC per resample (ties half)."""
    c = (t[:, None] > b[None, :]) + 0.5 * (t[:, None] == b[None, :])
    den = wt.sum(axis=1) * wb.sum(axis=1)
    num = np.einsum("ri,ij,rj->r", wt, c, wb)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _nan_interval(values: np.ndarray, level: float) -> list[float] | None:
    v = values[np.isfinite(values)]
    return _interval(v, level) if len(v) else None


class _Clustered:
    """Multiplicity weights (``(resamples, n)`` each) of a bag figure's three arrays."""

    def __init__(self, wb: np.ndarray, wt: np.ndarray, wh: np.ndarray):
        self.wb, self.wt, self.wh = wb, wt, wh

    @classmethod
    def draw(cls, arrays, groups: BagGroups, resamples: int, rng: np.random.Generator):
        """Groups drawn with replacement; threat arrays share their groups' draws."""
        lb, lt, lh = (np.asarray(x, dtype=np.int64).ravel() for x in groups)
        if (len(lb), len(lt), len(lh)) != tuple(len(x) for x in arrays):
            raise ValueError("one group label per bag is needed")
        gb, (lb,) = _compact(lb)
        gt, (lt, lh) = _compact(lt, lh)
        (wb,) = _group_weights(rng, gb, [lb], resamples)
        return cls(wb, *_group_weights(rng, gt, [lt, lh], resamples))

    @classmethod
    def point(cls, arrays):
        """Every bag once: the point figures, through the same code."""
        return cls(*(np.ones((1, len(x))) for x in arrays))

    def figures(self, arrays, targets) -> tuple[np.ndarray | None, dict]:
        """Resampled AUC (or None) and, per target, the two resampled shares."""
        b, t, h = arrays
        order = np.argsort(-b, kind="stable")
        desc, wdesc = b[order], self.wb[:, order]
        auc = _w_aucs(t, self.wt, b, self.wb) if len(t) else None
        ops = {}
        for target in targets:
            thr = _w_thresholds(desc, wdesc, target)
            ops[target] = (
                _w_shares(h, self.wh, thr) if len(h) else None,
                _w_shares(t, self.wt, thr) if len(t) else None,
            )
        return auc, ops


def bag_intervals(
    benign: np.ndarray,
    threat_any: np.ndarray,
    threat_hit: np.ndarray,
    targets: tuple[float, ...],
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
    groups: BagGroups | None = None,
) -> dict:
    """Percentile bootstrap intervals of the bag AUC and of the threat shares alarmed at
    each benign-alarm target.

    Args:
        benign: Peak score of each benign bag.
        threat_any: Peak score (anywhere) of each threat bag.
        threat_hit: Peak score inside the threat of each localisable threat bag.
        targets: Benign-alarm targets (share of benign bags), as in the point figures.
        resamples: Bootstrap resamples.
        level: Coverage of each interval.
        seed: Seed of the resampling (the same inputs always give the same intervals).
        groups: Group labels (:data:`BagGroups`) to resample physical bags instead of
            scans (module doc); ``None``: every scan is its own bag, the three arrays
            drawn independently.

    Returns:
        ``{"auc_peak": [lo, hi] | None, "operating": {target: {"threat_alarm_on_threat":
        [lo, hi] | None, "threat_any_alarm": [lo, hi] | None}}, "resamples", "level"}``;
        an interval is ``None`` where its inputs are empty.

    Raises:
        ValueError: for ``resamples < 1``, a level outside (0, 1), or group labels that
            do not match the arrays.
    """
    _check(resamples, level)
    b = np.asarray(benign, dtype=np.float64).ravel()
    t = np.asarray(threat_any, dtype=np.float64).ravel()
    h = np.asarray(threat_hit, dtype=np.float64).ravel()
    out: dict = {"auc_peak": None, "operating": {}, "resamples": resamples, "level": level}
    if len(b) == 0:
        return out
    rng = np.random.default_rng(seed)
    if groups is not None:
        cl = _Clustered.draw((b, t, h), groups, resamples, rng)
        auc, ops = cl.figures((b, t, h), targets)
        out["auc_peak"] = None if auc is None else _nan_interval(auc, level)
        for target, (on, anyw) in ops.items():
            out["operating"][target] = {
                "threat_alarm_on_threat": None if on is None else _nan_interval(on, level),
                "threat_any_alarm": None if anyw is None else _nan_interval(anyw, level),
            }
        return out
    ib, it, ih = (_draw(rng, len(x), resamples) for x in (b, t, h))
    bs = np.sort(b[ib], axis=1)[:, ::-1]
    ts = t[it] if it is not None else None
    hs = h[ih] if ih is not None else None
    if ts is not None:
        out["auc_peak"] = _interval(_aucs(bs, ts), level)
    for target in targets:
        out["operating"][target] = {
            "threat_alarm_on_threat": _interval(_shares(bs, hs, target), level)
            if hs is not None
            else None,
            "threat_any_alarm": _interval(_shares(bs, ts, target), level)
            if ts is not None
            else None,
        }
    return out


def paired_difference(
    a: tuple[np.ndarray, np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray, np.ndarray],
    target: float,
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
    groups: BagGroups | None = None,
) -> dict:
    """Paired bootstrap of the difference between two scores read on the *same* bags
    (score ``a`` minus score ``b``): the same resampled bags for both, so the bags both
    find easy or hard cancel out (much narrower than comparing two separate intervals).

    Args:
        a, b: ``(benign peaks, threat peaks anywhere, threat peaks on the threat)`` of the
            two scores, each array in the same bag order for ``a`` and ``b``.
        target: Benign-alarm target of the operating point compared.
        resamples, level, seed, groups: As :func:`bag_intervals` (the same groups for
            both scores).

    Returns:
        ``{"auc_peak": {"diff", "ci"}, "on_threat": {"diff", "ci"}, "target"}``; an entry
        is ``None`` where its inputs are empty.

    Raises:
        ValueError: for bad settings or arrays of different lengths.
    """
    _check(resamples, level)
    a = tuple(np.asarray(x, dtype=np.float64).ravel() for x in a)
    b = tuple(np.asarray(x, dtype=np.float64).ravel() for x in b)
    if any(len(x) != len(y) for x, y in zip(a, b)):
        raise ValueError("paired scores must cover the same bags")
    out: dict = {"target": target, "auc_peak": None, "on_threat": None}
    if len(a[0]) == 0:
        return out
    rng = np.random.default_rng(seed)
    if groups is not None:
        cl, ones = _Clustered.draw(a, groups, resamples, rng), _Clustered.point(a)
        (auc_a, ops_a), (auc_b, ops_b) = cl.figures(a, (target,)), cl.figures(b, (target,))
        (pa, qa), (pb, qb) = ones.figures(a, (target,)), ones.figures(b, (target,))
        if auc_a is not None:
            out["auc_peak"] = {
                "diff": float(pa[0] - pb[0]),
                "ci": _nan_interval(auc_a - auc_b, level),
            }
        if ops_a[target][0] is not None:
            out["on_threat"] = {
                "diff": float(qa[target][0][0] - qb[target][0][0]),
                "ci": _nan_interval(ops_a[target][0] - ops_b[target][0], level),
            }
        return out
    idx = [_draw(rng, len(x), resamples) for x in a]

    def point_and_draws(fn, i_pos):
        draws, points = [], []
        for s in (a, b):
            desc = np.sort(s[0])[::-1][None, :]
            points.append(fn(desc, s[i_pos][None, :])[0])
            draws.append(fn(np.sort(s[0][idx[0]], axis=1)[:, ::-1], s[i_pos][idx[i_pos]]))
        return {
            "diff": float(points[0] - points[1]),
            "ci": _interval(draws[0] - draws[1], level),
        }

    if len(a[1]):
        out["auc_peak"] = point_and_draws(_aucs, 1)
    if len(a[2]):
        out["on_threat"] = point_and_draws(lambda d, p: _shares(d, p, target), 2)
    return out


def paired_rate_difference(
    a: np.ndarray,
    b: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> dict | None:
    """Difference of two alarm rates on the *same* items at fixed thresholds (share of
    ``a`` minus share of ``b``), with a paired bootstrap interval (the items resampled
    together). For two models scored on the same held-out bags, or the same projected
    threats: an interval that holds 0 means these items cannot tell them apart.

    Args:
        a, b: ``(n,)`` booleans (alarmed or not), item ``i`` the same in both.
        resamples, level, seed: As :func:`bag_intervals`.

    Returns:
        ``{"diff", "ci": [lo, hi], "n"}``, or ``None`` for no items.

    Raises:
        ValueError: for bad settings or arrays of different lengths.
    """
    _check(resamples, level)
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if len(a) != len(b):
        raise ValueError("paired rates must cover the same items")
    if len(a) == 0:
        return None
    d = a - b
    idx = np.random.default_rng(seed).integers(0, len(d), (resamples, len(d)))
    return {"diff": float(d.mean()), "ci": _interval(d[idx].mean(axis=1), level), "n": len(d)}


def _pair_counts(pos: list[np.ndarray], neg: list[np.ndarray]) -> np.ndarray:
    """``A[g, h]`` = Mann-Whitney count of bag ``g``'s positives over bag ``h``'s
    negatives (pairs with pos > neg, ties counted half)."""
    flat = np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in pos])
    owner = np.concatenate([np.full(len(p), g) for g, p in enumerate(pos)])
    a = np.zeros((len(pos), len(neg)))
    for h, n in enumerate(neg):
        srt = np.sort(np.asarray(n, dtype=np.float64).ravel())
        lt = np.searchsorted(srt, flat, "left")
        le = np.searchsorted(srt, flat, "right")
        a[:, h] = np.bincount(owner, lt + 0.5 * (le - lt), minlength=len(pos))
    return a


def clustered_auc_interval(
    pos: list[np.ndarray],
    neg: list[np.ndarray],
    *,
    same_bags: bool,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
    pos_groups: np.ndarray | None = None,
    neg_groups: np.ndarray | None = None,
) -> list[float] | None:
    """Percentile interval of a window AUC with the *bags* resampled, not the windows:
    the windows of one bag share its scanner, clutter and per-scan normalisation, so
    resampling windows would pretend to tens of thousands of independent samples where
    there are a few dozen bags.

    The Mann-Whitney count between every pair of bags is taken once; a resample then only
    re-weights those pairs by how often each bag was drawn, so the interval costs one
    pass over the windows however many resamples are drawn.

    Args:
        pos: Anomalous window scores, one array per threat bag.
        neg: Normal window scores, one array per bag.
        same_bags: True when ``neg[i]`` comes from the same bag as ``pos[i]`` (the
            box-free windows of the threat bags, pool (b)): those bags are drawn together.
            False for normal windows of other bags (pool (a)): drawn independently.
        resamples, level, seed: As :func:`bag_intervals`.
        pos_groups, neg_groups: Group labels of the bags (:mod:`~xrayscreen.evaluation.
            groups`): groups are drawn, each bag weighted by its group's draws; with
            ``same_bags`` only ``pos_groups`` is read. ``None``: each bag its own group.

    Returns:
        ``[lo, hi]``, or ``None`` without positives or negatives.

    Raises:
        ValueError: for bad settings, ``same_bags`` with lists of different lengths, or
            group labels that do not match the lists.
    """
    _check(resamples, level)
    if same_bags and len(pos) != len(neg):
        raise ValueError("same_bags needs one negative array per positive array")
    if same_bags:
        neg_groups = pos_groups
    for lab, lst in ((pos_groups, pos), (neg_groups, neg)):
        if lab is not None and len(np.ravel(lab)) != len(lst):
            raise ValueError("one group label per bag is needed")
    n_p = np.array([len(p) for p in pos], dtype=np.float64)
    n_n = np.array([len(n) for n in neg], dtype=np.float64)
    if n_p.sum() == 0 or n_n.sum() == 0:
        return None
    a = _pair_counts(pos, neg)
    rng = np.random.default_rng(seed)

    def draws(labels: np.ndarray | None, n: int) -> np.ndarray:
        """(resamples, n): how often each bag's group was drawn (without labels a bag is
        its own group: exactly the per-bag draws of earlier versions)."""
        g, (lab,) = _compact(np.arange(n) if labels is None else np.asarray(labels))
        return _group_weights(rng, g, [lab], resamples)[0]

    wp = draws(pos_groups, len(pos))
    wn = wp if same_bags else draws(neg_groups, len(neg))
    num = np.einsum("rg,gh,rh->r", wp, a, wn)
    den = (wp @ n_p) * (wn @ n_n)
    ok = den > 0
    return _interval(num[ok] / den[ok], level) if ok.any() else None
