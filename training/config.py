"""Training settings: one dataclass, JSON round-trip, stored in every bundle and checkpoint."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xrayscreen.errors import ConfigError
from xrayscreen.imaging.representation import WorkingScale, channels_of
from xrayscreen.inference.density import MAX_WEIGHT as DENSITY_MAX_WEIGHT
from xrayscreen.inference.scan_norm import METHODS as SCAN_NORMS
from xrayscreen.inference.score_kinds import MEMORY_PLUS
from xrayscreen.inference.tip_evidence import MAX_CELLS as TIP_MAX_CELLS
from xrayscreen.inference.tip_evidence import MAX_CONV as TIP_MAX_CONV
from xrayscreen.inference.tip_evidence import MAX_WEIGHT as TIP_MAX_WEIGHT
from xrayscreen.inference.zoom import MAX_ZOOM
from xrayscreen.inference.zoom import MIXES as ZOOM_MIXES
from xrayscreen.model.calibration import BAG_RULES
from xrayscreen.model.feature_bank import FEATURE_KINDS
from xrayscreen.model.ganomaly import GANomalyConfig, validate_isize
from xrayscreen.model.losses import LossWeights

KEEP_CHOICES = ("final", "best_val")

# The X-ray configuration chosen by the issue-7 ablation (docs/BENCHMARKS.md), applied by
# :meth:`TrainConfig.xray`: stable adversarial training (spectral norm on D; hinge D loss,
# two-timescale learning rates, reset of a stuck D, the paper's reset threshold applied
# to the mean of 50 D losses; read by ``xrayscreen.training.research.ResearchTrainer``),
# the ``-log`` RGB input, and as the score the attenuation GANomaly's reconstruction does
# not explain (``residual_excess``) plus the k-NN distance of G_E's level-2 features to a
# memory of normal training windows and of denser- and thinner-rendered copies of them
# (``bank_gammas``: another scanner's rendering) (``feature_knn_excess``), normalised per scan
# (``robust_z``), taken as the larger of the window's and its 2x zoomed-out view's
# (``zoom``; the view sees the object and its surroundings), each view plus half its
# window's density z-score within the scan (``density_weight``; GANomaly's evidence stays
# the larger part) and the z-score of a head that reads the memory's embedding and the
# encoder map on a 4 x 4 grid of the window (``tip_cells``), trained on simulated threats
# projected into the normal training bags (``tip_weight``; no real threat is used; three
# heads on three draws of them, averaged: ``tip_draws``), and averaged over a 128 px spatial context that keeps a quarter of
# each window's own score (small threats are not averaged away). The generator trains on
# windows rendered as other scanners might (``jitter_gamma``, ``jitter_hue``: density and
# palette). The dataclass defaults stay the paper's configuration (the MNIST Table 1
# reproduction relies on them).
XRAY_RESEARCH_DEFAULTS: dict[str, Any] = {
    "d_loss": "hinge",
    "lr_g": 1e-4,
    "lr_d": 4e-4,
    "reset_stuck": True,
    "reset_window": 50,
}
XRAY_DEFAULTS: dict[str, Any] = {
    # The size and length every SIXray figure of issue 7 was measured with (seventeenth
    # session: the default had kept the paper's ngf 64, 25 epochs and overlapping windows,
    # which no real-bag figure covers; more epochs and ngf 64 did not help in the first
    # session's ablation). ``--preset paper`` keeps the paper's.
    "ngf": 32,
    "ndf": 32,
    "epochs": 5,
    "stride": 64,
    "bf16": None,  # bf16 where the device has bf16 units, as measured; float32 elsewhere
    "representation": "rgb_attenuation",
    "spectral_norm_d": True,
    "score_kind": "feature_knn_excess",
    "bank_level": 2,
    "bank_k": 5,
    "scan_norm": "robust_z",
    "context_px": 128.0,
    "context_self": 0.25,
    "zoom": 2.0,
    "zoom_mix": "max",
    "density_weight": 0.5,
    "tip_weight": 1.0,
    "tip_cells": 4,
    "tip_draws": 3,
    "bank_gammas": [0.8, 1.25],
    "jitter_gamma": 1.25,
    "jitter_hue": 20.0,
    "target_bag_far": 0.10,
    "bag_rule": "gumbel",
}


def without_palette_jitter(settings: dict[str, Any], explicit: Any = ()) -> dict[str, Any]:
    """``settings`` with the default palette jitter dropped for inputs that have no false
    colours (raw dual-energy: two channels), unless ``jitter_hue`` was asked for explicitly
    (then validation refuses it with a clear message)."""
    rep = settings.get("representation", "rgb")
    if "jitter_hue" not in explicit and channels_of(rep) != 3 and settings.get("jitter_hue"):
        return {**settings, "jitter_hue": 0.0}
    return settings


def without_unusable_head(settings: dict[str, Any], explicit: Any = ()) -> dict[str, Any]:
    """``settings`` with the default projected-threat head dropped for a score it cannot
    join (no feature memory, or no per-scan normalisation), unless ``tip_weight`` was
    asked for explicitly (then validation refuses it with a clear message)."""
    usable = (
        settings.get("score_kind", "latent") in FEATURE_KINDS
        and settings.get("scan_norm", "none") == "robust_z"
    )
    if "tip_weight" not in explicit and not usable and settings.get("tip_weight"):
        return {**settings, "tip_weight": 0.0}
    return settings


def xray_settings(settings: dict[str, Any], explicit: Any = ()) -> dict[str, Any]:
    """The X-ray defaults' automatic adjustments to explicit changes (palette jitter and
    projected-threat head dropped where they cannot apply)."""
    return without_unusable_head(without_palette_jitter(settings, explicit), explicit)


def _check_range(name: str, value: tuple[float, ...], lo: float, hi: float) -> None:
    """Refuse a factor range that is not two numbers ``lo <= low <= high <= hi``."""
    if len(value) != 2 or not lo <= value[0] <= value[1] <= hi:
        raise ConfigError(
            f"{name} must be two factors {lo:g} <= low <= high <= {hi:g}, got {list(value)}"
        )


@dataclass
class TrainConfig:
    """Everything that decides a training run. Defaults are the X-ray product defaults.

    Attributes:
        window: Window side in pixels (= the model's ``isize``).
        stride: Stride between training windows; ``None`` -> ``window // 2`` (32 for the
            default 64 px window). Scoring uses its own stride.
        representation: Model input representation (``xrayscreen.imaging.representation``).
        longer_side: Working scale: resize so the longer side has this many pixels
            (``None`` with ``mm_per_pixel`` unset = native resolution).
        mm_per_pixel: Alternative working scale by physical pitch.
        epochs: Training epochs.
        batch_size: Windows per step (per process under DDP).
        lr: Adam learning rate. The paper's code and text use 2e-4; the project's seed
            text said 2e-3, which makes this GAN diverge, so 2e-4 is the default.
        betas: Adam betas (paper: 0.5, 0.999).
        w_adv, w_con, w_enc: Generator loss weights (paper: 1, 50, 1).
        enc_norm: L_enc norm, "l2" as in the paper's code (see ``xrayscreen.model.losses``).
        ngf, ndf, nz, extra_layers, spectral_norm_d: Architecture.
        augment: Random flips and 90-degree rotations (valid for X-ray: a bag can lie
            on the belt either way round).
        jitter_gamma: Rendering augmentation of the generator's training windows: each
            window's transmission raised to G, log-uniform in ``[1 / jitter_gamma,
            jitter_gamma]`` (another scanner's denser or thinner rendering); 1 = off.
        jitter_hue: Each training window's colours turned about the grey axis by a
            uniform angle in ``[-jitter_hue, jitter_hue]`` degrees (another palette;
            three-channel inputs; :meth:`xray` drops its default for raw dual-energy input);
            0 = off. See :class:`xrayscreen.training.data.RenderJitter`.
        val_fraction: Fraction of SCANS held out for validation and calibration.
        min_val_scans: At least this many scans go to validation when there are >= 2.
        seed: Seeds initialisation, split, shuffling and augmentation.
        bf16: bfloat16 autocast for forward passes: ``True`` / ``False``, or ``None`` for
            bf16 where the training device has bf16 units (a CPU with AMX or AVX512-BF16, a
            CUDA GPU that supports it) and float32 elsewhere (the X-ray default: its SIXray
            figures were measured with bf16 on such a CPU; float32 measured a little lower).
        device: "cpu", "cuda", "cuda:1", ... or "auto".
        num_workers: DataLoader workers (0 = main process; the cache is in RAM).
        threads: torch intra-op threads on CPU (0 = leave torch's default).
        d_reset_threshold: Re-initialise D when its loss falls below this (paper: 1e-5).
        target_window_far: Per-window false-alarm rate the default threshold is set for.
        target_bag_far: Optional share of normal bags allowed to alarm at the default
            threshold (raises it above the window rule when needed); ``None`` = the
            window rule alone.
        bag_rule: How ``target_bag_far`` reads the held-out bags' peaks: ``"gumbel"``
            (a Gumbel law fitted to them) or ``"empirical"`` (at most that share of
            them, rounded down); ``xrayscreen.model.calibration``.
        score_kind, score_norm: The anomaly score calibrated into the bundle.
        scan_norm: Per-scan normalisation of the score: ``"none"`` or ``"robust_z"``
            (``xrayscreen.inference.scan_norm``).
        context_px: Spatial context radius in working-scale pixels: each window's
            (per-scan normalised) score averaged with its neighbours' (tent weights,
            ``xrayscreen.inference.context``); 0 = off.
        context_self: Weight in [0, 1) kept on a window's own score when the context
            averages it (small compact objects keep part of their evidence).
        zoom: Zoomed-out view: every window is also scored on the scan shrunk this
            many times (the same network and memory; ``xrayscreen.inference.zoom``);
            1 = off.
        zoom_mix: How the two views' per-scan normalised scores combine: ``"max"``
            (the larger) or ``"mean"`` (weighted by ``zoom_weight``).
        zoom_weight: Weight in (0, 1] of the zoomed view in a ``"mean"`` mix.
        density_weight: Weight of the window's density (mean opacity, robust z within
            the scan; ``xrayscreen.inference.density``) added to each view's per-scan
            normalised score; 0 = off. Needs ``scan_norm="robust_z"``.
        tip_weight: Weight of the projected-threat head's logit (robust z within the
            scan; ``xrayscreen.inference.tip_evidence``) added to each view's evidence;
            0 = off. The head is fitted after training on simulated threats projected
            into the normal training scans (``training.tip_head``); it needs a
            feature-memory score kind and ``scan_norm="robust_z"``.
        tip_window_share: Share of ``tip_weight`` the working-scale view's head gets
            beside the zoomed-out view (whose head gets all of it); 1 = both alike.
        tip_per_bag: Threats projected into each training scan for the head.
        tip_hard_per_bag: Hard negatives per training scan for the head: the
            threat-free windows its first fit scores highest, added for a refit
            (``training.tip_head``); 0 = no mining.
        tip_clutter: Placement of the head's projected threats toward the bags' dense
            contents (opacity ** ``tip_clutter``; 0 = anywhere in the bag).
        tip_cells: The head also reads the encoder map averaged over a grid of this many
            cells a side (``xrayscreen.model.tip_head.head_input``); 0 = the pooled
            embedding alone.
        tip_cell_max: The head also reads each grid cell's maximum (a cell's average
            dilutes a blade a few pixels wide); needs ``tip_cells`` > 0.
        tip_conv: The head is a small convolution run over the encoder map max-pooled to
            this many positions a side, its window logit the log-sum-exp over them
            (``xrayscreen.model.tip_head.ConvTipHead``; twelfth session); 0 = the MLP
            head. Excludes ``tip_cells``, ``tip_members`` and mining.
        tip_abs_share: Share of ``tip_weight`` on the head's logit read absolutely
            (against the held-out normal scans' logits, not within the scan;
            ``tip_evidence.reading``; twelfth session), the rest on its within-scan z;
            0 = the within-scan z alone.
        tip_draws: Heads averaged, each fitted on its own draw of projected threats
            (one fit's luck moves the bag-level figures; eleventh session); 1 = one head.
        tip_members: Nets averaged into the head per view, each fitted on its own
            sub-sample of the bags (1 = one net).
        tip_size_range: Range (uniform) of the factor a training scan's pixel pitch is
            multiplied by for the head's projected threats: 1 = the simulator's physical
            size (a scan without a known pitch spans 800 mm), 2 = shown half as large,
            0.5 = twice as large.
        tip_thickness_range: Range (log-uniform) of the factor on the projected threats'
            areal density (matter in the beam): 1 = the simulator's steel; smaller shows
            them lighter (fifteenth session: SIXray renders thin steel far lighter than
            the simulator's physics does).
        tip_decoys: Benign dense objects (a metal block in a case, a canister with
            opaque lumps, a metal lump) projected into each training scan after its
            threats; every window on one is a negative of the head (fifteenth session);
            0 = none.
        dfeat_weight: Weight of GANomaly's discriminator-feature residual (L_adv's layer
            on the window vs its reconstruction) added to a memory-plus score, in units
            of its spread on held-out normal windows; 0 = off. Scoring then needs the
            bundle's discriminator.
        bank_level, bank_k, bank_size: For ``score_kind="feature_knn"``: the G_E
            activation level embedded, the neighbours averaged, and the most training
            windows kept in the bundle's memory (``xrayscreen.model.feature_bank``).
        bank_gammas: Rendering gammas G of extra copies of the training windows the
            memory may draw from (transmission ``T -> T ** G``: another scanner's denser or
            thinner rendering; :func:`xrayscreen.training.data.render_gamma`); the memory
            keeps at most ``bank_size`` rows of originals and copies together. Empty = the
            training windows only.
        bank_hues: Angles (degrees) of extra copies whose colours are turned about the
            grey axis (another scanner's palette; three-channel inputs), drawn from with the
            gamma copies under the same ``bank_size`` cap. Empty = none.
        keep: "final" (the last epoch, the paper's protocol; default) or "best_val"
            (the epoch with the lowest validation L_con + L_enc on normal scans).
        patience: Early stop after this many epochs without validation improvement
            (0 = never; only used with keep="best_val").
        max_windows_per_scan: Random cap of windows per scan (0 = all) to bound RAM.
        cache_file: Optional ``.safetensors`` window cache file (re-used when its
            fingerprint matches).
        groups: Optional rescan groups file (one physical bag per line, the names of its
            scans; :mod:`xrayscreen.evaluation.groups`): a bag's scans are kept on one side
            of the train / held-out split (:func:`training.data.split_by_scan`).
        half_weights: Store the bundle's weights as float16.
        nc: Input channels override for non-scan data (MNIST: 1); ``None`` = from the
            representation (scans always use the representation's channels).
        research: Options of the research trainer (issue 7, ``training/research.py``);
            ``{}`` (default) = the paper's plain trainer. See :meth:`xray`.
    """

    window: int = 64
    stride: int | None = None
    representation: str = "rgb"
    longer_side: int | None = 800
    mm_per_pixel: float | None = None
    epochs: int = 25
    batch_size: int = 64
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    w_adv: float = 1.0
    w_con: float = 50.0
    w_enc: float = 1.0
    enc_norm: str = "l2"
    ngf: int = 64
    ndf: int = 64
    nz: int = 100
    extra_layers: int = 0
    spectral_norm_d: bool = False
    augment: bool = True
    jitter_gamma: float = 1.0
    jitter_hue: float = 0.0
    val_fraction: float = 0.1
    min_val_scans: int = 1
    seed: int = 0
    bf16: bool | None = False
    device: str = "auto"
    num_workers: int = 0
    threads: int = 0
    d_reset_threshold: float = 1e-5
    target_window_far: float = 0.01
    target_bag_far: float | None = None
    bag_rule: str = "empirical"
    score_kind: str = "latent"
    score_norm: str = "l1"
    scan_norm: str = "none"
    context_px: float = 0.0
    context_self: float = 0.0
    zoom: float = 1.0
    zoom_mix: str = "max"
    zoom_weight: float = 0.5
    density_weight: float = 0.0
    tip_weight: float = 0.0
    tip_window_share: float = 1.0
    tip_per_bag: int = 2
    tip_hard_per_bag: int = 0
    tip_members: int = 1
    tip_clutter: float = 0.0
    tip_cells: int = 0
    tip_cell_max: bool = False
    tip_conv: int = 0
    tip_abs_share: float = 0.0
    tip_draws: int = 1
    tip_size_range: tuple[float, float] = (1.0, 2.0)
    tip_thickness_range: tuple[float, float] = (0.25, 1.0)
    tip_decoys: int = 0
    dfeat_weight: float = 0.0
    bank_level: int = 2
    bank_k: int = 5
    bank_size: int = 20000
    bank_gammas: list[float] = field(default_factory=list)
    bank_hues: list[float] = field(default_factory=list)
    keep: str = "final"
    patience: int = 0
    max_windows_per_scan: int = 0
    cache_file: str | None = None
    groups: str | None = None
    half_weights: bool = False
    nc: int | None = None
    research: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        self.tip_size_range = tuple(float(v) for v in self.tip_size_range)  # type: ignore[assignment]
        self.tip_thickness_range = tuple(float(v) for v in self.tip_thickness_range)  # type: ignore[assignment]
        self.bank_gammas = [float(g) for g in self.bank_gammas]
        self.bank_hues = [float(h) for h in self.bank_hues]
        if self.stride is None:
            self.stride = max(1, int(self.window) // 2)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` with a readable message for impossible settings."""
        validate_isize(self.window)
        channels_of(self.representation)
        if self.bf16 not in (True, False, None):
            raise ConfigError(f"bf16 must be true, false or null (auto), got {self.bf16!r}")
        if not 1 <= self.stride <= self.window:
            raise ConfigError(f"stride must be in 1..window ({self.window}), got {self.stride}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.enc_norm not in ("l1", "l2"):
            raise ConfigError(f"enc_norm must be 'l1' or 'l2', got {self.enc_norm!r}")
        if self.keep not in KEEP_CHOICES:
            raise ConfigError(f"keep must be one of {KEEP_CHOICES}, got {self.keep!r}")
        if self.scan_norm not in SCAN_NORMS:
            raise ConfigError(f"scan_norm must be one of {SCAN_NORMS}, got {self.scan_norm!r}")
        if not float(self.context_px) >= 0:
            raise ConfigError(f"context_px must be >= 0 pixels, got {self.context_px}")
        if not 0.0 <= float(self.context_self) < 1.0:
            raise ConfigError(f"context_self must be in [0, 1), got {self.context_self}")
        if not 1.0 <= float(self.zoom) <= MAX_ZOOM:
            raise ConfigError(f"zoom must be in [1, {MAX_ZOOM:g}] (1 = off), got {self.zoom}")
        if self.zoom_mix not in ZOOM_MIXES:
            raise ConfigError(f"zoom_mix must be one of {ZOOM_MIXES}, got {self.zoom_mix!r}")
        if not 0.0 < float(self.zoom_weight) <= 1.0:
            raise ConfigError(f"zoom_weight must be in (0, 1], got {self.zoom_weight}")
        if not 0.0 <= float(self.density_weight) <= DENSITY_MAX_WEIGHT:
            raise ConfigError(
                f"density_weight must be in [0, {DENSITY_MAX_WEIGHT:g}], got {self.density_weight}"
            )
        if self.density_weight > 0 and self.scan_norm != "robust_z":
            raise ConfigError(
                "density_weight adds a per-scan z-score: it needs scan_norm='robust_z' "
                "(or density_weight 0)"
            )
        self._validate_tip()
        if any(not 0.25 <= g <= 4.0 or g == 1.0 for g in self.bank_gammas):
            raise ConfigError(
                f"bank_gammas must be in [0.25, 4] and not 1 (the originals), got {self.bank_gammas}"
            )
        if not 1.0 <= float(self.jitter_gamma) <= 4.0:
            raise ConfigError(f"jitter_gamma must be in [1, 4] (1 = off), got {self.jitter_gamma}")
        if not 0.0 <= float(self.jitter_hue) <= 180.0:
            raise ConfigError(
                f"jitter_hue must be in [0, 180] degrees (0 = off), got {self.jitter_hue}"
            )
        if float(self.jitter_hue) > 0 and self.channels != 3:
            raise ConfigError(
                f"jitter_hue turns false colours: it needs a three-channel input, not "
                f"{self.representation!r} ({self.channels} channels)"
            )
        if any(not 0.0 < abs(h) <= 180.0 for h in self.bank_hues):
            raise ConfigError(
                f"bank_hues must be non-zero angles in [-180, 180] degrees, got {self.bank_hues}"
            )
        if self.bank_hues and self.channels != 3:
            raise ConfigError(
                f"bank_hues turn false colours: they need a three-channel input, not "
                f"{self.representation!r}"
            )
        if not float(self.dfeat_weight) >= 0.0:
            raise ConfigError(f"dfeat_weight must be >= 0, got {self.dfeat_weight}")
        if self.dfeat_weight > 0 and self.score_kind not in MEMORY_PLUS:
            raise ConfigError(
                "dfeat_weight adds to a memory-plus score (a sum of parts in units of their "
                f"spreads): score_kind must be one of {sorted(MEMORY_PLUS)}, "
                f"got {self.score_kind!r}"
            )
        if self.score_kind in FEATURE_KINDS:
            self._validate_feature_memory()
        if self.target_bag_far is not None and not 0.0 <= self.target_bag_far < 1.0:
            raise ConfigError(f"target_bag_far must be in [0, 1), got {self.target_bag_far}")
        if self.bag_rule not in BAG_RULES:
            raise ConfigError(f"bag_rule must be one of {BAG_RULES}, got {self.bag_rule!r}")
        if not 0.0 < self.target_window_far < 1.0:
            raise ConfigError(f"target_window_far must be in (0, 1), got {self.target_window_far}")
        self.model_config()  # architecture checks (ngf even, ...)

    def _validate_tip(self) -> None:
        """Settings of the projected-threat head, refused before any training."""
        if not 0.0 <= float(self.tip_weight) <= TIP_MAX_WEIGHT:
            raise ConfigError(
                f"tip_weight must be in [0, {TIP_MAX_WEIGHT:g}] (0 = off), got {self.tip_weight}"
            )
        if not 0.0 <= float(self.tip_window_share) <= 1.0:
            raise ConfigError(f"tip_window_share must be in [0, 1], got {self.tip_window_share}")
        if not 1 <= int(self.tip_per_bag) <= 8:
            raise ConfigError(f"tip_per_bag must be 1-8 threats per bag, got {self.tip_per_bag}")
        if not 0 <= int(self.tip_hard_per_bag) <= 1000:
            raise ConfigError(
                f"tip_hard_per_bag must be 0-1000 windows per bag, got {self.tip_hard_per_bag}"
            )
        if not 0 <= int(self.tip_cells) <= TIP_MAX_CELLS:
            raise ConfigError(
                f"tip_cells must be 0-{TIP_MAX_CELLS} cells a side, got {self.tip_cells}"
            )
        if not isinstance(self.tip_cell_max, bool):
            raise ConfigError(f"tip_cell_max must be true or false, got {self.tip_cell_max!r}")
        if self.tip_cell_max and int(self.tip_cells) == 0:
            raise ConfigError("tip_cell_max needs a grid (tip_cells > 0)")
        if not 0 <= int(self.tip_conv) <= TIP_MAX_CONV:
            raise ConfigError(
                f"tip_conv must be 0-{TIP_MAX_CONV} positions a side, got {self.tip_conv}"
            )
        if int(self.tip_conv) and (
            int(self.tip_cells) or int(self.tip_members) > 1 or int(self.tip_hard_per_bag)
        ):
            raise ConfigError(
                "tip_conv (a convolutional head) excludes tip_cells, tip_members and "
                "tip_hard_per_bag: set tip_cells 0 with it"
            )
        if not 0.0 <= float(self.tip_abs_share) <= 1.0:
            raise ConfigError(f"tip_abs_share must be in [0, 1], got {self.tip_abs_share}")
        if float(self.tip_abs_share) > 0 and not float(self.tip_weight) > 0:
            raise ConfigError("tip_abs_share reads the projected-threat head: set tip_weight > 0")
        if not 0.0 <= float(self.tip_clutter) <= 10.0:
            raise ConfigError(f"tip_clutter must be in [0, 10], got {self.tip_clutter}")
        if not 1 <= int(self.tip_draws) <= 8:
            raise ConfigError(f"tip_draws must be 1-8 heads, got {self.tip_draws}")
        if not 1 <= int(self.tip_members) <= 32:
            raise ConfigError(f"tip_members must be 1-32 nets, got {self.tip_members}")
        _check_range("tip_thickness_range", self.tip_thickness_range, 0.01, 4.0)
        if not 0 <= int(self.tip_decoys) <= 8:
            raise ConfigError(f"tip_decoys must be 0-8 objects a scan, got {self.tip_decoys}")
        _check_range("tip_size_range", self.tip_size_range, 0.25, 4.0)
        if self.tip_weight > 0 and (
            self.score_kind not in FEATURE_KINDS or self.scan_norm != "robust_z"
        ):
            raise ConfigError(
                "tip_weight adds a head that reads the feature memory, as a per-scan z-score: "
                f"it needs a feature-memory score kind ({', '.join(sorted(FEATURE_KINDS))}) "
                "and scan_norm='robust_z' (or tip_weight 0)"
            )

    def _validate_feature_memory(self) -> None:
        """Settings of the feature-memory score kinds, refused before any training."""
        if not (self.bank_level >= 1 and self.bank_k >= 1 and self.bank_size >= self.bank_k):
            raise ConfigError(
                "feature_knn needs bank_level >= 1, bank_k >= 1 and bank_size >= bank_k "
                f"(got {self.bank_level}, {self.bank_k}, {self.bank_size})"
            )
        levels = int(self.window).bit_length() - 3  # G_E activations: 64 px -> 4 (32..4 px)
        if self.bank_level > levels:
            raise ConfigError(
                f"bank_level {self.bank_level} does not exist for {self.window} px windows "
                f"(the encoder has {levels} activation levels)"
            )
        if self.research.get("generator", "dcgan") != "dcgan":
            raise ConfigError(
                f"score kind {self.score_kind} needs the DCGAN generator (G_E's features); "
                f"got generator {self.research.get('generator')!r}"
            )

    # -- derived views ---------------------------------------------------------------------
    @property
    def scale(self) -> WorkingScale:
        """The working pixel scale."""
        return WorkingScale(longer_side=self.longer_side, mm_per_pixel=self.mm_per_pixel)

    @property
    def channels(self) -> int:
        """Model input channels (the representation's unless ``nc`` overrides it)."""
        return int(self.nc) if self.nc else channels_of(self.representation)

    def model_config(self) -> GANomalyConfig:
        """The GANomaly architecture this config trains."""
        return GANomalyConfig(
            isize=self.window,
            nc=self.channels,
            nz=self.nz,
            ngf=self.ngf,
            ndf=self.ndf,
            extra_layers=self.extra_layers,
            spectral_norm_d=self.spectral_norm_d,
            # Generator variant (issue 7) goes into extras so bundles rebuild the right net.
            extras={
                k: self.research[k] for k in ("generator", "skip_max_res") if k in self.research
            },
        )

    def loss_weights(self) -> LossWeights:
        """Generator loss weights."""
        return LossWeights(self.w_adv, self.w_con, self.w_enc, self.enc_norm)  # type: ignore[arg-type]

    # -- (de)serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["tip_size_range"] = list(self.tip_size_range)
        d["tip_thickness_range"] = list(self.tip_thickness_range)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are refused (typos must not pass silently)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown training settings: {sorted(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> TrainConfig:
        """From a JSON string or a path to a JSON file."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text).read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"training settings are not valid JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def xray(cls, **changes: Any) -> TrainConfig:
        """The X-ray configuration chosen by the issue-7 ablation, with ``changes`` applied.

        Example:
            ``TrainConfig.xray(epochs=10, ngf=32)``
        """
        base: dict[str, Any] = {**XRAY_DEFAULTS, "research": dict(XRAY_RESEARCH_DEFAULTS)}
        if "window" in changes and "stride" not in changes:
            base["stride"] = changes["window"]  # the X-ray default's windows do not overlap
        return cls(**xray_settings({**base, **changes}, explicit=changes))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)
