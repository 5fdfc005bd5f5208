"""A window head trained on threats projected into the normal training bags (issue 7).

GANomaly's feature memory (:mod:`.feature_bank`) only knows what normal looks like; a
thin, lightly attenuating blade is ordinary enough in that space to be missed. Airports
keep screeners sharp by projecting stored threat images into live bags (threat image
projection, TIP; :mod:`xrayscreen.imaging.tip`). At training time the product does the
same with its own simulated threats on the *normal* training bags and fits, per view
(working scale, zoomed-out), a small MLP on the memory's standardised embedding of each
window: projected-threat windows against the bags' own threat-free windows. No real
threat is ever read. At score time the head's logit is one more piece of per-window
evidence beside GANomaly's (:mod:`xrayscreen.inference.tip_evidence`).

The head is plain tensors so the bundle stays safetensors + JSON: for V views,
``w1 (V, H, D)``, ``b1 (V, H)``, ``w2 (V, H)``, ``b2 (V,)``; logit =
``w2 . relu(w1 q + b1) + b2`` on the embedding ``q`` (``(pool(G_E map) - mean) / std``
of the bundle's feature memory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from xrayscreen.errors import ConfigError

PREFIX = "tiphead."
#: Tensor-name prefix of the convolutional head (:class:`ConvTipHead`).
CONV_PREFIX = "tipconv."
#: Views a head is fitted for, in column order: the working scale, then the zoomed-out one.
VIEWS = ("window", "zoomed")
_NAMES = ("w1", "b1", "w2", "b2")


def input_dim(memory_dim: int, cells: int, cell_max: bool = False) -> int:
    """Width of the head's input: the memory's embedding (``2C`` wide: mean and max of
    ``C`` channels), plus ``C`` per grid cell when ``cells`` > 0 (``2C`` with ``cell_max``)."""
    if cells <= 0:
        return memory_dim
    return memory_dim + (memory_dim // 2) * cells * cells * (2 if cell_max else 1)


def head_input(
    embedding: torch.Tensor,
    fmap: torch.Tensor,
    cells: int,
    cell_max: bool = False,
    conv: int = 0,
) -> torch.Tensor:
    """What the head reads: the memory's standardised embedding and, with ``cells`` > 0,
    the encoder map averaged over a ``cells`` x ``cells`` grid of the window -- the pooled
    embedding forgets WHERE the encoder fires, and a thin blade along a tube pools like the
    tube (issue 7, tenth session) -- and, with ``cell_max``, the same cells' maxima too
    (an average over a cell still dilutes a blade a few pixels wide; eleventh session).
    The grid's own standardisation is folded into the head's first layer when it is fitted.

    Args:
        embedding: ``(N, D)`` the memory's embedding of the windows.
        fmap: ``(N, C, h, w)`` the encoder map it was pooled from.
        cells: Grid side (0 = the embedding alone).
        cell_max: Also each cell's maximum (only with ``cells`` > 0).
        conv: With ``conv`` > 0 the head is a :class:`ConvTipHead` and reads the encoder
            map itself, max-pooled to ``conv`` x ``conv`` positions (``(N, C, conv,
            conv)``; the max keeps a blade a few pixels wide that an average dilutes).
    """
    if conv > 0:
        return F.adaptive_max_pool2d(fmap.float(), conv).to(embedding.device)
    if cells <= 0:
        return embedding
    f = fmap.float()
    parts = [embedding.float(), F.adaptive_avg_pool2d(f, cells).flatten(1).to(embedding.device)]
    if cell_max:
        parts.append(F.adaptive_max_pool2d(f, cells).flatten(1).to(embedding.device))
    return torch.cat(parts, dim=1)


_H = TypeVar("_H", bound="_StackedHead")


@dataclass
class _StackedHead:
    """What both heads share: four tensors ``w1, b1, w2, b2`` with the views first,
    stored in the bundle under the class's :attr:`prefix`."""

    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor

    prefix: ClassVar[str] = PREFIX

    @property
    def views(self) -> int:
        """Number of views (columns of ``logits``)."""
        return int(self.w1.shape[0])

    @property
    def dim(self) -> int:
        """Width of what the head reads: the embedding's dimension (MLP), the encoder
        map's channels (convolution)."""
        return int(self.w1.shape[2])

    def _key(self) -> tuple[int, ...]:
        """What heads must share to be averaged."""
        return self.views, self.dim

    @classmethod
    def average(cls: type[_H], heads: list[_H]) -> _H:
        """One head whose logit is the mean of ``heads``' logits, per view: their hidden
        units side by side, the output weights divided by their number (stored in the
        same format, at the cost of a wider hidden layer). For a convolutional head the
        mean is taken over the per-position logits, before they are pooled.

        Raises:
            ConfigError: for no heads, or heads of other views or input widths.
        """
        if not heads or any(h._key() != heads[0]._key() for h in heads):
            raise ConfigError("only heads of the same views and input width can be averaged")
        n = len(heads)
        return cls(
            w1=torch.cat([h.w1 for h in heads], dim=1),
            b1=torch.cat([h.b1 for h in heads], dim=1),
            w2=torch.cat([h.w2 for h in heads], dim=1) / n,
            b2=torch.stack([h.b2 for h in heads]).mean(dim=0),
        )

    def to(self: _H, device: torch.device | str) -> _H:
        """A float32 copy on ``device``."""
        return type(self)(*(getattr(self, n).to(device, torch.float32) for n in _NAMES))

    # -- storage -------------------------------------------------------------------
    def tensors(self, half: bool = False) -> dict[str, torch.Tensor]:
        """Tensors for the bundle's safetensors file: float32, or float16 with ``half``
        (a tensor float16 cannot hold stays float32; loaded back as float32)."""
        return {f"{self.prefix}{n}": _stored(getattr(self, n), half) for n in _NAMES}

    def as_stored(self: _H, half: bool) -> _H:
        """The head as :meth:`tensors` will store it, back in float32: what a bundle saved
        with float16 weights scores with, so its calibration can be fitted on it."""
        return type(self)(*(_stored(getattr(self, n), half).float() for n in _NAMES))

    @classmethod
    def _read(cls, tensors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The four tensors from a bundle's, checked for presence, fit and finiteness
        (the caller checks ``w1``'s shape first).

        Raises:
            ConfigError: missing, inconsistent or non-finite tensors.
        """
        try:
            return tuple(tensors[f"{cls.prefix}{n}"].float() for n in _NAMES)
        except KeyError as exc:
            raise ConfigError(f"TIP head incomplete: {exc.args[0]} missing") from None

    @staticmethod
    def _check(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> None:
        v, h = w1.shape[:2]
        if b1.shape != (v, h) or w2.shape != (v, h) or b2.shape != (v,):
            raise ConfigError("TIP head shapes do not fit together")
        if not all(torch.isfinite(t).all() for t in (w1, b1, w2, b2)):
            raise ConfigError("TIP head contains NaN / Inf")

    @classmethod
    def present(cls, tensors: dict[str, torch.Tensor]) -> bool:
        """Whether a bundle's tensors hold a head of this kind."""
        return any(k.startswith(cls.prefix) for k in tensors)


@dataclass
class TipHead(_StackedHead):
    """One small MLP per view on feature-memory embeddings.

    Attributes:
        w1: ``(V, H, D)`` first-layer weights.
        b1: ``(V, H)`` first-layer biases.
        w2: ``(V, H)`` output weights.
        b2: ``(V,)`` output biases.
    """

    @classmethod
    def from_modules(cls, nets: list[nn.Sequential]) -> TipHead:
        """Stack trained ``Linear(D, H) -> ReLU -> [Dropout] -> Linear(H, 1)`` nets, one per view.

        Raises:
            ConfigError: for nets of another shape.
        """
        lin = [[m for m in net if isinstance(m, nn.Linear)] for net in nets]
        if not lin or any(len(ls) != 2 or ls[1].out_features != 1 for ls in lin):
            raise ConfigError("a TIP head is Linear(D, H) -> ReLU -> Linear(H, 1) per view")
        with torch.no_grad():
            return cls(
                w1=torch.stack([ls[0].weight.detach().float().cpu() for ls in lin]),
                b1=torch.stack([ls[0].bias.detach().float().cpu() for ls in lin]),
                w2=torch.stack([ls[1].weight.detach().float().cpu()[0] for ls in lin]),
                b2=torch.stack([ls[1].bias.detach().float().cpu()[0] for ls in lin]),
            )

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        """``(N, V)`` float32 logits of standardised embeddings ``(N, D)``, every view's head.

        Cheap next to the generator (two small matmuls per view), so every window gets
        every view's logit and the caller keeps the column of the view it scored.
        """
        q = emb.float()  # on the head's device (:meth:`to`)
        h = torch.relu(torch.einsum("nd,vhd->vnh", q, self.w1) + self.b1[:, None])
        return torch.einsum("vnh,vh->nv", h, self.w2) + self.b2

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], dim: int) -> TipHead:
        """Rebuild from :meth:`tensors`, checking shapes against ``dim``, the input width
        the score's settings imply (:func:`input_dim`).

        Raises:
            ConfigError: missing, inconsistent or non-finite tensors.
        """
        w1, b1, w2, b2 = cls._read(tensors)
        if w1.ndim != 3 or w1.shape[0] != len(VIEWS) or w1.shape[2] != dim:
            raise ConfigError(
                f"TIP head weights {tuple(w1.shape)} do not fit {len(VIEWS)} views of "
                f"{dim}-dimensional inputs"
            )
        cls._check(w1, b1, w2, b2)
        return cls(w1=w1, b1=b1, w2=w2, b2=b2)


@dataclass
class ConvTipHead(_StackedHead):
    """One small convolutional head per view on the encoder map (issue 7, twelfth session).

    The MLP heads read a fixed grid of the window, so a blade in the window's top-left cell
    and the same blade in its centre are different inputs, each learnt from its own
    projected examples. This head scores every position of the (max-pooled) encoder map
    with the same small detector -- a ``k`` x ``k`` convolution (no padding, so the
    standardisation the fit used folds exactly into it), ReLU, a 1 x 1 output -- and
    reads the window's logit as the log-sum-exp over positions (a soft "a threat is
    somewhere in this window"; its gradient reaches every position, unlike a hard max).

    Attributes:
        w1: ``(V, H, C, k, k)`` convolution weights.
        b1: ``(V, H)`` convolution biases.
        w2: ``(V, H)`` 1 x 1 output weights.
        b2: ``(V,)`` output biases.
    """

    prefix: ClassVar[str] = CONV_PREFIX

    @property
    def kernel(self) -> int:
        """Side of the convolution."""
        return int(self.w1.shape[3])

    def _key(self) -> tuple[int, ...]:
        return self.views, self.dim, self.kernel

    def position_logits(self, fmap: torch.Tensor) -> torch.Tensor:
        """``(V, N, h', w')`` per-position logits of a pooled encoder map ``(N, C, h, w)``
        (``h' = h - k + 1``): each view's detector at every position."""
        x = fmap.float()
        out = []
        for v in range(self.views):
            hid = torch.relu(F.conv2d(x, self.w1[v], self.b1[v]))
            out.append(torch.einsum("nhyx,h->nyx", hid, self.w2[v]) + self.b2[v])
        return torch.stack(out)

    def logits(self, fmap: torch.Tensor) -> torch.Tensor:
        """``(N, V)`` float32 window logits: log-sum-exp of :meth:`position_logits` over
        the positions, minus the log of their number (a constant: an all-equal map gives
        its value back)."""
        pos = self.position_logits(fmap).flatten(2)
        return (torch.logsumexp(pos, dim=2) - math.log(pos.shape[2])).T

    @classmethod
    def from_modules(cls, nets: list[nn.Sequential]) -> ConvTipHead:
        """Stack trained ``Conv2d(C, H, k) -> ReLU -> [Dropout] -> Conv2d(H, 1, 1)`` nets,
        one per view.

        Raises:
            ConfigError: for nets of another shape.
        """
        convs = [[m for m in net if isinstance(m, nn.Conv2d)] for net in nets]
        if not convs or any(
            len(cs) != 2 or cs[1].out_channels != 1 or cs[1].kernel_size != (1, 1) for cs in convs
        ):
            raise ConfigError(
                "a convolutional TIP head is Conv2d(C, H, k) -> ReLU -> Conv2d(H, 1, 1)"
            )
        with torch.no_grad():
            return cls(
                w1=torch.stack([cs[0].weight.detach().float().cpu() for cs in convs]),
                b1=torch.stack([cs[0].bias.detach().float().cpu() for cs in convs]),
                w2=torch.stack([cs[1].weight.detach().float().cpu().flatten() for cs in convs]),
                b2=torch.stack([cs[1].bias.detach().float().cpu()[0] for cs in convs]),
            )

    @classmethod
    def from_tensors(
        cls, tensors: dict[str, torch.Tensor], channels: int, side: int
    ) -> ConvTipHead:
        """Rebuild from :meth:`tensors`, checking the shapes against the encoder map's
        ``channels`` and the pooled map's ``side`` (the kernel must fit inside it).

        Raises:
            ConfigError: missing, inconsistent or non-finite tensors.
        """
        w1, b1, w2, b2 = cls._read(tensors)
        if (
            w1.ndim != 5
            or w1.shape[0] != len(VIEWS)
            or w1.shape[2] != channels
            or w1.shape[3] != w1.shape[4]
            or not 1 <= w1.shape[3] <= side
        ):
            raise ConfigError(
                f"convolutional TIP head weights {tuple(w1.shape)} do not fit {len(VIEWS)} "
                f"views of a {channels}-channel map pooled to {side} x {side}"
            )
        cls._check(w1, b1, w2, b2)
        return cls(w1=w1, b1=b1, w2=w2, b2=b2)


def _stored(t: torch.Tensor, half: bool) -> torch.Tensor:
    t = t.detach().float().contiguous()
    if half:
        h = t.half()
        if torch.isfinite(h).all():
            return h
    return t
