"""The decision log: one SQLite row per operator verdict.

Why SQLite: several stations (or the GUI and a batch export) may read the log
while an operator writes to it. WAL mode lets readers run during a write, and
each decision is committed in its own transaction, so a crash loses at most the
decision being written, never earlier ones.

Connections are opened per call (cheap for SQLite) so the log can be used from
any thread without sharing a connection across threads.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xrayscreen import paths
from xrayscreen.errors import ConfigError

VERDICTS = ("Clear", "Suspect")
SCHEMA_VERSION = 1
DEFAULT_NAME = "decisions.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    scan_sha256    TEXT NOT NULL,
    scan_path      TEXT NOT NULL DEFAULT '',
    operator_id    TEXT NOT NULL DEFAULT '',
    verdict        TEXT NOT NULL CHECK (verdict IN ('Clear', 'Suspect')),
    note           TEXT NOT NULL DEFAULT '',
    threshold      REAL,
    model_id       TEXT NOT NULL DEFAULT '',
    regions_json   TEXT NOT NULL DEFAULT '[]',
    opened_at      TEXT NOT NULL,
    decided_at     TEXT NOT NULL,
    seconds_spent  REAL
);
CREATE INDEX IF NOT EXISTS decisions_sha ON decisions (scan_sha256);
CREATE INDEX IF NOT EXISTS decisions_time ON decisions (decided_at);
"""

CSV_COLUMNS = (
    "id",
    "scan_sha256",
    "scan_path",
    "operator_id",
    "verdict",
    "note",
    "threshold",
    "model_id",
    "regions_json",
    "opened_at",
    "decided_at",
    "seconds_spent",
)


def default_log_path() -> Path:
    """``paths.data_dir()/decisions.sqlite3`` (the per-user data dir, or XRAYSCREEN_HOME)."""
    return paths.data_dir() / DEFAULT_NAME


def utc_now() -> str:
    """Current UTC time as ISO-8601 with seconds (the log's timestamp format)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Decision:
    """One operator verdict on one scan.

    Attributes:
        scan_sha256: The scan's identity (hash of its source bytes).
        verdict: ``"Clear"`` or ``"Suspect"``.
        scan_path: Where the scan was opened from (informative; files move).
        operator_id: Who decided.
        note: Free text.
        threshold: Calibrated threshold in use when deciding (``None`` without a model).
        model_id: Model whose heat map the operator saw ('' without a model).
        regions: Alarm regions shown at decision time, as JSON-able dicts.
        opened_at: ISO-8601 UTC time the scan was opened.
        decided_at: ISO-8601 UTC time of the verdict.
        seconds_spent: Time on the bag (``decided_at - opened_at`` unless given).
        id: Row id once stored.
    """

    scan_sha256: str
    verdict: str
    scan_path: str = ""
    operator_id: str = ""
    note: str = ""
    threshold: float | None = None
    model_id: str = ""
    regions: list[dict[str, Any]] = field(default_factory=list)
    opened_at: str = field(default_factory=utc_now)
    decided_at: str = field(default_factory=utc_now)
    seconds_spent: float | None = None
    id: int | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ConfigError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if not self.scan_sha256:
            raise ConfigError("a decision needs the scan's sha256")
        if self.seconds_spent is None:
            spent = _seconds_between(self.opened_at, self.decided_at)
            object.__setattr__(self, "seconds_spent", spent)


def _seconds_between(a: str, b: str) -> float | None:
    try:
        return max(
            0.0, (_dt.datetime.fromisoformat(b) - _dt.datetime.fromisoformat(a)).total_seconds()
        )
    except (TypeError, ValueError):
        return None


def _to_iso(t: str | _dt.date | _dt.datetime | None) -> str | None:
    if t is None or isinstance(t, str):
        return t
    if isinstance(t, _dt.datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.timezone.utc)
        return t.astimezone(_dt.timezone.utc).isoformat(timespec="milliseconds")
    return t.isoformat()  # a date: compares correctly as a prefix of ISO timestamps


class DecisionLog:
    """The SQLite decision log.

    Args:
        path: Database file; defaults to :func:`default_log_path`.

    Raises:
        ConfigError: if the file exists but is not an xrayscreen decision log.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_log_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._connect() as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                elif version > SCHEMA_VERSION:
                    raise ConfigError(
                        f"decision log {self.path} was written by a newer xrayscreen "
                        f"(schema {version}); update xrayscreen to use it"
                    )
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{self.path} is not a usable decision log: {exc}") from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=10.0)
        conn.row_factory = sqlite3.Row
        try:
            yield conn
        finally:
            conn.close()

    # ------------------------------------------------------------------ writing
    def record(self, decision: Decision) -> Decision:
        """Store one decision in its own transaction; returns it with its row id."""
        row = asdict(decision)
        row.pop("id")
        row["regions_json"] = json.dumps(row.pop("regions"), default=float)
        cols = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        with self._connect() as conn:
            with conn:  # one transaction: commit on success, roll back on error
                cur = conn.execute(f"INSERT INTO decisions ({cols}) VALUES ({marks})", row)
                new_id = cur.lastrowid
        return _replace_id(decision, int(new_id))

    # ------------------------------------------------------------------ reading
    def for_scan(self, sha256: str) -> list[Decision]:
        """All decisions on the scan with this hash, oldest first."""
        return self._select("WHERE scan_sha256 = ?", [sha256])

    def query(
        self,
        *,
        since: str | _dt.date | _dt.datetime | None = None,
        until: str | _dt.date | _dt.datetime | None = None,
        operator_id: str | None = None,
        verdict: str | None = None,
        limit: int | None = None,
    ) -> list[Decision]:
        """Decisions filtered by time range (``since <= decided_at < until``), operator and verdict.

        Args:
            since: Earliest decision time (inclusive); ISO string, date or datetime.
            until: Latest decision time (exclusive); a date means "before that day".
            operator_id: Only this operator's decisions.
            verdict: Only ``"Clear"`` or ``"Suspect"``.
            limit: At most this many, newest first when given.

        Returns:
            Matching decisions, oldest first (newest ``limit`` when limited).
        """
        where, args = self._where(since, until, operator_id, verdict)
        if limit is not None:
            rows = self._select(
                f"{where} ORDER BY id DESC LIMIT ?", [*args, int(limit)], order=False
            )
            return rows[::-1]
        return self._select(where, args)

    def count(self) -> int:
        """Number of decisions stored."""
        with self._connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])

    def export_csv(
        self, dest: str | os.PathLike[str], decisions: Sequence[Decision] | None = None
    ) -> int:
        """Write decisions (all, or those given) to a CSV file atomically; returns the row count."""
        from xrayscreen.atomic import atomic_write_text

        rows = self.query() if decisions is None else list(decisions)
        import io

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for d in rows:
            values = asdict(d)
            values["regions_json"] = json.dumps(values.pop("regions"), default=float)
            writer.writerow(["" if values[c] is None else values[c] for c in CSV_COLUMNS])
        atomic_write_text(dest, buf.getvalue())
        return len(rows)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _where(since, until, operator_id, verdict) -> tuple[str, list[Any]]:
        clauses, args = [], []
        if since is not None:
            clauses.append("decided_at >= ?")
            args.append(_to_iso(since))
        if until is not None:
            clauses.append("decided_at < ?")
            args.append(_to_iso(until))
        if operator_id:
            clauses.append("operator_id = ?")
            args.append(operator_id)
        if verdict:
            if verdict not in VERDICTS:
                raise ConfigError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
            clauses.append("verdict = ?")
            args.append(verdict)
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", args

    def _select(self, where: str, args: list[Any], order: bool = True) -> list[Decision]:
        sql = f"SELECT * FROM decisions {where}" + (" ORDER BY id" if order else "")
        with self._connect() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [_row_to_decision(r) for r in rows]


def _row_to_decision(r: sqlite3.Row) -> Decision:
    try:
        regions = json.loads(r["regions_json"] or "[]")
    except json.JSONDecodeError:
        regions = []
    return Decision(
        scan_sha256=r["scan_sha256"],
        verdict=r["verdict"],
        scan_path=r["scan_path"],
        operator_id=r["operator_id"],
        note=r["note"],
        threshold=r["threshold"],
        model_id=r["model_id"],
        regions=regions,
        opened_at=r["opened_at"],
        decided_at=r["decided_at"],
        seconds_spent=r["seconds_spent"],
        id=int(r["id"]),
    )


def _replace_id(d: Decision, new_id: int) -> Decision:
    import dataclasses

    return dataclasses.replace(d, id=new_id)
