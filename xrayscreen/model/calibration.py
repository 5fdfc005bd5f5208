"""Score calibration: raw model scores -> "how unusual compared with held-out normal windows".

The calibrated unit is ``-log10`` of the fraction of held-out normal windows that
score at least as high. So a threshold of 2.0 means "1 % of normal windows reach
this", 3.0 means 0.1 %, the same meaning across models. Beyond the highest normal
score the scale continues linearly in raw units (slope taken from the top of the
tail) so stronger anomalies keep ranking above weaker ones instead of saturating.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

# Quantile levels stored in a bundle: dense in the upper tail where thresholds live.
QUANTILE_LEVELS = np.unique(
    np.concatenate(
        [
            np.linspace(0.0, 0.9, 91),
            np.linspace(0.9, 0.99, 91),
            np.linspace(0.99, 0.999, 46),
            np.array([0.9995, 0.9998, 0.9999, 1.0]),
        ]
    ).round(6)
)

BAG_RULES = ("empirical", "gumbel")
# Fewest held-out bag peaks a Gumbel fit is made from; below it the empirical rule.
MIN_FIT_BAGS = 5
_EULER_GAMMA = 0.5772156649015329


def gumbel_fit(peaks: np.ndarray) -> tuple[float, float]:
    """Method-of-moments Gumbel (maximum) fit ``(loc, scale)`` to bag peaks.

    A bag's peak is the maximum of many window scores, and maxima follow the Gumbel law.
    The fit uses every held-out peak, so it can aim at any bag rate, also one finer than
    one bag in the pool (10 % of 7 bags), and it gives a smooth read-out. On SIXray
    (issue 7, ``docs/BENCHMARKS.md``; 200 random draws of 18 calibration bags, achieved
    rate on the other 60) a 10 % target alarmed a median 7-10 % of normal bags (10th-90th
    percentile 0-20 %), as steady as the empirical rule's 10 % (10 %, 2-22 %) and far
    steadier than the 1 %-of-windows rule (20-23 %, 7-43 %).
    """
    p = np.asarray(peaks, dtype=np.float64)
    p = p[np.isfinite(p)]
    if p.size < 2:
        raise ValueError("a Gumbel fit needs at least 2 finite peaks")
    scale = max(float(np.std(p, ddof=1)) * math.sqrt(6.0) / math.pi, 1e-9)
    return float(np.mean(p)) - _EULER_GAMMA * scale, scale


@dataclass
class Calibration:
    """Normal-score quantiles plus bag-level maxima, as stored in a bundle.

    Attributes:
        levels: Quantile levels in [0, 1], increasing.
        values: Raw score at each level (non-decreasing).
        n_windows: Number of held-out normal windows the quantiles came from.
        default_threshold: Default threshold in calibrated units.
        target_window_far: The per-window false-alarm rate the default was chosen for.
        bag_maxima: Calibrated peak score of each held-out normal scan, for
            bag-level false-alarm rates at any threshold: the peak of its heat map when
            the scans were scored whole (what alarms are drawn from), else the peak
            window score (an upper bound).
        target_bag_far: The share of normal bags the default threshold was raised for
            (:meth:`set_bag_target`), or ``None`` (the window rule alone).
        bag_rule: ``"empirical"`` or ``"gumbel"``: how that target read the peaks.
    """

    levels: list[float]
    values: list[float]
    n_windows: int
    default_threshold: float = 2.0
    target_window_far: float = 0.01
    bag_maxima: list[float] = field(default_factory=list)
    target_bag_far: float | None = None
    bag_rule: str = "empirical"

    @classmethod
    def fit(
        cls,
        normal_scores: np.ndarray,
        target_window_far: float = 0.01,
        scan_scores: list[np.ndarray] | None = None,
        target_bag_far: float | None = None,
        bag_rule: str = "empirical",
    ) -> Calibration:
        """Calibrate from raw scores of held-out normal windows.

        Args:
            normal_scores: 1-D raw scores of held-out normal windows (never training windows).
            target_window_far: Per-window false-alarm rate for the default threshold.
            scan_scores: Optional per-scan arrays of raw window scores; their calibrated
                maxima become :attr:`bag_maxima`.
            target_bag_far: Optional share of held-out normal bags allowed to alarm at the
                default threshold. A per-scan-normalised score gives every bag a
                most-unusual region, so a window rate alone alarms on many normal bags;
                with this set the default is raised until at most this share of the
                held-out bags (rounded down) reaches it. Never lowered below the window
                rule's threshold.
            bag_rule: How the bag target reads the held-out peaks (:meth:`set_bag_target`).
        """
        s = np.asarray(normal_scores, dtype=np.float64).ravel()
        s = s[np.isfinite(s)]
        if s.size < 2:
            raise ValueError("calibration needs at least 2 finite normal scores")
        values = np.quantile(s, QUANTILE_LEVELS)
        cal = cls(
            levels=QUANTILE_LEVELS.tolist(),
            values=np.maximum.accumulate(values).tolist(),
            n_windows=int(s.size),
            default_threshold=float(-np.log10(target_window_far)),
            target_window_far=float(target_window_far),
        )
        if scan_scores:
            cal.bag_maxima = [
                float(cal.calibrate(np.asarray(x)).max()) for x in scan_scores if len(x)
            ]
        if target_bag_far is not None:
            cal.set_bag_target(target_bag_far, bag_rule)
        return cal

    def set_bag_target(self, target_bag_far: float, rule: str = "empirical") -> None:
        """Raise the default threshold so that about ``target_bag_far`` of normal bags
        alarm; never lower it below the window rule's.

        ``rule="empirical"``: at most that share of the held-out bags (rounded down) has
        a peak at or above the threshold -- with a handful of bags a coarse and
        conservative step (5 % of 18 bags is "none"). ``rule="gumbel"``: the
        ``1 - target_bag_far`` quantile of a Gumbel law fitted to the held-out peaks
        (:func:`gumbel_fit`), which uses every peak's value, not just the top one or
        two; the empirical rule stands in below :data:`MIN_FIT_BAGS` peaks.

        Raises:
            ValueError: a target outside [0, 1) or an unknown rule.
        """
        if not 0.0 <= target_bag_far < 1.0:
            raise ValueError(f"target_bag_far must be in [0, 1), got {target_bag_far}")
        if rule not in BAG_RULES:
            raise ValueError(f"unknown bag rule {rule!r}; known: {BAG_RULES}")
        self.target_bag_far = float(target_bag_far)
        self.bag_rule = rule
        # From the window rule each time, so a second call with another target is not
        # stuck above the first one's threshold.
        self.default_threshold = self.window_rule_threshold
        if not self.bag_maxima:
            return
        fitted = self.bag_fit()
        if fitted is not None and target_bag_far > 0.0:
            loc, scale = fitted
            t = loc - scale * math.log(-math.log(1.0 - target_bag_far))
            self.default_threshold = max(self.default_threshold, float(t))
            return
        desc = np.sort(np.asarray(self.bag_maxima))[::-1]
        k = int(np.floor(target_bag_far * len(desc) + 1e-9))  # bags that may alarm
        if k < len(desc):
            # Alarms are peak >= threshold: sit just above the (k+1)-th highest peak.
            self.default_threshold = max(self.default_threshold, float(desc[k]) + 1e-4)

    @property
    def window_rule_threshold(self) -> float:
        """The calibrated threshold that ``target_window_far`` of normal windows reach."""
        return float(-np.log10(self.target_window_far))

    def bag_fit(self) -> tuple[float, float] | None:
        """The Gumbel ``(loc, scale)`` of the held-out bag peaks under the ``gumbel``
        rule with at least :data:`MIN_FIT_BAGS` peaks, else ``None``."""
        if self.bag_rule != "gumbel" or len(self.bag_maxima) < MIN_FIT_BAGS:
            return None
        return gumbel_fit(np.asarray(self.bag_maxima))

    def default_rule(self) -> str:
        """One line saying how :attr:`default_threshold` was set (model cards, GUI)."""
        window = f"{self.target_window_far * 100:g} % of held-out normal windows reach it"
        if self.target_bag_far is None:
            return window
        n = len(self.bag_maxima)
        if n == 0:
            return window + " (no held-out bags for the bag target)"
        k = int(np.sum(np.asarray(self.bag_maxima) >= self.default_threshold))
        target = f"{self.target_bag_far * 100:g} %"
        if self.bag_fit() is not None:
            text = (
                f"≈ {target} of normal bags alarm, by a Gumbel law fitted to the heat-map "
                f"peaks of {n} held-out bags ({k} of {n} reached it)"
            )
        else:
            text = f"at most {target} of the {n} held-out bags reach it ({k} did)"
        if self.default_threshold <= self.window_rule_threshold + 1e-9:
            text += f"; the window rule ({window}) was higher and applies"
        return text

    # -- mapping -----------------------------------------------------------------------
    def _tables(self) -> tuple[np.ndarray, np.ndarray]:
        v = np.asarray(self.values, dtype=np.float64)
        q = np.asarray(self.levels, dtype=np.float64)
        # Exceedance at each stored value, floored at 1/n (the empirical resolution).
        floor = 1.0 / max(self.n_windows, 1)
        cal = -np.log10(np.clip(1.0 - q, floor, 1.0))
        return v, cal

    def calibrate(self, raw: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Map raw scores to calibrated units (numpy in -> numpy out, torch in -> torch out)."""
        v, cal = self._tables()
        top_slope = self._top_slope(v, cal)
        if isinstance(raw, torch.Tensor):
            vt = torch.as_tensor(v, dtype=torch.float32, device=raw.device)
            ct = torch.as_tensor(cal, dtype=torch.float32, device=raw.device)
            return _interp_torch(raw.float(), vt, ct, top_slope)
        r = np.asarray(raw, dtype=np.float64)
        out = np.interp(r, v, cal)
        above = r > v[-1]
        out[above] = cal[-1] + (r[above] - v[-1]) * top_slope
        return out.astype(np.float32)

    def _top_slope(self, v: np.ndarray, cal: np.ndarray) -> float:
        # Slope of the calibrated scale over the top 1 % of normal scores.
        i = int(np.searchsorted(self.levels, 0.99))
        dv = v[-1] - v[i]
        slope = (cal[-1] - cal[i]) / dv if dv > 1e-12 else 0.0
        # A flat or degenerate tail (tiny calibration sets) still needs a rising scale.
        return float(slope) if slope > 1e-12 else 1.0

    def raw_threshold(self, calibrated: float) -> float:
        """Inverse of :meth:`calibrate` for one threshold value."""
        v, cal = self._tables()
        if calibrated <= cal[-1]:
            # cal is non-decreasing; interp needs increasing x, so dedupe.
            cu, idx = np.unique(cal, return_index=True)
            return float(np.interp(calibrated, cu, v[idx]))
        return float(v[-1] + (calibrated - cal[-1]) / self._top_slope(v, cal))

    def window_far(self, calibrated_threshold: float) -> float:
        """Fraction of normal windows at or above a calibrated threshold."""
        return float(10.0 ** (-calibrated_threshold)) if calibrated_threshold > 0 else 1.0

    def bag_far(self, calibrated_threshold: float) -> float | None:
        """Fraction of held-out normal bags whose peak reaches the threshold (None if unknown)."""
        if not self.bag_maxima:
            return None
        return float(np.mean(np.asarray(self.bag_maxima) >= calibrated_threshold))

    def bag_far_interval(
        self, calibrated_threshold: float, level: float = 0.95
    ) -> tuple[float, float] | None:
        """Wilson score interval of the share of normal bags that alarm at the threshold,
        from the k of n held-out bags that did: how far a handful of held-out bags lets
        any estimate of it be trusted (0 of 7 still allows up to about 35 %). ``None``
        without held-out bags."""
        p = self.bag_far(calibrated_threshold)
        if p is None:
            return None
        n = len(self.bag_maxima)
        z = NormalDist().inv_cdf(0.5 + level / 2.0)
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n)) / denom
        return max(0.0, centre - half), min(1.0, centre + half)

    def bag_far_fitted(self, calibrated_threshold: float) -> float | None:
        """Share of normal bags expected to alarm at the threshold under the fitted
        Gumbel law of :meth:`bag_fit` (smooth, unlike :meth:`bag_far`'s steps of one
        held-out bag); ``None`` without a fit."""
        fitted = self.bag_fit()
        if fitted is None:
            return None
        loc, scale = fitted
        z = (calibrated_threshold - loc) / scale
        if z < -30.0:  # far below every peak (or identical peaks): every bag alarms
            return 1.0
        return float(-math.expm1(-math.exp(-z)))

    # -- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": "-log10(normal window exceedance)",
            "levels": [round(x, 6) for x in self.levels],
            "values": [float(x) for x in self.values],
            "n_windows": self.n_windows,
            "default_threshold": self.default_threshold,
            "target_window_far": self.target_window_far,
            "bag_maxima": [float(x) for x in self.bag_maxima],
            "target_bag_far": self.target_bag_far,
            "bag_rule": self.bag_rule,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        levels = [float(x) for x in data["levels"]]
        values = [float(x) for x in data["values"]]
        if len(levels) != len(values) or len(levels) < 2:
            raise ValueError("calibration levels/values must be equal-length lists (>= 2)")
        if any(b < a for a, b in zip(values, values[1:])):
            raise ValueError("calibration values must be non-decreasing")
        rule = str(data.get("bag_rule", "empirical"))
        if rule not in BAG_RULES:
            raise ValueError(f"unknown bag rule {rule!r}; known: {BAG_RULES}")
        return cls(
            levels=levels,
            values=values,
            n_windows=int(data["n_windows"]),
            default_threshold=float(data.get("default_threshold", 2.0)),
            target_window_far=float(data.get("target_window_far", 0.01)),
            bag_maxima=[float(x) for x in data.get("bag_maxima", [])],
            target_bag_far=(
                None if data.get("target_bag_far") is None else float(data["target_bag_far"])
            ),
            bag_rule=rule,
        )


def _interp_torch(
    x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor, top_slope: float
) -> torch.Tensor:
    """``np.interp`` on the device, plus the linear tail above ``xp[-1]``."""
    flat = x.reshape(-1)
    i = torch.searchsorted(xp, flat, right=True).clamp(1, xp.numel() - 1)
    x0, x1 = xp[i - 1], xp[i]
    y0, y1 = fp[i - 1], fp[i]
    w = torch.where(x1 > x0, (flat - x0) / (x1 - x0).clamp_min(1e-12), torch.ones_like(flat))
    y = y0 + w.clamp(0, 1) * (y1 - y0)
    y = torch.where(flat < xp[0], fp[0].expand_as(y), y)
    y = torch.where(flat > xp[-1], fp[-1] + (flat - xp[-1]) * top_slope, y)
    return y.reshape(x.shape)
