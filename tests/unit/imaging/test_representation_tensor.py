"""The engine's on-device model input (:func:`model_input_from_rgb`) is :func:`model_input`:
every 8-bit level, both RGB representations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xrayscreen.errors import ConfigError
from xrayscreen.imaging.representation import model_input, model_input_from_rgb
from xrayscreen.imaging.scan import Scan, ScanKind


@pytest.mark.parametrize("rep", ["rgb", "rgb_attenuation"])
def test_every_level_matches_the_host_conversion(rep):
    levels = np.arange(256, dtype=np.uint8)
    # Each channel runs through every level, in a different order per channel.
    rgb = np.stack([levels, levels[::-1], np.roll(levels, 77)], axis=-1).reshape(16, 16, 3)
    host = model_input(Scan(rgb=rgb, kind=ScanKind.PSEUDO_COLOUR), rep)
    dev = model_input_from_rgb(torch.from_numpy(rgb), rep)
    assert dev.dtype == torch.float32 and tuple(dev.shape) == host.shape
    np.testing.assert_allclose(dev.numpy(), host, rtol=0, atol=2e-6)
    assert dev.min() >= -1.0 and dev.max() <= 1.0


def test_raw_energies_are_not_made_from_rgb():
    with pytest.raises(ConfigError, match="not made from the RGB"):
        model_input_from_rgb(torch.zeros(4, 4, 3, dtype=torch.uint8), "log_attenuation")
    with pytest.raises(ConfigError, match="unknown representation"):
        model_input_from_rgb(torch.zeros(4, 4, 3, dtype=torch.uint8), "hsv")
