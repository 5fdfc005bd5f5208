"""Write the SIXray dev split (xrayscreen.evaluation.splits) as scan lists, print JSON.

The lists hold absolute paths into ../shared/data/sixray and go to a folder OUTSIDE
the repository (research data and anything derived from it never enter the repo).
``xrayscreen train`` and ``xrayscreen evaluate`` both read ``.txt`` lists::

    python benchmarks/sixray_split_lists.py --out /tmp/sixray_lists
    xrayscreen train /tmp/sixray_lists/benign_train.txt --out /tmp/model ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from xrayscreen.evaluation import splits

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "sixray"))
    ap.add_argument("--out", required=True, help="folder for the lists (outside the repo)")
    args = ap.parse_args()
    data, out = Path(args.data).resolve(), Path(args.out).resolve()
    if REPO in out.parents or out == REPO:
        raise SystemExit("write the lists outside the repository")
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, kinds in splits.SPLITS.items():
        for kind, names in kinds.items():
            if not names:
                continue
            folder = data / ("normal" if kind == "benign" else "threat/images")
            files = [folder / f"{n}.jpg" for n in names if (folder / f"{n}.jpg").is_file()]
            path = out / f"{kind}_{split}.txt"
            path.write_text("".join(f"{f}\n" for f in files), encoding="utf-8")
            counts[path.name] = len(files)
    print(json.dumps({"out": str(out), "lists": counts}, indent=1))


if __name__ == "__main__":
    main()
