import numpy as np
import pytest
import torch

from xrayscreen.model.calibration import Calibration


def test_quantiles_on_known_scores():
    scores = np.arange(10_000, dtype=np.float64)  # uniform 0..9999
    cal = Calibration.fit(scores, target_window_far=0.01)
    assert cal.default_threshold == pytest.approx(2.0)
    # 99th percentile of 0..9999 is 9899.01 -> calibrated 2.0 (1 % of normal windows above)
    assert cal.raw_threshold(2.0) == pytest.approx(9899.01, rel=1e-4)
    assert cal.calibrate(np.array([9899.01]))[0] == pytest.approx(2.0, abs=1e-3)
    assert cal.calibrate(np.array([4999.5]))[0] == pytest.approx(-np.log10(0.5), abs=1e-3)
    # fraction of normal scores >= the raw threshold matches the calibrated meaning
    for t in (1.0, 2.0, 3.0):
        frac = np.mean(scores >= cal.raw_threshold(t))
        assert frac == pytest.approx(10**-t, rel=0.05, abs=2e-4)


def test_monotone_and_tail_extends_beyond_max():
    rng = np.random.default_rng(0)
    cal = Calibration.fit(rng.normal(size=5000))
    x = np.linspace(-5, 10, 500)
    y = cal.calibrate(x)
    assert np.all(np.diff(y) >= -1e-6)
    assert y[-1] > cal.calibrate(np.array([4.0]))[0] + 1.0  # keeps rising past the max normal


def test_torch_matches_numpy():
    rng = np.random.default_rng(1)
    cal = Calibration.fit(rng.gamma(2.0, size=3000))
    x = rng.gamma(2.0, size=1000) * 1.5
    np.testing.assert_allclose(
        cal.calibrate(torch.tensor(x, dtype=torch.float32)).numpy(), cal.calibrate(x), atol=2e-4
    )


def test_bag_far_from_scan_maxima():
    rng = np.random.default_rng(2)
    scans = [rng.normal(size=200) for _ in range(50)]
    cal = Calibration.fit(np.concatenate(scans), scan_scores=scans)
    assert len(cal.bag_maxima) == 50
    assert cal.bag_far(-1.0) == 1.0
    assert cal.bag_far(1e9) == 0.0
    roundtrip = Calibration.from_dict(cal.to_dict())
    assert roundtrip.bag_far(2.0) == cal.bag_far(2.0)


def test_tiny_calibration_set_has_a_finite_invertible_tail():
    cal = Calibration.fit(np.array([0.1, 0.2, 0.2, 0.3]))
    t = cal.raw_threshold(5.0)
    assert np.isfinite(t) and t > 0.3
    assert cal.calibrate(np.array([t]))[0] == pytest.approx(5.0, abs=1e-4)


def test_bag_rate_target_raises_the_default_above_normal_bag_peaks():
    rng = np.random.default_rng(0)
    spike = np.arange(400) == 7
    scans = [rng.normal(size=400) + (3.0 if i == 0 else 0.0) * spike for i in range(10)]
    pooled = np.concatenate(scans)
    plain = Calibration.fit(pooled, 0.01, scans)
    bag = Calibration.fit(pooled, 0.01, scans, target_bag_far=0.1)
    assert plain.target_bag_far is None and bag.target_bag_far == 0.1
    # Window rule: most normal bags reach it; bag rule: at most 1 of 10 does.
    assert plain.bag_far(plain.default_threshold) > 0.1
    assert bag.bag_far(bag.default_threshold) <= 0.1
    assert bag.default_threshold >= plain.default_threshold
    # Never below the window rule; survives the JSON round trip.
    quiet = [np.full(50, -5.0)] * 10  # bags whose peaks stay below the window rule
    lax = Calibration.fit(pooled, 0.01, quiet, target_bag_far=0.1)
    assert lax.default_threshold == plain.default_threshold and lax.bag_far(2.0) == 0.0
    again = Calibration.from_dict(bag.to_dict())
    assert again.target_bag_far == 0.1 and again.default_threshold == bag.default_threshold
    with pytest.raises(ValueError):
        Calibration.fit(pooled, 0.01, scans, target_bag_far=1.0)
