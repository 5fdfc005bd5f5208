import numpy as np
import pytest
import torch

from xrayscreen.model.calibration import MIN_FIT_BAGS, Calibration, gumbel_fit


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


def test_gumbel_fit_recovers_the_law_of_maxima():
    rng = np.random.default_rng(3)
    loc, scale = 2.0, 0.5
    peaks = rng.gumbel(loc, scale, size=4000)
    got_loc, got_scale = gumbel_fit(peaks)
    assert got_loc == pytest.approx(loc, abs=0.05)
    assert got_scale == pytest.approx(scale, abs=0.05)
    with pytest.raises(ValueError):
        gumbel_fit(np.array([1.0]))


def test_gumbel_bag_rule_sets_the_fitted_quantile_and_a_smooth_read_out():
    rng = np.random.default_rng(4)
    scans = [rng.normal(size=300) for _ in range(30)]
    pooled = np.concatenate(scans)
    cal = Calibration.fit(pooled, 0.01, scans, target_bag_far=0.05, bag_rule="gumbel")
    loc, scale = gumbel_fit(np.asarray(cal.bag_maxima))
    expected = loc - scale * np.log(-np.log(0.95))
    assert cal.bag_rule == "gumbel"
    assert cal.default_threshold == pytest.approx(max(expected, 2.0))
    # The read-out at the default is the target when the fit set it.
    if expected > 2.0:
        assert cal.bag_far_fitted(cal.default_threshold) == pytest.approx(0.05, abs=1e-9)
    # Smooth and decreasing, unlike the held-out count.
    ts = np.linspace(0.0, 6.0, 25)
    fitted = [cal.bag_far_fitted(t) for t in ts]
    assert all(a >= b for a, b in zip(fitted, fitted[1:])) and fitted[0] > fitted[-1]
    again = Calibration.from_dict(cal.to_dict())
    assert again.bag_rule == "gumbel" and again.default_threshold == cal.default_threshold
    assert again.bag_far_fitted(3.0) == pytest.approx(cal.bag_far_fitted(3.0))


def test_gumbel_rule_uses_every_peak_where_the_empirical_rule_sees_one():
    # 18 bags, 5 %: the empirical rule lets floor(0.9) = 0 bags alarm, so it sits just
    # above the single highest peak whatever the other 17 are; the fitted quantile moves
    # with all of them.
    base = Calibration.fit(np.random.default_rng(5).normal(size=5000))
    high = 6.0
    tight = [2.0 + 0.01 * i for i in range(17)] + [high]
    spread = [1.0 + 0.15 * i for i in range(17)] + [high]
    out = {}
    for name, peaks in (("tight", tight), ("spread", spread)):
        for rule in ("empirical", "gumbel"):
            c = Calibration(**{**base.__dict__, "bag_maxima": list(peaks)})
            c.set_bag_target(0.05, rule)
            out[name, rule] = c.default_threshold
    assert out["tight", "empirical"] == out["spread", "empirical"] == pytest.approx(high, abs=1e-3)
    assert out["tight", "gumbel"] != pytest.approx(out["spread", "gumbel"], abs=0.1)
    assert out["tight", "gumbel"] < high


def test_gumbel_rule_falls_back_to_the_empirical_rule_with_few_bags():
    rng = np.random.default_rng(6)
    scans = [rng.normal(size=300) for _ in range(MIN_FIT_BAGS - 1)]
    pooled = np.concatenate(scans)
    fit = Calibration.fit(pooled, 0.01, scans, target_bag_far=0.2, bag_rule="gumbel")
    emp = Calibration.fit(pooled, 0.01, scans, target_bag_far=0.2)
    assert fit.bag_fit() is None and fit.bag_far_fitted(2.0) is None
    assert fit.default_threshold == emp.default_threshold
    with pytest.raises(ValueError):
        Calibration.fit(pooled, 0.01, scans, target_bag_far=0.1, bag_rule="max")
    bad = fit.to_dict()
    bad["bag_rule"] = "max"
    with pytest.raises(ValueError):
        Calibration.from_dict(bad)


def test_default_rule_says_how_the_default_was_set():
    rng = np.random.default_rng(7)
    scans = [rng.normal(size=300) for _ in range(12)]
    pooled = np.concatenate(scans)
    assert Calibration.fit(pooled).default_rule() == "1 % of held-out normal windows reach it"
    fit = Calibration.fit(pooled, 0.01, scans, target_bag_far=0.1, bag_rule="gumbel")
    k = int(np.sum(np.asarray(fit.bag_maxima) >= fit.default_threshold))
    text = fit.default_rule()
    assert "Gumbel" in text and f"({k} of 12 reached it)" in text and "≈ 10 %" in text
    emp = Calibration.fit(pooled, 0.01, scans, target_bag_far=0.5)
    assert "at most 50 % of the 12 held-out bags" in emp.default_rule()
    # A bag target below what the window rule allows leaves the window rule in charge.
    quiet = [np.full(300, -5.0)] * 12
    lax = Calibration.fit(pooled, 0.01, quiet, target_bag_far=0.1, bag_rule="gumbel")
    assert lax.default_threshold == pytest.approx(2.0)
    assert "window rule" in lax.default_rule()


def test_fitted_read_out_survives_identical_peaks():
    cal = Calibration.fit(np.random.default_rng(8).normal(size=2000))
    cal.bag_maxima = [1.5] * 10
    cal.set_bag_target(0.1, "gumbel")
    assert cal.bag_far_fitted(0.0) == 1.0 and cal.bag_far_fitted(3.0) == 0.0
    assert 0.0 <= cal.bag_far_fitted(1.5) <= 1.0


def test_a_second_bag_target_starts_from_the_window_rule():
    rng = np.random.default_rng(9)
    scans = [rng.normal(size=300) for _ in range(20)]
    cal = Calibration.fit(np.concatenate(scans), 0.01, scans)
    cal.set_bag_target(0.0, "gumbel")  # no bag may alarm: above the highest peak
    strict = cal.default_threshold
    cal.set_bag_target(0.5, "gumbel")
    assert cal.default_threshold < strict and cal.default_threshold >= 2.0


def _cal(bag_maxima):
    return Calibration([0.5, 0.99], [1.0, 2.0], 100, bag_maxima=list(bag_maxima))


def test_bag_far_interval_is_the_wilson_interval_of_the_held_out_count():
    cal = _cal([0.5] * 7)  # 0 of 7 held-out bags reach 1.0
    lo, hi = cal.bag_far_interval(1.0)
    assert lo == 0.0 and hi == pytest.approx(0.3543, abs=1e-3)  # the textbook 0/7 upper bound
    lo, hi = cal.bag_far_interval(0.0)  # 7 of 7
    assert hi == 1.0 and lo == pytest.approx(1 - 0.3543, abs=1e-3)
    half = _cal([0.0] * 50 + [2.0] * 50).bag_far_interval(1.0)
    assert half[0] < 0.5 < half[1] and half[1] - half[0] == pytest.approx(0.19, abs=0.01)
    assert _cal([]).bag_far_interval(1.0) is None
