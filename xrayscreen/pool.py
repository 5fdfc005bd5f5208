"""The curated normal pool: which scans a retrained model learns "normal" from.

Two kinds of source, combinable:

* folders of scans an analyst vouches for (every scan file below them);
* bags operators marked **Clear** in the decision log, filtered by date range and
  operator, optionally leaving out every bag that was ever marked Suspect by anyone
  (one doubtful verdict is enough to keep a bag out of "normal").

A scan is identified by the sha256 of its source bytes (the decision log's key),
so the same bag reached twice (two folders, a folder and the log, a copy under
another name) enters the pool once. Log entries whose file is gone or whose bytes
no longer match the logged hash are counted and left out, never trained on.

A deterministic hold-out (by hash, independent of the order sources were added)
keeps some bags away from training so the new and the active model can be compared
on the same unseen normal bags.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from xrayscreen.errors import ConfigError

SOURCE_FOLDER = "folder"
SOURCE_LOG = "log"


@dataclass(frozen=True)
class PoolItem:
    """One scan in the pool.

    Attributes:
        path: Scan file.
        sha256: Hash of the file's bytes (the scan's identity).
        source: ``"folder"`` or ``"log"``.
        operator_id: Operator who cleared it (log items).
        decided_at: When it was cleared (log items, ISO-8601 UTC).
    """

    path: Path
    sha256: str
    source: str
    operator_id: str = ""
    decided_at: str = ""


@dataclass(frozen=True)
class LogFilter:
    """Which Clear verdicts of the decision log count.

    Attributes:
        since: Earliest decision time (inclusive); ISO string, date or datetime.
        until: Latest decision time (exclusive); a date means "before that day".
        operator_id: Only this operator's verdicts ('' or None = everyone).
        exclude_any_suspect: Leave out bags that have any Suspect verdict (at any time,
            by anyone), not only within the date range.
    """

    since: str | _dt.date | _dt.datetime | None = None
    until: str | _dt.date | _dt.datetime | None = None
    operator_id: str | None = None
    exclude_any_suspect: bool = True


@dataclass
class PoolCounts:
    """What happened while building the pool (for the dialog's counts line)."""

    from_folders: int = 0
    from_log: int = 0
    duplicates: int = 0
    excluded_suspect: int = 0
    missing: int = 0
    changed: int = 0

    def summary(self) -> str:
        """One human-readable line."""
        parts = [f"{self.from_folders} from folders", f"{self.from_log} cleared in the log"]
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicates skipped")
        if self.excluded_suspect:
            parts.append(f"{self.excluded_suspect} left out (marked Suspect)")
        if self.missing:
            parts.append(f"{self.missing} logged files not found")
        if self.changed:
            parts.append(f"{self.changed} logged files changed since")
        return ", ".join(parts)


@dataclass
class HoldoutSplit:
    """Train / held-out partition of a pool (disjoint, by scan)."""

    train: list[PoolItem]
    holdout: list[PoolItem]


@dataclass
class NormalPool:
    """An ordered, sha256-deduplicated set of normal scans."""

    items: list[PoolItem] = field(default_factory=list)
    counts: PoolCounts = field(default_factory=PoolCounts)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def hashes(self) -> set[str]:
        """sha256 of every scan in the pool."""
        return {i.sha256 for i in self.items}

    def paths(self) -> list[Path]:
        """Scan files, in pool order."""
        return [i.path for i in self.items]

    def fingerprint(self) -> str:
        """sha256 over the sorted scan hashes (same definition as the training module's)."""
        return data_fingerprint(self.hashes)

    def _add(self, item: PoolItem) -> bool:
        if item.sha256 in self.hashes:
            self.counts.duplicates += 1
            return False
        self.items.append(item)
        if item.source == SOURCE_FOLDER:
            self.counts.from_folders += 1
        else:
            self.counts.from_log += 1
        return True

    def add_folder(self, folder: str | os.PathLike[str]) -> int:
        """Add every scan file below ``folder`` (recursively, sorted). Returns how many were new.

        Raises:
            ConfigError: if the folder does not exist.
        """
        root = Path(folder)
        if not root.is_dir():
            raise ConfigError(f"{root} is not a folder")
        added = 0
        for path in scan_files(root):
            sha, scan_path = scan_identity(path)
            added += self._add(PoolItem(scan_path, sha, SOURCE_FOLDER))
        return added

    def add_files(self, files: Iterable[str | os.PathLike[str]]) -> int:
        """Add individual scan files (as folder items). Returns how many were new."""
        added = 0
        for f in files:
            sha, scan_path = scan_identity(f)
            added += self._add(PoolItem(scan_path, sha, SOURCE_FOLDER))
        return added

    def add_from_log(self, log: object, flt: LogFilter | None = None) -> int:
        """Add the scans operators cleared, per ``flt``. Returns how many were new.

        Args:
            log: A :class:`xrayscreen.decisions.log.DecisionLog` (or anything with its
                ``query`` method).
            flt: The filters; default: all Clear bags, none that was ever Suspect.
        """
        flt = flt or LogFilter()
        cleared = log.query(  # type: ignore[attr-defined]
            since=flt.since, until=flt.until, operator_id=flt.operator_id or None, verdict="Clear"
        )
        suspect: set[str] = set()
        if flt.exclude_any_suspect:
            suspect = {d.scan_sha256 for d in log.query(verdict="Suspect")}  # type: ignore[attr-defined]
        seen: set[str] = set()
        added = 0
        for d in cleared:
            if d.scan_sha256 in seen:
                continue  # cleared twice: one bag
            seen.add(d.scan_sha256)
            if d.scan_sha256 in suspect:
                self.counts.excluded_suspect += 1
                continue
            path = Path(d.scan_path) if d.scan_path else None
            if path is None or not path.is_file():
                self.counts.missing += 1
                continue
            sha, scan_path = scan_identity(path)
            if sha != d.scan_sha256:
                self.counts.changed += 1  # not the bag the operator cleared
                continue
            item = PoolItem(scan_path, sha, SOURCE_LOG, d.operator_id, d.decided_at)
            added += self._add(item)
        return added

    def split_holdout(
        self, fraction: float = 0.15, *, min_holdout: int = 2, seed: int = 0
    ) -> HoldoutSplit:
        """Hold out about ``fraction`` of the scans, chosen by hash (stable under reordering).

        At least ``min_holdout`` scans are held out when the pool has more than that
        many plus one, and at least one scan always stays for training.
        """
        if not 0.0 <= fraction < 1.0:
            raise ConfigError(f"hold-out fraction must be in [0, 1), got {fraction}")
        n = len(self.items)
        k = round(n * fraction)
        if n > min_holdout + 1:
            k = max(k, min_holdout)
        k = min(k, max(n - 1, 0))
        ranked = sorted(
            self.items,
            key=lambda i: hashlib.sha256(f"{seed}:{i.sha256}".encode()).hexdigest(),
        )
        held = {i.sha256 for i in ranked[:k]}
        return HoldoutSplit(
            train=[i for i in self.items if i.sha256 not in held],
            holdout=[i for i in self.items if i.sha256 in held],
        )


def build_pool(
    folders: Iterable[str | os.PathLike[str]] = (),
    log: object | None = None,
    flt: LogFilter | None = None,
) -> NormalPool:
    """Pool from folders (first) and the decision log's Clear bags (second)."""
    pool = NormalPool()
    for f in folders:
        pool.add_folder(f)
    if log is not None:
        pool.add_from_log(log, flt)
    return pool


def scan_files(root: Path) -> list[Path]:
    """Scan files below ``root`` (the training module's notion of a scan file), sorted."""
    try:
        from xrayscreen.training.data import is_scan_path
    except ImportError:  # training module absent from this build: plain image suffixes

        def is_scan_path(p: Path) -> bool:
            return p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

    files = sorted(f for f in root.rglob("*") if f.is_file() and not f.name.startswith("."))
    return [f for f in files if is_scan_path(f)]


def scan_identity(path: str | os.PathLike[str]) -> tuple[str, Path]:
    """``(sha256, path)`` the readers give the scan opened from ``path``.

    A single file's identity is the hash of its bytes. Half of a dual-energy pair
    (``bag_high.png`` + ``bag_low.png``) opens as one scan hashed over both files,
    high energy first (as ``xrayscreen.imaging.readers.open_scan`` does), so both
    halves map to one identity and the pool holds the pair once, under its
    high-energy file.
    """
    p = Path(path)
    pair = None
    try:
        from xrayscreen.imaging.readers import find_pair

        pair = find_pair(p)
    except ImportError:  # readers absent from this build: every file is a scan
        pair = None
    if pair is None:
        return file_sha256(p), p
    h = hashlib.sha256()
    for f in pair:
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest(), Path(pair[0])


# (path, size, mtime_ns) -> sha256: changing a filter in the dialog re-reads nothing.
_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_HASH_CACHE_MAX = 200_000


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, streamed (the scan identity of single-file scans).

    Cached per process by path, size and modification time, so a file that changes
    is hashed again.
    """
    st = os.stat(path)
    key = (os.fspath(path), st.st_size, st.st_mtime_ns)
    cached = _HASH_CACHE.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    if len(_HASH_CACHE) >= _HASH_CACHE_MAX:
        _HASH_CACHE.clear()
    _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def data_fingerprint(hashes: Iterable[str]) -> str:
    """sha256 over the sorted scan hashes (matches ``xrayscreen.training.data.data_fingerprint``)."""
    h = hashlib.sha256()
    for s in sorted(hashes):
        h.update(s.encode("ascii"))
        h.update(b"\n")
    return h.hexdigest()
