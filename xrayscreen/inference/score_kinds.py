"""Registry of per-window score kinds, keyed by ``ScoreSpec.kind`` in a bundle.

A score kind is a function ``fn(x, outputs, params) -> (N,) float32 tensor`` where

* ``x`` is the ``(N, C, w, w)`` batch the generator saw (model input in [-1, 1]),
* ``outputs`` is the generator's :class:`~xrayscreen.model.ganomaly.GeneratorOutput`
  (``x_hat``, ``z``, ``z_hat``; may be bf16 under autocast: cast before arithmetic),
* ``params`` is a plain dict: the bundle's ``ScoreSpec.params`` plus ``"norm"``.

Higher means more anomalous. New kinds (research, issue 7) are added by decorating
a function anywhere that is imported before scoring::

    from xrayscreen.inference.score_kinds import register

    @register("combined")
    def combined(x, outputs, params):
        ...

The engine, training calibration and evaluation all call :func:`compute`, so a
bundle's calibration always refers to the same score the engine produces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from xrayscreen.errors import ConfigError
from xrayscreen.model.feature_bank import FEATURE_KINDS
from xrayscreen.model.ganomaly import GeneratorOutput
from xrayscreen.model.score import dfeat_weight_of, latent_score

ScoreFn = Callable[[torch.Tensor, GeneratorOutput, dict[str, Any]], torch.Tensor]

_KINDS: dict[str, ScoreFn] = {}


def register(name: str) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator registering ``fn`` as score kind ``name``.

    Registering the same function twice (module re-import) is harmless; a
    *different* function under an existing name raises ``ValueError`` so two
    definitions can never silently disagree.
    """

    def deco(fn: ScoreFn) -> ScoreFn:
        old = _KINDS.get(name)
        if old is not None and old is not fn and old.__qualname__ != fn.__qualname__:
            raise ValueError(f"score kind {name!r} is already registered ({old.__module__})")
        _KINDS[name] = fn
        return fn

    return deco


def get(name: str) -> ScoreFn:
    """The function of score kind ``name``.

    Raises:
        ConfigError: for an unknown kind (e.g. a bundle made by a newer version).
    """
    try:
        return _KINDS[name]
    except KeyError:
        raise ConfigError(
            f"this model uses score kind {name!r}, which this xrayscreen does not know; "
            f"known kinds: {sorted(_KINDS)}"
        ) from None


def kinds() -> list[str]:
    """Names of all registered kinds."""
    return sorted(_KINDS)


def spec_params(spec: Any) -> dict[str, Any]:
    """The ``params`` dict a kind receives for a ``ScoreSpec`` (its params plus ``norm``)."""
    return {"norm": getattr(spec, "norm", "l1"), **dict(getattr(spec, "params", {}) or {})}


def needs_features(spec: Any) -> bool:
    """True when the kind needs an encoder feature map and a feature bank
    (``context`` of :func:`compute`), i.e. ``feature_knn``."""
    return getattr(spec, "kind", "latent") in FEATURE_KINDS


def dfeat_weight(spec: Any) -> float:
    """Weight of the discriminator-feature part of a score (``params["dfeat_weight"]``,
    0 = none). See :func:`compute`."""
    return dfeat_weight_of(getattr(spec, "params", None))


def needs_discriminator(spec: Any) -> bool:
    """True when the score adds the discriminator-feature residual, so scoring needs
    the model's discriminator (``context["dfeat"]`` of :func:`compute`)."""
    return dfeat_weight(spec) > 0.0


def compute(
    spec: Any,
    x: torch.Tensor,
    outputs: GeneratorOutput,
    context: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Score a batch according to a ``ScoreSpec`` (``kind``, ``norm``, ``params``).

    A spec with ``params["dfeat_weight"] = w > 0`` (memory-plus kinds, which are in
    units of their parts' spreads) adds ``w * dfeat / dfeat_scale``: GANomaly's
    discriminator-feature residual
    (:func:`~xrayscreen.model.score.discriminator_feature_residual`) in units of its
    spread on held-out normal windows (``dfeat_scale``, fitted at training).

    Args:
        context: Run-time inputs that are not settings: ``embedding`` (the bank's
            standardised embedding of this batch's encoder maps, ``FeatureBank.embed``)
            and ``bank`` (a :class:`~xrayscreen.model.feature_bank.FeatureBank`), for feature kinds;
            ``dfeat`` (``(N,)`` discriminator-feature residuals) when the spec has a
            ``dfeat_weight``.

    Returns:
        ``(N,)`` float32 scores.

    Raises:
        ConfigError: a needed context entry is missing.
    """
    fn = get(getattr(spec, "kind", "latent"))
    params = spec_params(spec)
    if context:
        params.update({f"_{k}": v for k, v in context.items()})
    score = fn(x, outputs, params).float().reshape(-1)
    w = dfeat_weight(spec)
    if w > 0.0:
        d = params.get("_dfeat")
        if d is None:
            raise ConfigError(
                "this model's score adds the discriminator-feature residual, but the caller "
                "did not compute it (the model file may lack its discriminator)"
            )
        scale = max(float(params.get("dfeat_scale", 1.0)), 1e-12)
        score = score + w * d.float().reshape(-1) / scale
    return score


@register("latent")
def latent(x: torch.Tensor, outputs: GeneratorOutput, params: dict[str, Any]) -> torch.Tensor:
    """The paper's score: mean |z - z_hat| (``norm="l1"``) or mean (z - z_hat)^2 (``"l2"``)."""
    return latent_score(outputs.z, outputs.z_hat, params.get("norm", "l1"))


@register("residual")
def residual(x: torch.Tensor, outputs: GeneratorOutput, params: dict[str, Any]) -> torch.Tensor:
    """Mean reconstruction residual |x - x_hat| over the window (channels and pixels)."""
    return (x.float() - outputs.x_hat.float()).abs().flatten(1).mean(dim=1)


# Which way "denser" points in each model input: attenuation inputs grow with density,
# RGB renderings get darker.
DENSER_SIGN = {"rgb": -1.0, "rgb_attenuation": 1.0, "log_attenuation": 1.0}


@register("residual_excess")
def residual_excess(
    x: torch.Tensor, outputs: GeneratorOutput, params: dict[str, Any]
) -> torch.Tensor:
    """Attenuation the reconstruction does not explain: mean over the window of
    ``(sign * (x - x_hat))+`` (channels and pixels), ``sign`` = +1 for attenuation inputs,
    -1 for RGB (param ``sign``, set at training from the representation; see
    :data:`DENSER_SIGN`).

    A generator trained on normal bags reconstructs normal contents; a gun or a blade is
    *denser* than anything it would draw there, while the parts of a bag it merely draws
    too dense (over-reconstruction at edges and clutter) are not evidence of a threat.
    The plain residual counts both."""
    sign = float(params.get("sign", 1.0))
    d = (x.float() - outputs.x_hat.float()) * sign
    return d.clamp_min(0).flatten(1).mean(dim=1)


@register("feature_knn")
def feature_knn(x: torch.Tensor, outputs: GeneratorOutput, params: dict[str, Any]) -> torch.Tensor:
    """Mean distance of the window's G_E feature embedding to its k nearest normal
    training windows (:mod:`xrayscreen.model.feature_bank`). Needs ``context``."""
    emb, bank = params.get("_embedding"), params.get("_bank")
    if emb is None or bank is None:
        raise ConfigError(
            "score kind 'feature_knn' needs the encoder feature map and the model's feature "
            "bank; this model file has no feature bank or the caller did not pass it"
        )
    return bank.score_embedded(emb)


# Memory-plus kinds: the feature-memory distance plus a second, generator-based part,
# each divided by its spread on held-out normal windows (params ``knn_scale``,
# ``res_scale``, fitted at training) and the second weighted by ``res_weight`` (default 1).
# Kind -> the kind of its second part (training fits that part's spread).
MEMORY_PLUS = {"feature_knn_residual": "residual", "feature_knn_excess": "residual_excess"}


def uses_denser_sign(kind: str) -> bool:
    """Whether a kind needs the ``sign`` param (:data:`DENSER_SIGN`) set at training."""
    return "residual_excess" in (kind, MEMORY_PLUS.get(kind))


def _memory_plus(
    second: ScoreFn, x: torch.Tensor, outputs: GeneratorOutput, params: dict[str, Any]
) -> torch.Tensor:
    knn = feature_knn(x, outputs, params).float()
    part = second(x, outputs, params).float()
    ks = float(params.get("knn_scale", 1.0))
    rs = float(params.get("res_scale", 1.0))
    w = float(params.get("res_weight", 1.0))
    return knn / max(ks, 1e-12) + w * part / max(rs, 1e-12)


@register("feature_knn_residual")
def feature_knn_residual(
    x: torch.Tensor, outputs: GeneratorOutput, params: dict[str, Any]
) -> torch.Tensor:
    """Feature-memory distance plus GANomaly's reconstruction residual (see
    :data:`MEMORY_PLUS`): two kinds of evidence, one learned by the generator, one from
    the memory of normal windows."""
    return _memory_plus(residual, x, outputs, params)


@register("feature_knn_excess")
def feature_knn_excess(
    x: torch.Tensor, outputs: GeneratorOutput, params: dict[str, Any]
) -> torch.Tensor:
    """Feature-memory distance plus GANomaly's unexplained density
    (:func:`residual_excess`; see :data:`MEMORY_PLUS`)."""
    return _memory_plus(residual_excess, x, outputs, params)


# Research kinds (issue 7: residual_pool, edge_excess, density_conditional, density_combined)
# register themselves on import; imported last because they use register() above.
from xrayscreen.inference import research_scores as _research_scores  # noqa: E402, F401
