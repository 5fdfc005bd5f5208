"""Per-user locations (platformdirs). ``XRAYSCREEN_HOME`` overrides all of them, which
is how tests keep away from the real user's settings, registry and decision log."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "xrayscreen"


def _home_override() -> Path | None:
    home = os.environ.get("XRAYSCREEN_HOME")
    return Path(home) if home else None


def data_dir() -> Path:
    """Where the decision log and the model registry live."""
    home = _home_override()
    d = home / "data" if home else Path(platformdirs.user_data_dir(APP, appauthor=False))
    d.mkdir(parents=True, exist_ok=True)
    return d


def config_dir() -> Path:
    """Where the preferences file lives."""
    home = _home_override()
    d = home / "config" if home else Path(platformdirs.user_config_dir(APP, appauthor=False))
    d.mkdir(parents=True, exist_ok=True)
    return d


def cache_dir() -> Path:
    """Where caches (compiled kernels, window caches) live."""
    home = _home_override()
    d = home / "cache" if home else Path(platformdirs.user_cache_dir(APP, appauthor=False))
    d.mkdir(parents=True, exist_ok=True)
    return d
