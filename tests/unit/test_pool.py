import shutil

import cv2
import numpy as np
import pytest

from xrayscreen.decisions.log import Decision, DecisionLog
from xrayscreen.errors import ConfigError
from xrayscreen.pool import LogFilter, NormalPool, build_pool, data_fingerprint, file_sha256


def _png(path, seed, h=20):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rng.integers(0, 255, (h, 24, 3), dtype=np.uint8))
    return path


def _decide(log, path, verdict, op="op1", day="2026-11-10"):
    log.record(
        Decision(
            scan_sha256=file_sha256(path),
            verdict=verdict,
            scan_path=str(path),
            operator_id=op,
            opened_at=f"{day}T10:00:00.000+00:00",
            decided_at=f"{day}T10:00:05.000+00:00",
        )
    )


@pytest.fixture
def scans(tmp_path):
    return [_png(tmp_path / "scans" / f"bag{i}.png", i) for i in range(8)]


def test_folders_dedupe_by_content(tmp_path, scans):
    extra = tmp_path / "other"
    extra.mkdir()
    shutil.copy(scans[0], extra / "renamed_copy.png")
    _png(extra / "new.png", 100)
    (extra / "notes.txt").write_text("not a scan")
    pool = build_pool([tmp_path / "scans", extra])
    assert len(pool) == 9
    assert pool.counts.from_folders == 9 and pool.counts.duplicates == 1
    assert len(pool.hashes) == 9
    assert pool.add_folder(tmp_path / "scans") == 0 and len(pool) == 9
    with pytest.raises(ConfigError):
        pool.add_folder(tmp_path / "missing")


def test_log_filters(tmp_path, scans):
    log = DecisionLog(tmp_path / "d.sqlite3")
    _decide(log, scans[0], "Clear", "op1", "2026-11-01")
    _decide(log, scans[1], "Clear", "op1", "2026-11-10")
    _decide(log, scans[2], "Clear", "op2", "2026-11-10")
    _decide(log, scans[3], "Clear", "op1", "2026-11-10")
    _decide(log, scans[3], "Suspect", "op2", "2026-10-01")  # earlier doubt, outside the range
    _decide(log, scans[4], "Suspect", "op1", "2026-11-10")
    _decide(log, scans[5], "Clear", "op1", "2026-11-12")
    _decide(log, scans[5], "Clear", "op2", "2026-11-13")  # cleared twice: one bag
    pool = NormalPool()
    pool.add_from_log(log)
    assert {i.path.name for i in pool.items} == {"bag0.png", "bag1.png", "bag2.png", "bag5.png"}
    assert pool.counts.excluded_suspect == 1 and pool.counts.from_log == 4
    pool = NormalPool()
    pool.add_from_log(log, LogFilter(since="2026-11-05", until="2026-11-11", operator_id="op1"))
    assert [i.path.name for i in pool.items] == ["bag1.png"]
    pool = NormalPool()
    pool.add_from_log(log, LogFilter(operator_id="op1", exclude_any_suspect=False))
    assert {i.path.name for i in pool.items} == {"bag0.png", "bag1.png", "bag3.png", "bag5.png"}
    assert all(i.source == "log" and i.operator_id == "op1" for i in pool.items)


def test_log_and_folder_dedupe_missing_and_changed_files(tmp_path, scans):
    log = DecisionLog(tmp_path / "d.sqlite3")
    for p in scans[:3]:
        _decide(log, p, "Clear")
    gone = _png(tmp_path / "gone.png", 50)
    _decide(log, gone, "Clear")
    gone.unlink()
    changed = _png(tmp_path / "changed.png", 51)
    _decide(log, changed, "Clear")
    _png(changed, 52, h=22)  # overwritten with another image after the verdict
    pool = build_pool([tmp_path / "scans"], log)
    assert len(pool) == 8
    assert pool.counts.from_folders == 8 and pool.counts.from_log == 0
    assert pool.counts.duplicates == 3 and pool.counts.missing == 1 and pool.counts.changed == 1
    assert "3 duplicates" in pool.counts.summary()
    assert pool.fingerprint() == data_fingerprint([file_sha256(p) for p in scans])


def test_holdout_is_deterministic_and_disjoint(tmp_path, scans):
    a = build_pool([tmp_path / "scans"])
    b = NormalPool()
    b.add_files(reversed(scans))
    sa, sb = a.split_holdout(0.25), b.split_holdout(0.25)
    assert len(sa.holdout) == 2 and len(sa.train) == 6
    assert {i.sha256 for i in sa.holdout} == {i.sha256 for i in sb.holdout}
    assert not {i.sha256 for i in sa.holdout} & {i.sha256 for i in sa.train}
    assert a.split_holdout(0.25, seed=1).holdout != sa.holdout or len(scans) < 4
    tiny = NormalPool()
    tiny.add_files(scans[:2])
    s = tiny.split_holdout(0.5)
    assert len(s.train) == 1 and len(s.holdout) == 1
    with pytest.raises(ConfigError):
        tiny.split_holdout(1.0)


def test_dual_energy_pair_is_one_scan_with_the_readers_identity(tmp_path):
    from xrayscreen.imaging.readers import open_scan

    d = tmp_path / "pairs"
    d.mkdir()
    rng = np.random.default_rng(3)
    for name in ("bag_high.png", "bag_low.png"):
        cv2.imwrite(str(d / name), rng.integers(0, 65535, (20, 24), dtype=np.uint16))
    pool = build_pool([d])
    assert len(pool) == 1 and pool.counts.duplicates == 1
    assert pool.items[0].sha256 == open_scan(d / "bag_low.png").sha256
    assert pool.items[0].path.name == "bag_high.png"
    log = DecisionLog(tmp_path / "d.sqlite3")
    scan = open_scan(d / "bag_high.png")
    log.record(
        Decision(scan_sha256=scan.sha256, verdict="Clear", scan_path=str(d / "bag_high.png"))
    )
    p2 = NormalPool()
    p2.add_from_log(log)
    assert len(p2) == 1 and p2.counts.changed == 0
