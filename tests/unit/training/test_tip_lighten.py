"""Lightened projections (research, sixteenth session): the darkening raised to a power keeps
the projection's hue and leaves untouched pixels alone; off by default, the draws unchanged."""

from __future__ import annotations

import numpy as np

from xrayscreen.imaging.simulator import simulate_bag
from xrayscreen.training.tip_head import lighten_rgb, project_bag


def test_lighten_keeps_untouched_pixels_and_the_hue():
    before = np.full((4, 4, 3), 240, np.uint8)
    after = before.copy()
    after[1:3, 1:3] = (0, 55, 53)  # a dark teal threat
    out = lighten_rgb(before, after, 0.3)
    assert np.array_equal(out[0], before[0])  # not projected: as it was
    px = out[1, 1].astype(int)
    assert px.sum() > after[1, 1].astype(int).sum()  # lighter
    assert px[0] < px[2] <= px[1]  # still teal: red lowest, green the highest
    assert np.array_equal(lighten_rgb(before, after, 1.0), after)


def test_project_bag_lightens_only_when_asked():
    scan = simulate_bag(3, size=(300, 400)).scan
    plain, boxes = project_bag(scan, np.random.default_rng(0), 2)
    again, boxes2 = project_bag(scan, np.random.default_rng(0), 2, lighten=None)
    assert np.array_equal(plain.rgb, again.rgb) and boxes == boxes2
    light, _ = project_bag(scan, np.random.default_rng(0), 2, lighten=(0.3, 0.3))
    changed = np.any(plain.rgb != scan.rgb, axis=2)
    assert changed.any()
    # Where the plain projection darkened the bag, the lightened one is lighter (the
    # second threat's draws differ once a gamma is drawn, so compare the first's box).
    b = boxes[0]
    sl = (slice(b.y0, b.y1), slice(b.x0, b.x1))
    assert light.rgb[sl].astype(int).sum() > plain.rgb[sl].astype(int).sum()
