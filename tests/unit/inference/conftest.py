"""Fixtures for the scoring-engine tests (helpers live in inference_testkit.py)."""

from __future__ import annotations

import pytest
from inference_testkit import make_stub_bundle, make_tiny_bundle

from xrayscreen.model.bundle import ModelBundle


@pytest.fixture
def stub_bundle() -> ModelBundle:
    """A bundle whose generator is the stub (score = |window mean|), native scale."""
    return make_stub_bundle()


@pytest.fixture
def tiny_bundle(tmp_path) -> ModelBundle:
    """A real tiny GANomaly bundle, saved and loaded through the bundle format."""
    return make_tiny_bundle(tmp_path)
