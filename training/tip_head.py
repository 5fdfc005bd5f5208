"""Fit the projected-threat head (:mod:`xrayscreen.model.tip_head`) after GANomaly training.

For every normal TRAINING scan (never the held-out ones, which calibrate the score) the
product's own simulated threats -- gun, knife, box cutter, random shape, orientation and
place -- are projected into the bag (:func:`xrayscreen.imaging.tip.project_threat`),
each with a random size (the bag's pixel pitch taken :data:`SIZE_RANGE` times larger,
i.e. the threat shown up to half as large) and thickness (areal density x
:data:`THICKNESS_RANGE`, log-uniform: SIXray's knives are thin blue blades, lighter
than the simulator's steel). The scan is then cut like the protocol cuts it (64 px
windows, stride 16, at the working scale); windows that the protocol's box rule
(:func:`xrayscreen.evaluation.labelling.box_overlaps`: IoU > 0.3 or at least half
inside) would call threat are positives, a sample of the windows touching no threat
are negatives, empty belt excluded. Each window and its zoomed-out view are embedded
by the bundle's engine (the feature memory's standardised embedding), and one small
MLP per view learns to tell them apart (class-balanced BCE, Adam, weight decay,
dropout). A fifth of the projected bags is held out first to report how well the
heads separate projected threats they did not see; the shipped heads are then
refitted on all bags. No real threat is read at any point.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from xrayscreen.errors import ConfigError
from xrayscreen.evaluation.annotations import Box
from xrayscreen.evaluation.labelling import ANOMALOUS, NORMAL, label_boxes
from xrayscreen.evaluation.metrics import roc_auc
from xrayscreen.imaging.representation import model_input
from xrayscreen.imaging.scan import Scan
from xrayscreen.imaging.simulator import DECOYS, THREATS
from xrayscreen.imaging.tip import project_decoy, project_threat
from xrayscreen.inference import zoom
from xrayscreen.inference.windows import (
    WindowGrid,
    belt_mask,
    gather_windows,
    pad_to_grid,
    pad_with_air,
)
from xrayscreen.model.bundle import ModelBundle
from xrayscreen.model.tip_head import VIEWS, ConvTipHead, TipHead

#: Range of the factor the bag's pixel pitch is multiplied by for a projected threat
#: (uniform): 1 = the simulator's physical size, 2 = half as large.
SIZE_RANGE = (1.0, 2.0)
#: Range of the threat's thickness factor (log-uniform; < 1 = lighter).
THICKNESS_RANGE = (0.25, 1.0)
#: Without a known pitch a bag's longer side is taken to span this many millimetres.
FIELD_MM = 800.0
#: Protocol stride of the windows the head is trained on (working-scale pixels).
STRIDE = 16
#: Threat-free windows drawn per projected bag.
NEGATIVES_PER_BAG = 300
#: Share of a bag's threat-free windows a held-out separation's tail is read at.
TAIL_FPR = 0.001
HIDDEN = 64
EPOCHS = 30
#: The convolutional head (``conv`` > 0): hidden channels, kernel side and epochs (fewer
#: than the MLP's: every row is a map of positions, each one a training signal).
CONV_HIDDEN = 16
CONV_KERNEL = 3
CONV_EPOCHS = 6
#: Threat-free windows drawn per projected bag for a convolutional head: each is a map
#: of positions, every one a negative, so fewer windows carry as many negatives (and the
#: fit, ~2.5x dearer per row than the MLP's, stays near its cost).
CONV_NEGATIVES_PER_BAG = 100
#: Share of the bags each member of an averaged head is fitted on.
MEMBER_BAGS = 0.8
#: Share of projected bags held out to report the heads' own separation.
HOLDOUT = 0.2


@dataclasses.dataclass
class TipRows:
    """Embeddings of projected bags' windows: ``x[v]`` ``(N, D)`` per view, labels and
    the bag each row came from."""

    x: list[torch.Tensor]
    y: torch.Tensor
    bag: torch.Tensor
    n_bags: int
    n_threats: int
    #: True for the rows of the first fit (positives and the random negatives); False
    #: for the other threat-free windows, only kept when hard negatives are mined.
    sampled: torch.Tensor | None = None
    #: Per view, the ``(mean, std)`` the rows were standardised with (``None``: raw).
    scale: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def standardise(self) -> None:
        """Standardise every view's columns (a map's channels) in place (a grid input
        mixes the memory's standardised embedding with raw activations);
        :func:`fit_heads` folds it back."""
        self.scale = []
        for x in self.x:
            if x.ndim == 4:  # (N, C, h, w) maps: per channel, over rows and positions
                xf = x.float()  # once: ~2 GB for a 180-bag run's float16 maps
                m, sd = xf.mean(dim=(0, 2, 3)), xf.std(dim=(0, 2, 3)).clamp_min(1e-6)
                del xf
                x.sub_(m[:, None, None].to(x.dtype)).div_(sd[:, None, None].to(x.dtype))
            else:
                m, sd = x.mean(0), x.std(0).clamp_min(1e-6)
                x.sub_(m).div_(sd)  # in place: the rows of a 180-bag run are ~0.5 GB a view
            self.scale.append((m, sd))


def project_bag(
    scan: Scan,
    rng: np.random.Generator,
    per_bag: int,
    size_range: tuple[float, float] = SIZE_RANGE,
    thickness_range: tuple[float, float] = THICKNESS_RANGE,
    clutter: float = 0.0,
    kind_sizes: dict[str, tuple[float, float]] | None = None,
    decoys: int = 0,
    kind_thickness: dict[str, tuple[float, float]] | None = None,
    lighten: tuple[float, float] | None = None,
) -> tuple[Scan, list]:
    """``per_bag`` simulated threats projected one after another into a normal scan.

    Args:
        scan: A normal scan.
        rng: Draws the threats, their sizes, thicknesses, shapes and places.
        per_bag: Threats to project.
        size_range: Range of the factor the bag's pixel pitch is multiplied by
            (uniform; 2 = the threat shown half as large).
        thickness_range: Range of the areal-density factor (log-uniform).
        clutter: Placement toward the bag's dense contents
            (:func:`~xrayscreen.imaging.tip.project_threat`; 0 = anywhere in the bag).
        kind_sizes: Threat kinds drawn at their own pitch-factor range, one draw per
            threat (research: SIXray's knives are larger than its guns); the others
            share the bag's ``size_range`` draw.
        kind_thickness: Threat kinds drawn at their own thickness range (log-uniform;
            research: SIXray shows its knives lighter than its guns).
        decoys: Benign dense objects (:data:`~xrayscreen.imaging.simulator.DECOYS`)
            projected after the threats, at the threats' size and thickness draws; their
            boxes carry the decoy's name (:func:`_window_rows` makes them negatives).
        lighten: Research (sixteenth session): each threat's darkening of the RGB raised
            to a power drawn uniformly from this range (:func:`lighten_rgb`; < 1 lighter,
            hue kept), where the simulator's physics turns thin steel olive and SIXray
            shows it light teal. The raw energies are left as projected.

    Returns:
        The new scan (its own pixel pitch kept) and the threats' and decoys' boxes
        (original pixels).
    """
    h, w = scan.shape
    base = scan.pixel_mm or FIELD_MM / max(h, w)
    pitch = base * float(rng.uniform(*size_range))
    out = dataclasses.replace(scan, pixel_mm=pitch)
    boxes = []
    lo, hi = (math.log(t) for t in thickness_range)

    def put(project: Callable[..., Any], kind: str) -> None:
        nonlocal out
        own = (kind_thickness or {}).get(kind)
        t_lo, t_hi = (lo, hi) if own is None else (math.log(own[0]), math.log(own[1]))
        res = project(
            out,
            kind,
            seed=int(rng.integers(2**31)),
            thickness=float(math.exp(rng.uniform(t_lo, t_hi))),
            clutter=clutter,
        )
        new = res.scan
        if lighten is not None and kind in THREATS:  # drawn only when asked: same stream
            gamma = float(rng.uniform(*lighten))
            new = dataclasses.replace(new, rgb=lighten_rgb(out.rgb, new.rgb, gamma))
        out = new
        boxes.append(res.box)

    for kind in rng.choice(THREATS, per_bag):
        own = (kind_sizes or {}).get(str(kind))
        if own is not None:
            out = dataclasses.replace(out, pixel_mm=base * float(rng.uniform(*own)))
        elif out.pixel_mm != pitch:
            out = dataclasses.replace(out, pixel_mm=pitch)
        put(project_threat, str(kind))
    if decoys > 0:  # at the bag's size draw, after every threat's draws
        out = dataclasses.replace(out, pixel_mm=pitch)
        for kind in rng.choice(DECOYS, decoys):
            put(project_decoy, str(kind))
    # The working scale must not see the size jitter (a pitch-based scale would).
    return dataclasses.replace(out, pixel_mm=scan.pixel_mm), boxes


def lighten_rgb(before: np.ndarray, after: np.ndarray, gamma: float) -> np.ndarray:
    """``after`` (a projection into ``before``) with each pixel's darkening per channel,
    ``after / before``, raised to ``gamma``: < 1 lightens the projected object and keeps the
    channels' proportions (its hue); pixels the projection left alone stay as they are."""
    b = before.astype(np.float32) + 1.0
    ratio = np.clip((after.astype(np.float32) + 1.0) / b, 1e-3, 1.0)
    return np.clip(np.rint(b * ratio**gamma - 1.0), 0, 255).astype(np.uint8)


def _window_rows(
    engine: Any,
    scan: Scan,
    boxes: list,
    rng: np.random.Generator,
    every_negative: bool = False,
    cells: int = 0,
    cell_max: bool = False,
    conv: int = 0,
) -> tuple[list[torch.Tensor], np.ndarray, np.ndarray]:
    """Embeddings (one tensor per view) of a projected scan's positive windows and a
    sample of its threat-free ones (all of them with ``every_negative``, the sample
    flagged), their labels and the flags. Threat-free windows the protocol's box rule
    puts on a decoy (``boxes`` named in :data:`DECOYS`) are all negatives."""
    from xrayscreen.inference.engine import air_value, at_working_scale

    bundle = engine.bundle
    spec = bundle.input
    factor = spec.scale.factor(scan.shape, scan.pixel_mm)
    work = at_working_scale(scan, factor, spec.representation)
    grid = WindowGrid(*work.shape, int(spec.window), STRIDE)
    x = torch.from_numpy(model_input(work, spec.representation, None))
    air = torch.tensor(air_value(spec.representation), dtype=x.dtype)
    padded = pad_with_air(x, grid, air)
    grey = torch.from_numpy(work.rgb).float().mean(dim=2) / 255.0
    belt = belt_mask(pad_to_grid(grey, grid, 1.0), grid).numpy()

    # The protocol's own box rule, on the threats' boxes in working-scale pixels.
    def labels_of(decoy: bool) -> np.ndarray:
        scaled = [
            Box(b.x0 * factor, b.y0 * factor, b.x1 * factor, b.y1 * factor, "threat")
            for b in boxes
            if (b.label in DECOYS) == decoy
        ]
        return label_boxes(grid, scaled, ("threat",))[0]

    label = labels_of(False)
    pos = (label == ANOMALOUS) & ~belt
    clear = (label == NORMAL) & ~belt
    on_decoy = clear & (labels_of(True) == ANOMALOUS)
    free = np.nonzero(clear & ~on_decoy)[0]
    n_neg = CONV_NEGATIVES_PER_BAG if conv > 0 else NEGATIVES_PER_BAG
    neg = np.sort(rng.choice(free, min(n_neg, len(free)), replace=False))
    neg = np.concatenate([np.nonzero(on_decoy)[0], neg])
    rest = np.setdiff1d(free, neg) if every_negative else np.zeros(0, dtype=neg.dtype)
    idx = torch.from_numpy(np.concatenate([np.nonzero(pos)[0], neg, rest]))
    n_pos = int(pos.sum())
    labels = np.concatenate([np.ones(n_pos), np.zeros(len(neg) + len(rest))]).astype(np.float32)
    sampled = np.arange(len(labels)) < n_pos + len(neg)
    if not len(idx):
        return [], labels, sampled
    # A convolutional head's rows are maps (~16 KB a window in float32): kept in float16.
    keep = torch.float16 if conv > 0 else torch.float32
    rows = [
        engine.embed_windows(gather_windows(padded, grid, idx), cells, cell_max, conv)
        .cpu()
        .to(keep)
    ]
    if zoom.enabled(bundle.score):
        zv = zoom.ZoomedView(work, grid, zoom.factor_of(bundle.score), spec.representation, air)
        rows.append(engine.embed_windows(zv.windows(idx), cells, cell_max, conv).cpu().to(keep))
    else:  # no zoomed view: its column is never read; fit it on the same rows
        rows.append(rows[0])
    return rows, labels, sampled


def collect_rows(
    bundle: ModelBundle,
    scans: Iterable[Scan],
    device: torch.device,
    per_bag: int,
    seed: int,
    every_negative: bool = False,
    clutter: float = 0.0,
    cells: int = 0,
    cell_max: bool = False,
    conv: int = 0,
    size_range: tuple[float, float] = SIZE_RANGE,
    decoys: int = 0,
    thickness_range: tuple[float, float] = THICKNESS_RANGE,
) -> TipRows:
    """Project threats into ``scans`` and embed their labelled windows (both views);
    with ``every_negative`` all threat-free windows, the random sample flagged (the
    projections and the sample do not change). ``size_range``, ``decoys``,
    ``thickness_range``: see :func:`project_bag`.

    Raises:
        ConfigError: when no projected window could be labelled a threat.
    """
    from xrayscreen.inference.engine import ScoringEngine

    engine = ScoringEngine(bundle, device)
    rng = np.random.default_rng([seed, 0x71B])
    xs: list[list[torch.Tensor]] = [[] for _ in VIEWS]
    ys, bags, flags = [], [], []
    n_bags = n_threats = 0
    for scan in scans:
        tip, boxes = project_bag(
            scan, rng, per_bag, size_range, thickness_range, clutter=clutter, decoys=decoys
        )
        rows, labels, sampled = _window_rows(
            engine, tip, boxes, rng, every_negative, cells, cell_max, conv
        )
        n_threats += sum(b.label not in DECOYS for b in boxes)
        if not rows:
            continue
        for v in range(len(VIEWS)):
            xs[v].append(rows[v])
        ys.append(torch.from_numpy(labels))
        flags.append(torch.from_numpy(sampled))
        bags.append(torch.full((len(labels),), n_bags))
        n_bags += 1
    y = torch.cat(ys) if ys else torch.zeros(0)
    if not len(y) or y.sum() < 1 or (y == 0).sum() < 1:
        raise ConfigError(
            "the projected-threat head needs normal training scans with room for a threat "
            "and threat-free windows; none could be made"
        )
    return TipRows(
        [torch.cat(x) for x in xs],
        y,
        torch.cat(bags),
        n_bags,
        n_threats,
        torch.cat(flags) if every_negative else None,
    )


def train_mlp(
    x: torch.Tensor, y: torch.Tensor, seed: int, weight_decay: float = 1e-3
) -> nn.Sequential:
    """One view's head: ``Linear(D, 64) -> ReLU -> Dropout(0.2) -> Linear(64, 1)``,
    class-balanced BCE, Adam 1e-3 with ``weight_decay``, :data:`EPOCHS` epochs of
    minibatches of 512 (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # initialisation and dropout
    net = nn.Sequential(
        nn.Linear(x.shape[1], HIDDEN), nn.ReLU(), nn.Dropout(0.2), nn.Linear(HIDDEN, 1)
    )
    return _fit_bce(net, x.float(), y, gen, EPOCHS, weight_decay=weight_decay)


def _fit_bce(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    gen: torch.Generator,
    epochs: int,
    bf16: bool = False,
    weight_decay: float = 1e-3,
) -> nn.Module:
    """Fit ``net``'s ``(N, 1)`` logits to ``y`` -- class-balanced BCE, Adam 1e-3 with
    ``weight_decay``, minibatches of 512 in ``gen``'s order -- and return it in eval mode.
    Rows are cast to float32 a minibatch at a time (float16 rows stay small)."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=weight_decay)
    p = float(y.mean())
    lossf = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((1.0 - p) / max(p, 1e-6)))
    yf = y.float()
    with torch.enable_grad():
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=gen)
            for b in range(0, len(x), 512):
                i = perm[b : b + 512]
                opt.zero_grad()
                with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                    out = net(x[i].float()).squeeze(1)
                lossf(out.float(), yf[i]).backward()
                opt.step()
    return net.eval()


class ConvNet(nn.Module):
    """A convolutional head while it trains: ``body`` maps a standardised pooled encoder
    map to per-position logits, :meth:`forward` pools them to one window logit ``(N, 1)``
    exactly as :meth:`xrayscreen.model.tip_head.ConvTipHead.logits` does."""

    def __init__(self, channels: int, hidden: int = CONV_HIDDEN, kernel: int = CONV_KERNEL):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = self.body(x.float()).flatten(1)
        return (torch.logsumexp(pos.float(), dim=1) - math.log(pos.shape[1]))[:, None]


def train_head(x: torch.Tensor, y: torch.Tensor, seed: int) -> nn.Module:
    """One view's head on its rows: an MLP (:func:`train_mlp`) on flat rows, a
    :class:`ConvNet` on maps (``(N, C, h, w)``; same loss and optimiser,
    :data:`CONV_EPOCHS` epochs, bf16 autocast where the CPU has bf16 units)."""
    if x.ndim == 2:
        return train_mlp(x, y, seed)
    from xrayscreen.inference.engine import cpu_has_bf16

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = ConvNet(int(x.shape[1]))
    return _fit_bce(net, x, y, gen, CONV_EPOCHS, x.device.type == "cpu" and cpu_has_bf16())


def fold_conv_standardisation(net: ConvNet, mean: torch.Tensor, std: torch.Tensor) -> nn.Sequential:
    """``net`` fitted on maps standardised per channel as an equal ``Conv2d -> ReLU ->
    Conv2d`` on the raw map (exact: the convolution has no padding)."""
    conv1, conv2 = (m for m in net.body if isinstance(m, nn.Conv2d))
    first = nn.Conv2d(conv1.in_channels, conv1.out_channels, conv1.kernel_size)
    last = nn.Conv2d(conv2.in_channels, 1, 1)
    with torch.no_grad():
        w = conv1.weight / std[None, :, None, None]
        first.weight.copy_(w)
        first.bias.copy_(conv1.bias - (w * mean[None, :, None, None]).sum(dim=(1, 2, 3)))
        last.load_state_dict(conv2.state_dict())
    return nn.Sequential(first, nn.ReLU(), last).eval()


def fold_standardisation(
    net: nn.Sequential, mean: torch.Tensor, std: torch.Tensor
) -> nn.Sequential:
    """``net`` fitted on ``(x - mean) / std`` as an equal net on ``x`` itself (the first
    layer absorbs the standardisation), so the stored head reads the raw input."""
    lin = [m for m in net if isinstance(m, nn.Linear)]
    first = nn.Linear(lin[0].in_features, lin[0].out_features)
    with torch.no_grad():
        w = lin[0].weight / std[None, :]
        first.weight.copy_(w)
        first.bias.copy_(lin[0].bias - w @ mean)
    return nn.Sequential(first, nn.ReLU(), lin[1]).eval()


def average_nets(nets: list[nn.Sequential]) -> nn.Sequential:
    """One ``Linear -> ReLU -> Linear`` net whose logit is the mean of ``nets``' logits
    (their hidden units side by side, the output weights divided by their number): an
    ensemble stored in the head's own format, at the cost of a wider hidden layer."""
    lin = [[m for m in net if isinstance(m, nn.Linear)] for net in nets]
    n = len(nets)
    first = nn.Linear(lin[0][0].in_features, sum(ls[0].out_features for ls in lin))
    last = nn.Linear(first.out_features, 1)
    with torch.no_grad():
        first.weight.copy_(torch.cat([ls[0].weight for ls in lin]))
        first.bias.copy_(torch.cat([ls[0].bias for ls in lin]))
        last.weight.copy_(torch.cat([ls[1].weight for ls in lin], dim=1) / n)
        last.bias.copy_(torch.stack([ls[1].bias for ls in lin]).mean(dim=0))
    return nn.Sequential(first, nn.ReLU(), last).eval()


def _train_members(
    rows: TipRows, v: int, use: torch.Tensor, seed: int, members: int
) -> nn.Sequential:
    """One net on the rows ``use`` allows or, with ``members`` > 1, the average of that
    many, each on its own random :data:`MEMBER_BAGS` of the bags with its own seed
    (sub-bagging: one fit's idiosyncratic benign outliers average away, a response every
    member shares stays)."""
    if members <= 1:
        return train_head(rows.x[v][use], rows.y[use], seed)
    bags = torch.unique(rows.bag[use])
    gen = torch.Generator().manual_seed(seed)
    keep_n = max(1, round(MEMBER_BAGS * len(bags)))
    nets = []
    for m in range(members):
        keep = bags[torch.randperm(len(bags), generator=gen)[:keep_n]]
        sub = use & torch.isin(rows.bag, keep)
        nets.append(train_mlp(rows.x[v][sub], rows.y[sub], seed + 7919 * m))
    return average_nets(nets)


def _hard_rows(rows: TipRows, v: int, net: nn.Module, use: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` threat-free windows per bag that ``net`` scores highest,
    among those ``use`` allows and the first fit did not see."""
    cand = torch.nonzero(use & (rows.y == 0) & ~rows.sampled).squeeze(1)
    if not len(cand):
        return cand
    s = net(rows.x[v][cand].float()).squeeze(1).numpy()
    bag = rows.bag[cand].numpy()
    order = np.lexsort((-s, bag))  # by bag, then highest logit first
    ranked = bag[order]
    rank = np.arange(len(order)) - np.searchsorted(ranked, ranked, side="left")
    return cand[torch.from_numpy(order[rank < k])]


def _fit_view(
    rows: TipRows, v: int, use: torch.Tensor, seed: int, hard_per_bag: int, members: int = 1
) -> tuple[nn.Sequential, int]:
    """One view's head on the rows ``use`` allows: a first fit on the positives and
    the random negatives, then (``hard_per_bag`` > 0) a refit with each bag's
    threat-free windows the first fit scored highest added (one round of hard-negative
    mining: a normal bag's peak is a tail event, which random negatives rarely show).

    Returns:
        The head and how many hard negatives it was refitted with.
    """
    first = use if rows.sampled is None else use & rows.sampled
    net = _train_members(rows, v, first, seed, members)
    if hard_per_bag <= 0 or rows.sampled is None:
        return net, 0
    hard = _hard_rows(rows, v, net, use, hard_per_bag)
    chosen = first.clone()
    chosen[hard] = True
    return _train_members(rows, v, chosen, seed, members), int(len(hard))


@torch.no_grad()
def fit_heads(
    rows: TipRows, seed: int, hard_per_bag: int = 0, members: int = 1
) -> tuple[TipHead, dict[str, Any]]:
    """Both views' heads from embedded rows, with the held-out separation measured first.

    Args:
        rows: Embedded windows of the projected bags.
        seed: Seeds the heads' training.
        hard_per_bag: Hard negatives mined per bag (needs ``rows.sampled``).
        members: Nets averaged per view (1: a single net).

    Returns:
        The head, and what to record in the bundle's training notes: the held-out AUC
        of projected threats against the random threat-free windows (comparable with
        or without mining) and, when every threat-free window was embedded, the share of
        threat windows above the held-out bags' 99.9th percentile of all of them (the
        tail a bag's peak lives in).
    """
    cut = rows.n_bags * (1.0 - HOLDOUT)
    train, held = rows.bag < cut, rows.bag >= cut
    aucs: list[float | None] = []
    tails: list[float | None] = []
    for v in range(len(VIEWS)):
        yh = rows.y[held]
        if held.any() and 0 < yh.sum() < len(yh):
            net, _ = _fit_view(rows, v, train, seed + v, hard_per_bag, members)
            s = net(rows.x[v][held].float()).squeeze(1).numpy()
            y = yh.numpy()
            rand = np.ones(len(y), bool) if rows.sampled is None else rows.sampled[held].numpy()
            aucs.append(round(float(roc_auc(s[y == 1], s[rand & (y == 0)])), 4))
            if rows.sampled is not None:
                cut_s = np.quantile(s[y == 0], 1.0 - TAIL_FPR)
                tails.append(round(float(np.mean(s[y == 1] > cut_s)), 4))
        else:
            aucs.append(None)
    fits = [
        _fit_view(rows, v, torch.ones_like(train), seed + v, hard_per_bag, members)
        for v in range(len(VIEWS))
    ]
    conv = rows.x[0].ndim == 4
    if rows.scale is not None:  # the heads read the raw input
        fold = fold_conv_standardisation if conv else fold_standardisation
        fits = [(fold(net, *rows.scale[v]), n) for v, (net, n) in enumerate(fits)]
    elif conv:
        fits = [(net.body, n) for net, n in fits]
    y_first = rows.y if rows.sampled is None else rows.y[rows.sampled]
    info = {
        "projected_bags": rows.n_bags,
        "projected_threats": rows.n_threats,
        "threat_windows": int(y_first.sum()),
        "normal_windows": int((y_first == 0).sum()),
        "hard_per_bag": int(hard_per_bag),
        "members": int(members),
        "hard_windows": dict(zip(VIEWS, [n for _, n in fits])),
        "heldout_auc": dict(zip(VIEWS, aucs)),
    }
    if tails:
        info["heldout_tail_tpr"] = dict(zip(VIEWS, tails))
    kind = ConvTipHead if conv else TipHead
    return kind.from_modules([net for net, _ in fits]), info


def fit_tip_head(
    bundle: ModelBundle,
    scans: Iterable[Scan] | Callable[[], Iterable[Scan]],
    device: torch.device,
    *,
    per_bag: int = 2,
    seed: int = 0,
    hard_per_bag: int = 0,
    members: int = 1,
    clutter: float = 0.0,
    cells: int = 0,
    cell_max: bool = False,
    draws: int = 1,
    conv: int = 0,
    size_range: tuple[float, float] = SIZE_RANGE,
    decoys: int = 0,
    thickness_range: tuple[float, float] = THICKNESS_RANGE,
) -> tuple[TipHead | ConvTipHead, dict[str, Any]]:
    """Fit the projected-threat head of a trained bundle on its normal training scans.

    The bundle must already have its feature memory (the head reads its embeddings).

    Args:
        bundle: The trained bundle.
        scans: Normal TRAINING scans, or a function that reads them again from disk
            (called once a draw; a one-shot iterator is kept in memory for more draws).
        device: Where the generator runs.
        per_bag: Threats projected into each scan.
        seed: Seeds projection, sampling and the heads' training.
        hard_per_bag: Threat-free windows per bag the first fit scores highest, added
            for a refit (0: no mining; every threat-free window is embedded otherwise).
        members: Nets averaged per view, each on its own sub-sample of the bags (1: one
            net on all).
        clutter: Placement of the projected threats toward the bags' dense contents
            (0 = anywhere in the bag).
        cells: The head also reads the encoder map averaged over a ``cells`` x ``cells``
            grid of the window (:func:`xrayscreen.model.tip_head.head_input`; 0 = the
            pooled embedding alone).
        cell_max: The head reads each grid cell's maximum too.
        draws: Heads averaged, each fitted on its own draw of projected threats (seeds
            ``seed``, ``seed + 1``, ...; 1 = one head). One fit's luck moves the bag-level
            figures a lot (issue 7, eleventh session); ``scans`` is then read ``draws`` times.
        conv: A convolutional head (:class:`~xrayscreen.model.tip_head.ConvTipHead`) on
            the encoder map max-pooled to ``conv`` x ``conv`` positions instead of the MLP
            (0 = the MLP; exclusive with ``cells``, ``members`` and mining).
        size_range: Range (uniform) of the factor the scan's pixel pitch is multiplied
            by for each projected bag (1 = the threats' physical size, 2 = half as large).
        decoys: Benign dense objects projected into each scan after its threats, every
            window on one a negative (:func:`project_bag`; 0 = none).
        thickness_range: Range (log-uniform) of the projected threats' areal-density
            factor (:func:`project_bag`).

    Returns:
        The head and a JSON-able record (counts, held-out AUC per view, seconds).

    Raises:
        ConfigError: without a feature memory or without any usable projected window.
    """
    if bundle.feature_bank is None:
        raise ConfigError("the projected-threat head reads the feature memory; fit it first")
    if draws < 1:
        raise ConfigError(f"draws must be at least 1, got {draws}")
    if conv > 0 and (cells > 0 or members > 1 or hard_per_bag > 0):
        raise ConfigError(
            "a convolutional head reads no grid and is fitted as one net, without mining"
        )
    if callable(scans):  # read again from disk for every draw
        read = scans
    else:
        kept = list(scans) if draws > 1 and iter(scans) is scans else scans
        read = lambda: kept  # noqa: E731
    heads, infos = [], []
    embed_s = fit_s = 0.0
    for k in range(draws):
        t0 = time.perf_counter()
        rows = collect_rows(
            bundle,
            read(),
            device,
            per_bag,
            seed + k,
            every_negative=hard_per_bag > 0,
            clutter=clutter,
            cells=cells,
            cell_max=cell_max,
            conv=conv,
            size_range=tuple(size_range),
            decoys=decoys,
            thickness_range=tuple(thickness_range),
        )
        if cells > 0 or conv > 0:
            rows.standardise()
        t1 = time.perf_counter()
        head, info = fit_heads(rows, seed + k, hard_per_bag, members)
        del rows  # ~1 GB a draw with a grid
        heads.append(head)
        infos.append(info)
        embed_s += t1 - t0
        fit_s += time.perf_counter() - t1
    info = infos[0]
    if draws > 1:
        head = type(heads[0]).average(heads)
        info["heldout_auc_draws"] = [i["heldout_auc"] for i in infos]
    info["draws"] = int(draws)
    info["size_range"] = [float(v) for v in size_range]
    info["thickness_range"] = [float(v) for v in thickness_range]
    if decoys:
        info["decoys"] = int(decoys)
    info["embed_s"] = round(embed_s, 1)
    info["fit_s"] = round(fit_s, 1)
    info["per_bag"] = int(per_bag)
    info["clutter"] = float(clutter)
    info["cells"] = int(cells)
    info["cell_max"] = bool(cell_max)
    if conv:
        info["conv"] = int(conv)
        info["conv_hidden"] = CONV_HIDDEN
        info["conv_kernel"] = CONV_KERNEL
        info["conv_epochs"] = CONV_EPOCHS
    return head, info
