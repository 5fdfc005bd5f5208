"""Has the model already seen the scans it is evaluated on?

``xrayscreen train`` writes ``training_report.json`` beside a bundle, naming (by sha256)
the scans it trained on and the scans it held out to calibrate. An evaluation that
includes any of them, or (given rescan groups, :mod:`xrayscreen.evaluation.groups`)
another scan of a bag it trained on, is not a held-out evaluation; ``xrayscreen evaluate``
says so in its output and its report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xrayscreen.evaluation.groups import group_of

#: What each list of :func:`training_overlap` means, as the warnings and the report say it.
OVERLAP_TEXT = {
    "trained_on": "were among the model's training scans",
    "held_out_for_calibration": "were the model's held-out calibration scans",
    "rescans_of_trained": "are rescans (same group) of the model's training scans",
}


def training_overlap(
    bundle_dir: Path, scans: list[Any], groups: dict[str, str] | None
) -> dict[str, list[str]] | None:
    """Evaluated scans the model has already seen, from the ``training_report.json``
    ``xrayscreen train`` writes beside a bundle (``None`` without one): scans it was
    trained on or calibrated on (by sha256), and, given rescan groups and the report's
    scan names, rescans of its training scans. Figures on such scans are not held out."""
    path = Path(bundle_dir) / "training_report.json"
    if not path.is_file():
        return None
    try:
        rep = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # an unreadable report says nothing; the bundle itself was loaded
    train, held = set(rep.get("train_scans", [])), set(rep.get("val_scans", []))
    out: dict[str, list[str]] = {
        "trained_on": sorted(s.name for s in scans if s.sha256 in train),
        "held_out_for_calibration": sorted(s.name for s in scans if s.sha256 in held),
        "rescans_of_trained": [],
    }
    names = rep.get("train_scan_names") or []
    if groups and names:
        seen = {group_of(n, groups) for n in names} - {None}
        out["rescans_of_trained"] = sorted(
            s.name for s in scans if s.sha256 not in train and group_of(s.name, groups) in seen
        )
    return out
