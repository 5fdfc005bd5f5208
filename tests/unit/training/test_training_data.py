"""Training data: windows cut like scoring, empty-belt rule, exact cache, split by scan."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xrayscreen.errors import ConfigError, ScanError
from xrayscreen.imaging.representation import WorkingScale, grey_at_scale, model_input
from xrayscreen.imaging.scan import Scan, ScanKind
from xrayscreen.inference.windows import WindowGrid, belt_mask, extract_windows, pad_to_grid
from xrayscreen.training.config import TrainConfig
from xrayscreen.training.data import (
    AIR_VALUE,
    N_AUGMENT,
    WindowSet,
    augment,
    decode,
    encode,
    epoch_batches,
    iter_load_windows,
    load_windows,
    scan_windows,
    split_by_scan,
)

CFG = TrainConfig(window=32, stride=16, longer_side=None, ngf=8, ndf=8, nz=8)


def _scan(seed: int, h: int = 96, w: int = 128, belt_cols: int = 0) -> Scan:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 200, (h, w, 3), dtype=np.uint8)
    if belt_cols:
        rgb[:, :belt_cols] = 250  # bright empty belt (grey 0.98 > 0.92)
    return Scan(rgb=rgb, kind=ScanKind.PSEUDO_COLOUR)


def test_all_white_scan_has_no_windows():
    white = Scan(rgb=np.full((80, 100, 3), 255, np.uint8), kind=ScanKind.PSEUDO_COLOUR)
    w, total = scan_windows(white, CFG)
    assert w.shape[0] == 0 and total > 0


def test_belt_windows_dropped_with_scoring_rule():
    scan = _scan(1, belt_cols=64)
    w, total = scan_windows(scan, CFG)
    # Reference: the shared rule applied to the full grid.
    grid = WindowGrid(96, 128, 32, 16)
    grey = pad_to_grid(torch.from_numpy(grey_at_scale(scan, None)), grid, 1.0)
    keep = ~belt_mask(grey, grid)
    assert total == len(grid)
    assert 0 < w.shape[0] == int(keep.sum()) < total
    # Windows entirely inside the bright belt (x origin 0, 16) are gone; content stays.
    x = pad_to_grid(torch.from_numpy(model_input(scan, "rgb", None)), grid, 1.0)
    ref = extract_windows(x, grid)[keep]
    assert torch.equal(w, ref)


def test_padding_is_air_for_every_representation():
    assert AIR_VALUE["rgb"] == 1.0
    from xrayscreen.inference.engine import air_value

    for rep, v in AIR_VALUE.items():
        assert all(a == pytest.approx(v) for a in air_value(rep)), rep


def test_uint8_cache_is_bit_exact_for_rgb():
    scan = _scan(2)
    x = torch.from_numpy(model_input(scan, "rgb", WorkingScale(longer_side=100)))
    enc = encode(x, "rgb")
    assert enc.dtype == torch.uint8
    assert torch.equal(decode(enc), x)
    enc16 = encode(x, "rgb_attenuation")
    assert enc16.dtype == torch.float16


def _windowset(n_scans: int, per_scan: int = 5) -> WindowSet:
    ids = [f"{i:064x}" for i in range(n_scans)]
    idx = torch.arange(n_scans).repeat_interleave(per_scan)
    data = idx[:, None, None, None].expand(-1, 3, 4, 4).to(torch.uint8).clone()
    return WindowSet(data, idx, ids, [f"s{i}" for i in range(n_scans)])


def test_split_is_by_scan_and_deterministic():
    ws = _windowset(10)
    sp = split_by_scan(ws, 0.3, seed=5)
    assert len(sp.val.scan_ids) == 3 and len(sp.train.scan_ids) == 7
    assert not set(sp.val.scan_ids) & set(sp.train.scan_ids)
    # Every window stays with its own scan (data encodes the scan number).
    for part in (sp.train, sp.val):
        for j, sid in enumerate(part.scan_ids):
            vals = part.data[part.scan_index == j].unique().tolist()
            assert vals == [int(sid, 16)]
    assert len(sp.train) + len(sp.val) == len(ws)
    again = split_by_scan(ws, 0.3, seed=5)
    assert again.val.scan_ids == sp.val.scan_ids
    other = split_by_scan(ws, 0.3, seed=6)
    assert other.val.scan_ids != sp.val.scan_ids


def test_split_independent_of_listing_order():
    ws = _windowset(8)
    rev = ws.subset_scans(range(8))
    order = list(reversed(range(8)))
    shuffled = WindowSet(
        torch.cat([rev.data[rev.scan_index == i] for i in order]),
        torch.arange(8).repeat_interleave(5),
        [ws.scan_ids[i] for i in order],
        [ws.scan_names[i] for i in order],
    )
    a = split_by_scan(ws, 0.25, seed=1)
    b = split_by_scan(shuffled, 0.25, seed=1)
    assert sorted(a.val.scan_ids) == sorted(b.val.scan_ids)


def test_split_edge_cases():
    one = _windowset(1)
    sp = split_by_scan(one, 0.5, seed=0)
    assert len(sp.val) == 0 and len(sp.train) == 5
    two = split_by_scan(_windowset(2), 0.01, seed=0)
    assert len(two.val.scan_ids) == 1  # min_val_scans
    with pytest.raises(ConfigError):
        split_by_scan(one, 1.0, seed=0)


def test_fingerprint_ignores_order():
    ws = _windowset(4)
    sub = ws.subset_scans([3, 1, 2, 0])
    assert ws.fingerprint() == sub.fingerprint()
    assert ws.fingerprint() != ws.subset_scans([0, 1, 2]).fingerprint()


def test_augment_covers_dihedral_group():
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4).repeat(N_AUGMENT, 1, 1, 1)
    out = augment(x, torch.arange(N_AUGMENT))
    assert torch.equal(out[0], x[0])
    distinct = {tuple(o.flatten().tolist()) for o in out}
    assert len(distinct) == N_AUGMENT


def test_epoch_batches_ranks_disjoint_and_reproducible():
    a0, _ = epoch_batches(100, 8, seed=3, epoch=2, augment_on=True, rank=0, world=2)
    a1, _ = epoch_batches(100, 8, seed=3, epoch=2, augment_on=True, rank=1, world=2)
    s0, s1 = set(torch.cat(a0).tolist()), set(torch.cat(a1).tolist())
    assert not s0 & s1 and len(a0) == len(a1) == 6
    b0, _ = epoch_batches(100, 8, seed=3, epoch=2, augment_on=True, rank=0, world=2)
    assert all(torch.equal(x, y) for x, y in zip(a0, b0))
    c0, _ = epoch_batches(100, 8, seed=3, epoch=3, augment_on=True, rank=0, world=2)
    assert not all(torch.equal(x, y) for x, y in zip(a0, c0))


def test_load_windows_from_folder_dedupes_and_caches(tmp_path):
    import cv2

    folder = tmp_path / "bags"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"b{i}.png"), _scan(i).rgb[:, :, ::-1])
    cv2.imwrite(str(folder / "copy.png"), _scan(0).rgb[:, :, ::-1])  # duplicate content
    (folder / "notes.txt").write_text("not a scan")
    events = list(iter_load_windows([folder], CFG))
    ws = events[-1]
    assert isinstance(ws, WindowSet) and len(ws.scan_ids) == 3
    cfg = CFG.replace(cache_file=str(tmp_path / "cache.safetensors"))
    first = load_windows([folder], cfg)
    assert (tmp_path / "cache.safetensors").is_file()
    second = load_windows([tmp_path / "missing-but-cached"], cfg)  # served from the cache
    assert torch.equal(first.data, second.data) and first.scan_ids == second.scan_ids
    with pytest.raises(ScanError):
        load_windows([tmp_path / "nope"], CFG)


def test_rescan_groups_stay_on_one_side_of_the_split():
    ws = _windowset(12)
    # Scans s0-s2 are one bag, s3-s4 another (names matched by stem, as file names are).
    ws.scan_names = [f"s{i}.jpg" for i in range(12)]
    groups = {"s0": "s0", "s1": "s0", "s2": "s0", "s3": "s3", "s4": "s3"}
    plain = split_by_scan(ws, 0.25, seed=0)
    for seed in range(20):
        sp = split_by_scan(ws, 0.25, seed=seed, groups=groups)
        val, train = set(sp.val.scan_names), set(sp.train.scan_names)
        assert not val & train and len(val | train) == 12
        for bag in ({"s0.jpg", "s1.jpg", "s2.jpg"}, {"s3.jpg", "s4.jpg"}):
            assert bag <= val or bag <= train, (seed, bag, val)
        assert 3 <= len(val) <= 3 + 2  # the wanted count, overshot by at most a group
    # Groups that name no scan, or only singletons, leave the split exactly as it was.
    for g in ({"zz": "zz"}, {"s0": "s0", "s5": "s5"}):
        assert split_by_scan(ws, 0.25, seed=0, groups=g).val.scan_ids == plain.val.scan_ids
    # A group never takes the last training scan.
    everything = {f"s{i}": "one" for i in range(11)}
    sp = split_by_scan(ws, 0.5, seed=3, groups=everything)
    assert sp.train.scan_names and not set(sp.val.scan_names) & set(sp.train.scan_names)
