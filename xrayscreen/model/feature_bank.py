"""Feature-memory score (issue 7): how far a window's GANomaly encoder features lie from
every NORMAL training window's.

The paper's score compares z = G_E(x) with z_hat = E(G(x)); on real SIXray bags that
distance mostly tracked density and scored below the non-learned floors. The same
trained encoder's intermediate feature maps, however, separate threats from benign
clutter well when asked "is there any normal training window that looks like this?":
a k-nearest-neighbour distance in that feature space, against a memory of embeddings
of the normal windows the model was trained on (measured in ``docs/BENCHMARKS.md``,
issue 7). Dense benign clutter has dense benign neighbours; a gun does not.

A window's embedding: the output of the ``level``-th activation of G_E's convolutional
body (level 2 = the 16x16 map for 64 px windows), mean- and max-pooled over space,
standardised per dimension with the memory's statistics. Score = mean Euclidean
distance to the ``k`` nearest memory rows.

Everything here is plain tensors: the memory is stored in the bundle's safetensors file
(``bank.memory``, ``bank.mean``, ``bank.std``), its settings in ``model.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from xrayscreen.errors import ConfigError

PREFIX = "bank."
# Score kinds that need a feature memory in the bundle and G_E's map at score time.
FEATURE_KINDS = frozenset({"feature_knn", "feature_knn_residual", "feature_knn_excess"})


def _is_activation(m: nn.Module) -> bool:
    """LeakyReLU / ReLU, or a fused conv whose post-op is one (engine fast path)."""
    if isinstance(m, nn.LeakyReLU | nn.ReLU):
        return True
    return getattr(m, "attr", None) in ("leaky_relu", "relu")


def tap_index(body: nn.Sequential, level: int) -> int:
    """Index in ``body`` of the module whose output is the ``level``-th activation.

    Works for the plain encoder (conv, [bn], act, ...) and for the engine's fused one
    (one module per conv + activation).

    Raises:
        ConfigError: when the body has fewer than ``level`` activations.
    """
    seen = 0
    for i, m in enumerate(body):
        if _is_activation(m):
            seen += 1
            if seen == level:
                return i
    raise ConfigError(f"the encoder has {seen} activation levels; feature level {level} asked")


def encoder_body(generator: nn.Module) -> nn.Sequential:
    """G_E's convolutional body (``generator.encoder1.body``).

    Raises:
        ConfigError: for generators without one (the U-Net variant encodes through its
            skip path), which the feature-memory scores cannot use.
    """
    body = getattr(getattr(generator, "encoder1", None), "body", None)
    if not isinstance(body, nn.Sequential):
        raise ConfigError(
            f"{type(generator).__name__} has no G_E body (encoder1.body); the feature-memory "
            "scores need the DCGAN GANomaly generator"
        )
    return body


def encoder_map(body: nn.Sequential, x: torch.Tensor, level: int) -> torch.Tensor:
    """Run ``body`` up to the ``level``-th activation and return that feature map."""
    stop = tap_index(body, level)
    h = x
    for m in list(body)[: stop + 1]:
        h = m(h)
    return h


def pool(fmap: torch.Tensor) -> torch.Tensor:
    """``(N, C, h, w)`` feature map -> ``(N, 2C)`` float32 [spatial mean, spatial max]."""
    f = fmap.float()
    return torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)


@dataclass
class FeatureBank:
    """Embeddings of normal training windows and how to score against them.

    Attributes:
        memory: ``(M, D)`` standardised embeddings of normal windows.
        mean: ``(D,)`` per-dimension mean used to standardise (fitted on the memory).
        std: ``(D,)`` per-dimension standard deviation (floored).
        level: Encoder activation level the embedding is taken from.
        k: Neighbours averaged in the score.
    """

    memory: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    level: int = 2
    k: int = 5
    # Search form of the memory per device (transposed, squared norms), made on first use.
    _search: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def fit(
        cls,
        embeddings: torch.Tensor,
        *,
        level: int,
        k: int = 5,
        max_size: int = 20000,
        seed: int = 0,
    ) -> FeatureBank:
        """Build a bank from raw (pooled, not standardised) embeddings of normal windows.

        Args:
            embeddings: ``(N, D)`` from :func:`pool` on training windows.
            level: Encoder level they came from.
            k: Neighbours per score.
            max_size: Keep at most this many rows (uniform random subset, seeded).
            seed: Subset seed.

        Raises:
            ConfigError: with fewer than ``k`` windows.
        """
        e = embeddings.detach().float().cpu()
        if e.ndim != 2 or len(e) < max(k, 2):
            raise ConfigError(f"a feature bank needs at least {max(k, 2)} normal windows")
        if len(e) > max_size:
            idx = np.random.default_rng(seed).choice(len(e), max_size, replace=False)
            e = e[torch.from_numpy(np.sort(idx))]
        mean = e.mean(0)
        std = e.std(0).clamp_min(1e-6)
        return cls(memory=(e - mean) / std, mean=mean, std=std, level=int(level), k=int(k))

    # -- scoring -------------------------------------------------------------------
    def to(self, device: torch.device | str) -> FeatureBank:
        """A copy on ``device`` (float32)."""
        return FeatureBank(
            memory=self.memory.to(device, torch.float32),
            mean=self.mean.to(device, torch.float32),
            std=self.std.to(device, torch.float32),
            level=self.level,
            k=self.k,
        )

    def embed(self, fmap: torch.Tensor) -> torch.Tensor:
        """``(N, D)`` float32 standardised embeddings of encoder maps at :attr:`level`:
        what the k-NN compares (and the projected-threat head reads)."""
        return (pool(fmap) - self.mean.to(fmap.device)) / self.std.to(fmap.device)

    def score(self, fmap: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        """Mean distance of each window's embedding to its ``k`` nearest memory rows.

        Args:
            fmap: ``(N, C, h, w)`` encoder feature maps at :attr:`level`.

        Returns:
            ``(N,)`` float32 scores (higher = less like any normal window).
        """
        return self.score_embedded(self.embed(fmap), chunk)

    def score_embedded(self, q: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        """:meth:`score` of embeddings already made by :meth:`embed` (``(N, D)``)."""
        mem_t, mem_sq = self._search_form(q.device)
        k = min(self.k, mem_t.shape[1])
        out = []
        for i in range(0, len(q), chunk):
            qi = q[i : i + chunk]
            # |q - m|^2 = |q|^2 + |m|^2 - 2 q.m as one matmul (~2x faster than cdist here);
            # the k smallest are selected on squared distances, rooted afterwards.
            d2 = torch.addmm(mem_sq[None, :], qi, mem_t, alpha=-2.0)
            d2 += (qi * qi).sum(dim=1, keepdim=True)
            near = d2.topk(k, dim=1, largest=False).values.clamp_min_(0.0).sqrt_()
            out.append(near.mean(dim=1))
        return torch.cat(out) if out else q.new_zeros(0)

    def _search_form(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The memory transposed ``(D, M)`` and its squared norms ``(M,)`` on ``device``,
        made once per device (the memory never changes after fitting)."""
        key = str(device)
        if key not in self._search:
            mem = self.memory.to(device, torch.float32)
            self._search[key] = (mem.t().contiguous(), (mem * mem).sum(dim=1))
        return self._search[key]

    # -- storage -------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """Tensors for the bundle's safetensors file (float32)."""
        return {
            f"{PREFIX}memory": self.memory.float().contiguous(),
            f"{PREFIX}mean": self.mean.float().contiguous(),
            f"{PREFIX}std": self.std.float().contiguous(),
        }

    def params(self) -> dict[str, int]:
        """JSON settings stored with the score spec."""
        return {"level": self.level, "k": self.k}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], params: dict) -> FeatureBank:
        """Rebuild from :meth:`tensors` + :meth:`params`, validating shapes and values.

        Raises:
            ConfigError: missing or inconsistent tensors.
        """
        try:
            mem = tensors[f"{PREFIX}memory"].float()
            mean = tensors[f"{PREFIX}mean"].float()
            std = tensors[f"{PREFIX}std"].float()
            level, k = int(params.get("level", 2)), int(params.get("k", 5))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"feature bank incomplete: {exc!r}") from None
        if mem.ndim != 2 or mean.shape != (mem.shape[1],) or std.shape != mean.shape:
            raise ConfigError(
                f"feature bank shapes do not fit: memory {tuple(mem.shape)}, "
                f"mean {tuple(mean.shape)}, std {tuple(std.shape)}"
            )
        if len(mem) < 1 or not (1 <= k) or level < 1:
            raise ConfigError(
                f"feature bank settings invalid (rows {len(mem)}, k {k}, level {level})"
            )
        if not (torch.isfinite(mem).all() and torch.isfinite(mean).all() and (std > 0).all()):
            raise ConfigError("feature bank contains NaN / Inf or non-positive std")
        return cls(memory=mem, mean=mean, std=std, level=level, k=k)
