"""Threat-image projection (TIP) onto normal bags: synthetic threat bags for research on a
window head trained without any real threat (issue 7).

Airports keep screeners alert by projecting stored threat images into live bags; here the
threats are the project's own simulated ones, inserted by the product's
``xrayscreen.imaging.tip.project_threat`` (gun, knife, box cutter with random shape,
orientation and place; on a pseudo-colour scan the threat is rendered alone in false
colour and multiplied in, channel by channel). Two things vary beyond it: the threats'
size (the pixel pitch the bag is taken to have, ``--pixel-mm`` at the 800 px scale) and
their thickness (``--thickness``, log-uniform: the simulator's steel is darker than the
thin knives other scanners show). No real threat scan is read. Every bag is written at
the protocol's scale (longer side 800 px) as PNG with a YOLO label file (0 gun, 1 knife;
the box cutter counts as a knife), so the protocol's own dataset code labels its windows::

    python benchmarks/research/tip_bags.py --sources /tmp/sixray_lists/benign_train.txt \\
        --out /tmp/tip --per-bag 2 --seed 0

Prints one JSON line (bags, threats, seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from xrayscreen.imaging.scan import Scan, ScanKind
from xrayscreen.training.tip_head import FIELD_MM
from xrayscreen.training.tip_head import project_bag as tip_project_bag

CLASS_OF = {"gun": 0, "knife": 1, "blade": 1}


def project_bag(rgb: np.ndarray, rng: np.random.Generator, a: argparse.Namespace):
    """``a.per_bag`` threats projected into one bag (uint8 RGB at the protocol scale) by the
    product's own projection (``xrayscreen.training.tip_head.project_bag``); returns the
    new RGB and ``(class, x0, y0, x1, y1)`` per threat. ``a.pixel_mm`` is the pitch range
    at the 800 px scale (the product draws a factor on the bag's pitch: the same thing)."""
    scan = Scan(rgb=rgb, kind=ScanKind.PSEUDO_COLOUR)
    base = FIELD_MM / max(rgb.shape[:2])
    size = (a.pixel_mm[0] / base, a.pixel_mm[1] / base)
    out, boxes = tip_project_bag(scan, rng, a.per_bag, size, tuple(a.thickness))
    return out.rgb, [(CLASS_OF[b.label], b.x0, b.y0, b.x1, b.y1) for b in boxes]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sources", required=True, help="list of normal bag files")
    p.add_argument("--out", required=True)
    p.add_argument("--per-bag", type=int, default=2, help="threats per bag")
    p.add_argument("--copies", type=int, default=1, help="TIP copies per normal bag")
    p.add_argument(
        "--pixel-mm",
        type=float,
        nargs=2,
        default=(1.0, 2.0),
        help="range of the pixel pitch (mm) the bags are taken to have at the 800 px scale "
        "(larger = smaller threats)",
    )
    p.add_argument(
        "--thickness",
        type=float,
        nargs=2,
        default=(0.25, 1.0),
        help="range of the threats' thickness factor (log-uniform; < 1 lighter)",
    )
    p.add_argument("--longer-side", type=int, default=800)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    rng = np.random.default_rng(a.seed)
    out = Path(a.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    names, n_threats = [], 0
    for src in [s.strip() for s in open(a.sources) if s.strip()]:
        rgb = cv2.cvtColor(cv2.imread(src, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        f = a.longer_side / max(rgb.shape[:2])
        size = (round(rgb.shape[1] * f), round(rgb.shape[0] * f))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
        for c in range(a.copies):
            img, boxes = project_bag(rgb, rng, a)
            name = f"T{Path(src).stem}_{c}"
            cv2.imwrite(str(out / "images" / f"{name}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            h, w = img.shape[:2]
            with open(out / "labels" / f"{name}.txt", "w") as fh:
                for k, x0, y0, x1, y1 in boxes:
                    fh.write(
                        f"{k} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} "
                        f"{(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}\n"
                    )
            names.append(str(out / "images" / f"{name}.png"))
            n_threats += len(boxes)
    (out / "labels" / "classes.txt").write_text("gun\nknife\n")
    (out / "list.txt").write_text("\n".join(names) + "\n")
    print(
        json.dumps(
            {
                "bags": len(names),
                "threats": n_threats,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
