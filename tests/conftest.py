"""Shared fixtures. Every test runs with its own XRAYSCREEN_HOME so nothing touches the
real user's settings, registry or decision log, and Qt runs offscreen."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("XRAYSCREEN_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("xrayscreen_home")
    monkeypatch.setenv("XRAYSCREEN_HOME", str(home))
    yield home


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data``; tests using it skip with a reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real data folder {SHARED_DATA} is absent (research data is never in the repo)"
        )
    return SHARED_DATA
