"""Window scorers: anything that maps a protocol scan to per-window scores on the protocol grid.

A scorer has a ``name``, a list of score ``kinds`` and ``score(prepared) ->
{kind: KindScores}``. One evaluation pass runs many scorers on the same prepared
scans, so floors, a model's several scores (latent, residual, ...) and research
variants are compared on exactly the same windows and labels.

* :class:`FloorScorer`: the four non-learned floors.
* :class:`ModelScorer`: a GANomaly bundle; **one** forward pass per window batch,
  any number of score kinds from :mod:`xrayscreen.inference.score_kinds` computed
  from it (plus ``residual_pixels``: the per-pixel residual folded into a heat map,
  whose windows are scored by its mean = the ``residual`` kind).
* :class:`EngineScorer`: the product's scoring engine (bundle's own calibrated
  score and heat map, the residual and its window maximum) -- the default.
* :class:`FunctionScorer`: wraps a plain function (tests, quick experiments).
* :class:`Prefixed`: renames a scorer's kinds (two models in one pass).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from xrayscreen.errors import ConfigError
from xrayscreen.evaluation.dataset import PreparedScan
from xrayscreen.evaluation.floors import FLOOR_NAMES, floor_scores
from xrayscreen.imaging.representation import WorkingScale, model_input
from xrayscreen.imaging.scan import Scan, ScanKind
from xrayscreen.inference import density, tip_evidence, zoom
from xrayscreen.inference.results import WindowOutputs
from xrayscreen.inference.windows import fold_mean, gather_windows, pad_with_air
from xrayscreen.model.feature_bank import encoder_body, encoder_map
from xrayscreen.model.tip_head import head_input


@dataclass
class KindScores:
    """Scores of one kind on one scan.

    Attributes:
        window: ``(N,)`` per-window scores in the grid's row-major order.
        heat: Optional ``(H, W)`` heat map at the protocol scale; when ``None`` the
            evaluator folds the window scores (mean of the windows covering a pixel).
    """

    window: np.ndarray
    heat: np.ndarray | None = None


class Scorer(Protocol):
    """What :func:`xrayscreen.evaluation.runner.evaluate` needs from a scorer."""

    name: str
    kinds: list[str]

    def score(self, scan: PreparedScan) -> dict[str, KindScores]: ...


class FloorScorer:
    """The four non-learned floors (see :mod:`xrayscreen.evaluation.floors`)."""

    def __init__(self) -> None:
        self.name = "floors"
        self.kinds = list(FLOOR_NAMES)

    def score(self, scan: PreparedScan) -> dict[str, KindScores]:
        return {k: KindScores(v) for k, v in floor_scores(scan.rgb_padded(), scan.grid).items()}


class FunctionScorer:
    """A scorer from a function ``fn(prepared) -> (N,) scores`` (one kind)."""

    def __init__(self, name: str, fn: Callable[[PreparedScan], np.ndarray]) -> None:
        self.name = name
        self.kinds = [name]
        self._fn = fn

    def score(self, scan: PreparedScan) -> dict[str, KindScores]:
        return {self.name: KindScores(np.asarray(self._fn(scan), dtype=np.float64))}


class Prefixed:
    """A scorer whose kinds are renamed ``prefix + kind``, so several models (or seeds)
    can be evaluated side by side in one pass without their kind names colliding."""

    def __init__(self, scorer: Scorer, prefix: str) -> None:
        self.scorer = scorer
        self.prefix = prefix
        self.name = f"{prefix}{scorer.name}"
        self.kinds = [prefix + k for k in scorer.kinds]

    def score(self, scan: PreparedScan) -> dict[str, KindScores]:
        return {self.prefix + k: v for k, v in self.scorer.score(scan).items()}


def protocol_bundle(
    bundle: Any, settings_longer_side: int, window: int, *, force: bool = False
) -> Any:
    """The bundle, checked (or adjusted) to score exactly the protocol image.

    The evaluator hands scorers the scan already resized to the protocol scale.
    A bundle whose working scale is ``longer_side == settings_longer_side`` then
    resizes by a factor of exactly 1, so its windows are the protocol windows.
    Any other working scale would move the windows; such a bundle is refused here
    (``force=True``, the scorers' ``force_protocol_scale``, scores it at the
    protocol scale anyway, which is recorded in the report).

    Raises:
        ConfigError: window size differs from the protocol's, or the scale differs.
    """
    if force:
        bundle = _with_scale(bundle, WorkingScale(longer_side=settings_longer_side))
    if bundle.input.window != window:
        raise ConfigError(
            f"the model's window is {bundle.input.window} px; the protocol's is {window} px"
        )
    if bundle.input.scale.longer_side != settings_longer_side:
        raise ConfigError(
            f"the model works at scale {bundle.input.scale.to_dict()}, the protocol at longer "
            f"side {settings_longer_side} px; its windows would not be the protocol windows. "
            "Use --force-protocol-scale to score it at the protocol scale anyway."
        )
    return bundle


def _air_value(representation: str) -> torch.Tensor:
    """Model input value of unattenuated air (what padding must look like), ``(C,)``."""
    white = Scan(
        rgb=np.full((1, 1, 3), 255, np.uint8),
        kind=ScanKind.SIMULATED,
        raw=np.ones((2, 1, 1), np.float32),
    )
    return torch.from_numpy(model_input(white, representation, None)[:, 0, 0])


class ModelScorer:
    """Several score kinds of one GANomaly bundle from a single forward pass.

    Args:
        bundle: A loaded :class:`~xrayscreen.model.bundle.ModelBundle`.
        kinds: Score kinds (names registered in :mod:`xrayscreen.inference.score_kinds`);
            default: the bundle's own kind, ``latent`` and ``residual``. The extra
            name ``residual_pixels`` adds a heat map folded from the per-pixel
            residual (windows scored by their mean residual).
        device: Torch device.
        batch: Windows per forward batch.
        force_protocol_scale: Score a bundle with another working scale at the
            protocol scale instead of refusing it.
        name: Display name (default: the bundle's model id).
    """

    def __init__(
        self,
        bundle: Any,
        kinds: Sequence[str] | None = None,
        *,
        device: str = "cpu",
        batch: int = 512,
        force_protocol_scale: bool = False,
        name: str | None = None,
        protocol_longer_side: int = 800,
        window: int = 64,
    ) -> None:
        from xrayscreen.inference import score_kinds
        from xrayscreen.inference.engine import cpu_has_bf16

        bundle = protocol_bundle(bundle, protocol_longer_side, window, force=force_protocol_scale)
        self.bundle = bundle
        self.name = name or bundle.model_id
        own = bundle.score.kind
        wanted = list(kinds) if kinds else list(dict.fromkeys([own, "latent", "residual"]))
        for k in wanted:
            if k != "residual_pixels":
                score_kinds.get(k)  # refuse unknown kinds up front
        self.kinds = wanted
        self.device = torch.device(device)
        self.batch = batch
        self._air = _air_value(bundle.input.representation)
        self._bank = None
        self._head = None
        if tip_evidence.enabled(bundle.score):
            if bundle.tip_head is None or bundle.feature_bank is None:
                raise ConfigError(
                    f"model {self.name}'s score adds a projected-threat head, but it has no "
                    "head or no feature memory"
                )
            self._head = bundle.tip_head.to(self.device)
        self._head_cells = tip_evidence.cells_of(bundle.score)
        self._head_cell_max = tip_evidence.cell_max_of(bundle.score)
        self._head_conv = tip_evidence.conv_of(bundle.score)
        self._autocast = self.device.type == "cuda" or (
            self.device.type == "cpu" and cpu_has_bf16()
        )

    def _spec(self, kind: str) -> Any:
        spec = copy.copy(self.bundle.score)
        if kind != spec.kind:
            spec = type(spec)(kind=kind, norm=spec.norm, params=dict(spec.params))
        return spec

    def _feature_context(self, net: Any, xb: torch.Tensor, specs: dict[str, Any]) -> dict | None:
        """Encoder feature map + bank for ``feature_knn`` kinds (recomputed: G_E's first
        layers once more; evaluation favours simplicity over the engine's hook)."""
        from xrayscreen.inference import score_kinds

        if not any(score_kinds.needs_features(s) for s in specs.values()):
            return None
        bank = self.bundle.feature_bank
        if bank is None:
            raise ConfigError(
                f"model {self.name} has no feature bank; score kind 'feature_knn' needs one"
            )
        if self._bank is None:
            self._bank = bank.to(self.device)
        fmap = encoder_map(encoder_body(net), xb, bank.level)
        emb = self._bank.embed(fmap)
        ctx: dict[str, Any] = {"embedding": emb, "bank": self._bank}
        if self._head is not None:  # what the engine's head reads (a grid of fmap too)
            ctx["head_input"] = head_input(
                emb, fmap, self._head_cells, self._head_cell_max, self._head_conv
            )
        return ctx

    def _forward(
        self, net: Any, xs: torch.Tensor, specs: dict[str, Any]
    ) -> tuple[dict[str, torch.Tensor], Any, torch.Tensor, torch.Tensor | None]:
        """One batch through the generator: the scores of ``specs`` (float32), the
        generator's outputs, the channels-last input batch and -- when the bundle's
        score adds its projected-threat head -- the head's ``(n, V)`` logits."""
        from xrayscreen.inference import score_kinds

        xb = xs.to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._autocast):
            outputs = net(xb)
            ctx = self._feature_context(net, xb, specs)
        scores = {
            k: score_kinds.compute(
                spec, xb, outputs, ctx if score_kinds.needs_features(spec) else None
            ).float()
            for k, spec in specs.items()
        }
        head = None
        if self._head is not None and ctx is not None:
            head = self._head.logits(ctx["head_input"])
        return scores, outputs, xb, head

    @torch.inference_mode()
    def score(self, scan: PreparedScan) -> dict[str, KindScores]:
        x = torch.from_numpy(
            model_input(scan.scan, self.bundle.input.representation, self.bundle.input.scale)
        )
        if tuple(x.shape[1:]) != scan.shape:
            raise ConfigError(f"model input {tuple(x.shape[1:])} != protocol image {scan.shape}")
        grid = scan.grid
        c = x.shape[0]
        padded = pad_with_air(x.float(), grid, self._air)
        keep = torch.from_numpy(~scan.labels.belt).to(self.device)
        idx = torch.nonzero(keep).flatten()
        windows = torch.zeros((len(grid), c, grid.window, grid.window), device=self.device)
        if len(idx):
            windows[idx] = gather_windows(padded.to(self.device), grid, idx)
        net = self.bundle.generator.to(self.device).eval()
        kinds = [k for k in self.kinds if k != "residual_pixels"]
        want_pix = "residual_pixels" in self.kinds
        out = {k: torch.zeros(len(grid), device=self.device) for k in kinds}
        pix = torch.zeros((len(grid), grid.window, grid.window)) if want_pix else None
        specs = {k: self._spec(k) for k in kinds}
        own = self.bundle.score.kind
        # The head joins the bundle's own kind only; other kinds are scored without it.
        head = torch.zeros(len(grid)) if self._head is not None and own in specs else None
        for start in range(0, len(idx), self.batch):
            sel = idx[start : start + self.batch]
            scores, outputs, xb, logits = self._forward(net, windows[sel], specs)
            for k in kinds:
                out[k][sel] = scores[k]
            if head is not None and logits is not None:
                head[sel.cpu()] = logits[:, 0].float().cpu()
            if pix is not None:
                pix[sel.cpu()] = (xb.float() - outputs.x_hat.float()).abs().mean(dim=1).cpu()
        result: dict[str, KindScores] = {}
        belt = ~keep.cpu()

        def own_scores(xs: torch.Tensor) -> WindowOutputs:
            parts = [
                self._forward(net, xs[i : i + self.batch], {own: specs[own]})
                for i in range(0, len(xs), self.batch)
            ]
            latent = torch.cat([p[0][own] for p in parts]) if parts else torch.zeros(0)
            logits = None
            if self._head is not None:
                logits = torch.cat([p[3] for p in parts]) if parts else torch.zeros(0, 2)
            return WindowOutputs(latent, None, logits)

        for k in kinds:
            s = out[k].cpu()
            if k == own:
                # Per-scan normalisation, densities, zoomed-out view and context belong
                # to its own kind.
                raw_zoom, dens, dens_zoom, head_zoom = _views(
                    self.bundle, scan, padded, idx.cpu(), self._air, own_scores
                )
                s = zoom.evidence(
                    self.bundle.score, s, raw_zoom, grid, ~belt, dens, dens_zoom, head, head_zoom
                )
            if belt.any() and (~belt).any():
                s[belt] = s[~belt].min()  # background scores as normal (engine rule)
            result[k] = KindScores(s.numpy().astype(np.float64))
        if pix is not None:
            heat = fold_mean(pix, grid).numpy()
            result["residual_pixels"] = KindScores(
                pix.flatten(1).mean(dim=1).numpy().astype(np.float64), heat=heat
            )
        return result


class EngineScorer:
    """The product's scoring engine on the protocol windows: the model as it ships.

    Uses :class:`xrayscreen.inference.engine.ScoringEngine` (its prepared generator,
    batching, autocast and out-of-memory fallback) through ``score_windows`` on
    exactly the protocol windows (non-belt windows of the protocol image, padded
    with the representation's air value, as the engine pads). One forward gives:

    * ``<kind>`` (the bundle's own score kind, e.g. ``latent``): raw window scores,
      normalised per scan when the bundle says so (``scan_norm``), as the engine does;
      heat map = calibrated window scores folded by overlap mean, belt windows at
      the calibration's minimum (the engine's ``latent_map``);
    * ``residual``: mean reconstruction residual |x - x_hat| over the window; heat
      map = the per-pixel residual folded by overlap mean (the engine's
      ``residual_map``) -- left out when the bundle's own kind is ``residual``;
    * ``residual_max``: max over the window of the per-pixel residual (channel
      mean); heat map = its window scores folded.

    Args:
        bundle: A loaded bundle whose working scale is the protocol's (or
            ``force_protocol_scale``).
        device: Torch device.
        force_protocol_scale: Score a bundle with another working scale at the
            protocol scale instead of refusing it (recorded in the report).
        name: Display name (default: the bundle's model id).
    """

    def __init__(
        self,
        bundle: Any,
        *,
        device: str | None = "cpu",
        force_protocol_scale: bool = False,
        name: str | None = None,
        protocol_longer_side: int = 800,
        window: int = 64,
    ) -> None:
        from xrayscreen.inference.engine import ScoringEngine, air_value

        bundle = protocol_bundle(bundle, protocol_longer_side, window, force=force_protocol_scale)
        self.bundle = bundle
        self.engine = ScoringEngine(bundle, device)
        self.name = name or bundle.model_id
        own = bundle.score.kind
        self.own_kind = own
        self.kinds = [own] + (["residual"] if own != "residual" else []) + ["residual_max"]
        # The heat map of the own kind is in calibrated units: the bundle's default
        # threshold applies to it directly (the runner reports that operating point).
        cal = bundle.calibration
        self.default_threshold = float(cal.default_threshold) if cal is not None else None
        self._air = torch.tensor(air_value(bundle.input.representation))
        cal = bundle.calibration
        self._bg_cal = (
            float(np.asarray(cal.calibrate(np.array([cal.values[0]])))[0]) if cal else None
        )

    def score(self, scan: PreparedScan) -> dict[str, KindScores]:
        grid = scan.grid
        x = torch.from_numpy(
            model_input(scan.scan, self.bundle.input.representation, self.bundle.input.scale)
        )
        if tuple(x.shape[1:]) != scan.shape:
            raise ConfigError(f"model input {tuple(x.shape[1:])} != protocol image {scan.shape}")
        padded = pad_with_air(x, grid, self._air)
        belt = torch.from_numpy(scan.labels.belt)
        idx = torch.nonzero(~belt).flatten()
        n = len(grid)
        raw = torch.zeros(n)
        res_mean = torch.zeros(n)
        res_max = torch.zeros(n)
        pix = torch.zeros((n, grid.window, grid.window))
        if len(idx):
            out = self.engine.score_windows(gather_windows(padded, grid, idx), residual=True)
            raw[idx] = out.latent.float().cpu()
            head = None
            if out.head is not None:
                head = torch.zeros(n)
                head[idx] = out.head[:, 0].float().cpu()
            raw_zoom, dens, dens_zoom, head_zoom = _views(
                self.bundle,
                scan,
                padded,
                idx,
                self._air,
                lambda w: self.engine.score_windows(w, residual=False),
            )
            # The bundle's per-scan normalisation over this scan's scored windows, its
            # densities, projected-threat head, zoomed-out view and context, as the
            # engine applies them to a whole scan (score_windows alone does not).
            raw = zoom.evidence(
                self.bundle.score, raw, raw_zoom, grid, ~belt, dens, dens_zoom, head, head_zoom
            )
            r = out.residual.float().cpu()
            pix[idx] = r
            res_mean[idx] = r.flatten(1).mean(dim=1)
            res_max[idx] = r.flatten(1).amax(dim=1)
        if len(idx) and len(idx) < n:  # background scores as normal (the engine's rule)
            for t in (raw, res_mean, res_max):
                t[belt] = t[idx].min()
        cal = self.engine.calibrate(raw.to(self.engine.device)).float().cpu()
        if len(idx) < n:
            cal[belt] = self._bg_cal if self._bg_cal is not None else cal[idx].min()
        result = {self.own_kind: KindScores(raw.numpy().astype(np.float64), heat=None)}
        result[self.own_kind].heat = fold_mean(cal, grid).numpy()
        if "residual" in self.kinds:
            result["residual"] = KindScores(
                res_mean.numpy().astype(np.float64), heat=fold_mean(pix, grid).numpy()
            )
        result["residual_max"] = KindScores(res_max.numpy().astype(np.float64))
        return result


def _views(
    bundle: Any,
    scan: PreparedScan,
    padded: torch.Tensor,
    idx: torch.Tensor,
    air: torch.Tensor,
    score: Callable[[torch.Tensor], WindowOutputs],
) -> tuple[torch.Tensor | None, ...]:
    """What :func:`zoom.evidence` needs besides the raw scores and the working-scale
    head logits, as the engine makes it: the raw own-kind scores of the zoomed-out
    windows (:mod:`~xrayscreen.inference.zoom`) of grid windows ``idx`` (zero elsewhere;
    ``None`` without a zoomed view), the windows' and zoomed windows' mean opacity
    (:mod:`~xrayscreen.inference.density`; ``None`` when the score adds no density) and
    the zoomed windows' projected-threat head logits (the head's zoomed column; ``None``
    without a head or a zoomed view). ``padded`` is the protocol model input padded with
    air; ``score(windows)`` returns the model's outputs per window (raw own-kind score,
    and the head's logits when the bundle has one).
    """
    rep = bundle.input.representation
    with_density = density.enabled(bundle.score)
    dens = density.window_means(padded, scan.grid, rep).cpu() if with_density else None
    if not zoom.enabled(bundle.score) or not len(idx):
        return None, dens, None, None
    view = zoom.ZoomedView(scan.scan, scan.grid, zoom.factor_of(bundle.score), rep, air)
    out = torch.zeros(len(scan.grid))
    scored = score(view.windows(idx))
    out[idx] = scored.latent.float().cpu()
    head_zoom = None
    if scored.head is not None:
        head_zoom = torch.zeros(len(scan.grid))
        head_zoom[idx] = scored.head[:, 1].float().cpu()
    dens_zoom = None
    if with_density:
        dens_zoom = torch.zeros(len(scan.grid))
        dens_zoom[idx] = view.densities(idx).cpu()
    return out, dens, dens_zoom, head_zoom


def _with_scale(bundle: Any, scale: WorkingScale) -> Any:
    b = copy.copy(bundle)
    b.input = copy.copy(bundle.input)
    b.input.scale = scale
    return b
