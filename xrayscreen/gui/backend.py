"""The GUI's single doorway into the core.

Every core API the workstation uses goes through here, so the rest of the GUI
depends on one small surface, and the few adaptations (Qt file-filter strings,
region dicts for the decision log, a registry that must never stop the window
opening) live in one place.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xrayscreen.errors import BundleError, ScanError
from xrayscreen.imaging.demo import demo_scan_paths as _core_demo_paths
from xrayscreen.imaging.enhance import MODE_LABELS, MODES
from xrayscreen.imaging.enhance import render as _core_render
from xrayscreen.imaging.readers import SCAN_FILE_FILTERS
from xrayscreen.imaging.readers import find_pair as _core_find_pair
from xrayscreen.imaging.readers import is_scan_file as _core_is_scan_file
from xrayscreen.imaging.readers import open_scan as _core_open_scan
from xrayscreen.imaging.scan import Scan
from xrayscreen.inference.engine import ScoringEngine
from xrayscreen.inference.regions import Region
from xrayscreen.inference.regions import extract_regions as _core_extract_regions
from xrayscreen.inference.results import ScanResult

# ------------------------------------------------------------------------------- scans


def file_filters() -> list[str]:
    """Qt file-dialog filters, one per format ("All scans" first)."""
    return [f"{name} ({' '.join(patterns)})" for name, patterns in SCAN_FILE_FILTERS]


def is_scan_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an existing file with a scan extension."""
    return bool(_core_is_scan_file(path))


def find_pair(path: str | os.PathLike[str]) -> tuple[Path, Path] | None:
    """The ``(high, low)`` files of a dual-energy pair ``path`` belongs to, by name."""
    pair = _core_find_pair(path)
    return (Path(pair[0]), Path(pair[1])) if pair else None


def open_scan(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> Scan:
    """Read one scan file or a ``(high, low)`` pair.

    Raises:
        ScanError: the file is missing, unreadable or not a scan.
    """
    if isinstance(source, (list, tuple)):
        return _core_open_scan(tuple(source))
    return _core_open_scan(source)


def demo_scan_paths() -> list[Path]:
    """The bundled demo scans (one path per bag)."""
    return [Path(p) for p in _core_demo_paths()]


# ------------------------------------------------------------------------------- display
def display_modes() -> list[str]:
    """Display mode names, in menu order (first = default)."""
    return list(MODES)


def mode_label(mode: str) -> str:
    """Human label of a display mode."""
    return str(MODE_LABELS.get(mode, str(mode).replace("_", " ").capitalize()))


def render(
    scan: Scan, mode: str, brightness: float = 0.0, contrast: float = 1.0, gamma: float = 1.0
) -> np.ndarray:
    """Display RGB ``(H, W, 3)`` uint8 of ``scan`` in ``mode`` with the enhancement controls."""
    return _core_render(scan, mode, brightness=brightness, contrast=contrast, gamma=gamma)


# ------------------------------------------------------------------------------- models
def _default_bundle_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "resources" / "default_model"


def active_bundle_path() -> Path | None:
    """The active model bundle (the registry's choice, else the bundled default), or None."""
    try:
        from xrayscreen.registry import active_bundle_path as reg_active

        p = Path(reg_active())
    except Exception:
        p = _default_bundle_dir()
    return p if (p / "model.json").is_file() else None


def list_models() -> list[Any]:
    """Registered models (registry records, the bundled default included); [] on error."""
    try:
        from xrayscreen.registry import list_models as reg_list

        return list(reg_list())
    except Exception:
        return []


def activate_model(model_id: str) -> Path:
    """Make ``model_id`` the active model in the registry; returns its bundle directory."""
    from xrayscreen.registry import activate

    return Path(activate(model_id))


def load_bundle(path: str | os.PathLike[str]) -> Any:
    """Load a model bundle (never executes code from it)."""
    from xrayscreen.model.bundle import load_bundle as core_load

    return core_load(path)


def resolve_device(pref: str) -> str:
    """``"auto"`` -> ``"cuda"`` when available else ``"cpu"``; ``"cuda"`` without CUDA -> ``"cpu"``."""
    import torch

    if pref == "auto" or (pref == "cuda" and not torch.cuda.is_available()):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return pref


def make_engine(bundle: Any, device: str | None = None) -> ScoringEngine:
    """The scoring engine for ``bundle`` on ``device``."""
    return ScoringEngine(bundle, device=device)


# ------------------------------------------------------------------------------- results
def heat_map(result: Any, kind: str) -> np.ndarray | None:
    """The working-scale ``"latent"`` (calibrated) or ``"residual"`` (raw) map of a result.

    Partial results carry no residual map; the latent map stands in for it.
    """
    if result is None:
        return None
    m = getattr(result, f"{kind}_map", None)
    if m is None:
        m = getattr(result, "latent_map", None)
    return None if m is None else np.asarray(m, dtype=np.float32)


def extract_regions(
    heat: np.ndarray, threshold: float, *, min_area: int = 16, scale_factor: float = 1.0
) -> list[Region]:
    """Connected regions of ``heat >= threshold``, boxes in original-scan pixels, strongest first."""
    return _core_extract_regions(heat, threshold, min_area=min_area, scale_factor=scale_factor)


def region_box(r: Any) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of a region in original pixels."""
    return int(r.x0), int(r.y0), int(r.x1), int(r.y1)


def region_dict(r: Any) -> dict[str, Any]:
    """A JSON-able summary of a region for the decision log."""
    return {
        "box": list(region_box(r)),
        "peak": round(float(r.peak), 4),
        "mean": round(float(r.mean), 4),
        "area_px": round(float(r.area_px), 1),
    }


__all__ = [
    "BundleError",
    "ScanError",
    "ScanResult",
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
    "mode_label",
    "open_scan",
    "region_box",
    "region_dict",
    "render",
    "resolve_device",
]
