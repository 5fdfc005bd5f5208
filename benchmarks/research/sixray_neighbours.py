"""Do the threat val and test splits share physical bags? (issue 7, seventeenth session)

The threat split alternates val / test in id order within each annotation stratum, and
SIXray's threat scans are staged: a few suitcases re-packed with the same guns and knives
and scanned again, often under neighbouring ids. This script pairs every val bag with the
test bags whose id lies within ``--within`` of it, writes a montage of the pairs (to a
folder OUTSIDE the repository: the scans are research-licensed) for a person to judge
which pairs are one suitcase, and, given those judgements (``--same``) and the
``evidence_terms.py dump`` files of the test split, prints the product's bag point (the
threat alarmed on the threat at 5 % of benign bags) separately for the test bags judged to
be rescans of a val bag and for the rest. Prints JSON::

    python benchmarks/research/sixray_neighbours.py --val /tmp/sixray_lists/threat_val.txt \\
        --test /tmp/sixray_lists/threat_test.txt --montage /tmp/s17/threat_pairs.png
    python benchmarks/research/sixray_neighbours.py --val ... --test ... \\
        --same 1:2 49:50 ... --dumps /tmp/s13/dec_test_t12_s6.npz ... \\
        --labels ../shared/data/sixray/threat/labels_yolo --masks ../shared/data/sixray/threat/masks
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evidence_terms as et

REPO = Path(__file__).resolve().parents[2]
THUMB = 260  # px, width of one scan in the montage


def bag_id(path: str) -> int:
    """The number in a SIXray threat file name (``P00238.jpg`` -> 238)."""
    return int(Path(path).stem.lstrip("P"))


def neighbour_pairs(val: list[str], test: list[str], within: int) -> list[tuple[str, str]]:
    """(val path, test path) for every pair whose ids differ by at most ``within``."""
    return sorted(
        ((v, t) for v in val for t in test if abs(bag_id(v) - bag_id(t)) <= within),
        key=lambda p: (bag_id(p[0]), bag_id(p[1])),
    )


def montage(pairs: list[tuple[str, str]], out: Path) -> None:
    """Two columns of labelled pairs, side by side, written to ``out``."""
    rows = []
    for v, t in pairs:
        ims = [cv2.imread(p) for p in (v, t)]
        ims = [cv2.resize(i, (THUMB, round(THUMB * i.shape[0] / i.shape[1]))) for i in ims]
        h = max(i.shape[0] for i in ims)
        ims = [
            cv2.copyMakeBorder(i, 0, h - i.shape[0], 0, 6, cv2.BORDER_CONSTANT, value=(255,) * 3)
            for i in ims
        ]
        row = np.hstack(ims)
        cv2.putText(row, f"{bag_id(v)} val | {bag_id(t)} test", (5, 20), 0, 0.6, (0, 0, 255), 2)
        rows.append(cv2.copyMakeBorder(row, 0, 6, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0)))
    width = max(r.shape[1] for r in rows)
    rows = [cv2.copyMakeBorder(r, 0, 0, 0, width - r.shape[1], cv2.BORDER_CONSTANT) for r in rows]
    half = (len(rows) + 1) // 2
    left, right = np.vstack(rows[:half]), np.vstack(rows[half:] or [rows[0][:1] * 0])
    right = cv2.copyMakeBorder(right, 0, left.shape[0] - right.shape[0], 0, 0, cv2.BORDER_CONSTANT)
    cv2.imwrite(str(out), np.hstack([left, right]))


def split_bag_point(dump: str, seen: set[str], a: argparse.Namespace) -> dict[str, object]:
    """The product's saved score read at 5 % of the dump's benign bags, for the threat bags
    in ``seen`` and for the others (all, and knife-only bags)."""
    bags = et.load_terms(dump)
    et.add_contents(bags, a.test, a.labels, a.masks)
    benign = np.sort([b["out"][b["valid"]].max() for b in bags if b["kind"] == "benign"])
    threshold = benign[-int(np.floor(0.05 * len(benign) + 1e-9)) - 1]
    out: dict[str, object] = {"threshold": round(float(threshold), 3)}
    for group, want in (("rescans_of_val", True), ("others", False)):
        hits, knives = [], []
        for b in bags:
            lab = (b["label"] == 1) & b["valid"]
            if b["kind"] != "threat" or not lab.any() or (b["name"] in seen) != want:
                continue
            hit = bool(b["out"][lab].max() > threshold)
            hits.append(hit)
            if b.get("contents") == "knife":
                knives.append(hit)
        out[group] = {"alarmed": [sum(hits), len(hits)], "knife_only": [sum(knives), len(knives)]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--val", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--within", type=int, default=3, help="largest id difference paired")
    p.add_argument("--montage", type=Path, help="PNG to write the pairs to (outside the repo)")
    p.add_argument("--same", nargs="*", default=[], help="VAL:TEST ids judged one suitcase")
    p.add_argument(
        "--dumps", nargs="*", default=[], help="evidence_terms.py dumps of the test split"
    )
    p.add_argument("--labels", default=str(REPO.parent / "shared/data/sixray/threat/labels_yolo"))
    p.add_argument("--masks", default=str(REPO.parent / "shared/data/sixray/threat/masks"))
    a = p.parse_args(argv)
    val = [ln.strip() for ln in open(a.val) if ln.strip()]
    test = [ln.strip() for ln in open(a.test) if ln.strip()]
    pairs = neighbour_pairs(val, test, a.within)
    out: dict[str, object] = {"pairs": [[bag_id(v), bag_id(t)] for v, t in pairs]}
    if a.montage:
        if REPO in a.montage.resolve().parents:
            raise SystemExit("write the montage outside the repository")
        montage(pairs, a.montage)
        out["montage"] = str(a.montage)
    same = [tuple(int(x) for x in s.split(":")) for s in a.same]
    known = {tuple(p) for p in out["pairs"]}
    if unknown := [s for s in same if s not in known]:
        raise SystemExit(f"--same names pairs that are not neighbours: {unknown}")
    seen = {f"P{t:05d}" for _, t in same}
    out["test_bags_judged_rescans"] = sorted(seen)
    out["dumps"] = {d: split_bag_point(d, seen, a) for d in a.dumps}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
