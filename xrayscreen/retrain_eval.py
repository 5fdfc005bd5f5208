"""Evaluate models on held-out normal bags and TIP-projected threats, for the registry.

Two figures per model, both at one calibrated threshold (the operator's current one):

* **bag false-alarm rate**: the fraction of held-out normal bags whose peak window
  score reaches the threshold (a bag with any alarm is a false alarm);
* **detection rate** (only when the imaging simulator's threat image projection,
  ``xrayscreen.imaging.tip.project_threat``, is available): the fraction of
  threat-projected bags where a window overlapping the projected threat reaches
  the threshold.

A comparison scores the new and the active model on exactly the same bags and the
same projected threats (the projections are generated once, seeded), so the two
columns of the comparison card differ only by the model.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xrayscreen.imaging.scan import Scan

ProgressFn = Callable[[str, int, int], None]


@dataclass
class ThreatBag:
    """A normal bag with a threat projected into it, and where the threat is.

    Attributes:
        scan: The projected scan.
        box: ``(x0, y0, x1, y1)`` of the threat in the scan's pixels (exclusive ends).
        kind: Threat kind ("gun", "knife", ...).
        source_sha256: sha256 of the bag it was projected into.
    """

    scan: Scan
    box: tuple[int, int, int, int]
    kind: str = ""
    source_sha256: str = ""


@dataclass
class ModelEvaluation:
    """What ``evaluation.json`` holds for one model.

    Attributes:
        model_id: The model.
        threshold: Calibrated threshold the rates are measured at.
        n_bags: Held-out normal bags scored.
        bag_far: Fraction of them with an alarm (peak >= threshold); None without bags.
        bag_peaks: Peak calibrated score of each bag (same order as the hold-out).
        holdout_fingerprint: sha256 over the held-out bags' hashes (which bags).
        n_threats: Threat-projected bags scored (0 when TIP is unavailable).
        detection_rate: Fraction of them detected; None when TIP is unavailable.
        threat_peaks: Peak calibrated score over windows touching each threat.
        tip_available: Whether threat projection was available.
        seconds: Wall time of the evaluation.
        tip_trained: Whether the model's score includes a head trained on threats
            projected by the same simulator (its detection rate here is then optimistic).
    """

    model_id: str
    threshold: float
    n_bags: int
    bag_far: float | None
    bag_peaks: list[float] = field(default_factory=list)
    holdout_fingerprint: str = ""
    n_threats: int = 0
    detection_rate: float | None = None
    threat_peaks: list[float] = field(default_factory=list)
    tip_available: bool = False
    seconds: float = 0.0
    tip_trained: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (the ``evaluation.json`` content)."""
        return asdict(self)

    def at_threshold(self, threshold: float) -> ModelEvaluation:
        """The same evaluation re-read at another threshold (peaks are threshold-free)."""
        far = float(np.mean(np.asarray(self.bag_peaks) >= threshold)) if self.bag_peaks else None
        det = (
            float(np.mean(np.asarray(self.threat_peaks) >= threshold))
            if self.threat_peaks
            else None
        )
        return ModelEvaluation(
            **{
                **self.to_dict(),
                "threshold": float(threshold),
                "bag_far": far,
                "detection_rate": det,
            }
        )


@dataclass
class Comparison:
    """New vs active model on the same bags and threats."""

    new: ModelEvaluation
    active: ModelEvaluation | None

    def to_dict(self) -> dict[str, Any]:
        return {"new": self.new.to_dict(), "active": self.active.to_dict() if self.active else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        act = data.get("active")
        return cls(ModelEvaluation(**data["new"]), ModelEvaluation(**act) if act else None)

    def difference(self, key: str) -> dict[str, Any] | None:
        """New minus active for ``key`` (``"far"``: the bag false-alarm rate; ``"det"``:
        the detection rate), each model at its own threshold, on the same items, with a
        paired 95 % bootstrap interval (:func:`~xrayscreen.evaluation.bootstrap.
        paired_rate_difference`). ``None`` when the two are not comparable item by item:
        no active model, other held-out bags, a cancelled run that scored fewer, or none.

        Raises:
            ValueError: for a key other than ``"far"`` / ``"det"``.
        """
        from xrayscreen.evaluation.bootstrap import paired_rate_difference

        if key not in ("far", "det"):
            raise ValueError(f"unknown comparison figure {key!r}")
        new, act = self.new, self.active
        if act is None:
            return None
        if key == "far":
            if new.holdout_fingerprint != act.holdout_fingerprint:
                return None
            x, y = new.bag_peaks, act.bag_peaks
        else:
            x, y = new.threat_peaks, act.threat_peaks
        if not x or len(x) != len(y):
            return None
        return paired_rate_difference(
            np.asarray(x) >= new.threshold, np.asarray(y) >= act.threshold
        )


# ---------------------------------------------------------------------------- TIP
def tip_available() -> bool:
    """True when the simulator's threat image projection can be imported."""
    return _project_fn() is not None


def _project_fn() -> Callable[..., Any] | None:
    try:
        from xrayscreen.imaging.tip import project_threat
    except ImportError:
        return None
    return project_threat


def make_threat_bags(scans: Sequence[Scan], *, per_bag: int = 1, seed: int = 0) -> list[ThreatBag]:
    """Project simulated threats into ``scans`` (seeded); [] when TIP is unavailable.

    Adapts to the projection function's result: anything with a ``scan`` and a
    ``box`` (``Box``/tuple ``x0, y0, x1, y1``) or a ``mask``.
    """
    fn = _project_fn()
    if fn is None:
        return []
    params = inspect.signature(fn).parameters
    out: list[ThreatBag] = []
    kinds = ("gun", "knife")
    for i, scan in enumerate(scans):
        for j in range(per_bag):
            s = int.from_bytes(
                hashlib.sha256(f"{seed}:{scan.sha256}:{j}".encode()).digest()[:4], "little"
            )
            kw: dict[str, Any] = {}
            if "rng" in params:
                kw["rng"] = np.random.default_rng(s)
            elif "seed" in params:
                kw["seed"] = s
            kind = kinds[(i + j) % len(kinds)]
            if "kind" in params:
                kw["kind"] = kind
            elif "threat" in params:
                kw["threat"] = kind
            res = fn(scan, **kw)
            tb = _as_threat_bag(res, kind, scan.sha256)
            if tb is not None:
                out.append(tb)
    return out


def _as_threat_bag(res: Any, kind: str, src: str) -> ThreatBag | None:
    scan = getattr(res, "scan", None)
    if scan is None and isinstance(res, tuple) and res and isinstance(res[0], Scan):
        scan = res[0]
    if not isinstance(scan, Scan):
        return None
    box = getattr(res, "box", None)
    if box is None and isinstance(res, tuple) and len(res) > 1:
        box = res[1]
    mask = getattr(res, "mask", None)
    if box is None and mask is not None:
        ys, xs = np.nonzero(np.asarray(mask))
        if ys.size == 0:
            return None
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    if box is None:
        return None
    if hasattr(box, "x0"):
        box = (box.x0, box.y0, box.x1, box.y1)
    x0, y0, x1, y1 = (int(v) for v in box)
    return ThreatBag(scan, (x0, y0, x1, y1), str(getattr(res, "kind", kind) or kind), src)


# ----------------------------------------------------------------------- scoring
def _scorer(bundle: Any, device: str) -> Callable[[Scan, int], Any]:
    """One engine per model (preparing it costs more than scoring a small bag)."""
    from xrayscreen.inference.engine import ScoringEngine

    engine = ScoringEngine(bundle, device)

    def score(scan: Scan, stride: int) -> Any:
        return engine.score_scan_sync(scan, stride=stride, residual=False, progress_every=None)

    return score


def threat_peak(result: Any, box: tuple[int, int, int, int]) -> float:
    """Highest calibrated score of the windows overlapping ``box`` (scan pixels)."""
    f = float(result.scale_factor)
    x0, y0, x1, y1 = (v * f for v in box)
    win = result.grid.window
    oy, ox = result.window_origins[:, 0], result.window_origins[:, 1]
    touch = (ox < x1) & (ox + win > x0) & (oy < y1) & (oy + win > y0) & ~result.background
    return float(result.window_calibrated[touch].max()) if touch.any() else 0.0


def holdout_fingerprint(hashes: Iterable[str]) -> str:
    """sha256 over the sorted bag hashes."""
    h = hashlib.sha256()
    for s in sorted(hashes):
        h.update(s.encode("ascii") + b"\n")
    return h.hexdigest()


def evaluate_bundle(
    bundle: Any,
    holdout: Sequence[Scan],
    threshold: float,
    threats: Sequence[ThreatBag] = (),
    *,
    stride: int = 32,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
) -> ModelEvaluation:
    """Score held-out normal bags (and threat bags) with ``bundle``; rates at ``threshold``.

    Args:
        bundle: A loaded :class:`~xrayscreen.model.bundle.ModelBundle`.
        holdout: Held-out normal scans (never in the model's training set).
        threshold: Calibrated threshold (the operator's current one).
        threats: Threat-projected bags from :func:`make_threat_bags`.
        stride: Window stride at working scale (coarser than the GUI's 16 to keep
            evaluation quick; the bag peak barely moves).
        device: Scoring device.
        progress: Called with (what, done, total).
        cancel: Polled between bags; when it returns True, evaluation stops early and
            the result covers the bags scored so far.
    """
    t0 = time.perf_counter()
    score = _scorer(bundle, device)
    peaks: list[float] = []
    total = len(holdout) + len(threats)
    for i, scan in enumerate(holdout):
        if cancel and cancel():
            break
        peaks.append(score(scan, stride).peak)
        if progress:
            progress("normal bags", i + 1, total)
    tpeaks: list[float] = []
    for j, tb in enumerate(threats):
        if cancel and cancel():
            break
        tpeaks.append(threat_peak(score(tb.scan, stride), tb.box))
        if progress:
            progress("projected threats", len(holdout) + j + 1, total)
    return ModelEvaluation(
        model_id=str(bundle.model_id),
        threshold=float(threshold),
        n_bags=len(peaks),
        bag_far=float(np.mean(np.asarray(peaks) >= threshold)) if peaks else None,
        bag_peaks=peaks,
        holdout_fingerprint=holdout_fingerprint(s.sha256 for s in holdout),
        n_threats=len(tpeaks),
        detection_rate=float(np.mean(np.asarray(tpeaks) >= threshold)) if tpeaks else None,
        threat_peaks=tpeaks,
        tip_available=tip_available(),
        seconds=time.perf_counter() - t0,
        tip_trained=tip_trained(bundle),
    )


def tip_trained(bundle: Any) -> bool:
    """Whether ``bundle``'s score adds a head trained on projected threats
    (:mod:`xrayscreen.inference.tip_evidence`), which this module's detection rate
    then flatters."""
    from xrayscreen.inference import tip_evidence

    return getattr(bundle, "tip_head", None) is not None and tip_evidence.enabled(bundle.score)


def compare_models(
    new_bundle: Any,
    active_bundle: Any | None,
    holdout_paths: Sequence[str | Path],
    threshold: float,
    *,
    tip_per_bag: int = 1,
    seed: int = 0,
    stride: int = 32,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Comparison:
    """Evaluate both models on the same held-out bags and the same projected threats."""
    from xrayscreen.training.data import read_scan

    scans = [read_scan(Path(p)) for p in holdout_paths]
    threats = make_threat_bags(scans, per_bag=tip_per_bag, seed=seed) if tip_per_bag else []
    new = evaluate_bundle(
        new_bundle, scans, threshold, threats, stride=stride, device=device,
        progress=progress, cancel=cancel,
    )  # fmt: skip
    active = None
    if active_bundle is not None:
        active = evaluate_bundle(
            active_bundle, scans, threshold, threats, stride=stride, device=device,
            progress=progress, cancel=cancel,
        )  # fmt: skip
    return Comparison(new, active)
