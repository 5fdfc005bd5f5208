"""The projected-threat head: its tensors and storage, its evidence term, the engine's and
the bundle's use of it, and fitting it on threats projected into normal scans."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from model_testkit import memory_bundle
from torch import nn

from xrayscreen.errors import BundleError, ConfigError
from xrayscreen.imaging.representation import model_input
from xrayscreen.imaging.scan import Scan, ScanKind
from xrayscreen.imaging.simulator import DECOYS, simulate_bag
from xrayscreen.inference import context, density, scan_norm, tip_evidence, zoom
from xrayscreen.inference.engine import ScoringEngine, air_value
from xrayscreen.inference.windows import WindowGrid
from xrayscreen.model import tip_head as tip_head_model
from xrayscreen.model.bundle import META, ScoreSpec, load_bundle, save_bundle
from xrayscreen.model.ganomaly import GANomalyConfig
from xrayscreen.model.tip_head import PREFIX, TipHead
from xrayscreen.training import tip_head as fit
from xrayscreen.training.config import TrainConfig

CFG = GANomalyConfig(isize=64, ngf=8, ndf=8, nz=16)


def _nets(dim: int, seed: int = 0) -> list[nn.Sequential]:
    torch.manual_seed(seed)
    return [
        nn.Sequential(nn.Linear(dim, 6), nn.ReLU(), nn.Dropout(0.2), nn.Linear(6, 1)).eval()
        for _ in range(2)
    ]


def _head_bundle(path, params=None):
    """A tiny memory bundle with a random head for its embedding, weight 1 by default."""
    b = memory_bundle(
        path / "plain",
        CFG,
        kind="feature_knn",
        params={"scan_norm": "robust_z", "zoom": 2.0, **(params or {})},
    )
    b.tip_head = TipHead.from_modules(_nets(b.feature_bank.memory.shape[1]))
    b.score.params = {**b.score.params, "tip_weight": 1.0}
    save_bundle(b, path / "head")
    return load_bundle(path / "head")


def _scan(seed: int = 0, size: int = 224) -> Scan:
    rng = np.random.default_rng(seed)
    rgb = np.full((size, size + 40, 3), 250, np.uint8)
    rgb[20:-20, 20:-20] = rng.integers(60, 200, (size - 40, size, 3), dtype=np.uint8)
    return Scan(rgb=rgb, kind=ScanKind.PSEUDO_COLOUR)


# -- the head's tensors ------------------------------------------------------------------
def test_logits_are_each_views_net():
    nets = _nets(10)
    head = TipHead.from_modules(nets)
    assert head.views == 2 and head.dim == 10
    q = torch.randn(7, 10)
    got = head.logits(q)
    assert got.shape == (7, 2)
    for v, net in enumerate(nets):
        torch.testing.assert_close(got[:, v], net(q).squeeze(1), rtol=1e-5, atol=1e-6)


def test_tensors_round_trip_and_bad_ones_are_refused():
    head = TipHead.from_modules(_nets(10))
    t = head.tensors()
    assert sorted(t) == [f"{PREFIX}{n}" for n in ("b1", "b2", "w1", "w2")]
    back = TipHead.from_tensors(t, 10)
    torch.testing.assert_close(back.logits(torch.ones(2, 10)), head.logits(torch.ones(2, 10)))
    with pytest.raises(ConfigError, match="do not fit"):
        TipHead.from_tensors(t, 12)  # another memory's dimension
    with pytest.raises(ConfigError, match="missing"):
        TipHead.from_tensors({k: v for k, v in t.items() if not k.endswith("b2")}, 10)
    bad = dict(t)
    bad[f"{PREFIX}b1"] = torch.zeros(2, 5)
    with pytest.raises(ConfigError, match="shapes"):
        TipHead.from_tensors(bad, 10)
    bad = dict(t)
    bad[f"{PREFIX}w2"] = t[f"{PREFIX}w2"].clone()
    bad[f"{PREFIX}w2"][0, 0] = float("nan")
    with pytest.raises(ConfigError, match="NaN"):
        TipHead.from_tensors(bad, 10)
    with pytest.raises(ConfigError, match="Linear"):
        TipHead.from_modules([nn.Sequential(nn.Linear(10, 2))])


def test_half_storage_is_what_the_head_scores_with_and_never_overflows():
    head = TipHead.from_modules(_nets(10))
    head.w1[0, 0, 0] = 1e6  # float16 cannot hold it: that tensor stays float32
    t = head.tensors(half=True)
    assert t[f"{PREFIX}w1"].dtype == torch.float32 and t[f"{PREFIX}w2"].dtype == torch.float16
    back = TipHead.from_tensors(t, 10)
    stored = head.as_stored(True)
    q = torch.randn(4, 10)
    torch.testing.assert_close(back.logits(q), stored.logits(q))
    assert torch.equal(stored.w1, head.w1) and not torch.equal(stored.w2, head.w2)
    assert torch.equal(head.as_stored(False).w2, head.w2)


# -- its evidence term ---------------------------------------------------------------------
def test_weight_is_validated_and_normalise_is_a_robust_z():
    assert tip_evidence.weight_of(ScoreSpec()) == 0.0 and not tip_evidence.enabled(ScoreSpec())
    assert tip_evidence.weight_of(ScoreSpec(params={"tip_weight": "0.5"})) == 0.5
    for bad in (-0.1, 11, "high", float("nan"), None):
        with pytest.raises(ConfigError, match="tip_weight"):
            tip_evidence.weight_of(ScoreSpec(params={"tip_weight": bad}))
    x = torch.arange(40, dtype=torch.float32)
    med, scale = scan_norm.robust_stats(x)
    torch.testing.assert_close(tip_evidence.normalise(x, None), (x - med) / scale)
    few = torch.ones(40, dtype=torch.bool)
    few[scan_norm.MIN_WINDOWS - 1 :] = False
    assert not tip_evidence.normalise(x, few).any()  # too few windows: no head term
    # All alike: the floor keeps a tiny difference from becoming an alarm.
    flat = torch.full((40,), 3.0)
    flat[0] = 3.001
    assert float(tip_evidence.normalise(flat, None).max()) <= 0.001 / 0.02 + 1e-6
    with pytest.raises(ConfigError, match="finite"):
        tip_evidence.normalise(torch.full((40,), float("inf")), None)


def test_evidence_adds_the_head_to_each_view():
    grid = WindowGrid(128, 160, 64, 16)
    g = torch.Generator().manual_seed(0)
    raw, raw_z, d, dz, h, hz = (torch.rand(len(grid), generator=g) for _ in range(6))
    valid = torch.ones(len(grid), dtype=torch.bool)
    params = {"scan_norm": "robust_z", "zoom": 2.0, "density_weight": 0.5, "tip_weight": 0.7}
    spec = ScoreSpec(params=params)
    fine = scan_norm.normalise(spec, raw, valid) + 0.5 * density.normalise(d, valid)
    fine = fine + 0.7 * tip_evidence.normalise(h, valid)
    coarse = scan_norm.normalise(zoom.zoom_spec(spec), raw_z, valid)
    coarse = coarse + 0.5 * density.normalise(dz, valid) + 0.7 * tip_evidence.normalise(hz, valid)
    expect = context.apply(spec, torch.maximum(fine, coarse), grid, valid)
    torch.testing.assert_close(zoom.evidence(spec, raw, raw_z, grid, valid, d, dz, h, hz), expect)
    with pytest.raises(ConfigError, match="head"):
        zoom.evidence(spec, raw, raw_z, grid, valid, d, dz, h)  # zoomed logits missing
    with pytest.raises(ConfigError, match="head"):
        zoom.evidence(spec, raw, raw_z, grid, valid, d, dz)
    off = ScoreSpec(params={**params, "tip_weight": 0.0})
    assert not torch.allclose(
        zoom.evidence(off, raw, raw_z, grid, valid, d, dz, h, hz), expect, atol=1e-3
    )


def test_the_working_views_share_of_the_head_weight():
    grid = WindowGrid(128, 160, 64, 16)
    g = torch.Generator().manual_seed(1)
    raw, raw_z, h, hz = (torch.rand(len(grid), generator=g) for _ in range(4))
    valid = torch.ones(len(grid), dtype=torch.bool)
    base = {"scan_norm": "robust_z", "zoom": 2.0, "tip_weight": 0.8, "context_px": 0.0}
    spec = ScoreSpec(params={**base, "tip_window_share": 0.25})
    fine = scan_norm.normalise(spec, raw, valid) + 0.2 * tip_evidence.normalise(h, valid)
    coarse = scan_norm.normalise(zoom.zoom_spec(spec), raw_z, valid)
    coarse = coarse + 0.8 * tip_evidence.normalise(hz, valid)
    expect = context.apply(spec, torch.maximum(fine, coarse), grid, valid)
    got = zoom.evidence(spec, raw, raw_z, grid, valid, head=h, head_zoom=hz)
    torch.testing.assert_close(got, expect)
    # Unset = 1: both views alike (bundles written before the setting score as before).
    one = ScoreSpec(params={**base, "tip_window_share": 1.0})
    torch.testing.assert_close(
        zoom.evidence(one, raw, raw_z, grid, valid, head=h, head_zoom=hz),
        zoom.evidence(ScoreSpec(params=base), raw, raw_z, grid, valid, head=h, head_zoom=hz),
    )
    # Without a zoomed view the only view keeps the whole weight.
    solo = {k: v for k, v in spec.params.items() if k != "zoom"}
    expect_solo = scan_norm.normalise(spec, raw, valid) + 0.8 * tip_evidence.normalise(h, valid)
    torch.testing.assert_close(
        zoom.evidence(ScoreSpec(params=solo), raw, None, grid, valid, head=h),
        context.apply(ScoreSpec(params=solo), expect_solo, grid, valid),
    )
    for bad in (1.5, -0.1, "half"):
        with pytest.raises(ConfigError, match="tip_window_share"):
            tip_evidence.window_share_of(ScoreSpec(params={**base, "tip_window_share": bad}))
    with pytest.raises(ConfigError, match="tip_window_share"):
        TrainConfig.xray(tip_window_share=2.0)


# -- the bundle and the engine -----------------------------------------------------------
def test_bundle_keeps_its_head_and_refuses_a_missing_one(tmp_path):
    b = _head_bundle(tmp_path)
    assert b.tip_head is not None and b.score.params["tip_weight"] == 1.0
    q = torch.randn(4, b.tip_head.dim)
    again = load_bundle(tmp_path / "head")
    torch.testing.assert_close(again.tip_head.logits(q), b.tip_head.logits(q))
    # A model.json asking for a head the weights do not hold is refused when loading.
    meta = json.loads((tmp_path / "plain" / META).read_text())
    meta["score"]["params"]["tip_weight"] = 0.5
    (tmp_path / "plain" / META).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="no head weights"):
        load_bundle(tmp_path / "plain")
    meta["score"]["params"]["tip_weight"] = -2
    (tmp_path / "plain" / META).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="tip_weight"):
        load_bundle(tmp_path / "plain")
    meta = json.loads((tmp_path / "head" / META).read_text())
    meta["score"]["params"]["tip_window_share"] = 3
    (tmp_path / "head" / META).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="tip_window_share"):
        load_bundle(tmp_path / "head")


def _scored_windows(b, scan, r):
    """The scan's scored windows ``(N, C, w, w)``, cut here independently of the engine,
    their grid indices and the representation's air."""
    fg = ~r.background
    x = torch.from_numpy(model_input(scan, b.input.representation, b.input.scale))
    air = torch.tensor(air_value(b.input.representation))
    padded = air[:, None, None].expand(x.shape[0], *r.grid.padded_shape).clone()
    padded[:, : r.grid.height, : r.grid.width] = x
    idx = torch.nonzero(torch.from_numpy(fg)).flatten()
    win, s = r.grid.window, r.grid.stride
    windows = padded.unfold(1, win, s).unfold(2, win, s)[:, idx // r.grid.cols, idx % r.grid.cols]
    return windows.permute(1, 0, 2, 3), idx, air


def test_engine_adds_the_head_to_both_views(tmp_path):
    b = _head_bundle(tmp_path)
    scan = _scan(3)
    eng = ScoringEngine(b, "cpu", autocast="off", batch=23)
    r = eng.score_scan_sync(scan, stride=16, strip_windows=30)
    fg = ~r.background
    assert r.raw_head is not None and r.raw_head_zoom is not None
    # The logits are the head on the memory's embedding of each window and zoomed window.
    windows, idx, air = _scored_windows(b, scan, r)
    emb = eng.embed_windows(windows)
    np.testing.assert_allclose(
        r.raw_head[fg], b.tip_head.logits(emb)[:, 0].numpy(), rtol=1e-4, atol=1e-4
    )
    view = zoom.ZoomedView(scan, r.grid, 2.0, b.input.representation, air)
    emb_z = eng.embed_windows(view.windows(idx))
    np.testing.assert_allclose(
        r.raw_head_zoom[fg], b.tip_head.logits(emb_z)[:, 1].numpy(), rtol=1e-4, atol=1e-4
    )
    expect = zoom.evidence(
        b.score,
        *(torch.from_numpy(a) for a in (r.raw_scores, r.raw_zoom_scores)),
        r.grid,
        torch.from_numpy(fg),
        None,
        None,
        *(torch.from_numpy(a) for a in (r.raw_head, r.raw_head_zoom)),
    ).numpy()
    np.testing.assert_allclose(r.window_scores[fg], expect[fg], rtol=1e-5, atol=1e-5)
    b.score.params = {k: v for k, v in b.score.params.items() if k != "tip_weight"}
    plain = ScoringEngine(b, "cpu", autocast="off").score_scan_sync(scan, stride=16)
    assert plain.raw_head is None
    np.testing.assert_allclose(r.raw_scores[fg], plain.raw_scores[fg], rtol=1e-5, atol=1e-5)
    assert not np.allclose(r.window_scores[fg], plain.window_scores[fg], atol=1e-3)


def _grid_head_bundle(path, cells=2, cell_max=False):
    """A tiny memory bundle whose random head reads the embedding and a cells^2 grid
    (its cell maxima too with ``cell_max``)."""
    b = memory_bundle(
        path / "plain", CFG, kind="feature_knn", params={"scan_norm": "robust_z", "zoom": 2.0}
    )
    dim = b.feature_bank.memory.shape[1]
    b.tip_head = TipHead.from_modules(_nets(tip_head_model.input_dim(dim, cells, cell_max)))
    b.score.params = {**b.score.params, "tip_weight": 1.0, "tip_cells": cells}
    if cell_max:
        b.score.params["tip_cell_max"] = True
    save_bundle(b, path / "grid")
    return load_bundle(path / "grid")


def test_head_input_is_the_embedding_and_the_maps_grid():
    emb = torch.randn(3, 8)
    fmap = torch.arange(3 * 4 * 4 * 4, dtype=torch.float32).reshape(3, 4, 4, 4)
    assert tip_head_model.head_input(emb, fmap, 0) is emb
    x = tip_head_model.head_input(emb, fmap, 2)
    assert x.shape == (3, 8 + 4 * 4) == (3, tip_head_model.input_dim(8, 2))
    torch.testing.assert_close(x[:, :8], emb)
    # Cell (0, 0) of channel 0: the mean of the map's top-left 2x2 block.
    torch.testing.assert_close(x[:, 8], fmap[:, 0, :2, :2].mean(dim=(1, 2)))
    # With the cells' maxima: the means first, then the maxima, cell by cell alike.
    xm = tip_head_model.head_input(emb, fmap, 2, cell_max=True)
    assert xm.shape == (3, 8 + 2 * 4 * 4) == (3, tip_head_model.input_dim(8, 2, True))
    torch.testing.assert_close(xm[:, :24], x)
    torch.testing.assert_close(xm[:, 24], fmap[:, 0, :2, :2].amax(dim=(1, 2)))
    torch.testing.assert_close(xm[:, 24 + 5], fmap[:, 1, :2, 2:].amax(dim=(1, 2)))


@pytest.mark.parametrize("cell_max", [False, True])
def test_engine_feeds_a_grid_head_the_same_input_as_training(tmp_path, cell_max):
    b = _grid_head_bundle(tmp_path, cell_max=cell_max)
    scan = _scan(4)
    eng = ScoringEngine(b, "cpu", autocast="off", batch=23)
    r = eng.score_scan_sync(scan, stride=16)
    fg = ~r.background
    windows, _, _ = _scored_windows(b, scan, r)
    inp = eng.embed_windows(windows, cells=2, cell_max=cell_max)
    assert inp.shape[1] == b.tip_head.dim
    np.testing.assert_allclose(
        r.raw_head[fg], b.tip_head.logits(inp)[:, 0].numpy(), rtol=1e-4, atol=1e-4
    )
    # A head of the wrong width for the score's grid is refused when loading.
    meta = json.loads((tmp_path / "grid" / META).read_text())
    meta["score"]["params"]["tip_cells"] = 3
    (tmp_path / "grid" / META).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="do not fit"):
        load_bundle(tmp_path / "grid")
    meta["score"]["params"]["tip_cells"] = 2  # the right grid, the other cell reading
    meta["score"]["params"]["tip_cell_max"] = not cell_max
    (tmp_path / "grid" / META).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="do not fit"):
        load_bundle(tmp_path / "grid")
    meta["score"]["params"]["tip_cell_max"] = "yes"
    (tmp_path / "grid" / META).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="tip_cell_max"):
        load_bundle(tmp_path / "grid")
    meta["score"]["params"]["tip_cells"] = 1.5
    (tmp_path / "grid" / META).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="tip_cells"):
        load_bundle(tmp_path / "grid")


def test_folded_standardisation_is_the_same_net_on_raw_input():
    torch.manual_seed(0)
    net = _nets(5)[0]
    mean, std = torch.randn(5), torch.rand(5) + 0.5
    x = torch.randn(20, 5)
    with torch.no_grad():
        torch.testing.assert_close(
            fit.fold_standardisation(net, mean, std)(x), net((x - mean) / std)
        )


@pytest.mark.parametrize("cell_max", [False, True])
def test_fit_a_grid_head_on_simulated_bags(tmp_path, cell_max):
    b = memory_bundle(
        tmp_path / "m", CFG, kind="feature_knn", params={"scan_norm": "robust_z", "zoom": 2.0}
    )
    scans = [simulate_bag(i, size=(200, 260)).scan for i in range(10)]
    head, info = fit.fit_tip_head(
        b, scans, torch.device("cpu"), per_bag=2, seed=0, cells=2, cell_max=cell_max
    )
    assert info["cells"] == 2 and info["cell_max"] is cell_max
    assert head.dim == tip_head_model.input_dim(b.feature_bank.memory.shape[1], 2, cell_max)
    # A random-weight encoder and two bags held out: well above chance, a little below
    # the pooled head (the grid's extra columns overfit ten tiny bags; the cells' maxima,
    # twice the columns, more so: 0.64 measured for one view).
    for v in ("window", "zoomed"):
        assert info["heldout_auc"][v] is not None
        assert info["heldout_auc"][v] > (0.55 if cell_max else 0.7)


def test_engine_refuses_a_head_weight_without_a_head(tmp_path):
    b = _head_bundle(tmp_path)
    b.tip_head = None
    with pytest.raises(ConfigError, match="projected-threat head"):
        ScoringEngine(b, "cpu")


# -- fitting -------------------------------------------------------------------------------
def test_project_bag_keeps_the_pitch_and_boxes_the_threats():
    scan = _scan(1, size=240)
    rng = np.random.default_rng(0)
    out, boxes = fit.project_bag(scan, rng, 3)
    assert out.pixel_mm is None and out.shape == scan.shape and len(boxes) == 3
    assert not np.array_equal(out.rgb, scan.rgb)
    for b in boxes:
        assert 0 <= b.x0 < b.x1 <= scan.shape[1] and 0 <= b.y0 < b.y1 <= scan.shape[0]
    # Threats only darken: transmission multiplies.
    assert (out.rgb.astype(int) <= scan.rgb.astype(int) + 1).all()


def test_project_bag_size_range_sets_how_large_the_threats_are_shown():
    scan = _scan(1, size=240)

    def extents(size_range):
        rng = np.random.default_rng(3)  # the same threats, places and thicknesses
        _, boxes = fit.project_bag(scan, rng, 2, size_range)
        return np.array([max(b.x1 - b.x0, b.y1 - b.y0) for b in boxes], float)

    # The pitch multiplied by 0.5 shows each threat about twice as large as at 1.
    ratio = extents((0.5, 0.5)) / extents((1.0, 1.0))
    assert np.all((ratio > 1.6) & (ratio < 2.4)), ratio


def test_kind_sizes_draw_one_kind_at_its_own_size(monkeypatch):
    scan = _scan(1, size=240)
    seen = []
    real = fit.project_threat

    def project(scans, kind, **kw):
        seen.append((kind, scans.pixel_mm))
        return real(scans, kind, **kw)

    monkeypatch.setattr(fit, "project_threat", project)
    kinds = {"knife": (0.5, 0.5)}
    fit.project_bag(scan, np.random.default_rng(0), 8, (1.0, 1.0), kind_sizes=kinds)
    base = scan.pixel_mm or fit.FIELD_MM / max(scan.shape)
    assert {k for k, _ in seen} >= {"knife", "gun"}
    for kind, pitch in seen:  # knives at half the pitch (twice as large), the rest as the bag's
        assert pitch == pytest.approx(base * (0.5 if kind == "knife" else 1.0))


def test_kind_thickness_draws_one_kind_at_its_own_thickness(monkeypatch):
    scan = _scan(1, size=240)
    seen = []
    real = fit.project_threat

    def project(scans, kind, **kw):
        seen.append((kind, kw["thickness"]))
        return real(scans, kind, **kw)

    monkeypatch.setattr(fit, "project_threat", project)
    fit.project_bag(scan, np.random.default_rng(0), 8, kind_thickness={"knife": (0.04, 0.1)})
    assert {k for k, _ in seen} >= {"knife", "gun"}
    for kind, t in seen:  # knives in their own range, the rest in THICKNESS_RANGE
        lo, hi = (0.04, 0.1) if kind == "knife" else fit.THICKNESS_RANGE
        assert lo <= t <= hi


def test_project_bag_decoys_come_after_the_threats_and_are_named():
    scan = _scan(1, size=240)
    plain, threats = fit.project_bag(scan, np.random.default_rng(0), 2)
    out, boxes = fit.project_bag(scan, np.random.default_rng(0), 2, decoys=3)
    assert boxes[:2] == threats  # the threats' draws are untouched by decoys
    assert [b.label in DECOYS for b in boxes] == [False, False, True, True, True]
    assert out.pixel_mm is None
    assert not np.array_equal(out.rgb, plain.rgb)


def test_windows_on_a_decoy_are_all_negatives(tmp_path, monkeypatch):
    monkeypatch.setattr(fit, "NEGATIVES_PER_BAG", 5)  # the random sample alone is small
    b = memory_bundle(
        tmp_path / "m", CFG, kind="feature_knn", params={"scan_norm": "robust_z", "zoom": 2.0}
    )
    engine = ScoringEngine(b, "cpu")
    scan = simulate_bag(3, size=(300, 400)).scan
    tip, boxes = fit.project_bag(scan, np.random.default_rng(2), 1, decoys=2)
    threat = [bx for bx in boxes if bx.label not in DECOYS]
    decoy = [bx for bx in boxes if bx.label in DECOYS]
    rows, labels, _ = fit._window_rows(engine, tip, boxes, np.random.default_rng(2))
    rows0, labels0, _ = fit._window_rows(engine, tip, threat, np.random.default_rng(2))
    assert labels.sum() == labels0.sum() > 0  # decoys add no positives
    n_decoy = len(labels) - len(labels0)
    assert n_decoy > 0 and (labels[len(labels) - n_decoy :] == 0).sum() >= n_decoy
    # The windows added are the threat-free ones the box rule puts on a decoy.
    spec = b.input
    factor = spec.scale.factor(tip.shape, tip.pixel_mm)
    from xrayscreen.evaluation.annotations import Box
    from xrayscreen.evaluation.labelling import ANOMALOUS, label_boxes
    from xrayscreen.inference.engine import at_working_scale

    work = at_working_scale(tip, factor, spec.representation)
    grid = WindowGrid(*work.shape, int(spec.window), fit.STRIDE)

    def lab(bs):
        sc = [Box(x.x0 * factor, x.y0 * factor, x.x1 * factor, x.y1 * factor, "t") for x in bs]
        return label_boxes(grid, sc, ("t",))[0]

    on = (lab(decoy) == ANOMALOUS) & (lab(threat) == 0)
    assert n_decoy <= on.sum() <= n_decoy + fit.NEGATIVES_PER_BAG


def test_size_range_is_a_validated_setting_passed_to_every_draw(tmp_path, monkeypatch):
    from xrayscreen.training import cli as train_cli

    assert TrainConfig.xray().tip_size_range == (1.0, 2.0)
    cfg = TrainConfig.xray(tip_size_range=[0.5, 2])
    assert cfg.tip_size_range == (0.5, 2.0)
    back = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back.tip_size_range == (0.5, 2.0)
    # Bundles saved before the setting existed read as the old fixed range.
    old = {k: v for k, v in TrainConfig.xray().to_dict().items() if k != "tip_size_range"}
    assert TrainConfig.from_dict(old).tip_size_range == (1.0, 2.0)
    for bad in ([2.0, 1.0], [0.1, 2.0], [1.0, 5.0], [1.0]):
        with pytest.raises(ConfigError, match="tip_size_range"):
            TrainConfig.xray(tip_size_range=bad)
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    args = parser.parse_args(["n", "--out", "o", "--tip-size-range", "0.5", "2"])
    assert train_cli.config_from_args(args).tip_size_range == (0.5, 2.0)

    b = memory_bundle(
        tmp_path / "m", CFG, kind="feature_knn", params={"scan_norm": "robust_z", "zoom": 2.0}
    )
    scans = [simulate_bag(i, size=(200, 260)).scan for i in range(5)]
    ranges = []
    real = fit.project_bag

    def spy(scan, rng, per_bag, size_range=fit.SIZE_RANGE, *a, **kw):
        ranges.append(tuple(size_range))
        return real(scan, rng, per_bag, size_range, *a, **kw)

    monkeypatch.setattr(fit, "project_bag", spy)
    _, info = fit.fit_tip_head(
        b, scans, torch.device("cpu"), per_bag=1, seed=0, draws=2, size_range=(0.5, 2.0)
    )
    assert ranges == [(0.5, 2.0)] * 10 and info["size_range"] == [0.5, 2.0]


def test_thickness_range_is_a_validated_setting_passed_to_every_draw(tmp_path, monkeypatch):
    from xrayscreen.training import cli as train_cli

    assert TrainConfig.xray().tip_thickness_range == fit.THICKNESS_RANGE
    cfg = TrainConfig.xray(tip_thickness_range=[0.04, 0.2])
    back = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back.tip_thickness_range == (0.04, 0.2)
    old = {k: v for k, v in TrainConfig.xray().to_dict().items() if k != "tip_thickness_range"}
    assert TrainConfig.from_dict(old).tip_thickness_range == (0.25, 1.0)
    for bad in ([0.5, 0.2], [0.001, 0.2], [0.1, 5.0], [0.1]):
        with pytest.raises(ConfigError, match="tip_thickness_range"):
            TrainConfig.xray(tip_thickness_range=bad)
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    args = parser.parse_args(["n", "--out", "o", "--tip-thickness-range", "0.04", "0.2"])
    assert train_cli.config_from_args(args).tip_thickness_range == (0.04, 0.2)

    b = memory_bundle(
        tmp_path / "m", CFG, kind="feature_knn", params={"scan_norm": "robust_z", "zoom": 2.0}
    )
    scans = [simulate_bag(i, size=(200, 260)).scan for i in range(4)]
    thick = []
    real = fit.project_threat

    def spy(scan, kind, **kw):
        thick.append(kw["thickness"])
        return real(scan, kind, **kw)

    monkeypatch.setattr(fit, "project_threat", spy)
    _, info = fit.fit_tip_head(
        b, scans, torch.device("cpu"), per_bag=2, seed=0, draws=2, thickness_range=(0.04, 0.2)
    )
    assert len(thick) == 16 and all(0.04 <= t <= 0.2 for t in thick)
    assert info["thickness_range"] == [0.04, 0.2]


def test_decoys_are_a_validated_setting_passed_to_every_draw(tmp_path, monkeypatch):
    from xrayscreen.training import cli as train_cli

    assert TrainConfig.xray().tip_decoys == 0
    old = {k: v for k, v in TrainConfig.xray().to_dict().items() if k != "tip_decoys"}
    assert TrainConfig.from_dict(old).tip_decoys == 0  # bundles from before the setting
    for bad in (-1, 9):
        with pytest.raises(ConfigError, match="tip_decoys"):
            TrainConfig.xray(tip_decoys=bad)
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    args = parser.parse_args(["n", "--out", "o", "--tip-decoys", "2"])
    assert train_cli.config_from_args(args).tip_decoys == 2

    b = memory_bundle(
        tmp_path / "m", CFG, kind="feature_knn", params={"scan_norm": "robust_z", "zoom": 2.0}
    )
    scans = [simulate_bag(i, size=(200, 260)).scan for i in range(4)]
    seen = []
    real = fit.project_bag

    def spy(*a, **kw):
        seen.append(kw.get("decoys"))
        return real(*a, **kw)

    monkeypatch.setattr(fit, "project_bag", spy)
    _, info = fit.fit_tip_head(b, scans, torch.device("cpu"), per_bag=1, seed=0, draws=2, decoys=2)
    assert seen == [2] * 8 and info["decoys"] == 2


def test_fit_heads_separate_projected_threats_on_simulated_bags(tmp_path):
    b = memory_bundle(
        tmp_path / "m", CFG, kind="feature_knn", params={"scan_norm": "robust_z", "zoom": 2.0}
    )
    scans = [simulate_bag(i, size=(200, 260)).scan for i in range(10)]
    head, info = fit.fit_tip_head(b, scans, torch.device("cpu"), per_bag=2, seed=0)
    assert head.views == 2 and head.dim == b.feature_bank.memory.shape[1]
    assert info["projected_bags"] == 10 and info["projected_threats"] == 20
    assert info["threat_windows"] > 0 and info["normal_windows"] > info["threat_windows"]
    # A random-weight encoder still sees the projected steel: the held-out bags' windows
    # are told apart well above chance.
    for v in ("window", "zoomed"):
        assert info["heldout_auc"][v] is not None and info["heldout_auc"][v] > 0.75
    again, _ = fit.fit_tip_head(b, scans, torch.device("cpu"), per_bag=2, seed=0)
    torch.testing.assert_close(again.w1, head.w1)  # seeded end to end
    b.feature_bank = None
    with pytest.raises(ConfigError, match="feature memory"):
        fit.fit_tip_head(b, scans, torch.device("cpu"))
    with pytest.raises(ConfigError, match="room for a threat"):
        fit.collect_rows(
            memory_bundle(tmp_path / "n", CFG, kind="feature_knn"), [], torch.device("cpu"), 2, 0
        )


def _rows(n_bags: int = 3, per_bag: int = 40, dim: int = 4, seed: int = 0) -> fit.TipRows:
    """Synthetic rows: per bag 5 threats, 10 random negatives, the rest unsampled."""
    gen = torch.Generator().manual_seed(seed)
    x, y, bag, sampled = [], [], [], []
    for b in range(n_bags):
        xb = torch.randn(per_bag, dim, generator=gen)
        yb = torch.zeros(per_bag)
        yb[:5] = 1
        xb[:5, 0] += 3.0  # threats stand out on the first feature
        x.append(xb)
        y.append(yb)
        bag.append(torch.full((per_bag,), b))
        sampled.append(torch.arange(per_bag) < 15)
    xs = torch.cat(x)
    return fit.TipRows(
        [xs, xs.clone()], torch.cat(y), torch.cat(bag), n_bags, 5 * n_bags, torch.cat(sampled)
    )


def test_hard_rows_are_each_bags_highest_unsampled_negatives():
    rows = _rows()
    net = nn.Linear(4, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
        net.bias.zero_()
    use = torch.ones_like(rows.y, dtype=torch.bool)
    with torch.no_grad():
        hard = fit._hard_rows(rows, 0, net, use, 3)
    assert len(hard) == 3 * rows.n_bags
    for b in range(rows.n_bags):
        mine = hard[rows.bag[hard] == b]
        cand = torch.nonzero((rows.bag == b) & (rows.y == 0) & ~rows.sampled).squeeze(1)
        top = cand[torch.argsort(rows.x[0][cand, 0], descending=True)[:3]]
        assert sorted(mine.tolist()) == sorted(top.tolist())
    # Only the bags ``use`` allows, and never a threat or a row of the first fit.
    only0 = rows.bag == 0
    with torch.no_grad():
        h0 = fit._hard_rows(rows, 0, net, only0, 100)
    assert (rows.bag[h0] == 0).all() and len(h0) == 25
    assert (rows.y[h0] == 0).all() and not rows.sampled[h0].any()


def test_fit_heads_mine_hard_negatives_and_report_the_tail():
    rows = _rows(n_bags=10)
    head, info = fit.fit_heads(rows, seed=0, hard_per_bag=4)
    assert info["hard_per_bag"] == 4 and info["hard_windows"] == {"window": 40, "zoomed": 40}
    # The counts are those of the first fit's rows (comparable with or without mining).
    assert info["threat_windows"] == 50 and info["normal_windows"] == 100
    for v in ("window", "zoomed"):
        assert 0.0 <= info["heldout_tail_tpr"][v] <= 1.0
        assert info["heldout_auc"][v] > 0.8
    # Without mining the unsampled rows are never read.
    _, plain = fit.fit_heads(rows, seed=0, hard_per_bag=0)
    assert plain["hard_windows"] == {"window": 0, "zoomed": 0}
    rows.sampled = None
    _, none = fit.fit_heads(rows, seed=0, hard_per_bag=4)
    assert "heldout_tail_tpr" not in none and none["hard_windows"]["window"] == 0


def test_an_averaged_head_is_the_mean_of_its_members_and_stores_as_one():
    nets = [_nets(5, seed)[0] for seed in range(3)]
    merged = fit.average_nets(nets)
    x = torch.randn(50, 5)
    with torch.no_grad():
        mean = torch.stack([n(x) for n in nets]).mean(dim=0)
        torch.testing.assert_close(merged(x), mean)
        head = TipHead.from_modules([merged, merged])
        torch.testing.assert_close(head.logits(x)[:, 0], mean[:, 0])
    assert head.w1.shape == (2, 18, 5)


def test_average_of_heads_is_the_mean_of_their_logits():
    heads = [TipHead.from_modules(_nets(7, seed)) for seed in range(3)]
    avg = TipHead.average(heads)
    q = torch.randn(11, 7)
    torch.testing.assert_close(avg.logits(q), torch.stack([h.logits(q) for h in heads]).mean(0))
    assert avg.w1.shape == (2, 18, 7)
    with pytest.raises(ConfigError, match="same views and input width"):
        TipHead.average([heads[0], TipHead.from_modules(_nets(8))])
    with pytest.raises(ConfigError):
        TipHead.average([])


def test_draws_average_heads_fitted_on_their_own_projections(tmp_path, monkeypatch):
    b = memory_bundle(
        tmp_path / "m", CFG, kind="feature_knn", params={"scan_norm": "robust_z", "zoom": 2.0}
    )
    scans = [simulate_bag(i, size=(200, 260)).scan for i in range(6)]
    cpu = torch.device("cpu")
    seeds = []
    real = fit.collect_rows

    def spy(bundle, scans_k, device, per_bag, seed, **kw):
        seeds.append(seed)
        return real(bundle, scans_k, device, per_bag, seed, **kw)

    monkeypatch.setattr(fit, "collect_rows", spy)
    one, _ = fit.fit_tip_head(b, iter(scans), cpu, per_bag=2, seed=4)
    other, _ = fit.fit_tip_head(b, iter(scans), cpu, per_bag=2, seed=5)
    # A one-shot iterator is kept for the second draw; draw k is seed + k's own head.
    three, info = fit.fit_tip_head(b, iter(scans), cpu, per_bag=2, seed=4, draws=2)
    assert seeds == [4, 5, 4, 5]
    assert info["draws"] == 2 and len(info["heldout_auc_draws"]) == 2
    torch.testing.assert_close(three.w1, torch.cat([one.w1, other.w1], dim=1))
    q = torch.randn(5, one.dim)
    torch.testing.assert_close(three.logits(q), (one.logits(q) + other.logits(q)) / 2)
    # A reader function is called once a draw.
    calls = []
    fit.fit_tip_head(b, lambda: calls.append(1) or scans, cpu, per_bag=2, seed=4, draws=2)
    assert len(calls) == 2
    with pytest.raises(ConfigError, match="tip_draws"):
        TrainConfig.xray(tip_draws=0)


def test_fit_heads_average_members_fitted_on_sub_samples_of_bags():
    rows = _rows(n_bags=10)
    rows.sampled = None
    single, info1 = fit.fit_heads(rows, seed=0)
    head, info = fit.fit_heads(rows, seed=0, members=3)
    assert info["members"] == 3 and info1["members"] == 1
    assert head.w1.shape[1] == 3 * single.w1.shape[1]
    assert info["heldout_auc"]["window"] > 0.8
    again, _ = fit.fit_heads(rows, seed=0, members=3)
    torch.testing.assert_close(again.w2, head.w2)  # seeded


def test_every_negative_keeps_the_projections_and_the_sample(tmp_path, monkeypatch):
    monkeypatch.setattr(fit, "NEGATIVES_PER_BAG", 20)  # small bags: leave windows unsampled
    b = memory_bundle(
        tmp_path / "m", CFG, kind="feature_knn", params={"scan_norm": "robust_z", "zoom": 2.0}
    )
    scans = [simulate_bag(i, size=(200, 260)).scan for i in range(3)]
    cpu = torch.device("cpu")
    plain = fit.collect_rows(b, scans, cpu, 2, 0)
    every = fit.collect_rows(b, scans, cpu, 2, 0, every_negative=True)
    assert plain.sampled is None and every.sampled is not None
    assert len(every.y) > len(plain.y) and (every.y[~every.sampled] == 0).all()
    torch.testing.assert_close(every.y[every.sampled], plain.y)
    for v in range(2):
        torch.testing.assert_close(every.x[v][every.sampled], plain.x[v], rtol=1e-5, atol=1e-5)
    head, info = fit.fit_tip_head(b, scans, cpu, per_bag=2, seed=0, hard_per_bag=5)
    assert info["hard_windows"]["window"] == 5 * info["projected_bags"]


def test_config_refuses_a_head_it_cannot_score():
    assert TrainConfig.xray().tip_weight == 1.0  # the X-ray default (issue 7, ninth session)
    assert TrainConfig.xray().tip_cells == 4  # tenth session
    assert TrainConfig.xray().tip_draws == 3  # eleventh session
    # The default head is dropped for a score it cannot join; asked for, it is refused.
    assert TrainConfig.xray(score_kind="latent").tip_weight == 0.0
    with pytest.raises(ConfigError, match="feature-memory score kind"):
        TrainConfig.xray(score_kind="latent", tip_weight=0.5)
    with pytest.raises(ConfigError, match="feature-memory score kind"):
        TrainConfig(tip_weight=0.5)  # the paper's latent score has no memory
    with pytest.raises(ConfigError, match="tip_weight"):
        TrainConfig.xray(tip_weight=-1)
    with pytest.raises(ConfigError, match="tip_per_bag"):
        TrainConfig.xray(tip_weight=0.5, tip_per_bag=0)
    with pytest.raises(ConfigError, match="tip_hard_per_bag"):
        TrainConfig.xray(tip_hard_per_bag=-1)
    with pytest.raises(ConfigError, match="tip_members"):
        TrainConfig.xray(tip_members=0)
    with pytest.raises(ConfigError, match="tip_cells"):
        TrainConfig.xray(tip_cells=9)
    with pytest.raises(ConfigError, match="tip_cell_max needs a grid"):
        TrainConfig.xray(tip_cells=0, tip_cell_max=True)
    with pytest.raises(ConfigError, match="tip_cell_max must be"):
        TrainConfig.xray(tip_cell_max="on")
