"""Calibration after training: score held-out NORMAL windows in eval mode and store
their quantiles, a default threshold for a target per-window false-alarm rate, and
each held-out scan's peak (for bag-level false-alarm rates at any threshold).

Scores come from the scoring engine when it is available (so calibration and
screening compute the score the same way); otherwise from the model's latent
score directly, in eval mode. A score with spatial context
(:mod:`xrayscreen.inference.context`) depends on a window's neighbours, which cached
windows do not keep: it is calibrated on whole held-out scans scored by the engine
(:func:`calibrate_on_scans`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from xrayscreen.errors import ConfigError
from xrayscreen.imaging.scan import Scan
from xrayscreen.inference import scan_norm, tip_evidence, zoom
from xrayscreen.model.bundle import ModelBundle
from xrayscreen.model.calibration import Calibration
from xrayscreen.model.feature_bank import FeatureBank, encoder_body, encoder_map, pool
from xrayscreen.model.score import discriminator_feature_residual, latent_score

from .data import WindowSet, decode, render_gamma, render_jitter


def _engine_scorer(bundle: ModelBundle, device: torch.device):
    """The scoring engine's per-window scorer, or ``None`` when it is not available."""
    try:
        from xrayscreen.inference.engine import ScoringEngine
    except ImportError:
        return None
    engine = ScoringEngine(bundle, device)
    return lambda x: engine.score_windows(x, residual=False).latent


@torch.no_grad()
def score_windows(
    bundle: ModelBundle, windows: WindowSet, device: torch.device, batch: int = 256
) -> np.ndarray:
    """Raw anomaly scores (the bundle's score spec) of cached windows, model in eval mode.

    Uses :class:`~xrayscreen.inference.engine.ScoringEngine` with its defaults (batch-norm
    folded, bf16 autocast where the hardware has it), i.e. exactly the numbers screening
    will produce, so the calibrated threshold means what it says.
    """
    n = len(windows)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    engine = _engine_scorer(bundle, device)
    gen = bundle.generator
    was = gen.training
    gen.eval()
    out: list[np.ndarray] = []
    try:
        for i in range(0, n, batch):
            x = decode(windows.data[i : i + batch]).to(device)
            if engine is not None:
                s = engine(x)
            else:
                if bundle.score.kind != "latent":
                    raise ConfigError(
                        f"score kind {bundle.score.kind!r} needs the scoring engine "
                        "(xrayscreen.inference.engine), which is not available"
                    )
                _, z, z_hat = gen(x)
                s = latent_score(z, z_hat, bundle.score.norm)  # type: ignore[arg-type]
            out.append(torch.as_tensor(s).float().cpu().numpy().ravel())
    finally:
        gen.train(was)
    return np.concatenate(out)


@torch.no_grad()
def fit_feature_bank(
    bundle: ModelBundle,
    windows: WindowSet,
    device: torch.device,
    *,
    level: int,
    k: int,
    max_size: int,
    seed: int = 0,
    batch: int = 256,
    gammas: Sequence[float] = (),
    hues: Sequence[float] = (),
) -> FeatureBank:
    """Embed (a seeded random subset of) NORMAL training windows with the trained G_E
    for the ``feature_knn`` score: the memory the score compares every window with.

    With ``gammas``, the subset is drawn from the windows and their copies rendered at
    each gamma (:func:`~xrayscreen.training.data.render_gamma`; item ``i`` of the
    ``n * (1 + len(gammas))`` candidates is window ``i % n``, copy ``i // n``), made only
    for the drawn rows: the memory holds normal content as a denser- or thinner-rendering
    scanner would show it, at the same size cap. ``hues`` add copies whose colours are
    turned by each angle (:func:`~xrayscreen.training.data.render_jitter`: another
    palette), numbered after the gamma copies.

    Raises:
        ConfigError: with fewer windows than ``k``.
    """
    n = len(windows)
    renderings = [(float(g), 0.0) for g in gammas] + [(1.0, float(h)) for h in hues]
    total = n * (1 + len(renderings))
    idx = np.arange(total)
    if total > max_size:
        idx = np.sort(np.random.default_rng(seed).choice(total, max_size, replace=False))
    rep = bundle.input.representation
    gen = bundle.generator
    was = gen.training
    gen.eval()
    emb: list[torch.Tensor] = []
    try:
        for i in range(0, len(idx), batch):
            sel = torch.from_numpy(idx[i : i + batch])
            x = decode(windows.data[sel % n])
            copy = sel // n
            for c in torch.unique(copy).tolist():
                if c:
                    m = copy == c
                    g, h = renderings[c - 1]
                    if h:
                        k = int(m.sum())
                        x[m] = render_jitter(x[m], rep, torch.full((k,), g), torch.full((k,), h))
                    else:
                        x[m] = render_gamma(x[m], rep, g)
            x = x.to(device)
            fmap = encoder_map(encoder_body(gen), x, level)
            emb.append(pool(fmap).cpu())
    finally:
        gen.train(was)
    if not emb:
        raise ConfigError("a feature bank needs normal training windows; there are none")
    return FeatureBank.fit(torch.cat(emb), level=level, k=k, max_size=max_size, seed=seed)


def _spread(values: np.ndarray) -> float:
    """Robust spread IQR / 1.349 (the standard deviation for normal data), floored."""
    q1, q3 = np.percentile(np.asarray(values, dtype=np.float64), [25, 75])
    return float(max((q3 - q1) / 1.349, 1e-9))


def fit_component_scales(
    bundle: ModelBundle, windows: WindowSet, device: torch.device
) -> dict[str, float]:
    """Spread (IQR / 1.349) of the memory distance and of the residual on held-out
    NORMAL windows: the units in which a memory-plus kind
    (``xrayscreen.inference.score_kinds.MEMORY_PLUS``) adds them."""
    from xrayscreen.inference.score_kinds import MEMORY_PLUS
    from xrayscreen.model.bundle import ScoreSpec

    own = bundle.score
    second = MEMORY_PLUS[own.kind]
    # Each part alone: without the discriminator-feature part a spec may also carry.
    params = {k: v for k, v in own.params.items() if k != "dfeat_weight"}
    out: dict[str, float] = {}
    try:
        for kind, key in (("feature_knn", "knn_scale"), (second, "res_scale")):
            bundle.score = ScoreSpec(kind=kind, norm=own.norm, params=dict(params))
            s = score_windows(bundle, windows, device).astype(np.float64)
            out[key] = _spread(s)
    finally:
        bundle.score = own
    return out


@torch.no_grad()
def fit_dfeat_scale(
    bundle: ModelBundle, windows: WindowSet, device: torch.device, batch: int = 256
) -> float:
    """Spread (IQR / 1.349) of GANomaly's discriminator-feature residual on held-out
    NORMAL windows: the unit in which a score's ``dfeat_weight`` part is added
    (:func:`xrayscreen.inference.score_kinds.compute`).

    Raises:
        ConfigError: without a discriminator or held-out windows.
    """
    if bundle.discriminator is None:
        raise ConfigError("the discriminator-feature score needs the trained discriminator")
    if len(windows) == 0:
        raise ConfigError("the discriminator-feature scale needs held-out normal windows")
    gen, disc = bundle.generator, bundle.discriminator
    modes = gen.training, disc.training
    gen.eval()
    disc.eval()
    vals: list[np.ndarray] = []
    try:
        for i in range(0, len(windows), batch):
            x = decode(windows.data[i : i + batch]).to(device)
            d = discriminator_feature_residual(disc.features, x, gen(x).x_hat)
            vals.append(d.cpu().numpy().astype(np.float64))
    finally:
        gen.train(modes[0])
        disc.train(modes[1])
    return _spread(np.concatenate(vals))


def calibrate_bundle(
    bundle: ModelBundle,
    windows: WindowSet,
    target_window_far: float,
    device: torch.device,
    target_bag_far: float | None = None,
    bag_rule: str = "empirical",
) -> tuple[Calibration, np.ndarray]:
    """Fit :class:`Calibration` on held-out normal windows; returns it and the raw scores.

    Raises:
        ConfigError: with fewer than 2 held-out windows.
    """
    if len(windows) < 2:
        raise ConfigError(
            "calibration needs held-out normal windows: use more scans or a larger val_fraction"
        )
    scores = score_windows(bundle, windows, device)
    idxs = [idx.numpy() for idx in windows.per_scan() if len(idx)]
    if scan_norm.method_of(bundle.score) != "none":
        # Per-scan normalisation (ScoreSpec.params["scan_norm"]): the fallback statistics
        # for tiny scans come from these held-out scans, then each scan's windows are
        # normalised among themselves, exactly as the engine does on a whole scan.
        bundle.score.params = {
            **bundle.score.params,
            **scan_norm.reference([scores[i] for i in idxs]),
        }
        normed = np.empty_like(scores)
        for i in idxs:
            normed[i] = scan_norm.normalise(bundle.score, torch.from_numpy(scores[i])).numpy()
        scores = normed
    cal = Calibration.fit(
        scores,
        target_window_far,
        [scores[i] for i in idxs],
        target_bag_far=target_bag_far,
        bag_rule=bag_rule,
    )
    return cal, scores


def _with_absolute_reference(bundle: ModelBundle, results: list) -> None:
    """Fit the head's absolute reading (:func:`tip_evidence.absolute_reference`) on the
    held-out scans' raw head logits and store it in the bundle's score."""
    fgs = [~r.background for r in results]
    views = [[torch.from_numpy(r.raw_head[fg]) for r, fg in zip(results, fgs)]]
    if zoom.enabled(bundle.score):
        views.append([torch.from_numpy(r.raw_head_zoom[fg]) for r, fg in zip(results, fgs)])
    else:  # no zoomed view: its column is never read; keep the reference's shape
        views.append(views[0])
    bundle.score.params = {**bundle.score.params, **tip_evidence.absolute_reference(views)}


def _with_zoom_reference(bundle: ModelBundle, results: list) -> None:
    """Fit the zoomed-out view's scan-normalisation fallback statistics on the held-out
    scans' raw zoomed scores and store them in the bundle's score."""
    fgs = [~r.background for r in results]
    bundle.score.params = {
        **bundle.score.params,
        **{
            f"{k}_zoom": v
            for k, v in scan_norm.reference(
                [r.raw_zoom_scores[fg].astype(np.float64) for r, fg in zip(results, fgs)]
            ).items()
        },
    }


def _rescore(bundle: ModelBundle, results: list) -> None:
    """Recompute every scan's window scores from its raw terms with the bundle's score as
    it now stands (in place): after the zoomed view's fallback statistics (only scans too
    small for their own change) or the head's absolute reference were fitted."""
    for r in results:
        fg = ~r.background
        s = zoom.evidence(
            bundle.score,
            torch.from_numpy(r.raw_scores),
            None if r.raw_zoom_scores is None else torch.from_numpy(r.raw_zoom_scores),
            r.grid,
            torch.from_numpy(fg),
            *(
                None if d is None else torch.from_numpy(d)
                for d in (r.raw_density, r.raw_density_zoom, r.raw_head, r.raw_head_zoom)
            ),
        )
        r.window_scores = s.numpy().astype(np.float32)


def calibrate_on_scans(
    bundle: ModelBundle,
    scans: Iterable[Scan],
    target_window_far: float,
    device: torch.device,
    stride: int = 16,
    target_bag_far: float | None = None,
    bag_rule: str = "empirical",
) -> Calibration:
    """Fit :class:`Calibration` on whole held-out NORMAL scans scored by the engine.

    For scores that need a window's neighbours (spatial context): every non-background
    window of each scan, at the product's default scoring stride, after the bundle's
    per-scan normalisation and context -- exactly the numbers the engine calibrates
    when screening. The bag maxima are the peaks of the scans' heat maps, which is what
    alarms are drawn from; ``target_bag_far`` then sets the default threshold on them
    (read by ``bag_rule``, :meth:`Calibration.set_bag_target`).
    The bundle's scan-normalisation reference must already be set.

    Raises:
        ConfigError: with fewer than 2 scored windows.
    """
    from xrayscreen.inference.engine import ScoringEngine
    from xrayscreen.inference.windows import fold_mean

    own, spec = bundle.calibration, bundle.score
    bundle.calibration = None  # the engine then returns uncalibrated scores
    # The head's absolute reading is fitted on these scans: scored without it first.
    absolute = tip_evidence.enabled(spec) and tip_evidence.abs_share_of(spec) > 0
    if absolute:
        bundle.score = copy.copy(spec)
        bundle.score.params = {**spec.params, tip_evidence.ABS_SHARE_KEY: 0.0}
    results = []
    try:
        engine = ScoringEngine(bundle, device)
        for scan in scans:
            r = engine.score_scan_sync(scan, stride=stride, residual=False)
            if (~r.background).any():
                results.append(r)
    finally:
        bundle.calibration, bundle.score = own, spec
    if sum(int((~r.background).sum()) for r in results) < 2:
        raise ConfigError("calibration needs held-out normal scans with scored windows")
    if absolute:
        _with_absolute_reference(bundle, results)
    if zoom.enabled(bundle.score):
        _with_zoom_reference(bundle, results)
    if zoom.enabled(bundle.score) or absolute:
        _rescore(bundle, results)
    per_scan = [r.window_scores[~r.background].astype(np.float64) for r in results]
    cal = Calibration.fit(np.concatenate(per_scan), target_window_far, per_scan)
    # Bag peaks as the product sees them: the heat map (calibrated windows, background at
    # the calibrated minimum, folded by overlap mean), not the highest single window.
    low = float(cal.calibrate(np.asarray([cal.values[0]]))[0])
    peaks = []
    for r in results:
        c = cal.calibrate(r.window_scores.astype(np.float64))
        c[r.background] = low
        peaks.append(float(fold_mean(torch.from_numpy(c), r.grid).max()))
    cal.bag_maxima = peaks
    if target_bag_far is not None:
        cal.set_bag_target(target_bag_far, bag_rule)
    return cal
