"""Training data: normal scans -> cached windows, split train/validation BY SCAN.

Windows are cut exactly as scoring cuts them: ``model_input`` at the working scale,
:class:`~xrayscreen.inference.windows.WindowGrid` origins, bottom/right padding with
air, and the shared empty-belt rule (:func:`~xrayscreen.inference.windows.belt_mask`).
They are cached once in RAM (uint8 for the RGB representation, which is exact;
float16 otherwise) so an epoch never re-decodes an image.

Split by scan, not by window: overlapping windows of one bag in both sets would
leak, making validation losses and the calibration optimistic.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from xrayscreen.errors import ConfigError, ScanError
from xrayscreen.imaging.representation import attenuation_ceiling, grey_at_scale, model_input
from xrayscreen.imaging.scan import Scan, ScanKind
from xrayscreen.inference.windows import WindowGrid, belt_mask, extract_windows, pad_to_grid

from .config import TrainConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# Value of "air" (nothing between source and detector) in each representation's
# [-1, 1] range: white RGB -> +1; zero attenuation -> -1.
AIR_VALUE = {"rgb": 1.0, "rgb_attenuation": -1.0, "log_attenuation": -1.0}

Source = str | os.PathLike[str] | Scan


# ------------------------------------------------------------------------ scan sources
def _readers() -> tuple[Any, Any] | None:
    """``(open_scan, is_scan_file)`` from the imaging readers when available."""
    try:
        from xrayscreen.imaging.readers import is_scan_file, open_scan
    except ImportError:
        return None
    return open_scan, is_scan_file


def is_scan_path(path: Path) -> bool:
    """True when ``path`` looks like a scan file the readers (or the fallback) accept."""
    r = _readers()
    if r is not None:
        try:
            return bool(r[1](path))
        except Exception:  # a reader probe must never abort listing a folder
            return False
    return path.suffix.lower() in IMAGE_SUFFIXES


def read_scan(path: Path) -> Scan:
    """Read one scan via the imaging readers (fallback: OpenCV for PNG/JPEG/TIFF/BMP).

    Raises:
        ScanError: if the file cannot be read.
    """
    r = _readers()
    if r is not None:
        return r[0](path)
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ScanError(f"cannot read {path} as an image")
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    return Scan(
        rgb=rgb,
        kind=ScanKind.PSEUDO_COLOUR,
        paths=(Path(path),),
        sha256=hashlib.sha256(data.tobytes()).hexdigest(),
    )


def list_sources(sources: Iterable[Source] | Source) -> list[Path | Scan]:
    """Expand folders (recursively, sorted), text file lists and paths into scan items.

    Args:
        sources: Folders, scan files, ``.txt`` lists (one path per line, ``#`` comments,
            relative to the list's folder), or :class:`Scan` objects. A single item works too.

    Raises:
        ScanError: if a named path does not exist or nothing usable was found.
    """
    if isinstance(sources, (str, os.PathLike, Scan)):
        sources = [sources]
    out: list[Path | Scan] = []
    for src in sources:
        if isinstance(src, Scan):
            out.append(src)
            continue
        p = Path(src)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            out.extend(f for f in files if is_scan_path(f))
        elif p.is_file() and p.suffix.lower() == ".txt":
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    q = Path(line)
                    out.append(q if q.is_absolute() else p.parent / q)
        elif p.is_file():
            out.append(p)
        else:
            raise ScanError(f"training source {p} does not exist")
    if not out:
        raise ScanError("no scans found in the training sources")
    return out


def iter_scans_of(
    sources: Iterable[Source] | Source, scan_ids: Sequence[str], scan_names: Sequence[str]
) -> Iterator[Scan]:
    """Read again the scans of ``sources`` that are ``scan_ids`` (e.g. a held-out split).

    Files are picked by name first (``scan_names``) and kept only when their sha256 is
    one of ``scan_ids``, so only those scans are read; unreadable or vanished files are
    skipped (the caller decides what too few means).
    """
    want, names = set(scan_ids), set(scan_names)
    seen: set[str] = set()
    try:
        items = list_sources(sources)
    except ScanError:
        return
    for item in items:
        if not isinstance(item, Scan) and names and Path(item).name not in names:
            continue
        try:
            scan = item if isinstance(item, Scan) else read_scan(Path(item))
        except ScanError:
            continue
        if scan.sha256 in want and scan.sha256 not in seen:
            seen.add(scan.sha256)
            yield scan


# ------------------------------------------------------------------------- windows
def scan_windows(scan: Scan, cfg: TrainConfig) -> tuple[torch.Tensor, int]:
    """Non-belt windows of one scan as float32 ``(N, C, w, w)`` in [-1, 1], and the total count.

    Same grid, padding and belt rule as scoring.
    """
    x = torch.from_numpy(model_input(scan, cfg.representation, cfg.scale))
    h, w = x.shape[-2:]
    grid = WindowGrid(int(h), int(w), cfg.window, cfg.stride)
    xp = pad_to_grid(x, grid, AIR_VALUE[cfg.representation])
    grey = pad_to_grid(torch.from_numpy(grey_at_scale(scan, cfg.scale)), grid, 1.0)
    keep = ~belt_mask(grey, grid)
    return extract_windows(xp, grid)[keep], len(grid)


def encode(x: torch.Tensor, representation: str) -> torch.Tensor:
    """Compact cache encoding: uint8 for "rgb" (exact: the input was 8-bit), else float16."""
    if representation == "rgb":
        return torch.round((x.float() + 1.0) * 127.5).clamp_(0, 255).to(torch.uint8)
    return x.to(torch.float16)


def decode(t: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode` -> float32 in [-1, 1] (bit-identical to ``model_input`` for RGB)."""
    if t.dtype == torch.uint8:
        return t.float() / 255.0 * 2.0 - 1.0
    return t.float()


@dataclass
class WindowSet:
    """Cached windows and which scan each came from.

    Attributes:
        data: ``(N, C, w, w)`` uint8 (see :func:`encode`) or float16.
        scan_index: ``(N,)`` int64 index into ``scan_ids``.
        scan_ids: sha256 of each scan.
        scan_names: Display names of the scans.
    """

    data: torch.Tensor
    scan_index: torch.Tensor
    scan_ids: list[str] = field(default_factory=list)
    scan_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def subset_scans(self, scans: Sequence[int]) -> WindowSet:
        """Windows of the given scan indices (re-indexed)."""
        scans = sorted(int(s) for s in scans)
        remap = torch.full((len(self.scan_ids),), -1, dtype=torch.int64)
        remap[torch.as_tensor(scans, dtype=torch.int64)] = torch.arange(len(scans))
        new_idx = remap[self.scan_index]
        keep = new_idx >= 0
        return WindowSet(
            data=self.data[keep],
            scan_index=new_idx[keep],
            scan_ids=[self.scan_ids[s] for s in scans],
            scan_names=[self.scan_names[s] for s in scans] if self.scan_names else [],
        )

    def per_scan(self) -> list[torch.Tensor]:
        """Window indices of each scan (in scan order)."""
        return [torch.nonzero(self.scan_index == i).flatten() for i in range(len(self.scan_ids))]

    def fingerprint(self) -> str:
        """sha256 over the sorted scan sha256s: the training data's identity."""
        return data_fingerprint(self.scan_ids)


def data_fingerprint(scan_ids: Iterable[str]) -> str:
    """sha256 over the sorted scan hashes."""
    h = hashlib.sha256()
    for s in sorted(scan_ids):
        h.update(s.encode("ascii"))
        h.update(b"\n")
    return h.hexdigest()


@dataclass
class LoadProgress:
    """One scan processed while building the cache."""

    done: int
    total: int
    name: str
    n_windows: int


def iter_load_windows(
    sources: Iterable[Source] | Source, cfg: TrainConfig, max_scans: int = 0
) -> Iterator[LoadProgress | WindowSet]:
    """Read every scan once and cut its windows; yields progress, then the :class:`WindowSet`.

    Duplicate scans (same sha256) are used once. ``max_scans`` > 0 keeps the first N
    items (in sorted order). Unreadable files raise :class:`ScanError` naming the file.
    """
    items = list_sources(sources)
    if max_scans > 0:
        items = items[:max_scans]
    chunks: list[torch.Tensor] = []
    idx: list[torch.Tensor] = []
    ids: list[str] = []
    names: list[str] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        scan = item if isinstance(item, Scan) else read_scan(item)
        if scan.sha256 in seen:
            yield LoadProgress(i + 1, len(items), scan.name, 0)
            continue
        seen.add(scan.sha256)
        w, _ = scan_windows(scan, cfg)
        if cfg.max_windows_per_scan and w.shape[0] > cfg.max_windows_per_scan:
            g = torch.Generator().manual_seed(_seed_from(cfg.seed, scan.sha256))
            pick = torch.randperm(w.shape[0], generator=g)[: cfg.max_windows_per_scan]
            w = w[pick.sort().values]
        chunks.append(encode(w, cfg.representation))
        idx.append(torch.full((w.shape[0],), len(ids), dtype=torch.int64))
        ids.append(scan.sha256)
        names.append(scan.name)
        yield LoadProgress(i + 1, len(items), scan.name, int(w.shape[0]))
        del scan
    if not ids:
        raise ScanError("no scans could be read from the training sources")
    dtype = torch.uint8 if cfg.representation == "rgb" else torch.float16
    c, win = cfg.channels, cfg.window
    data = torch.cat(chunks) if chunks else torch.empty((0, c, win, win), dtype=dtype)
    yield WindowSet(data=data, scan_index=torch.cat(idx), scan_ids=ids, scan_names=names)


def load_windows(
    sources: Iterable[Source] | Source, cfg: TrainConfig, max_scans: int = 0
) -> WindowSet:
    """Blocking version of :func:`iter_load_windows` (with the optional cache file)."""
    if cfg.cache_file:
        cached = read_cache(cfg.cache_file, cfg)
        if cached is not None:
            return cached
    ws = None
    for item in iter_load_windows(sources, cfg, max_scans):
        if isinstance(item, WindowSet):
            ws = item
    assert ws is not None
    if cfg.cache_file:
        write_cache(cfg.cache_file, ws, cfg)
    return ws


def _seed_from(seed: int, text: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{text}".encode()).digest()[:7], "little")


def _cache_key(cfg: TrainConfig) -> dict[str, Any]:
    return {
        "window": cfg.window,
        "stride": cfg.stride,
        "representation": cfg.representation,
        "scale": cfg.scale.to_dict(),
        "max_windows_per_scan": cfg.max_windows_per_scan,
        "seed": cfg.seed if cfg.max_windows_per_scan else None,
    }


def write_cache(path: str | os.PathLike[str], ws: WindowSet, cfg: TrainConfig) -> None:
    """Save the window cache as safetensors (atomic) with its settings and scan ids."""
    from safetensors.torch import save

    from xrayscreen.atomic import atomic_write_bytes

    meta = {
        "key": json.dumps(_cache_key(cfg)),
        "scan_ids": json.dumps(ws.scan_ids),
        "scan_names": json.dumps(ws.scan_names),
    }
    blob = save({"data": ws.data.contiguous(), "scan_index": ws.scan_index}, metadata=meta)
    atomic_write_bytes(path, blob)


def read_cache(path: str | os.PathLike[str], cfg: TrainConfig) -> WindowSet | None:
    """Load a cache written by :func:`write_cache` if it matches ``cfg``; else ``None``.

    Note: the cache is matched on settings, not on the source files; delete it when the
    scan folder changes (the bundle's data fingerprint comes from the cached scan ids).
    """
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        return None
    with safe_open(str(p), framework="pt") as fh:
        meta = fh.metadata() or {}
        if json.loads(meta.get("key", "null")) != json.loads(json.dumps(_cache_key(cfg))):
            return None
        data, sidx = fh.get_tensor("data"), fh.get_tensor("scan_index")
    return WindowSet(data, sidx, json.loads(meta["scan_ids"]), json.loads(meta["scan_names"]))


# --------------------------------------------------------------------------- split
@dataclass
class Split:
    """Train / validation window sets (disjoint scans)."""

    train: WindowSet
    val: WindowSet


def split_by_scan(
    ws: WindowSet,
    val_fraction: float,
    seed: int,
    min_val_scans: int = 1,
    groups: Mapping[str, str] | None = None,
) -> Split:
    """Split windows train/validation by scan, deterministically from ``seed``.

    The order does not depend on how the scans were listed: scans are sorted by
    sha256 before the seeded permutation. With one scan or ``val_fraction == 0``
    validation is empty.

    With rescan ``groups`` (scan name stem -> physical-bag key,
    :func:`xrayscreen.evaluation.groups.load_groups`) a bag's scans stay on one side: in
    the same permutation, whole groups go to validation until it holds the wanted number
    of scans (it may hold up to one group's size minus one more), so a held-out scan never
    has its rescan among the training windows or the feature memory (whose nearest
    neighbour would then be its own twin, and the calibration too optimistic). Scans in
    no group, and every scan without ``groups``, are their own group: the split is then
    exactly the ungrouped one.

    Raises:
        ConfigError: if the fraction is out of range.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = len(ws.scan_ids)
    n_val = 0
    if val_fraction > 0 and n >= 2:
        n_val = min(n - 1, max(min_val_scans, int(math.floor(val_fraction * n + 0.5))))
    order = sorted(range(n), key=lambda i: ws.scan_ids[i])
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g).tolist()
    shuffled = [order[p] for p in perm]
    if not groups:
        val_scans = shuffled[:n_val]
    else:
        from xrayscreen.evaluation.groups import group_of

        names = ws.scan_names or ws.scan_ids

        def key(i: int) -> str:
            return group_of(names[i], groups) or "\0" + ws.scan_ids[i]

        members: dict[str, list[int]] = {}
        for i in shuffled:
            members.setdefault(key(i), []).append(i)
        val_scans = []
        for g in members:  # first-seen order: the permutation's, by whole groups
            if len(val_scans) >= n_val:
                break
            if len(val_scans) + len(members[g]) <= n - 1:  # keep a training scan
                val_scans += members[g]
    taken = set(val_scans)
    train_scans = [i for i in shuffled if i not in taken]
    return Split(train=ws.subset_scans(train_scans), val=ws.subset_scans(val_scans))


# ----------------------------------------------------------------- augmentation + loader
def render_gamma(x: torch.Tensor, representation: str, gamma: float) -> torch.Tensor:
    """Model-input windows as another scanner might render them: transmission
    ``T -> T ** gamma`` (> 1 denser-looking, < 1 thinner).

    For the ``-log`` inputs that scales the attenuation (clipped at the representation's
    ceiling); for ``"rgb"`` (the display grey level is the transmission) it is a power.
    """
    x = x.float()
    if attenuation_ceiling(representation) is None:
        return x.add(1.0).mul_(0.5).pow_(gamma).mul_(2.0).sub_(1.0)
    return x.add(1.0).mul_(gamma).sub_(1.0).clamp_(-1.0, 1.0)


def hue_rotation(degrees: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 3)`` matrices rotating RGB about the grey axis by ``degrees``.

    Grey (R = G = B) is left unchanged, so air and the opacity of colourless objects keep
    their values; the colour of a material turns as another scanner's palette would
    (a linear stand-in for a hue shift, not OpenCV's HSV one, which the robustness
    measurements in docs/BENCHMARKS.md render with).
    """
    t = torch.deg2rad(degrees.float())
    c, s = torch.cos(t), torch.sin(t)
    dev = degrees.device  # built where the angles are, so a GPU batch never crosses to the host
    k = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], device=dev)
    k = k / math.sqrt(3.0)
    eye, ones = torch.eye(3, device=dev), torch.full((3, 3), 1.0 / 3.0, device=dev)
    return c[:, None, None] * eye + s[:, None, None] * k + (1.0 - c)[:, None, None] * ones


def render_jitter(
    x: torch.Tensor, representation: str, gamma: torch.Tensor, hue: torch.Tensor
) -> torch.Tensor:
    """Windows rendered as other scanners might: window ``i``'s transmission raised to
    ``gamma[i]`` (denser or thinner) and, for three-channel inputs, its colours turned by
    ``hue[i]`` degrees about the grey axis (another false-colour palette).

    Works in transmission, the quantity both renderings act on, and maps back to the
    representation's range (air stays air; values clipped as :func:`model_input` clips).
    """
    x = x.float()
    ceiling = attenuation_ceiling(representation)
    if ceiling is None:
        t = x.add(1.0).mul_(0.5)
    else:
        t = torch.exp(x.add(1.0).mul_(-0.5 * ceiling))
    gamma, hue = gamma.to(x.device), hue.to(x.device)  # drawn on the host, applied anywhere
    t = t.clamp_min(1e-6).pow(gamma.float().view(-1, 1, 1, 1))
    if x.shape[1] == 3 and bool((hue != 0).any()):
        t = torch.einsum("nij,njhw->nihw", hue_rotation(hue), t)
    if ceiling is None:
        return t.clamp_(0.0, 1.0).mul_(2.0).sub_(1.0)
    floor = math.exp(-ceiling)
    return t.clamp_(floor, 1.0).log_().mul_(-2.0 / ceiling).sub_(1.0).clamp_(-1.0, 1.0)


@dataclass(frozen=True)
class RenderJitter:
    """Per-window rendering augmentation of the generator's training windows.

    Attributes:
        gamma: Each window's transmission is raised to G, log-uniform in
            ``[1 / gamma, gamma]`` (1 = off).
        hue: Each window's colours turn by a uniform angle in ``[-hue, hue]`` degrees
            (0 = off; three-channel inputs only).
        representation: The model input the windows are in.
        seed: Base seed; window parameters are a pure function of it and the batch, so
            DataLoader workers and resumed runs draw the same ones.
    """

    gamma: float
    hue: float
    representation: str
    seed: int

    @property
    def active(self) -> bool:
        return self.gamma > 1.0 or self.hue > 0.0

    def apply(self, x: torch.Tensor, batch_seed: int) -> torch.Tensor:
        """Render batch ``x`` with parameters drawn from ``batch_seed``."""
        g = torch.Generator().manual_seed(int(batch_seed) % (2**63 - 1))
        n = x.shape[0]
        log_g = math.log(max(self.gamma, 1.0))
        gamma = torch.exp((torch.rand(n, generator=g) * 2.0 - 1.0) * log_g)
        hue = (torch.rand(n, generator=g) * 2.0 - 1.0) * float(self.hue)
        return render_jitter(x, self.representation, gamma, hue)


N_AUGMENT = 8  # 4 rotations x optional horizontal flip: the dihedral group of the square


def augment(x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Apply dihedral transform ``codes[i]`` (0..7; 0 = identity) to window ``x[i]``."""
    out = x.clone()
    for c in torch.unique(codes).tolist():
        if c == 0:
            continue
        m = codes == c
        y = x[m]
        if c >= 4:
            y = torch.flip(y, dims=(-1,))
        out[m] = torch.rot90(y, k=c % 4, dims=(-2, -1))
    return out


class _BatchDataset(Dataset):
    """One item = one batch (indices and augmentation codes chosen in the main process,
    so workers and resumes see exactly the same batches)."""

    def __init__(
        self,
        data: torch.Tensor,
        batches: list[torch.Tensor],
        codes: list[torch.Tensor],
        jitter: RenderJitter | None = None,
        epoch_seed: int = 0,
    ):
        self.data, self.batches, self.codes = data, batches, codes
        self.jitter = jitter if jitter is not None and jitter.active else None
        self.epoch_seed = int(epoch_seed)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> torch.Tensor:
        return make_batch(
            self.data, self.batches[i], self.codes[i], self.jitter, self.epoch_seed, i
        )


def make_batch(
    data: torch.Tensor,
    idx: torch.Tensor,
    codes: torch.Tensor,
    jitter: RenderJitter | None,
    epoch_seed: int,
    i: int,
) -> torch.Tensor:
    """Batch ``i`` of an epoch: windows ``idx`` of ``data`` decoded, turned by their dihedral
    ``codes`` and, with an active ``jitter``, rendered with parameters drawn from the epoch
    seed and ``i``. Runs on whatever device ``data`` is on (the host loader and the
    device-resident path share it, so both give the same batches)."""
    x = augment(decode(data[idx.to(data.device)]), codes.to(data.device))
    if jitter is not None and jitter.active:
        x = jitter.apply(x, int(epoch_seed) * 100_003 + i + jitter.seed)
    return x


def resident_windows(
    data: torch.Tensor, device: torch.device, free_bytes: int | None = None
) -> torch.Tensor | None:
    """``data`` copied once onto an accelerator ``device`` for :func:`device_batches`, or
    ``None`` to keep the host loader: on the CPU (nothing to move), or when the windows
    would take more than a quarter of the device's free memory (``free_bytes``; read from
    the device when not given) and would crowd out the model's activations.

    Why: on the H200 the recipe's fit ran at half the bare step rate with every batch
    decoded, turned, rendered and uploaded by the host (docs/BENCHMARKS.md, "The CUDA
    path"); the cache is uint8, a quarter of the float32 batches' bytes, and goes up once.
    """
    if device.type == "cpu":
        return None
    if free_bytes is None:
        if device.type != "cuda":
            return None
        free_bytes, _ = torch.cuda.mem_get_info(device)
    if data.numel() * data.element_size() > free_bytes // 4:
        return None
    return data.to(device)


def device_batches(
    data: torch.Tensor,
    batches: list[torch.Tensor],
    codes: list[torch.Tensor],
    jitter: RenderJitter | None = None,
    epoch_seed: int = 0,
) -> Iterator[torch.Tensor]:
    """The batches :func:`make_loader` yields, made where ``data`` lives (see
    :func:`resident_windows`): indices and augmentation codes are chosen on the host exactly
    as for the loader, only the window work moves."""
    for i, (idx, code) in enumerate(zip(batches, codes, strict=True)):
        yield make_batch(data, idx, code, jitter, epoch_seed, i)


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of an epoch's shuffle/augmentation (a pure function: resumes reproduce it)."""
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2**63 - 1)


def epoch_batches(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    *,
    augment_on: bool,
    rank: int = 0,
    world: int = 1,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Index and augmentation-code batches of one epoch for one rank.

    Every rank draws the same permutation and takes every ``world``-th element;
    the last incomplete batch is dropped (batch-norm needs real batches) unless the
    set is smaller than one batch.
    """
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    perm = torch.randperm(n, generator=g)
    codes = (
        torch.randint(0, N_AUGMENT, (n,), generator=g)
        if augment_on
        else torch.zeros(n, dtype=torch.int64)
    )
    mine = perm[rank::world]
    my_codes = codes[rank::world]
    per_rank = n // world
    mine, my_codes = mine[:per_rank], my_codes[:per_rank]
    if per_rank < batch_size:
        if per_rank < 2:
            raise ConfigError(f"too few training windows ({n}) for {world} process(es)")
        return [mine], [my_codes]
    k = per_rank // batch_size
    return (
        [mine[i * batch_size : (i + 1) * batch_size] for i in range(k)],
        [my_codes[i * batch_size : (i + 1) * batch_size] for i in range(k)],
    )


def make_loader(
    data: torch.Tensor,
    batches: list[torch.Tensor],
    codes: list[torch.Tensor],
    num_workers: int = 0,
    jitter: RenderJitter | None = None,
    epoch_seed: int = 0,
) -> DataLoader:
    """A DataLoader that yields the given batches in order (float32, augmented; rendered
    by ``jitter`` when given, with parameters drawn from ``epoch_seed`` and the batch)."""
    return DataLoader(
        _BatchDataset(data, batches, codes, jitter, epoch_seed),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        persistent_workers=False,
    )
