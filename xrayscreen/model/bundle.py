"""Model bundles: the file pair operators move between stations.

A bundle is a directory holding ``weights.safetensors`` (tensors only) and
``model.json`` (architecture, input spec, score spec, calibration, provenance).
Loading never unpickles anything: safetensors is a flat tensor format and JSON is
data, so a crafted file cannot run code. A ``torch.save`` / pickle file offered as
a bundle is recognised and refused before any byte of it is interpreted.

Writes are atomic: the bundle is assembled in a temporary sibling directory and
moved into place with one ``rename``; an existing bundle is never replaced unless
the caller asks (``overwrite=True``), and then the old one is only removed after
the new one is in place.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from xrayscreen.errors import BundleError, ConfigError
from xrayscreen.imaging.representation import WorkingScale, channels_of
from xrayscreen.inference import tip_evidence
from xrayscreen.model.calibration import Calibration
from xrayscreen.model.feature_bank import FEATURE_KINDS, FeatureBank
from xrayscreen.model.ganomaly import (
    Discriminator,
    GANomalyConfig,
    Generator,
    build_discriminator,
)
from xrayscreen.model.score import dfeat_weight_of
from xrayscreen.model.tip_head import ConvTipHead, TipHead
from xrayscreen.model.tip_head import input_dim as tip_input_dim
from xrayscreen.model.variants import build_generator  # paper G, or the variant in extras

FORMAT = "xrayscreen-bundle"
FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
META = "model.json"

_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default container (a zip of pickles)


@dataclass
class InputSpec:
    """How a scan becomes model input. Training and scoring both read this."""

    window: int = 64
    representation: str = "rgb"
    scale: WorkingScale = field(default_factory=lambda: WorkingScale(longer_side=800))
    value_range: tuple[float, float] = (-1.0, 1.0)

    @property
    def channels(self) -> int:
        return channels_of(self.representation)

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "channels": self.channels,
            "representation": self.representation,
            "scale": self.scale.to_dict(),
            "value_range": list(self.value_range),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        spec = cls(
            window=int(data["window"]),
            representation=str(data["representation"]),
            scale=WorkingScale.from_dict(data.get("scale")),
            value_range=tuple(data.get("value_range", (-1.0, 1.0))),
        )
        if "channels" in data and int(data["channels"]) != spec.channels:
            raise ConfigError(
                f"input channels {data['channels']} do not match representation "
                f"{spec.representation!r} ({spec.channels})"
            )
        return spec


@dataclass
class ScoreSpec:
    """Which anomaly score the bundle's calibration refers to.

    ``kind``: "latent" (the paper's |z - z_hat|), or another score a training
    recipe defines (e.g. "residual", "combined"); ``params`` carries its settings.
    """

    kind: str = "latent"
    norm: str = "l1"
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "norm": self.norm, "params": self.params}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ScoreSpec:
        data = data or {}
        return cls(
            kind=str(data.get("kind", "latent")),
            norm=str(data.get("norm", "l1")),
            params=dict(data.get("params", {})),
        )


@dataclass
class ModelBundle:
    """A loaded (or about-to-be-saved) model with everything needed to use it.

    Attributes:
        config: Architecture.
        generator: The generator (in eval mode after loading).
        input: Input specification.
        score: Score specification.
        calibration: Normal-score calibration, if the model has been calibrated.
        provenance: Training data fingerprint, epochs, seed, versions, ...
        training: Training settings (loss weights, optimiser, ...).
        discriminator: Optional discriminator (needed only to continue training or
            for discriminator-feature scores).
        feature_bank: Memory of normal-window encoder embeddings, for score kind
            ``feature_knn`` (:mod:`xrayscreen.model.feature_bank`); else ``None``.
        tip_head: Window head trained on projected threats, read on the feature memory's
            embeddings (an MLP) or on the encoder map (a convolution, with ``tip_conv``)
            when the score has a ``tip_weight`` (:mod:`xrayscreen.model.tip_head`); else
            ``None``.
        model_id: Unique id; stamped into every decision made with this model.
        created: ISO-8601 UTC creation time.
    """

    config: GANomalyConfig
    generator: Generator
    input: InputSpec = field(default_factory=InputSpec)
    score: ScoreSpec = field(default_factory=ScoreSpec)
    calibration: Calibration | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    discriminator: Discriminator | None = None
    feature_bank: FeatureBank | None = None
    tip_head: TipHead | ConvTipHead | None = None
    model_id: str = field(default_factory=lambda: new_model_id())
    created: str = field(default_factory=lambda: _now())
    path: Path | None = None

    def metadata(self, weights_dtype: str) -> dict[str, Any]:
        """The ``model.json`` content."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_id": self.model_id,
            "created": self.created,
            "architecture": {"name": "ganomaly", "config": self.config.to_dict()},
            "input": self.input.to_dict(),
            "score": self.score.to_dict(),
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "training": self.training,
            "provenance": {**_versions(), **self.provenance},
            "weights": {
                "file": WEIGHTS,
                "dtype": weights_dtype,
                "has_discriminator": self.discriminator is not None,
            },
        }


def new_model_id() -> str:
    """A unique, sortable, human-readable model id (UTC date + random suffix)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("gan-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    import numpy

    import xrayscreen

    return {
        "xrayscreen": xrayscreen.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


# ---------------------------------------------------------------------------- saving
def save_bundle(
    bundle: ModelBundle,
    path: str | os.PathLike[str],
    *,
    half: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write ``bundle`` to directory ``path`` atomically.

    Args:
        bundle: What to save.
        path: Target directory (must not exist unless ``overwrite``).
        half: Store weights as float16 (about half the size; loaded back as float32).
        overwrite: Replace an existing bundle at ``path``.

    Returns:
        The bundle directory.

    Raises:
        BundleError: if ``path`` exists and ``overwrite`` is False, or the score needs
            the discriminator and the bundle has none (the file could not score).
    """
    dest = Path(path)
    if dest.exists() and not overwrite:
        raise BundleError(f"refusing to replace existing bundle {dest} (pass overwrite=True)")
    if dfeat_weight_of(bundle.score.params) > 0.0 and bundle.discriminator is None:
        raise BundleError(
            "the score uses the discriminator's features; a bundle without its "
            "discriminator could not score"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tensors = _state_tensors(bundle, half)
    meta = bundle.metadata("float16" if half else "float32")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        (tmp / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        _fsync_dir_files(tmp)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:6]}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bundle.path = dest
    return dest


def _state_tensors(bundle: ModelBundle, half: bool) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    nets: list[tuple[str, torch.nn.Module]] = [("netg", bundle.generator)]
    if bundle.discriminator is not None:
        nets.append(("netd", bundle.discriminator))
    for prefix, net in nets:
        for k, v in net.state_dict().items():
            t = v.detach().cpu().contiguous()
            if half and t.is_floating_point():
                t = t.half()
            out[f"{prefix}.{k}"] = t.clone()
    if bundle.feature_bank is not None:
        for k, t in bundle.feature_bank.tensors().items():
            out[k] = t.half() if half else t
    if bundle.tip_head is not None:
        out.update(bundle.tip_head.tensors(half))
    return out


def _fsync_dir_files(d: Path) -> None:
    for f in d.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


# --------------------------------------------------------------------------- loading
def load_bundle(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    with_discriminator: bool = False,
) -> ModelBundle:
    """Load and validate a bundle directory. Never executes code from the files.

    Args:
        path: Bundle directory (or its ``model.json``).
        device: Where to put the networks.
        with_discriminator: Also build the discriminator when the bundle has one (a
            score with a discriminator-feature part always loads it).

    Returns:
        The bundle, generator in ``eval()`` mode.

    Raises:
        BundleError: missing files, invalid JSON, unknown format, a pickle offered as
            weights, or tensors that do not match the architecture.
    """
    p = Path(path)
    if p.is_file():
        if p.name == META:
            p = p.parent
        else:
            _refuse_file(p)
    if not p.is_dir():
        raise BundleError(f"no model bundle at {p}")
    meta_path, weights_path = p / META, p / WEIGHTS
    if not meta_path.is_file():
        raise BundleError(f"{p} is not a model bundle: {META} is missing")
    if not weights_path.is_file():
        raise BundleError(f"{p} is not a model bundle: {WEIGHTS} is missing")
    meta = _read_meta(meta_path)
    _check_not_pickle(weights_path)
    try:
        tensors = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise BundleError(
            f"{weights_path.name} is corrupt or not a safetensors file: {exc}"
        ) from None
    return _assemble(meta, tensors, p, device, with_discriminator)


def _refuse_file(p: Path) -> None:
    head = p.read_bytes()[:4] if p.stat().st_size else b""
    if head.startswith(_ZIP_MAGIC) or head[:2] in _PICKLE_MAGIC:
        raise BundleError(
            f"{p.name} is a pickle / torch.save file; such files can run code when loaded "
            "and are refused. Convert it to a bundle (safetensors + model.json) on a trusted machine."
        )
    raise BundleError(f"{p} is a file; a model bundle is a directory with {META} and {WEIGHTS}")


def _check_not_pickle(weights_path: Path) -> None:
    with open(weights_path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(_ZIP_MAGIC) or head[:2] in _PICKLE_MAGIC:
        raise BundleError(
            f"{weights_path.name} holds a pickle / torch.save archive, not safetensors; refused "
            "without loading it (pickles can execute code)."
        )


def _read_meta(meta_path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{META} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BundleError(f"{META} is not an xrayscreen bundle description (format != {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"bundle format version {meta.get('format_version')!r} is not supported "
            f"(this xrayscreen reads version {FORMAT_VERSION})"
        )
    return meta


def _assemble(
    meta: dict[str, Any], tensors: dict[str, torch.Tensor], p: Path, device: Any, with_d: bool
) -> ModelBundle:
    try:
        arch = meta["architecture"]
        if arch.get("name") != "ganomaly":
            raise BundleError(f"unknown architecture {arch.get('name')!r}")
        config = GANomalyConfig.from_dict(arch["config"])
        spec = InputSpec.from_dict(meta["input"])
        score = ScoreSpec.from_dict(meta.get("score"))
        calibration = (
            Calibration.from_dict(meta["calibration"]) if meta.get("calibration") else None
        )
        model_id = str(meta["model_id"])
        created = str(meta.get("created", ""))
    except BundleError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{META} is incomplete or inconsistent: {exc!r}") from None
    if spec.channels != config.nc or spec.window != config.isize:
        raise BundleError(
            f"input spec ({spec.channels} ch, {spec.window} px) does not match the architecture "
            f"({config.nc} ch, {config.isize} px)"
        )
    generator = build_generator(config, init=False)
    _load_into(generator, tensors, "netg")
    discriminator = None
    # A score with a discriminator-feature part needs D to score at all.
    try:
        needs_d = dfeat_weight_of(score.params) > 0.0
    except ValueError as exc:
        raise BundleError(f"{META}: {exc}") from None
    has_d = any(k.startswith("netd.") for k in tensors)
    if needs_d and not has_d:
        raise BundleError(
            "the model's score uses its discriminator's features, but the file has no "
            "discriminator weights"
        )
    if (with_d or needs_d) and has_d:
        discriminator = build_discriminator(config, init=False)
        _load_into(discriminator, tensors, "netd")
        discriminator.to(device).eval()
    generator.to(device).eval()
    bank = None
    if score.kind in FEATURE_KINDS:
        try:
            bank = FeatureBank.from_tensors(tensors, score.params)
        except ConfigError as exc:
            raise BundleError(f"score kind feature_knn: {exc}") from None
    head = None
    try:
        wants_head = tip_evidence.weight_of(score) > 0.0
        tip_evidence.window_share_of(score)  # refused when loading, not when scoring
        cells = tip_evidence.cells_of(score)
        cell_max = tip_evidence.cell_max_of(score)
        conv = tip_evidence.conv_of(score)
        if wants_head and tip_evidence.abs_share_of(score) > 0:  # its reference must be there
            for view in range(2):
                tip_evidence.absolute(torch.zeros(1), score, view, None)
    except ConfigError as exc:
        raise BundleError(f"{META}: {exc}") from None
    if wants_head and bank is None:
        raise BundleError(
            "the model's score adds a projected-threat head, which reads the feature "
            "memory, but the score kind has none"
        )
    kind = ConvTipHead if conv else TipHead
    if wants_head or TipHead.present(tensors) or ConvTipHead.present(tensors):
        if not kind.present(tensors):
            raise BundleError(
                "the model's score adds a projected-threat head, but the file has no "
                f"{'convolutional ' if conv else ''}head weights"
            )
        try:
            width = bank.memory.shape[1] if bank else -2
            if conv:
                head = ConvTipHead.from_tensors(tensors, width // 2, conv)
            else:
                head = TipHead.from_tensors(tensors, tip_input_dim(width, cells, cell_max))
        except ConfigError as exc:
            raise BundleError(f"projected-threat head: {exc}") from None
    return ModelBundle(
        config=config,
        generator=generator,
        input=spec,
        score=score,
        calibration=calibration,
        provenance=dict(meta.get("provenance", {})),
        training=dict(meta.get("training", {})),
        discriminator=discriminator,
        feature_bank=bank,
        tip_head=head,
        model_id=model_id,
        created=created,
        path=p,
    )


def _load_into(net: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str) -> None:
    own = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    expected = net.state_dict()
    missing = sorted(set(expected) - set(own))
    extra = sorted(set(own) - set(expected))
    if missing or extra:
        raise BundleError(
            f"weights do not match the architecture in {META}: "
            f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''}"
        )
    for k, v in own.items():
        if v.shape != expected[k].shape:
            raise BundleError(
                f"tensor {prefix}.{k} has shape {tuple(v.shape)}, architecture needs "
                f"{tuple(expected[k].shape)}"
            )
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise BundleError(f"tensor {prefix}.{k} contains NaN or Inf")
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in own.items()})
