"""The scoring engine: a scan in, window scores and per-pixel heat maps out.

Pipeline (one scan):

1. Resample the scan to the bundle's working scale once (uint8 RGB, plus the raw
   energies when the representation needs them); the uint8 RGB goes to the device
   ONCE (3 bytes a pixel).
2. Empty-belt mask for every window (shared rule of :mod:`windows`); background
   windows never reach the model and get the minimum calibrated score.
3. The image is processed in horizontal strips of window rows (one strip for
   ordinary bags; several for huge scans, so memory stays bounded). Each strip is
   converted to the model input on the device (:func:`model_input_from_rgb`; raw
   dual-energy input is converted on the host with :func:`model_input` and uploaded
   strip by strip), padded with air, and its foreground windows are gathered on the
   device straight into channels-last batches.
4. Batched forward of G_E -> G_D -> E (eval, inference mode, batch-norm folded
   into the convolutions, channels-last, bf16 where the hardware has bf16 units:
   bf16 weights on CPU, autocast on CUDA), per-window score by the bundle's score
   kind, reconstruction residual accumulated into a per-pixel sum on the device.
5. Raw scores -> calibrated units on the device, folded into a per-pixel map
   (box filter when the stride divides the window), copied to the host once.

Because strips cover whole window rows and every window is scored exactly once,
the result does not depend on the strip height (tested).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from xrayscreen.errors import ConfigError
from xrayscreen.imaging.representation import (
    RGB_REPRESENTATIONS,
    channels_of,
    model_input,
    model_input_from_rgb,
    resize,
)
from xrayscreen.imaging.scan import Scan, ScanKind
from xrayscreen.inference import density, onednn, score_kinds, tip_evidence, zoom
from xrayscreen.inference.results import ScanResult, ScoreProgress, WindowOutputs
from xrayscreen.inference.seq_rewrite import rewrite_sequentials
from xrayscreen.inference.windows import (
    WindowGrid,
    axis_counts,
    belt_mask,
    fold_max,
    fold_mean,
    fold_separable,
    pad_to_grid,
    pad_with_air,
)
from xrayscreen.model import feature_bank, tip_head
from xrayscreen.model.ganomaly import GeneratorOutput
from xrayscreen.model.score import discriminator_feature_residual

__all__ = [
    "ScanResult",
    "ScoreProgress",
    "ScoringEngine",
    "WindowOutputs",
    "autocast_dtype",
    "cpu_has_bf16",
    "score_scan",
    "score_scan_sync",
]

# Measured on the 2-core AMX CPU (bf16 weights): 64-128 beat 256 by ~15-20 % (the
# activations of a 128 batch stay in cache), 512 is slower still.
CPU_DEFAULT_BATCH = 128
STRIP_WINDOWS = 8192  # at most this many windows per strip ...
STRIP_PIXELS = 4_000_000  # ... and about this many padded pixels (~48 MB of fp32 RGB input)
Cancel = threading.Event | Callable[[], bool] | None


# ------------------------------------------------------------------ device helpers
@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when this CPU has bf16 units (AMX or AVX512-BF16) that oneDNN uses."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # older torch: read the flags ourselves
        try:
            with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
                flags = fh.read()
        except OSError:
            return False
        return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA when available, else CPU. Raises ConfigError for CUDA without one."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but no CUDA GPU is available")
    return dev


def autocast_dtype(device: torch.device, autocast: str | bool | None) -> torch.dtype | None:
    """The dtype ``autocast`` asks for on ``device`` (``None`` = float32). ``"auto"`` /
    ``True``: bf16 where the device has bf16 units (a CPU with AMX or AVX512-BF16, a CUDA
    GPU that supports it), float16 on other CUDA GPUs, float32 elsewhere. Training reads
    the same rule (``xrayscreen.training.loop.resolve_bf16``)."""
    if autocast in (False, None, "off", "fp32", "float32"):
        return None
    if autocast in ("bf16", "bfloat16"):
        return torch.bfloat16
    if autocast in ("fp16", "float16"):
        return torch.float16
    if autocast not in ("auto", True):
        raise ConfigError(f"autocast must be 'auto', 'bf16', 'fp16' or 'off', got {autocast!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return None


def fuse_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d that directly follows a conv inside an
    ``nn.Sequential`` into that conv (in place). Saves a full memory pass per layer."""

    def rule(m: nn.Module, nxt: nn.Module | None) -> tuple[nn.Module, int] | None:
        if (
            isinstance(m, nn.Conv2d | nn.ConvTranspose2d)
            and isinstance(nxt, nn.BatchNorm2d)
            and not nn.utils.parametrize.is_parametrized(m)
            and nxt.track_running_stats
        ):
            return fuse_conv_bn_eval(m, nxt, transpose=isinstance(m, nn.ConvTranspose2d)), 2
        return None

    return rewrite_sequentials(module, rule)


class _ConvAsLinear(nn.Module):
    """A stride-1, unpadded Conv2d whose kernel covers the whole input (the encoder's
    last 4x4 -> 1x1 conv) computed as one matmul; oneDNN's conv kernels are ~10x
    slower on that shape. Falls back to the conv for any other input size."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        kh, kw = conv.kernel_size
        # (kh, kw, cin) row order matches a channels-last input flattened per sample.
        w = conv.weight.detach().permute(2, 3, 1, 0).reshape(kh * kw * conv.in_channels, -1)
        self.register_buffer("w", w.contiguous())
        self.register_buffer("b", None if conv.bias is None else conv.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != tuple(self.conv.kernel_size):
            return self.conv(x)
        flat = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        y = flat @ self.w
        if self.b is not None:
            y = y + self.b
        return y[:, :, None, None]


class _LinearAsConvTranspose(nn.Module):
    """A stride-1, unpadded ConvTranspose2d on a 1x1 input (the decoder's nz -> 4x4
    layer) computed as one matmul, output channels-last. Falls back otherwise."""

    def __init__(self, deconv: nn.ConvTranspose2d) -> None:
        super().__init__()
        self.deconv = deconv
        kh, kw = deconv.kernel_size
        # (cin, cout, kh, kw) -> (cin, kh * kw * cout): output rows come out NHWC.
        w = deconv.weight.detach().permute(0, 2, 3, 1).reshape(deconv.in_channels, -1)
        self.register_buffer("w", w.contiguous())
        self.register_buffer("b", None if deconv.bias is None else deconv.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (1, 1):
            return self.deconv(x)
        kh, kw = self.deconv.kernel_size
        y = x.reshape(x.shape[0], -1) @ self.w
        y = y.reshape(x.shape[0], kh, kw, -1)
        if self.b is not None:
            y = y + self.b
        return y.permute(0, 3, 1, 2)  # NCHW shape, channels-last memory


def matmul_whole_kernel_convs(module: nn.Module) -> nn.Module:
    """Swap convs that are really matmuls (kernel = whole input) for matmul modules, in
    place. Exact up to rounding; each swapped module checks its input size at run time."""
    for name, child in list(module.named_children()):
        plain = (
            not nn.utils.parametrize.is_parametrized(child)
            if isinstance(child, nn.Conv2d | nn.ConvTranspose2d)
            else False
        )
        if (
            plain
            and isinstance(child, nn.Conv2d)
            and child.stride == (1, 1)
            and child.padding == (0, 0)
            and child.dilation == (1, 1)
            and child.groups == 1
            and child.kernel_size[0] * child.kernel_size[1] > 1
        ):
            setattr(module, name, _ConvAsLinear(child))
        elif (
            plain
            and isinstance(child, nn.ConvTranspose2d)
            and child.stride == (1, 1)
            and child.padding == (0, 0)
            and child.output_padding == (0, 0)
            and child.dilation == (1, 1)
            and child.groups == 1
        ):
            setattr(module, name, _LinearAsConvTranspose(child))
        else:
            matmul_whole_kernel_convs(child)
    return module


def _try_onednn(
    gen: nn.Module, bundle: Any, dtype: torch.dtype | None
) -> tuple[nn.Module, bool | str]:
    """The oneDNN-fused copy of ``gen`` if it builds and matches ``gen`` on a random
    batch; otherwise ``gen`` and the reason (kept for :meth:`ScoringEngine.describe`)."""
    if not onednn.available():
        return gen, "unavailable"
    if not any(isinstance(m, nn.Conv2d | nn.ConvTranspose2d) for m in gen.modules()):
        return gen, "nothing to fuse"
    try:
        fused = onednn.fuse_conv_activations(gen)
        c = bundle.config
        g = torch.Generator().manual_seed(0)
        x = torch.rand(8, c.nc, c.isize, c.isize, generator=g) * 2 - 1
        x = x.to(dtype or torch.float32).contiguous(memory_format=torch.channels_last)
        # bf16 rounds each layer's output to 8 bits of mantissa; either path may round
        # differently, so the bar is a few bf16 ulps of the output's range.
        onednn.verify(gen, fused, x, tol=3e-2 if dtype == torch.bfloat16 else 1e-3)
    except Exception as exc:  # any failure means "use the plain path"
        return gen, f"fallback: {type(exc).__name__}: {exc}"[:200]
    return fused, True


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in msg or "can't allocate memory" in msg
    )


def _cancelled(cancel: Cancel) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


@functools.lru_cache(maxsize=8)
def air_value(representation: str) -> tuple[float, ...]:
    """Model-input value of air (transmission 1 / white) per channel, for padding."""
    white = np.full((1, 1, 3), 255, np.uint8)
    raw = np.ones((2, 1, 1), np.float32)
    scan = Scan(rgb=white, kind=ScanKind.DUAL_ENERGY, raw=raw, sha256="air")
    return tuple(float(v) for v in model_input(scan, representation, None)[:, 0, 0])


# ------------------------------------------------------------------ the engine
class ScoringEngine:
    """A bundle's generator prepared for fast scoring on one device.

    Args:
        bundle: A :class:`~xrayscreen.model.bundle.ModelBundle`. Its generator is
            copied (the bundle's own module is not modified or moved).
        device: ``"cpu"``, ``"cuda"``, ... ; ``None`` picks CUDA when available.
        batch: Windows per forward; ``None`` picks one (free memory on CUDA,
            :data:`CPU_DEFAULT_BATCH` on CPU). Halved automatically on out-of-memory.
        compile: ``torch.compile`` the generator (pays back only over many scans).
        autocast: ``"auto"`` (bf16 on CUDA / bf16-capable CPUs, else fp32), ``"bf16"``,
            ``"fp16"`` or ``"off"``.
        fuse_bn: Fold batch-norm into the convolutions and run the convs whose kernel
            covers the whole input (latent <-> 4x4) as matmuls (exact up to rounding).
        fuse_act: On CPU without ``compile``, run each conv and its activation as one
            oneDNN call with pre-packed weights (:mod:`.onednn`); used only after it
            matched the plain module on a test batch, else the plain path runs.

    Attributes:
        fault: Test hook, called with the batch size before every forward; a test
            makes it raise ``torch.OutOfMemoryError`` to exercise the fallback.
        calls: Number of forward calls made; ``windows_seen`` windows through the model.
    """

    def __init__(
        self,
        bundle: Any,
        device: str | torch.device | None = None,
        *,
        batch: int | None = None,
        compile: bool = False,
        autocast: str | bool | None = "auto",
        fuse_bn: bool = True,
        fuse_act: bool = True,
    ) -> None:
        self.bundle = bundle
        self.device = resolve_device(device)
        self.dtype = autocast_dtype(self.device, autocast)
        t0 = time.perf_counter()
        gen = copy.deepcopy(bundle.generator).eval()
        if fuse_bn:
            gen = matmul_whole_kernel_convs(fuse_batchnorm(gen))
        gen = gen.to(self.device).to(memory_format=torch.channels_last)
        # On CPU, bf16 weights + bf16 input instead of autocast: autocast re-casts every
        # weight on every call. Measured on the bare generator at batch 128: +17 % eager,
        # +8 % compiled (within noise at batch 256). Autocast also ran the convs in bf16.
        cpu_bf16 = self.device.type == "cpu" and self.dtype == torch.bfloat16
        self._cast_dtype = torch.bfloat16 if cpu_bf16 else None
        if self._cast_dtype is not None:
            gen = gen.to(self._cast_dtype)
        for p in gen.parameters():
            p.requires_grad_(False)
        self.generator: nn.Module = gen
        self._forward_module: nn.Module = gen
        self.compiled = False
        if compile:
            # Freezing lets inductor constant-fold the (inference-only) weights and
            # pre-pack them for oneDNN on CPU; static shapes (batches are padded to
            # the batch size, see _forward) avoid recompiling for the last batch.
            opts = {"freezing": True} if self.device.type == "cpu" else None
            self._forward_module = torch.compile(gen, dynamic=False, options=opts)
            self.compiled = True
        self.onednn_fused: bool | str = False
        if fuse_act and fuse_bn and not compile and self.device.type == "cpu":
            self._forward_module, self.onednn_fused = _try_onednn(gen, bundle, self._cast_dtype)
        self.window = int(bundle.input.window)
        self.channels = channels_of(bundle.input.representation)
        self.batch = int(batch) if batch else self._default_batch()
        if self.batch < 1:
            raise ConfigError(f"batch must be >= 1, got {batch}")
        self.fault: Callable[[int], None] | None = None
        self.calls = 0
        self.windows_seen = 0
        self.forward_s = 0.0  # cumulative seconds inside the model (incl. score kind)
        self._bank = None
        self._tap: list[torch.Tensor] = []
        self._tap_hook = None
        if score_kinds.needs_features(bundle.score):
            self._setup_feature_tap()
        if zoom.enabled(bundle.score):  # refuse a malformed zoomed view before any scan
            zoom.weight_of(bundle.score)
            zoom.mix_of(bundle.score)
        self._density = density.enabled(bundle.score)  # a bad weight is refused here too
        self._head = None
        self._head_cells = 0
        self._head_cell_max = False
        self._head_conv = 0
        if tip_evidence.enabled(bundle.score):
            if bundle.tip_head is None or self._bank is None:
                raise ConfigError(
                    "this model's score adds a projected-threat head, but the bundle has no "
                    "head or no feature memory for it to read"
                )
            self._head = bundle.tip_head.to(self.device)
            self._head_cells = tip_evidence.cells_of(bundle.score)
            self._head_cell_max = tip_evidence.cell_max_of(bundle.score)
            self._head_conv = tip_evidence.conv_of(bundle.score)
        self._dfeat: nn.Module | None = None
        if score_kinds.needs_discriminator(bundle.score):
            self._setup_discriminator()
        self.startup_s = time.perf_counter() - t0
        cal = bundle.calibration
        self._bg_raw = float(cal.values[0]) if cal is not None else 0.0
        # "+ 0.0" turns the -0.0 of -log10(1) into 0.0.
        self._bg_cal = (
            float(np.asarray(cal.calibrate(np.array([self._bg_raw])))[0]) + 0.0 if cal else 0.0
        )

    # -- configuration ---------------------------------------------------------------
    def _setup_feature_tap(self) -> None:
        """For ``feature_knn`` bundles: the bank on the device, and a forward hook that
        keeps G_E's feature map at the bank's level from the model's own forward (no
        second pass). A compiled module is not hooked; its map is recomputed instead."""
        bank = self.bundle.feature_bank
        if bank is None:
            raise ConfigError("this model's score kind is 'feature_knn' but it has no feature bank")
        self._bank = bank.to(self.device)
        if not self.compiled:
            body = feature_bank.encoder_body(self._forward_module)
            tap = body[feature_bank.tap_index(body, bank.level)]
            self._tap_hook = tap.register_forward_hook(lambda _m, _inp, out: self._tap.append(out))
        else:  # recomputed per batch: check now that the generator has the level
            feature_bank.tap_index(feature_bank.encoder_body(self.generator), bank.level)

    def _setup_discriminator(self) -> None:
        """For scores with a discriminator-feature part: D's feature extractor on the
        device, eval mode, in the generator's precision (its output is the model input's
        reconstruction, compared in the same dtype)."""
        disc = self.bundle.discriminator
        if disc is None:
            raise ConfigError(
                "this model's score uses its discriminator's features, but the bundle was "
                "loaded without its discriminator"
            )
        feats = copy.deepcopy(disc.features).eval().to(self.device)
        feats = feats.to(memory_format=torch.channels_last)
        if self._cast_dtype is not None:
            feats = feats.to(self._cast_dtype)
        for p in feats.parameters():
            p.requires_grad_(False)
        self._dfeat = feats

    def _feature_context(self, xm: torch.Tensor, n: int) -> dict[str, Any] | None:
        if self._bank is None:
            return None
        if self._tap:
            fmap = self._tap[0][:n]  # the first hook call is G_E (encoder1)
        else:
            body = feature_bank.encoder_body(self.generator)
            fmap = feature_bank.encoder_map(body, xm[:n], self._bank.level)
        self._tap.clear()
        # The memory's embedding, once: the k-NN and the projected-threat head both read it.
        emb = self._bank.embed(fmap)
        ctx: dict[str, Any] = {"embedding": emb, "bank": self._bank}
        if self._head is not None:
            ctx["head_input"] = tip_head.head_input(
                emb, fmap, self._head_cells, self._head_cell_max, self._head_conv
            )
        return ctx

    def _default_batch(self) -> int:
        if self.device.type != "cuda":
            return CPU_DEFAULT_BATCH
        free, _total = torch.cuda.mem_get_info(self.device)
        # Peak activation estimate per window: the widest layer's output plus its input
        # (inference mode frees the rest), x3 margin for workspace and allocator slack.
        c = self.bundle.config
        elems = c.ngf * (c.isize // 2) ** 2 * 2 + c.nc * c.isize**2 * 4
        per_window = elems * 4 * 3
        b = int(free * 0.5 // max(per_window, 1))
        return int(2 ** int(np.clip(np.log2(max(b, 1)), 6, 15)))

    def warmup(self, batch: int | None = None) -> float:
        """Run one throw-away forward (kernel selection, compilation); returns seconds."""
        t = time.perf_counter()
        n = batch or min(self.batch, 64)
        x = torch.zeros(n, self.channels, self.window, self.window, device=self.device)
        calls, seen, fwd = self.calls, self.windows_seen, self.forward_s
        self._forward(x.contiguous(memory_format=torch.channels_last), True)
        self.calls, self.windows_seen, self.forward_s = calls, seen, fwd
        return time.perf_counter() - t

    def describe(self) -> dict[str, Any]:
        """Engine settings, for logs and benchmark JSON."""
        return {
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", "") if self.dtype else "float32",
            "batch": self.batch,
            "compiled": self.compiled,
            "onednn_fused": self.onednn_fused,
            "startup_s": round(self.startup_s, 4),
        }

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None or self._cast_dtype is not None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    # -- forward -----------------------------------------------------------------------
    def _forward(self, x: torch.Tensor, residual: bool) -> WindowOutputs:
        """One forward of an already-sized batch (no OOM handling here)."""
        if self.fault is not None:
            self.fault(int(x.shape[0]))
        self.calls += 1
        self.windows_seen += int(x.shape[0])
        t = time.perf_counter()
        n = int(x.shape[0])
        self._tap.clear()  # nothing left over from a forward that failed (e.g. OOM)
        with torch.inference_mode(), self._autocast():
            xm = x if self._cast_dtype is None else x.to(self._cast_dtype)
            if self.compiled:
                # One input kind for the compiled graph (its guards check strides and
                # inference-tensor-ness): a fresh channels-last inference tensor of the
                # compiled batch size, zero-padded; the extra rows are dropped.
                xin = xm.new_zeros((max(n, self.batch), *xm.shape[1:])).contiguous(
                    memory_format=torch.channels_last
                )
                xin[:n] = xm
                out = GeneratorOutput(*(o[:n] for o in self._forward_module(xin)))
            else:
                out = self._forward_module(xm)
            if self._cast_dtype is not None:  # score kinds get fp32 tensors
                out = GeneratorOutput(*(o.float() for o in out))
        with torch.inference_mode():
            ctx = self._feature_context(xm, n)
            if self._dfeat is not None:
                with self._autocast():
                    d = discriminator_feature_residual(self._dfeat, xm, out.x_hat.to(xm.dtype))
                ctx = {**(ctx or {}), "dfeat": d}
            head = None
            if self._head is not None and ctx is not None:
                # Every view's logit from the same embedding the k-NN reads: two small
                # matmuls; the caller keeps the column of the view it scored.
                head = self._head.logits(ctx["head_input"])
            score = score_kinds.compute(self.bundle.score, x, out, ctx)
            res = (x.float() - out.x_hat.float()).abs().mean(dim=1) if residual else None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.forward_s += time.perf_counter() - t
        return WindowOutputs(score, res, head)

    def _batches(
        self, n: int, get: Callable[[int, int], torch.Tensor], residual: bool
    ) -> Iterator[tuple[int, int, WindowOutputs]]:
        """Score items ``[0, n)`` in batches; yields ``(start, stop, outputs)``.

        ``get(start, stop)`` returns the input batch. On out-of-memory the batch is
        halved (and stays halved for later calls) and the same items are retried.
        """
        i = 0
        while i < n:
            j = min(n, i + self.batch)
            try:
                out = self._forward(get(i, j), residual)
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not _is_oom(exc) or self.batch == 1:
                    raise
                self.batch = max(1, self.batch // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            yield i, j, out
            i = j

    def score_windows(self, windows: torch.Tensor, *, residual: bool = True) -> WindowOutputs:
        """Score a stack of windows.

        Args:
            windows: ``(N, C, w, w)`` model input in [-1, 1], on any device.
            residual: Also return the per-pixel residual ``(N, w, w)``.

        Returns:
            :class:`WindowOutputs` on the engine's device (raw, uncalibrated scores).
        """
        if windows.dim() != 4 or windows.shape[1] != self.channels:
            raise ValueError(
                f"windows must be (N, {self.channels}, {self.window}, {self.window}), "
                f"got {tuple(windows.shape)}"
            )
        n = int(windows.shape[0])
        scores = torch.empty(n, dtype=torch.float32, device=self.device)
        res = (
            torch.empty(n, self.window, self.window, dtype=torch.float32, device=self.device)
            if residual
            else None
        )

        def get(i: int, j: int) -> torch.Tensor:
            xb = windows[i:j].to(self.device, torch.float32, non_blocking=True)
            return xb.contiguous(memory_format=torch.channels_last)

        head = None
        if self._head is not None:
            head = torch.empty(n, self._head.views, dtype=torch.float32, device=self.device)
        for i, j, out in self._batches(n, get, residual):
            scores[i:j] = out.latent
            if res is not None:
                res[i:j] = out.residual
            if head is not None:
                head[i:j] = out.head
        return WindowOutputs(scores, res, head)

    def embed_windows(
        self, windows: torch.Tensor, cells: int = 0, cell_max: bool = False, conv: int = 0
    ) -> torch.Tensor:
        """The feature memory's standardised embedding of each window (what the k-NN
        compares), from G_E's first layers only; with ``cells`` > 0 what a head reading
        that grid of the encoder map reads (:func:`~xrayscreen.model.tip_head.head_input`).

        Args:
            windows: ``(N, C, w, w)`` model input in [-1, 1], on any device.
            cells: Grid side of the head's input (0: the embedding alone).
            cell_max: The grid's cell maxima too.
            conv: Side of the max-pooled encoder map a convolutional head reads (0: an
                MLP head's input).

        Returns:
            ``(N, D)`` float32 on the engine's device (``D`` per
            :func:`~xrayscreen.model.tip_head.input_dim`); with ``conv``, ``(N, C, conv,
            conv)``.

        Raises:
            ConfigError: when the bundle's score has no feature memory.
        """
        if self._bank is None:
            raise ConfigError("this model's score has no feature memory to embed windows in")
        body = feature_bank.encoder_body(self.generator)
        out = []
        with torch.inference_mode(), self._autocast():
            for xb in self.model_batches(windows):
                fmap = feature_bank.encoder_map(body, xb, self._bank.level)
                emb = self._bank.embed(fmap.float())
                out.append(tip_head.head_input(emb, fmap, cells, cell_max, conv))
        self._tap.clear()  # the tap hook may have fired on the shared body
        if out:
            return torch.cat(out)
        width = int(self._bank.mean.shape[0])
        if conv > 0:
            return torch.zeros(0, width // 2, conv, conv, device=self.device)
        return torch.zeros(0, tip_head.input_dim(width, cells, cell_max), device=self.device)

    def model_batches(self, windows: torch.Tensor) -> Iterator[torch.Tensor]:
        """``windows`` in batches of :attr:`batch`, as the engine's generator takes them:
        on its device, channels-last, in its precision (call inside ``inference_mode``)."""
        for i in range(0, int(windows.shape[0]), self.batch):
            xb = windows[i : i + self.batch].to(self.device, torch.float32)
            xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb if self._cast_dtype is None else xb.to(self._cast_dtype)

    def calibrate(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw scores -> calibrated units (identity without calibration)."""
        cal = self.bundle.calibration
        return cal.calibrate(raw) if cal is not None else raw.clone()

    # -- whole scans -------------------------------------------------------------------
    def score_scan(
        self,
        scan: Scan,
        *,
        stride: int = 16,
        cancel: Cancel = None,
        progress_every: float | None = 0.5,
        reduce: str = "mean",
        residual: bool = True,
        strip_windows: int = STRIP_WINDOWS,
    ) -> Generator[ScoreProgress, None, ScanResult | None]:
        """Score a scan progressively.

        Yields a :class:`ScoreProgress` first (``done=0``) and after every batch; the
        generator's return value (``StopIteration.value``, or ``result = yield from``)
        is the :class:`ScanResult`, or ``None`` when cancelled.

        Args:
            scan: The scan.
            stride: Window stride at working scale (<= window).
            cancel: A ``threading.Event`` or a callable; checked before every batch,
                so scoring stops within one batch of it being set.
            progress_every: Minimum seconds between partial heat maps in the progress
                reports (``None``: never build partial maps).
            reduce: ``"mean"`` (overlap average) or ``"max"`` for the latent map.
            residual: Also build the residual map.
            strip_windows: Windows per strip (bounds memory on huge scans).
        """
        if reduce not in ("mean", "max"):
            raise ValueError(f"reduce must be 'mean' or 'max', got {reduce!r}")
        timings: dict[str, Any] = {}
        t_start = time.perf_counter()
        spec = self.bundle.input
        factor = spec.scale.factor(scan.shape, scan.pixel_mm)
        work = at_working_scale(scan, factor, spec.representation)
        height, width = work.shape
        grid = WindowGrid(height, width, self.window, stride)
        rows, cols, s, win = grid.rows, grid.cols, grid.stride, grid.window
        dev = self.device
        air = torch.tensor(air_value(spec.representation), device=dev)[:, None, None]
        timings["resample_s"] = time.perf_counter() - t_start

        # Strips of whole window rows; pixel rows [r0*s, (r1-1)*s + win) of the padded image.
        per_pixels = (STRIP_PIXELS // grid.padded_shape[1] - win) // s + 1
        per = max(1, min(int(strip_windows) // max(cols, 1), per_pixels))
        strips = [(r0, min(rows, r0 + per)) for r0 in range(0, rows, per)]

        # The working-scale uint8 RGB goes to the device once (3 bytes a pixel; on the CPU
        # it is the same memory); both passes slice it.
        t = time.perf_counter()
        rgb_dev = torch.from_numpy(np.ascontiguousarray(work.rgb)).to(dev)
        on_rgb = spec.representation in RGB_REPRESENTATIONS
        # Pass 1: empty-belt mask (cheap, uint8 -> grey per strip).
        background = torch.empty(len(grid), dtype=torch.bool, device=dev)
        for r0, r1 in strips:
            sg, y0, y1 = _strip_grid(grid, r0, r1)
            grey = rgb_dev[y0:y1].to(torch.float32).mean(dim=2) / 255.0
            grey = pad_to_grid(grey, sg, 1.0)
            background[r0 * cols : r1 * cols] = belt_mask(grey, sg)
        total = int((~background).sum())
        timings["belt_s"] = time.perf_counter() - t

        raw = torch.full((len(grid),), self._bg_raw, dtype=torch.float32, device=dev)
        scored = torch.zeros(len(grid), dtype=torch.bool, device=dev)
        # Zoomed-out view (bundle setting): every window is scored a second time on the
        # scan shrunk `zoom` times, batch by batch with its own view.
        zview = None
        raw_zoom = None
        if zoom.enabled(self.bundle.score):
            t = time.perf_counter()
            zview = zoom.ZoomedView(
                work,
                grid,
                zoom.factor_of(self.bundle.score),
                spec.representation,
                air[:, 0, 0],
                dev,
            )
            raw_zoom = raw.clone()
            total *= 2  # progress counts model passes: each window twice
            timings["zoom_input_s"] = time.perf_counter() - t
        # Window densities (bundle setting, :mod:`.density`): no model pass, box means of
        # the input each view is cut from.
        dens = dens_zoom = None
        if self._density:
            dens = torch.zeros(len(grid), dtype=torch.float32, device=dev)
            if zview is not None:
                dens_zoom = torch.zeros_like(dens)
                fg = torch.nonzero(~background).squeeze(1)
                dens_zoom[fg] = zview.densities(fg)
        # The projected-threat head's logits (bundle setting, :mod:`.tip_evidence`): one
        # column per view, from the forward passes already made.
        head = head_zoom = None
        if self._head is not None:
            head = torch.zeros(len(grid), dtype=torch.float32, device=dev)
            head_zoom = torch.zeros_like(head) if zview is not None else None
        extras = (raw_zoom, dens, dens_zoom, head, head_zoom)
        ph, pw = grid.padded_shape
        res_sum = torch.zeros(ph * pw, dtype=torch.float32, device=dev) if residual else None
        offs = (torch.arange(win, device=dev)[:, None] * pw + torch.arange(win, device=dev)).ravel()

        done = 0
        t_scatter = 0.0
        t_input = 0.0
        fwd0 = self.forward_s
        last_partial = [time.perf_counter()]
        yield ScoreProgress(0, total, None)
        for r0, r1 in strips:
            t = time.perf_counter()
            sg, y0, y1 = _strip_grid(grid, r0, r1)
            if on_rgb:  # converted on the device from the RGB already there
                x = model_input_from_rgb(rgb_dev[y0:y1], spec.representation)
            else:  # raw energies: converted on the host, one strip at a time
                raw = None if work.raw is None else work.raw[:, y0:y1]
                strip = Scan(rgb=work.rgb[y0:y1], kind=work.kind, raw=raw, sha256="strip")
                x = torch.from_numpy(model_input(strip, spec.representation, None)).to(dev)
            xp = pad_with_air(x, sg, air[:, 0, 0])  # (C, Hs, Wp)
            if dens is not None:
                dens[r0 * cols : r1 * cols] = density.window_means(xp, sg, spec.representation)
            # (rs, cols, win_y, win_x, C) view: a gather of it is one channels-last copy.
            view = xp.permute(1, 2, 0).unfold(0, win, s).unfold(1, win, s).permute(0, 1, 3, 4, 2)
            local = torch.nonzero(~background[r0 * cols : r1 * cols]).squeeze(1)
            t_input += time.perf_counter() - t
            if _cancelled(cancel):
                return None

            def get(i: int, j: int, local=local, view=view) -> torch.Tensor:
                idx = local[i:j]
                return view[idx // cols, idx % cols].permute(0, 3, 1, 2)

            for i, j, out in self._batches(int(local.numel()), get, residual):
                if _cancelled(cancel):
                    return None
                gidx = local[i:j] + r0 * cols
                if zview is not None:
                    # The same windows' zoomed-out views right away, so partial heat maps
                    # fill in batch by batch (score_windows batches and backs off on OOM).
                    xz = zview.windows(gidx).contiguous(memory_format=torch.channels_last)
                    zout = self.score_windows(xz, residual=False)
                    raw_zoom[gidx] = zout.latent
                    if head_zoom is not None:
                        head_zoom[gidx] = zout.head[:, 1]
                    done += j - i
                t = time.perf_counter()
                raw[gidx] = out.latent
                if head is not None:
                    head[gidx] = out.head[:, 0]
                scored[gidx] = True
                if res_sum is not None:
                    origin = (gidx // cols) * (s * pw) + (gidx % cols) * s
                    res_sum.index_add_(0, (origin[:, None] + offs).ravel(), out.residual.ravel())
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                done += j - i
                t_scatter += time.perf_counter() - t
                yield self._progress(
                    done,
                    total,
                    (scan, work, grid, factor, raw, background, reduce, scored),
                    extras,
                    progress_every,
                    last_partial,
                )
                if _cancelled(cancel):
                    return None
        timings["input_s"] = t_input
        timings["scatter_s"] = t_scatter
        timings["forward_s"] = self.forward_s - fwd0
        t = time.perf_counter()
        result = self._result(
            scan, work, grid, factor, raw, background, res_sum, reduce, scored, extras
        )
        result.raw_scores = raw.cpu().numpy().copy()
        if raw_zoom is not None:
            result.raw_zoom_scores = raw_zoom.cpu().numpy().copy()
        if dens is not None:
            result.raw_density = dens.cpu().numpy().copy()
        if dens_zoom is not None:
            result.raw_density_zoom = dens_zoom.cpu().numpy().copy()
        if head is not None:
            result.raw_head = head.cpu().numpy().copy()
        if head_zoom is not None:
            result.raw_head_zoom = head_zoom.cpu().numpy().copy()
        timings["fold_s"] = time.perf_counter() - t
        # total_s includes time the consumer held the generator between yields.
        timings["total_s"] = time.perf_counter() - t_start
        fw = timings["forward_s"]
        timings["windows_per_s"] = total / fw if fw > 0 else None
        timings["n_windows"] = len(grid)
        timings["n_scored"] = int((~background).sum())
        timings["n_forwards"] = total  # windows through the model, zoomed views included
        result.timings = timings
        return result

    def _result(
        self,
        scan: Scan,
        work: Scan,
        grid: WindowGrid,
        factor: float,
        raw: torch.Tensor,
        background: torch.Tensor,
        res_sum: torch.Tensor | None,
        reduce: str,
        scored: torch.Tensor | None = None,
        extras: tuple[torch.Tensor | None, ...] = (None,) * 5,
    ) -> ScanResult:
        # Scan normalisation (bundle setting) over the windows scored so far, the window
        # densities and the mix with the zoomed-out view, then the spatial context: the
        # calibration was fitted on scores made the same way (zoom.evidence).
        # extras = (zoomed raw scores, densities, zoomed densities, head logits, zoomed
        # head logits), each or None.
        valid = ~background if scored is None else (scored & ~background)
        raw_zoom, dens, dens_zoom, head, head_zoom = extras
        score = zoom.evidence(
            self.bundle.score, raw, raw_zoom, grid, valid, dens, dens_zoom, head, head_zoom
        )
        calibrated = self.calibrate(score)
        calibrated[background] = self._bg_cal
        if grid.window % grid.stride == 0:
            heat = (fold_mean if reduce == "mean" else fold_max)(calibrated, grid)
        else:
            heat = fold_separable(calibrated, grid, reduce)
        residual_map = None
        if res_sum is not None:
            ph, pw = grid.padded_shape
            summed = res_sum.reshape(ph, pw)[: grid.height, : grid.width]
            # Separable counts, divided in place: no full-size count map on huge scans.
            cy, cx = axis_counts(grid, summed.device)
            residual = summed / cy[:, None]
            residual /= cx[None, :]
            residual_map = residual.cpu().numpy()
        return ScanResult(
            window_origins=grid.origins(),
            window_scores=score.cpu().numpy().copy(),
            window_calibrated=calibrated.cpu().numpy(),
            background=background.cpu().numpy(),
            latent_map=np.ascontiguousarray(heat.cpu().numpy(), dtype=np.float32),
            residual_map=residual_map,
            scale_factor=float(factor),
            grid=grid,
            scan_shape=scan.shape,
            model_id=str(self.bundle.model_id),
            device=str(self.device),
            reduce=reduce,
            default_threshold=(
                self.bundle.calibration.default_threshold if self.bundle.calibration else None
            ),
        )

    def _progress(
        self,
        done: int,
        total: int,
        state: tuple,
        extras: tuple[torch.Tensor | None, ...],
        progress_every: float | None,
        last_partial: list[float],
    ) -> ScoreProgress:
        """A progress report, with a partial result at most every ``progress_every`` s
        (``last_partial`` is a one-item list holding the time of the previous one)."""
        now = time.perf_counter()
        partial = None
        if progress_every is not None and now - last_partial[0] >= progress_every:
            last_partial[0] = now
            scan, work, grid, factor, raw, background, reduce, scored = state
            partial = self._result(
                scan, work, grid, factor, raw, background, None, reduce, scored, extras
            )
            partial.complete = False
        return ScoreProgress(done, total, partial)

    def score_scan_sync(self, scan: Scan, **kwargs: Any) -> ScanResult | None:
        """Run :meth:`score_scan` to completion and return its result."""
        kwargs.setdefault("progress_every", None)
        return _drain(self.score_scan(scan, **kwargs))


# ------------------------------------------------------------------ module helpers
def _drain(gen: Generator[ScoreProgress, None, ScanResult | None]) -> ScanResult | None:
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def _strip_grid(grid: WindowGrid, r0: int, r1: int) -> tuple[WindowGrid, int, int]:
    """Grid of window rows ``[r0, r1)`` and the real image rows ``[y0, y1)`` it reads."""
    s, win = grid.stride, grid.window
    y0 = r0 * s
    h_pad = (r1 - r0 - 1) * s + win
    y1 = min(grid.height, y0 + h_pad)
    sg = WindowGrid(h_pad, grid.width, win, s)
    return sg, y0, y1


def at_working_scale(scan: Scan, factor: float, representation: str) -> Scan:
    """The scan resampled to the working scale with exactly the resize
    :func:`model_input` would apply, so per-strip conversion matches one pass."""
    if abs(factor - 1.0) < 1e-9:
        return scan
    rgb = resize(scan.rgb, factor)
    raw = None
    if scan.raw is not None and channels_of(representation) == 2:
        raw = np.moveaxis(resize(np.moveaxis(scan.raw, 0, -1), factor), -1, 0)
    return Scan(rgb=rgb, kind=scan.kind, raw=raw, paths=scan.paths, sha256=scan.sha256)


def score_scan(
    scan: Scan,
    bundle: Any,
    device: str | torch.device | None = None,
    stride: int = 16,
    batch: int | None = None,
    cancel: Cancel = None,
    **kwargs: Any,
) -> Generator[ScoreProgress, None, ScanResult | None]:
    """Generator form of :meth:`ScoringEngine.score_scan` with a fresh engine.

    Long-lived callers (GUI, batch CLI) should keep one :class:`ScoringEngine` and
    call its method instead, to pay the model preparation once.
    """
    engine = ScoringEngine(bundle, device, batch=batch)
    return (yield from engine.score_scan(scan, stride=stride, cancel=cancel, **kwargs))


def score_scan_sync(
    scan: Scan,
    bundle: Any,
    device: str | torch.device | None = None,
    stride: int = 16,
    batch: int | None = None,
    cancel: Cancel = None,
    **kwargs: Any,
) -> ScanResult | None:
    """Score a scan to completion; returns ``None`` only when cancelled."""
    kwargs.setdefault("progress_every", None)
    return _drain(score_scan(scan, bundle, device, stride, batch, cancel, **kwargs))
