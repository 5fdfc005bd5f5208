import csv
import datetime as dt
import sqlite3
import threading

import pytest

from xrayscreen.decisions.log import Decision, DecisionLog, default_log_path
from xrayscreen.errors import ConfigError


def _d(sha="a" * 64, verdict="Clear", op="ann", decided="2026-01-02T10:00:05.000+00:00", **kw):
    return Decision(
        scan_sha256=sha,
        verdict=verdict,
        operator_id=op,
        opened_at="2026-01-02T10:00:00.000+00:00",
        decided_at=decided,
        **kw,
    )


def test_default_path_is_in_isolated_data_dir(_isolated_home):
    log = DecisionLog()
    assert log.path == default_log_path()
    assert str(log.path).startswith(str(_isolated_home))
    assert log.path.is_file()


def test_record_and_read_back_from_file(tmp_path):
    db = tmp_path / "d.sqlite3"
    regions = [{"box": [1, 2, 30, 40], "peak": 3.5, "area_px": 900}]
    stored = DecisionLog(db).record(
        _d(
            verdict="Suspect",
            note="knife?",
            threshold=2.5,
            model_id="m1",
            regions=regions,
            scan_path="/x/bag.png",
        )
    )
    assert stored.id == 1
    # Read with plain sqlite3: the row is really in the file, WAL mode is on.
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    row = conn.execute(
        "SELECT verdict, note, threshold, model_id, seconds_spent FROM decisions"
    ).fetchone()
    conn.close()
    assert row == ("Suspect", "knife?", 2.5, "m1", 5.0)
    back = DecisionLog(db).for_scan("a" * 64)
    assert len(back) == 1 and back[0].regions == regions and back[0].scan_path == "/x/bag.png"
    assert DecisionLog(db).for_scan("b" * 64) == []


def test_invalid_verdict_and_missing_hash_refused():
    with pytest.raises(ConfigError):
        _d(verdict="Maybe")
    with pytest.raises(ConfigError):
        Decision(scan_sha256="", verdict="Clear")


def test_filters(tmp_path):
    log = DecisionLog(tmp_path / "d.sqlite3")
    log.record(_d(op="ann", verdict="Clear", decided="2026-01-02T10:00:05+00:00"))
    log.record(_d(op="bob", verdict="Suspect", decided="2026-01-03T09:00:00+00:00"))
    log.record(_d(op="ann", verdict="Suspect", decided="2026-01-04T08:00:00+00:00"))
    assert log.count() == 3
    assert [d.operator_id for d in log.query(operator_id="ann")] == ["ann", "ann"]
    assert [d.verdict for d in log.query(verdict="Suspect")] == ["Suspect", "Suspect"]
    in_range = log.query(since=dt.date(2026, 1, 3), until=dt.date(2026, 1, 4))
    assert [d.operator_id for d in in_range] == ["bob"]
    assert len(log.query(since=dt.datetime(2026, 1, 3, tzinfo=dt.timezone.utc))) == 2
    assert [d.id for d in log.query(limit=2)] == [2, 3]
    with pytest.raises(ConfigError):
        log.query(verdict="nope")


def test_csv_export(tmp_path):
    log = DecisionLog(tmp_path / "d.sqlite3")
    log.record(_d(note='comma, "quote"', regions=[{"peak": 1.0}]))
    log.record(_d(verdict="Suspect"))
    out = tmp_path / "export.csv"
    assert log.export_csv(out) == 2
    rows = list(csv.DictReader(out.open()))
    assert [r["verdict"] for r in rows] == ["Clear", "Suspect"]
    assert rows[0]["note"] == 'comma, "quote"'
    assert rows[0]["regions_json"] == '[{"peak": 1.0}]'


def test_concurrent_writers_lose_nothing(tmp_path):
    db = tmp_path / "d.sqlite3"
    DecisionLog(db)

    def write(i):
        log = DecisionLog(db)
        for j in range(10):
            log.record(_d(sha=f"{i:02d}{j:02d}".ljust(64, "0")))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert DecisionLog(db).count() == 40


def test_not_a_database_is_a_readable_error(tmp_path):
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="not a usable decision log"):
        DecisionLog(bad)
