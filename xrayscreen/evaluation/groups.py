"""Scans of one physical bag: the unit an honest bag-level interval resamples.

Screening folders hold rescans: the same suitcase sent through again, or re-packed with
the same items and scanned again (SIXray's threat scans are a few staged suitcases;
its benign val block holds one bag under five ids; issue 7). Bootstrap intervals that
treat every scan as an independent bag are then too narrow, and a split that puts one
rescan in val and another in test is not held out. A *groups file* says which scans
are one bag, so that :mod:`xrayscreen.evaluation.bootstrap` resamples bags, not scans,
and ``xrayscreen evaluate`` can say when a group straddles two splits.

Format: plain text, one physical bag per line, the names of its scans (file stems,
``N0000188`` for ``N0000188.jpg``) separated by spaces or commas; ``#`` starts a
comment. A scan listed on no line is a bag of its own::

    # one suitcase, five scans
    N0000207 N0000208 N0000209 N0000210 N0000211
    P00001, P00002   # the cable-coil bag, re-packed
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from xrayscreen.errors import ConfigError

_SEP = re.compile(r"[\s,]+")
_NAME = re.compile(r"^[\w.\-]+$")


def parse_groups(text: str, source: str = "groups file") -> dict[str, str]:
    """Scan name -> group key, from the text of a groups file (format: module doc).

    Args:
        text: The file's text.
        source: Where it came from, for the error messages.

    Returns:
        Every listed scan's group key (the line's first name, so keys are stable and
        readable). Scans of one-name lines map to themselves.

    Raises:
        ConfigError: for a name that is not a plain file stem, a scan listed on two
            lines, or a file that lists no scan at all.
    """
    out: dict[str, str] = {}
    line_of: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        names = [n for n in _SEP.split(raw.split("#", 1)[0].strip()) if n]
        if not names:
            continue
        for n in names:
            if not _NAME.match(n):
                raise ConfigError(
                    f"{source}, line {lineno}: {n!r} is not a scan name (a file stem such "
                    "as N0000188)"
                )
            if n in out:
                raise ConfigError(
                    f"{source}, line {lineno}: {n} is already listed on line {line_of[n]}; "
                    "a scan belongs to one bag"
                )
            out[n] = names[0]
            line_of[n] = lineno
    if not out:
        raise ConfigError(f"{source} lists no scan")
    return out


def load_groups(path: str | Path) -> dict[str, str]:
    """:func:`parse_groups` of a file.

    Raises:
        ConfigError: for a missing or unreadable file, or bad contents.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the groups file {p}: {exc}") from exc
    return parse_groups(text, source=str(p))


def group_of(name: str, groups: Mapping[str, str]) -> str | None:
    """The group key of a scan named ``name`` (a file name such as ``N0000188.jpg`` or its
    stem), or ``None`` when no line lists it."""
    key = groups.get(name)
    return key if key is not None else groups.get(Path(name).stem)


def group_labels(names: Sequence[str], groups: Mapping[str, str] | None) -> np.ndarray:
    """Integer group labels of ``names`` (order kept): scans of one group share a label,
    a scan in no group gets one of its own; labels are ``0 .. n_groups - 1`` in order of
    first appearance. Without ``groups`` every scan is its own group."""
    keys = [groups.get(n, "\0" + n) if groups else "\0" + n for n in names]
    index: dict[str, int] = {}
    return np.array([index.setdefault(k, len(index)) for k in keys], dtype=np.int64)


def straddling(
    groups: Mapping[str, str], splits: Mapping[str, Sequence[str]]
) -> list[dict[str, object]]:
    """Groups whose scans fall in more than one of ``splits`` (name -> scan names): a
    rescan on both sides of a split, so the later side is not held out from the earlier.

    Returns:
        One ``{"group", "splits": {split: [scans]}}`` per straddling group, sorted by group.
    """
    where: dict[str, dict[str, list[str]]] = {}
    for split, names in splits.items():
        for n in names:
            if n in groups:
                where.setdefault(groups[n], {}).setdefault(split, []).append(n)
    return [
        {"group": g, "splits": {s: sorted(ns) for s, ns in by.items()}}
        for g, by in sorted(where.items())
        if len(by) > 1
    ]
