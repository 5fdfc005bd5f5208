"""Research score kinds (issue 7), registered in :mod:`xrayscreen.inference.score_kinds`.

The trial on SIXray showed two faults of the plain scores: the residual lights up every
strong edge, and every learned score tracks window density (which an operator already
sees). These kinds address both, with statistics fitted on NORMAL held-out windows only
(:func:`fit_density_params`, :func:`fit_edge_params`) and stored in the bundle's
``ScoreSpec.params`` (plain JSON lists):

* ``residual_pool``: the largest 8x8-averaged reconstruction residual in the window
  (a compact region that reconstructs badly, rather than the mean over the window).
* ``edge_excess``: mean residual in excess of what normal windows show at the same
  local edge strength (params ``edge_bins``, ``edge_lut``) -- so a strap or bag outline
  that always reconstructs a little badly no longer dominates.
* ``density_conditional``: a base kind (param ``base``) as a robust z-score among normal
  windows of the same max-density decile (params ``dens_edges``, ``bin_median``,
  ``bin_scale``): "how unusual for a window this dense".
* ``density_combined``: ``density_conditional`` plus the robust z of the window's max
  density itself (params ``dens_median``, ``dens_scale``): GANomaly evidence + density
  evidence. Report GANomaly's own contribution separately (issue 7).

All kinds need the window's protocol grey, recovered from the model input for the
``rgb`` and ``rgb_attenuation`` representations (param ``representation``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xrayscreen.errors import ConfigError
from xrayscreen.inference import score_kinds
from xrayscreen.inference.score_kinds import register
from xrayscreen.model.ganomaly import GeneratorOutput

_LOG255 = math.log(255.0)
DEFAULT_EDGE_BINS = [0.005, 0.01, 0.02, 0.04, 0.06, 0.09, 0.13, 0.2, 0.3]


def grey_of_input(x: torch.Tensor, representation: str) -> torch.Tensor:
    """Protocol grey (mean RGB in 0..1) of ``(N, 3, h, w)`` model input: ``(N, h, w)``."""
    x = x.float()
    if representation == "rgb":
        rgb = (x + 1.0) * 0.5
    elif representation == "rgb_attenuation":
        rgb = torch.exp(-(x + 1.0) * 0.5 * _LOG255)
    else:
        raise ConfigError(f"research scores need an RGB representation, got {representation!r}")
    return rgb.mean(dim=1)


def max_density(x: torch.Tensor, representation: str) -> torch.Tensor:
    """``1 - min grey`` per window (the strongest non-learned floor), ``(N,)``."""
    return 1.0 - grey_of_input(x, representation).flatten(1).amin(dim=1)


def residual_map(x: torch.Tensor, outputs: GeneratorOutput) -> torch.Tensor:
    """``(N, h, w)`` channel-mean |x - x_hat|."""
    return (x.float() - outputs.x_hat.float()).abs().mean(dim=1)


def edge_strength(grey: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of ``(N, h, w)`` grey (kernel / 8), same shape."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=grey.device)
    k = (torch.stack([kx, kx.T]) / 8.0)[:, None]
    g = F.conv2d(F.pad(grey[:, None], (1, 1, 1, 1), mode="replicate"), k)
    return g.pow(2).sum(1).sqrt()


@register("residual_pool")
def residual_pool(
    x: torch.Tensor, outputs: GeneratorOutput, params: dict[str, Any]
) -> torch.Tensor:
    """Largest 8x8-mean residual in the window (param ``pool``, default 8)."""
    k = int(params.get("pool", 8))
    r = residual_map(x, outputs)[:, None]
    return F.avg_pool2d(r, min(k, r.shape[-1])).flatten(1).amax(dim=1)


def _edge_hist(x: torch.Tensor, outputs: GeneratorOutput, params: dict[str, Any]):
    bins = torch.tensor(params.get("edge_bins", DEFAULT_EDGE_BINS), device=x.device)
    grey = grey_of_input(x, params.get("representation", "rgb"))
    r = residual_map(x, outputs).flatten(1)
    b = torch.bucketize(edge_strength(grey), bins).flatten(1)
    nb = len(bins) + 1
    sums = torch.zeros(len(r), nb, device=x.device).scatter_add_(1, b, r)
    cnts = torch.zeros(len(r), nb, device=x.device).scatter_add_(1, b, torch.ones_like(r))
    return sums, cnts


@register("edge_excess")
def edge_excess(x: torch.Tensor, outputs: GeneratorOutput, params: dict[str, Any]) -> torch.Tensor:
    """Mean residual minus the normal residual expected at each pixel's edge strength."""
    if "edge_lut" not in params:
        raise ConfigError("score kind 'edge_excess' needs calibrated params (edge_lut)")
    sums, cnts = _edge_hist(x, outputs, params)
    lut = torch.tensor(params["edge_lut"], device=x.device, dtype=torch.float32)
    return (sums - lut[None] * cnts).sum(1) / cnts.sum(1).clamp_min(1)


def _base(x: torch.Tensor, outputs: GeneratorOutput, params: dict[str, Any]) -> torch.Tensor:
    base = params.get("base", "residual_pool")
    if base in ("density_conditional", "density_combined"):
        raise ConfigError(f"base score of a density kind cannot be {base!r}")
    return score_kinds.get(base)(x, outputs, params).float().reshape(-1)


@register("density_conditional")
def density_conditional(
    x: torch.Tensor, outputs: GeneratorOutput, params: dict[str, Any]
) -> torch.Tensor:
    """Base score as a robust z among normal windows of the same max-density decile."""
    for key in ("dens_edges", "bin_median", "bin_scale"):
        if key not in params:
            raise ConfigError(f"score kind 'density_conditional' needs calibrated params ({key})")
    s = _base(x, outputs, params)
    dens = max_density(x, params.get("representation", "rgb"))
    edges = torch.tensor(params["dens_edges"], device=x.device, dtype=torch.float32)
    b = torch.bucketize(dens, edges, right=True)
    med = torch.tensor(params["bin_median"], device=x.device, dtype=torch.float32)[b]
    scale = torch.tensor(params["bin_scale"], device=x.device, dtype=torch.float32)[b]
    return (s - med) / scale


@register("density_combined")
def density_combined(
    x: torch.Tensor, outputs: GeneratorOutput, params: dict[str, Any]
) -> torch.Tensor:
    """``density_conditional`` plus the robust z of the window's max density."""
    dens = max_density(x, params.get("representation", "rgb"))
    zd = (dens - float(params["dens_median"])) / float(params["dens_scale"])
    return density_conditional(x, outputs, params) + zd


def _robust(v: np.ndarray) -> tuple[float, float]:
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return float(med), float(max((q3 - q1) / 1.349, 1e-9))


def fit_density_params(
    base_scores: np.ndarray, densities: np.ndarray, n_bins: int = 10, min_count: int = 20
) -> dict[str, Any]:
    """Fit ``density_conditional`` / ``density_combined`` params on NORMAL windows.

    Args:
        base_scores: ``(N,)`` base-kind scores of normal held-out windows.
        densities: ``(N,)`` their max density (:func:`max_density`).
        n_bins: Density quantile bins.
        min_count: Bins with fewer windows fall back to the global statistics.

    Returns:
        JSON-able params (merge with ``base`` and ``representation``).
    """
    s = np.asarray(base_scores, dtype=np.float64)
    d = np.asarray(densities, dtype=np.float64)
    if len(s) != len(d) or len(s) < min_count:
        raise ConfigError(f"need >= {min_count} normal windows to fit density params")
    edges = np.quantile(d, np.linspace(0, 1, n_bins + 1)[1:-1])
    b = np.searchsorted(edges, d, side="right")
    g_med, g_scale = _robust(s)
    med, scale = [], []
    for k in range(n_bins):
        m = b == k
        mk, sk = _robust(s[m]) if m.sum() >= min_count else (g_med, g_scale)
        med.append(mk)
        scale.append(sk)
    d_med, d_scale = _robust(d)
    return {
        "dens_edges": edges.tolist(),
        "bin_median": med,
        "bin_scale": scale,
        "dens_median": d_med,
        "dens_scale": d_scale,
    }


def fit_edge_params(
    x: torch.Tensor, outputs: GeneratorOutput, representation: str
) -> dict[str, Any]:
    """Fit ``edge_excess``'s per-edge-strength normal residual on NORMAL windows."""
    params = {"edge_bins": DEFAULT_EDGE_BINS, "representation": representation}
    sums, cnts = _edge_hist(x, outputs, params)
    lut = sums.sum(0) / cnts.sum(0).clamp_min(1)
    return {**params, "edge_lut": lut.tolist()}
