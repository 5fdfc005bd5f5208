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
* :class:`EngineScorer`: the product's scoring engine (bundle's own score kind and
  heat map), when :mod:`xrayscreen.inference.engine` is available.
* :class:`FunctionScorer`: wraps a plain function (tests, quick experiments).
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
from xrayscreen.inference.windows import extract_windows, fold_mean


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


def protocol_bundle(bundle: Any, settings_longer_side: int, window: int) -> Any:
    """The bundle, checked (or adjusted) to score exactly the protocol image.

    The evaluator hands scorers the scan already resized to the protocol scale.
    A bundle whose working scale is ``longer_side == settings_longer_side`` then
    resizes by a factor of exactly 1, so its windows are the protocol windows.
    Any other working scale would move the windows; such a bundle is refused here
    (callers may pass ``force_protocol_scale`` to :class:`ModelScorer` to score it
    at the protocol scale anyway, which is recorded in the report).

    Raises:
        ConfigError: window size differs from the protocol's, or the scale differs.
    """
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

        if force_protocol_scale:
            bundle = copy.copy(bundle)
            bundle.input = copy.copy(bundle.input)
            bundle.input.scale = WorkingScale(longer_side=protocol_longer_side)
        protocol_bundle(bundle, protocol_longer_side, window)
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
        self._autocast = self.device.type == "cpu" and _cpu_has_bf16()

    def _spec(self, kind: str) -> Any:
        spec = copy.copy(self.bundle.score)
        if kind != spec.kind:
            spec = type(spec)(kind=kind, norm=spec.norm, params=dict(spec.params))
        return spec

    @torch.inference_mode()
    def score(self, scan: PreparedScan) -> dict[str, KindScores]:
        from xrayscreen.inference import score_kinds

        x = torch.from_numpy(
            model_input(scan.scan, self.bundle.input.representation, self.bundle.input.scale)
        )
        if tuple(x.shape[1:]) != scan.shape:
            raise ConfigError(f"model input {tuple(x.shape[1:])} != protocol image {scan.shape}")
        grid = scan.grid
        c = x.shape[0]
        padded = torch.empty((c, *grid.padded_shape), dtype=torch.float32)
        padded[:] = self._air[:, None, None]
        padded[:, : grid.height, : grid.width] = x
        windows = extract_windows(padded.to(self.device), grid)
        keep = torch.from_numpy(~scan.labels.belt).to(self.device)
        idx = torch.nonzero(keep).flatten()
        net = self.bundle.generator.to(self.device).eval()
        kinds = [k for k in self.kinds if k != "residual_pixels"]
        want_pix = "residual_pixels" in self.kinds
        out = {k: torch.zeros(len(grid), device=self.device) for k in kinds}
        pix = torch.zeros((len(grid), grid.window, grid.window)) if want_pix else None
        specs = {k: self._spec(k) for k in kinds}
        for start in range(0, len(idx), self.batch):
            sel = idx[start : start + self.batch]
            xb = windows[sel].contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._autocast):
                outputs = net(xb)
            for k in kinds:
                out[k][sel] = score_kinds.compute(specs[k], xb, outputs).float()
            if pix is not None:
                pix[sel.cpu()] = (xb.float() - outputs.x_hat.float()).abs().mean(dim=1).cpu()
        result: dict[str, KindScores] = {}
        belt = ~keep.cpu()
        for k in kinds:
            s = out[k].cpu()
            if belt.any() and (~belt).any():
                s[belt] = s[~belt].min()  # background scores as normal (engine rule)
            result[k] = KindScores(s.numpy().astype(np.float64))
        if pix is not None:
            heat = fold_mean(pix, grid).numpy()
            result["residual_pixels"] = KindScores(
                pix.flatten(1).mean(dim=1).numpy().astype(np.float64), heat=heat
            )
        return result


def _cpu_has_bf16() -> bool:
    try:
        return (
            bool(torch.backends.mkldnn.is_available())
            and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    except (AttributeError, RuntimeError):
        return False


class EngineScorer:
    """The product's scoring engine: the bundle's own score and heat map, and its calibration.

    Kinds: ``<kind>`` (raw window scores, heat map = the engine's map) and, when the
    engine provides a residual map, ``residual_map`` (windows scored by their mean
    residual is not provided by the engine, so that kind's window scores are the
    map's mean over each window).
    """

    def __init__(self, bundle: Any, *, device: str = "cpu", name: str | None = None) -> None:
        from xrayscreen.inference.engine import ScoringEngine  # issue 4

        protocol_bundle(bundle, 800, 64)
        self.bundle = bundle
        self.engine = ScoringEngine(bundle, device=device)
        self.name = name or bundle.model_id
        self.kinds = [f"engine_{bundle.score.kind}"]

    def score(self, scan: PreparedScan) -> dict[str, KindScores]:
        res = self.engine.score_scan(scan.scan, stride=scan.grid.stride)
        if hasattr(res, "__next__"):  # a progress generator: its return value is the result
            try:
                while True:
                    next(res)
            except StopIteration as stop:
                res = stop.value
        origins = np.asarray(res.window_origins)
        if origins.shape != scan.grid.origins().shape or not (origins == scan.grid.origins()).all():
            raise ConfigError("the engine's windows are not the protocol windows")
        heat = getattr(res, "latent_map", None)
        heat = None if heat is None else np.asarray(heat, dtype=np.float64)
        return {self.kinds[0]: KindScores(np.asarray(res.window_scores, np.float64), heat)}
