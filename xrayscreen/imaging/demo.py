"""The bundled demo scans: simulated bags shipped in ``resources/demo/``.

Each demo is a 16-bit PNG pair ``demo_NN_high.png`` / ``demo_NN_low.png`` holding
12-bit detector values (0..4095, the way many line scanners store them; 12 bits
also keeps the noisy files small) plus ``demo_NN.json`` with the ground truth
boxes. Regenerate with ``python -m xrayscreen.imaging.demo``.
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from xrayscreen.imaging.simulator import simulate_bag

# (seed, threats): one gun, one knife, one clean bag.
DEMO_BAGS: tuple[tuple[int, tuple[str, ...]], ...] = ((11, ("gun",)), (12, ("knife",)), (13, ()))
DEMO_SIZE = (432, 576)
DEMO_BITS = 12

_REPO_DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"


def demo_dir() -> Path:
    """Folder holding the installed demo scans."""
    return Path(str(resources.files("xrayscreen.resources").joinpath("demo")))


def demo_scan_paths() -> list[Path]:
    """The demo scans, one path per bag (the ``_high`` file; ``open_scan`` finds its pair)."""
    folder = demo_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.endswith("_high.png"))


def demo_truth(path: Path) -> dict:
    """Ground truth (threat boxes, seed) of a demo scan, from its JSON side file."""
    stem = path.name.split("_high")[0].split("_low")[0]
    return json.loads((path.parent / f"{stem}.json").read_text(encoding="utf-8"))


def write_demo(out: Path) -> list[Path]:
    """Simulate the demo bags and write them into ``out``; returns the written files."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    top = 2**DEMO_BITS - 1
    for n, (seed, threats) in enumerate(DEMO_BAGS, start=1):
        bag = simulate_bag(seed, size=DEMO_SIZE, threats=threats)
        stem = f"demo_{n:02d}"
        for k, name in enumerate(("high", "low")):
            path = out / f"{stem}_{name}.png"
            values = np.round(bag.scan.raw[k] * top).astype(np.uint16)
            if not cv2.imwrite(str(path), values, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
                raise OSError(f"could not write {path}")
            written.append(path)
        truth = {
            "seed": seed,
            "threats": list(threats),
            "size": list(DEMO_SIZE),
            "bits": DEMO_BITS,
            "pixel_mm": bag.scan.pixel_mm,
            "boxes": [b._asdict() for b in bag.boxes],
        }
        side = out / f"{stem}.json"
        side.write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
        written.append(side)
    return written


def main(argv: list[str] | None = None) -> int:
    """Regenerate the demo scans (default: the repository's ``resources/demo``)."""
    parser = argparse.ArgumentParser(description="Regenerate the bundled demo scans")
    parser.add_argument("--out", type=Path, default=_REPO_DEMO)
    args = parser.parse_args(argv)
    files = write_demo(args.out)
    print(
        json.dumps(
            {"written": [str(f) for f in files], "bytes": sum(f.stat().st_size for f in files)}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
