"""The projected-threat head's absolute reading (issue 7, twelfth session)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from xrayscreen.errors import ConfigError
from xrayscreen.inference import tip_evidence, zoom
from xrayscreen.inference.windows import WindowGrid
from xrayscreen.training.config import TrainConfig


def _spec(**params):
    return SimpleNamespace(kind="feature_knn", norm="none", params=params)


def test_absolute_is_the_logit_against_the_fitted_reference():
    spec = _spec(tip_abs_share=1.0, tip_abs_loc=[1.0, -2.0], tip_abs_scale=[2.0, 0.5])
    x = torch.tensor([3.0, 1.0, -1.0])
    torch.testing.assert_close(tip_evidence.absolute(x, spec, 0, None), torch.tensor([1.0, 0, -1]))
    valid = torch.tensor([True, False, True])
    torch.testing.assert_close(
        tip_evidence.absolute(x, spec, 1, valid), torch.tensor([10.0, 0.0, 2.0])
    )
    for bad in (_spec(tip_abs_loc=[1.0]), _spec(tip_abs_loc=[0, 0], tip_abs_scale=[1, 0])):
        with pytest.raises(ConfigError, match="tip_abs"):
            tip_evidence.absolute(x, bad, 1, None)


def test_reference_is_median_and_scaled_mad_per_view():
    a = [torch.tensor([0.0, 1.0, 2.0]), torch.tensor([3.0, 4.0])]
    ref = tip_evidence.absolute_reference([a, [torch.full((5,), 7.0)]])
    assert ref["tip_abs_loc"] == [2.0, 7.0]
    assert ref["tip_abs_scale"][0] == pytest.approx(1.4826)
    assert ref["tip_abs_scale"][1] == tip_evidence.SCALE_FLOOR  # all alike: the floor
    with pytest.raises(ConfigError, match="held-out windows"):
        tip_evidence.absolute_reference([[], a])


def test_reading_splits_the_heads_weight_between_scan_and_absolute():
    ref = {"tip_abs_loc": [1.0, 0.0], "tip_abs_scale": [2.0, 1.0]}
    x = torch.linspace(-3, 5, 40)
    z = tip_evidence.normalise(x, None)
    ab = tip_evidence.absolute(x, _spec(**ref), 0, None)
    torch.testing.assert_close(tip_evidence.reading(x, _spec(**ref), 0, None), z)
    for a in (0.25, 1.0):
        got = tip_evidence.reading(x, _spec(**ref, tip_abs_share=a), 0, None)
        torch.testing.assert_close(got, (1 - a) * z + a * ab)
    # Without a reference only the within-scan z can be read.
    torch.testing.assert_close(tip_evidence.reading(x, _spec(), 0, None), z)
    with pytest.raises(ConfigError, match="tip_abs_loc"):
        tip_evidence.reading(x, _spec(tip_abs_share=0.5), 0, None)
    with pytest.raises(ConfigError, match="tip_abs_share must be"):
        tip_evidence.reading(x, _spec(tip_abs_share=1.5), 0, None)


def test_evidence_adds_the_absolute_reading_to_each_view():
    torch.manual_seed(0)
    grid = WindowGrid(64 * 3, 64 * 4, 64, 64)
    n = len(grid)
    raw, raw_z, head, head_z = (torch.randn(n) for _ in range(4))
    valid = torch.ones(n, dtype=torch.bool)
    ref = {"tip_abs_loc": [0.5, -0.5], "tip_abs_scale": [2.0, 4.0]}
    # The zoomed view alone (a mean mix weighing it 1), then no zoomed view at all.
    cases = (
        ({"zoom": 2.0, "zoom_mix": "mean", "zoom_weight": 1.0}, raw_z, head_z, 1, head_z),
        ({}, None, None, 0, head),
    )
    for extra, rz, hz, view, h in cases:
        p = {"scan_norm": "robust_z", "tip_weight": 1.0, **ref, **extra}
        args = (raw, rz, grid, valid, None, None, head, hz)
        off = zoom.evidence(_spec(**p), *args)
        on = zoom.evidence(_spec(**p, tip_abs_share=0.5), *args)
        ab = (h - ref["tip_abs_loc"][view]) / ref["tip_abs_scale"][view]
        want = 0.5 * ab - 0.5 * tip_evidence.normalise(h, valid)  # half moved to absolute
        torch.testing.assert_close(on - off, want)


def test_config_refuses_an_absolute_reading_without_a_head():
    assert TrainConfig.xray(tip_abs_share=1.0).tip_abs_share == 1.0
    with pytest.raises(ConfigError, match="set tip_weight > 0"):
        TrainConfig.xray(tip_weight=0.0, tip_abs_share=1.0)
    with pytest.raises(ConfigError, match="tip_abs_share must be"):
        TrainConfig.xray(tip_abs_share=1.5)
