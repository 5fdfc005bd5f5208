"""The GUI's single doorway into the core.

Every core API the workstation uses is imported here, so the rest of the GUI
depends on one small surface. While parts of the core are still being built
(readers, enhancement, scoring engine, regions, registry), small fallbacks keep
the window usable; each fallback is plain numpy/cv2/torch (no Qt) and is used
only when the core module is missing.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from xrayscreen.errors import BundleError, ScanError
from xrayscreen.imaging.scan import Scan, ScanKind

REPO_ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------- readers
try:
    from xrayscreen.imaging.readers import SCAN_FILE_FILTERS as _CORE_FILTERS
    from xrayscreen.imaging.readers import find_pair as _core_find_pair
    from xrayscreen.imaging.readers import is_scan_file as _core_is_scan_file
    from xrayscreen.imaging.readers import open_scan as _core_open_scan
except ImportError:  # readers not landed yet
    _CORE_FILTERS = None
    _core_open_scan = _core_find_pair = _core_is_scan_file = None

_FALLBACK_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def file_filters() -> list[str]:
    """Qt file-dialog filters, one per format plus "all scans" first."""
    if _CORE_FILTERS is not None:
        f = _CORE_FILTERS
        if isinstance(f, str):
            return [s for s in f.split(";;") if s]
        if isinstance(f, dict):
            return [
                f"{name} ({' '.join(pats) if not isinstance(pats, str) else pats})"
                for name, pats in f.items()
            ]
        out = []
        for item in f:
            if isinstance(item, (tuple, list)) and len(item) == 2:
                name, pats = item
                out.append(f"{name} ({pats if isinstance(pats, str) else ' '.join(pats)})")
            else:
                out.append(str(item))
        return out
    pats = " ".join(f"*{e}" for e in _FALLBACK_EXTS)
    return [
        f"Scans ({pats})",
        "PNG (*.png)",
        "JPEG (*.jpg *.jpeg)",
        "TIFF (*.tif *.tiff)",
        "All files (*)",
    ]


def is_scan_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like a scan the readers accept (by name)."""
    if _core_is_scan_file is not None:
        try:
            return bool(_core_is_scan_file(path))
        except Exception:
            return False
    return Path(path).suffix.lower() in _FALLBACK_EXTS


def find_pair(path: str | os.PathLike[str]) -> tuple[Path, Path] | None:
    """The (high, low) partner files of a dual-energy file, if the core knows the convention."""
    if _core_find_pair is None:
        return None
    try:
        pair = _core_find_pair(path)
    except Exception:
        return None
    if not pair:
        return None
    if hasattr(pair, "high"):
        return Path(pair.high), Path(pair.low)
    return Path(pair[0]), Path(pair[1])


def open_scan(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> Scan:
    """Read one scan file or a ``(high, low)`` pair.

    Raises:
        ScanError: the file is missing, unreadable or not a scan.
    """
    if _core_open_scan is not None:
        if isinstance(source, (list, tuple)):
            return _core_open_scan(tuple(source))
        return _core_open_scan(source)
    return _fallback_open(source)


def _fallback_open(source: Any) -> Scan:
    import hashlib

    if isinstance(source, (list, tuple)):
        hi, lo = (Path(s) for s in source)
        a, b = _read_grey(hi), _read_grey(lo)
        if a.shape != b.shape:
            raise ScanError(f"high/low images differ in size: {a.shape} vs {b.shape}")
        raw = np.stack([a, b]).astype(np.float32)
        g = (np.clip(raw.mean(0), 0, 1) * 255).astype(np.uint8)
        sha = hashlib.sha256(hi.read_bytes() + lo.read_bytes()).hexdigest()
        return Scan(np.dstack([g, g, g]), ScanKind.DUAL_ENERGY, raw=raw, paths=(hi, lo), sha256=sha)
    p = Path(source)
    if not p.is_file():
        raise ScanError(f"{p} does not exist")
    data = np.frombuffer(p.read_bytes(), np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise ScanError(f"{p.name} is not a readable image (corrupt or unknown format)")
    sha = hashlib.sha256(data.tobytes()).hexdigest()
    return Scan(
        np.ascontiguousarray(img[:, :, ::-1]), ScanKind.PSEUDO_COLOUR, paths=(p,), sha256=sha
    )


def _read_grey(p: Path) -> np.ndarray:
    img = (
        cv2.imdecode(np.frombuffer(p.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
        if p.is_file()
        else None
    )
    if img is None:
        raise ScanError(f"{p.name} is not a readable image")
    if img.ndim == 3:
        img = img.mean(axis=2)
    top = 65535.0 if img.dtype == np.uint16 else 255.0
    return img.astype(np.float32) / top


# ------------------------------------------------------------------------------- display
try:
    from xrayscreen.imaging.enhance import MODES as _CORE_MODES
    from xrayscreen.imaging.enhance import render as _core_render
except ImportError:
    _CORE_MODES = None
    _core_render = None


def display_modes() -> list[str]:
    """Display mode names, in menu order (first = default)."""
    if _CORE_MODES is not None:
        return list(_CORE_MODES)
    return ["false_colour", "grayscale", "negative"]


def render(
    scan: Scan, mode: str, brightness: float = 0.0, contrast: float = 1.0, gamma: float = 1.0
) -> np.ndarray:
    """Display RGB ``(H, W, 3)`` uint8 of ``scan`` in ``mode`` with the enhancement controls."""
    if _core_render is not None:
        return _core_render(scan, mode, brightness=brightness, contrast=contrast, gamma=gamma)
    img = scan.rgb.astype(np.float32) / 255.0
    if mode == "grayscale":
        img = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
    elif mode == "negative":
        img = 1.0 - img
    img = np.clip((img - 0.5) * contrast + 0.5 + brightness, 0.0, 1.0) ** (1.0 / max(gamma, 1e-3))
    return (img * 255.0 + 0.5).astype(np.uint8)


def mode_label(mode: str) -> str:
    """Human label of a mode name (the core's label, else ``"false_colour"`` -> ``"False colour"``)."""
    try:
        from xrayscreen.imaging.enhance import MODE_LABELS

        if mode in MODE_LABELS:
            return str(MODE_LABELS[mode])
    except ImportError:
        pass
    return str(mode).replace("_", " ").replace("-", " ").capitalize()


# ------------------------------------------------------------------------------- demo scans
def demo_scan_paths() -> list[Path]:
    """Bundled demo scans (from the imaging core); a generated one while none is bundled."""
    try:
        from xrayscreen.imaging.demo import demo_scan_paths as core_demo

        found = [Path(p) for p in core_demo()]
        if found:
            return found
    except ImportError:
        pass
    demo_dir = REPO_ROOT / "resources" / "demo"
    if demo_dir.is_dir():
        found = sorted(p for p in demo_dir.iterdir() if is_scan_file(p))
        if found:
            return found
    return [_generated_demo()]


def _generated_demo() -> Path:
    """A synthetic bag image (no research data) in the cache dir."""
    from xrayscreen import paths

    out = paths.cache_dir() / "demo_bag.png"
    if out.is_file():
        return out
    rng = np.random.default_rng(7)
    h, w = 600, 800
    img = np.full((h, w, 3), 245, np.uint8)
    cv2.rectangle(img, (80, 90), (720, 520), (150, 170, 215), -1)
    cv2.rectangle(img, (80, 90), (720, 520), (60, 90, 170), 6)
    for _ in range(14):
        x, y = int(rng.integers(120, 620)), int(rng.integers(130, 430))
        colour = [(230, 150, 60), (90, 180, 90), (70, 110, 220)][int(rng.integers(0, 3))]
        cv2.rectangle(
            img, (x, y), (x + int(rng.integers(30, 110)), y + int(rng.integers(20, 80))), colour, -1
        )
    pts = np.array([[470, 260], [610, 250], [612, 268], [472, 276]], np.int32)
    cv2.fillPoly(img, [pts], (20, 40, 140))  # a dense metal blade-like object
    img = cv2.GaussianBlur(img, (5, 5), 0)
    cv2.imwrite(str(out), img[:, :, ::-1])
    return out


# ------------------------------------------------------------------------------- models
def active_bundle_path() -> Path | None:
    """The active model bundle: the registry's choice, else the bundled default, else None."""
    try:
        from xrayscreen.registry import active_bundle_path as reg_active

        p = reg_active()
        if p is not None and Path(p).exists():
            return Path(p)
    except ImportError:
        pass
    except Exception:
        pass
    default = REPO_ROOT / "resources" / "default_model"
    if (default / "model.json").is_file():
        return default
    return None


def list_models() -> list[Any]:
    """Registered models (registry entries), or [] without a registry."""
    try:
        from xrayscreen.registry import list_models as reg_list
    except ImportError:
        return []
    try:
        return list(reg_list())
    except Exception:
        return []


def activate_model(model_id: str) -> Path | None:
    """Make ``model_id`` the active model in the registry; returns its bundle path."""
    from xrayscreen.registry import activate

    res = activate(model_id)
    if isinstance(res, (str, os.PathLike)):
        return Path(res)
    return active_bundle_path()


def load_bundle(path: str | os.PathLike[str]) -> Any:
    """Load a model bundle (never executes code from it)."""
    from xrayscreen.model.bundle import load_bundle as core_load

    return core_load(path)


def resolve_device(pref: str) -> str:
    """``"auto"`` -> ``"cuda"`` when available else ``"cpu"``."""
    import torch

    if pref == "cuda" and not torch.cuda.is_available():
        return "cpu"
    if pref == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return pref


# ------------------------------------------------------------------------------- scoring
try:
    from xrayscreen.inference.engine import ScoringEngine as _CoreEngine
except ImportError:
    _CoreEngine = None


@dataclass
class FallbackProgress:
    """Progress of a scoring run (mirrors the engine's ScoreProgress)."""

    done: int
    total: int
    partial: Any = None


@dataclass
class FallbackResult:
    """Heat maps of one scan (mirrors the engine's ScanResult)."""

    latent_map: np.ndarray
    residual_map: np.ndarray | None
    scale_factor: float
    scan_shape: tuple[int, int]
    model_id: str
    device: str
    timings: dict[str, float] = field(default_factory=dict)

    def map_at_scan_resolution(self, kind: str = "latent") -> np.ndarray:
        m = self.latent_map if kind == "latent" or self.residual_map is None else self.residual_map
        h, w = self.scan_shape
        return cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)


class _FallbackEngine:
    """Minimal batched window scorer used until the core engine lands."""

    def __init__(self, bundle: Any, device: str | None = None) -> None:
        import torch

        self.bundle = bundle
        self.device = torch.device(device or "cpu")
        self.bundle.generator.to(self.device).eval()

    def score_scan(
        self,
        scan: Scan,
        stride: int = 16,
        cancel: threading.Event | None = None,
        batch_size: int = 256,
    ) -> Generator[FallbackProgress, None, FallbackResult]:
        import torch

        from xrayscreen.imaging.representation import grey_at_scale, model_input
        from xrayscreen.inference.windows import (
            WindowGrid,
            belt_mask,
            extract_windows,
            fold_mean,
            pad_to_grid,
        )
        from xrayscreen.model.score import score_windows

        t0 = time.perf_counter()
        b = self.bundle
        x = torch.from_numpy(model_input(scan, b.input.representation, b.input.scale)).to(
            self.device
        )
        grey = torch.from_numpy(grey_at_scale(scan, b.input.scale)).to(self.device)
        h, w = x.shape[-2:]
        factor = w / scan.shape[1]
        grid = WindowGrid(h, w, b.input.window, min(stride, b.input.window))
        wins = extract_windows(pad_to_grid(x, grid, 1.0), grid)
        keep = (~belt_mask(pad_to_grid(grey, grid, 1.0), grid)).nonzero().flatten()
        cal = b.calibration
        raw = torch.zeros(len(grid), device=self.device)
        floor = float(cal.calibrate(np.array([-1e9]))[0]) if cal else 0.0
        scores = torch.full((len(grid),), floor, device=self.device)
        total = int(keep.numel())
        done = 0

        def result() -> FallbackResult:
            m = fold_mean(scores, grid).cpu().numpy().astype(np.float32)
            return FallbackResult(
                m,
                None,
                factor,
                scan.shape,
                b.model_id,
                str(self.device),
                {"total_s": time.perf_counter() - t0},
            )

        for i in range(0, total, batch_size):
            if cancel is not None and cancel.is_set():
                return result()
            idx = keep[i : i + batch_size]
            s = score_windows(
                b.generator, wins[idx], b.score.norm if b.score.norm in ("l1", "l2") else "l1"
            )
            raw[idx] = s
            scores[idx] = cal.calibrate(s) if cal else s
            done += int(idx.numel())
            yield FallbackProgress(done, total, result())
        if total == 0:
            yield FallbackProgress(0, 0, None)
        return result()


def make_engine(bundle: Any, device: str | None = None) -> Any:
    """The core :class:`ScoringEngine` (or the fallback) for ``bundle`` on ``device``."""
    if _CoreEngine is not None:
        return _CoreEngine(bundle, device=device)
    return _FallbackEngine(bundle, device=device)


def heat_map(result: Any, kind: str) -> np.ndarray | None:
    """The working-scale heat map of ``kind`` ("latent" or "residual"), calibrated units."""
    if result is None:
        return None
    m = getattr(result, f"{kind}_map", None)
    if m is None and kind != "latent":
        m = getattr(result, "latent_map", None)
    if m is None:
        return None
    if hasattr(m, "detach"):
        m = m.detach().cpu().numpy()
    return np.asarray(m, dtype=np.float32)


# ------------------------------------------------------------------------------- regions
try:
    from xrayscreen.inference.regions import extract_regions as _core_extract_regions
except ImportError:
    _core_extract_regions = None


@dataclass(frozen=True)
class FallbackRegion:
    """An alarm region (mirrors the core Region)."""

    x0: int
    y0: int
    x1: int
    y1: int
    peak: float
    mean: float
    area_px: int


def extract_regions(
    heat: np.ndarray, threshold: float, *, min_area: int = 4, scale_factor: float = 1.0
) -> list[Any]:
    """Connected regions of ``heat >= threshold``, boxes in original-scan pixels, strongest first."""
    if _core_extract_regions is not None:
        regs = list(
            _core_extract_regions(heat, threshold, min_area=min_area, scale_factor=scale_factor)
        )
    else:
        regs = _fallback_regions(heat, threshold, min_area, scale_factor)
    return sorted(regs, key=lambda r: -float(r.peak))


def _fallback_regions(heat: np.ndarray, t: float, min_area: int, sf: float) -> list[FallbackRegion]:
    mask = (heat >= t).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    out = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < min_area:
            continue
        vals = heat[y : y + h, x : x + w][labels[y : y + h, x : x + w] == i]
        out.append(
            FallbackRegion(
                int(x / sf),
                int(y / sf),
                int(np.ceil((x + w) / sf)),
                int(np.ceil((y + h) / sf)),
                float(vals.max()),
                float(vals.mean()),
                int(round(area / (sf * sf))),
            )
        )
    return out


def region_box(r: Any) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of a region in original pixels, whatever its exact shape."""
    box = getattr(r, "box", None)
    if box is not None:
        if hasattr(box, "x0"):
            return int(box.x0), int(box.y0), int(box.x1), int(box.y1)
        return tuple(int(v) for v in box)  # type: ignore[return-value]
    return int(r.x0), int(r.y0), int(r.x1), int(r.y1)


def region_dict(r: Any) -> dict[str, Any]:
    """A JSON-able dict of a region for the decision log."""
    x0, y0, x1, y1 = region_box(r)
    return {
        "box": [x0, y0, x1, y1],
        "peak": round(float(r.peak), 4),
        "mean": round(float(getattr(r, "mean", r.peak)), 4),
        "area_px": int(getattr(r, "area_px", (x1 - x0) * (y1 - y0))),
    }


__all__ = [
    "BundleError",
    "ScanError",
    "activate_model",
    "active_bundle_path",
    "demo_scan_paths",
    "display_modes",
    "extract_regions",
    "file_filters",
    "find_pair",
    "heat_map",
    "is_scan_file",
    "list_models",
    "load_bundle",
    "make_engine",
    "open_scan",
    "region_box",
    "region_dict",
    "render",
]
