"""CPU fast path: convolutions with their activation fused by oneDNN post-ops.

Eager PyTorch runs a conv and the LeakyReLU / ReLU / Tanh after it as two passes over
memory; on the 2-core AMX development CPU those activation passes were ~16 % of the
generator's time (``torch.profiler``, ngf 64, bf16, batch 128). oneDNN can apply the
activation inside the conv ("post-op"), and can use weights re-ordered once into its
blocked layout instead of on every call. ``torch.compile`` does the same on CPU; this
gives the eager engine (no compile start-up) that gain too.

The ops used (``torch.ops.mkldnn._convolution_pointwise`` and the transpose variant)
are the ones inductor itself emits, but they are not a public API. So the fused module
is only ever used after :func:`verify` has compared it with the plain module on a real
batch; any exception or mismatch leaves the engine on the plain path.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from xrayscreen.inference.seq_rewrite import rewrite_sequentials

_ACTS = (nn.LeakyReLU, nn.ReLU, nn.Tanh)


def available() -> bool:
    """True when this torch build has oneDNN and the fused conv ops."""
    try:
        return bool(
            torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
            and hasattr(torch.ops.mkldnn, "_convolution_transpose_pointwise")
        )
    except (AttributeError, RuntimeError):
        return False


class FusedConv(nn.Module):
    """One Conv2d / ConvTranspose2d (+ optional activation) as a single oneDNN call.

    Args:
        conv: The (batch-norm-folded, unparametrised) convolution.
        act: The activation that followed it, or ``None``.
        prepack: Re-order the weight once into oneDNN's blocked layout.
    """

    def __init__(
        self, conv: nn.Conv2d | nn.ConvTranspose2d, act: nn.Module | None, *, prepack: bool = True
    ) -> None:
        super().__init__()
        self.transpose = isinstance(conv, nn.ConvTranspose2d)
        self.padding = list(conv.padding)
        self.stride = list(conv.stride)
        self.dilation = list(conv.dilation)
        self.groups = int(conv.groups)
        self.output_padding = list(conv.output_padding) if self.transpose else []
        if act is None:
            self.attr, self.scalars = "none", []
        elif isinstance(act, nn.LeakyReLU):
            self.attr, self.scalars = "leaky_relu", [float(act.negative_slope)]
        elif isinstance(act, nn.ReLU):
            self.attr, self.scalars = "relu", []
        elif isinstance(act, nn.Tanh):
            self.attr, self.scalars = "tanh", []
        else:  # pragma: no cover - callers only pass _ACTS
            raise ValueError(f"unsupported activation {type(act).__name__}")
        w = conv.weight.detach()
        if prepack:
            if self.transpose:
                w = torch.ops.mkldnn._reorder_convolution_transpose_weight(
                    w, self.padding, self.output_padding, self.stride, self.dilation, self.groups
                )
            else:
                w = torch.ops.mkldnn._reorder_convolution_weight(
                    w, self.padding, self.stride, self.dilation, self.groups
                )
        # Plain attributes, not buffers: a prepacked (opaque) tensor must never be moved,
        # cast or saved; the fused module lives only inside one engine.
        self.weight = w
        self.bias = None if conv.bias is None else conv.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transpose:
            return torch.ops.mkldnn._convolution_transpose_pointwise(
                x,
                self.weight,
                self.bias,
                self.padding,
                self.output_padding,
                self.stride,
                self.dilation,
                self.groups,
                self.attr,
                self.scalars,
                "",
            )
        return torch.ops.mkldnn._convolution_pointwise(
            x,
            self.weight,
            self.bias,
            self.padding,
            self.stride,
            self.dilation,
            self.groups,
            self.attr,
            self.scalars,
            "",
        )


def _plain_conv(m: nn.Module) -> bool:
    return isinstance(
        m, nn.Conv2d | nn.ConvTranspose2d
    ) and not nn.utils.parametrize.is_parametrized(m)


def fuse_conv_activations(module: nn.Module, *, prepack: bool = True) -> nn.Module:
    """A copy of ``module`` with every conv (+ following activation) inside an
    ``nn.Sequential`` replaced by a :class:`FusedConv`. The input is not modified."""

    def rule(m: nn.Module, nxt: nn.Module | None) -> tuple[nn.Module, int] | None:
        if not _plain_conv(m):
            return None
        act = nxt if isinstance(nxt, _ACTS) else None
        return FusedConv(m, act, prepack=prepack), 2 if act is not None else 1

    return rewrite_sequentials(copy.deepcopy(module), rule)


def verify(plain: nn.Module, fused: nn.Module, x: torch.Tensor, *, tol: float) -> float:
    """Largest difference between the two modules' outputs on ``x``, relative to each
    output's magnitude (``max|a - b| / max(1, max|a|)``).

    Raises:
        AssertionError: when any output differs by more than ``tol`` or changes shape.
    """
    with torch.inference_mode():
        a = plain(x)
        b = fused(x)
    worst = 0.0
    for u, v in zip(a, b, strict=True):
        if u.shape != v.shape:
            raise AssertionError(f"fused output shape {tuple(v.shape)} != {tuple(u.shape)}")
        scale = max(1.0, float(u.float().abs().max()))
        d = float((u.float() - v.float()).abs().max()) / scale
        if not d <= tol:  # also catches NaN
            raise AssertionError(f"fused output differs by {d:g} (> {tol:g})")
        worst = max(worst, d)
    return worst
