"""User preferences: a small JSON file in the per-user config dir.

Only preferences live here (default stride, device, colour map, operator id,
recent files). Window geometry is the GUI's business (``QSettings``). The file is
written atomically; a missing, corrupt or partly invalid file never stops the
application: bad values fall back to their defaults.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xrayscreen import paths
from xrayscreen.atomic import atomic_write_json

FILE_NAME = "preferences.json"
RECENT_MAX = 10
DEVICES = ("auto", "cpu", "cuda")
STRIDES = (8, 16, 32, 64)


def preferences_path() -> Path:
    """``paths.config_dir()/preferences.json``."""
    return paths.config_dir() / FILE_NAME


def _default_operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in containers without passwd entries
        return "operator"


@dataclass
class Preferences:
    """What a user can set once and expect to persist.

    Attributes:
        stride: Window stride for scoring (pixels at the working scale).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        colour_map: Heat-map colour map name (a matplotlib map name).
        operator_id: Stamped into every decision.
        recent_files: Most recent first; each entry is one path or ``"high|low"`` for a pair.
        display_mode: Last display mode used.
        heat_opacity: Heat-map opacity in 0..1.
    """

    stride: int = 16
    device: str = "auto"
    colour_map: str = "inferno"
    operator_id: str = field(default_factory=_default_operator)
    recent_files: list[str] = field(default_factory=list)
    display_mode: str = ""
    heat_opacity: float = 0.55

    def add_recent(self, entry: str | os.PathLike[str]) -> None:
        """Put ``entry`` first in the recent list (no duplicates, capped at :data:`RECENT_MAX`)."""
        e = str(entry)
        self.recent_files = [e, *[r for r in self.recent_files if r != e]][:RECENT_MAX]

    def existing_recent(self) -> list[str]:
        """Recent entries whose files still exist (a pair needs both files)."""
        return [r for r in self.recent_files if all(Path(p).is_file() for p in r.split("|"))]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _validated(data: dict[str, Any]) -> Preferences:
    prefs = Preferences()
    if not isinstance(data, dict):
        return prefs
    stride = data.get("stride")
    if isinstance(stride, int) and 1 <= stride <= 64:
        prefs.stride = stride
    if data.get("device") in DEVICES:
        prefs.device = data["device"]
    if isinstance(data.get("colour_map"), str) and data["colour_map"]:
        prefs.colour_map = data["colour_map"]
    if isinstance(data.get("operator_id"), str) and data["operator_id"].strip():
        prefs.operator_id = data["operator_id"].strip()
    recent = data.get("recent_files")
    if isinstance(recent, list):
        prefs.recent_files = [str(r) for r in recent if isinstance(r, str)][:RECENT_MAX]
    if isinstance(data.get("display_mode"), str):
        prefs.display_mode = data["display_mode"]
    op = data.get("heat_opacity")
    if isinstance(op, (int, float)) and 0.0 <= op <= 1.0:
        prefs.heat_opacity = float(op)
    return prefs


def load_preferences(path: str | os.PathLike[str] | None = None) -> Preferences:
    """Read preferences; defaults for a missing/corrupt file or any invalid value.

    Recent files that no longer exist are dropped.
    """
    p = Path(path) if path is not None else preferences_path()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        data = {}
    prefs = _validated(data)
    prefs.recent_files = prefs.existing_recent()
    return prefs


def save_preferences(prefs: Preferences, path: str | os.PathLike[str] | None = None) -> Path:
    """Write preferences atomically; returns the file path."""
    p = Path(path) if path is not None else preferences_path()
    prefs.recent_files = prefs.recent_files[:RECENT_MAX]
    return atomic_write_json(p, prefs.to_dict())
