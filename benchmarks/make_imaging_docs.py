"""Generate the imaging figures for the docs.

Committed figures (``docs/images/``), all made from the project's own simulator
and physics, nothing from research data:

* ``imaging_colour_table.png``: the 2-D false-colour table over (A, R) with the
  reference materials' curves drawn on it;
* ``imaging_simulated_bag.png``: a simulated bag with a gun and a knife, its
  high-energy image and its ground truth (material masks, threat boxes), plus a
  threat projected (TIP) into a clean simulated bag;
* ``imaging_modes.png``: every display mode on one simulated bag.

Research-data figures go to an untracked folder (default ``build/docs_private``)
and must not be committed: the real cargo radiograph from
``../shared/data/dual_energy_cargo`` rendered in our false colour (that data
states no licence) and a TIP into a SIXray bag (research use only).

    python benchmarks/make_imaging_docs.py [--out docs/images] [--private build/docs_private]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from xrayscreen.imaging import enhance, material, physics
from xrayscreen.imaging.simulator import simulate_bag
from xrayscreen.imaging.tip import project_threat

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def _boxes(ax, boxes, colour="red") -> None:
    for b in boxes:
        ax.add_patch(
            Rectangle((b.x0, b.y0), b.x1 - b.x0, b.y1 - b.y0, fill=False, ec=colour, lw=1.5)
        )
        ax.text(b.x0, b.y0 - 4, b.label, color=colour, fontsize=8, va="bottom")


def colour_table_figure(path: Path) -> None:
    table = material.colour_table()
    nr, na = table.cls.shape
    fig, ax = plt.subplots(figsize=(6.2, 4.2), dpi=110)
    ax.imshow(
        table.rgb,
        origin="lower",
        aspect="auto",
        extent=(0, table.a_max, 0, nr - 1),
        interpolation="nearest",
    )
    r_ticks = [1.0, 1.5, 2.0, 3.0, 4.0, 5.0]
    scale = (nr - 1) / np.log(table.r_max / table.r_min)
    ax.set_yticks([np.log(r / table.r_min) * scale for r in r_ticks], [str(r) for r in r_ticks])
    areal = np.geomspace(0.02, 300, 300)
    for name, formula, style in (
        ("polyethylene", "C2H4", ":"),
        ("water", "H2O", "--"),
        ("aluminium", "Al", "-."),
        ("iron", "Fe", "-"),
    ):
        t = physics.transmissions(areal[None, :], physics.mass_mu(formula)[None, :])
        a_h = -np.log(t[0])
        r = -np.log(t[1]) / a_h
        keep = a_h < table.a_max
        ax.plot(a_h[keep], np.log(r[keep] / table.r_min) * scale, "w" + style, lw=1.2, label=name)
    ax.set_ylim(0, nr - 1)
    ax.set_xlabel("A = -ln(I_high)")
    ax.set_ylabel("R = ln(I_low) / ln(I_high)")
    ax.set_title("False-colour table (160 kVp, CsI/Cu/CsI sandwich detector)", fontsize=9)
    ax.legend(fontsize=7, loc="upper right", facecolor="0.3", labelcolor="w")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def simulated_bag_figure(path: Path) -> dict:
    bag = simulate_bag(7, size=(600, 800), threats=("gun", "knife"))
    clean = simulate_bag(13, size=(600, 800))
    tip = project_threat(clean.scan, "gun", seed=4)
    truth = np.full((*bag.scan.shape, 3), 255, np.uint8)
    truth[bag.masks["organic"]] = (230, 140, 40)
    truth[bag.masks["mixed"]] = (60, 190, 60)
    truth[bag.masks["metal"]] = (40, 90, 220)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.6), dpi=100)
    panels = [
        (bag.scan.rgb, "Simulated bag (seed 7): false colour, threat boxes", bag.boxes),
        (enhance.render(bag.scan, "high"), "High-energy transmission (16-bit, Poisson noise)", []),
        (truth, "Ground truth: organic / mixed / metal masks, threat boxes", bag.boxes),
        (tip.scan.rgb, "TIP: gun projected into a clean simulated bag", [tip.box]),
    ]
    for ax, (img, title, boxes) in zip(axes.ravel(), panels):
        ax.imshow(img)
        _boxes(ax, boxes)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return {"boxes": [b._asdict() for b in bag.boxes], "tip_box": tip.box._asdict()}


def modes_figure(path: Path) -> None:
    bag = simulate_bag(7, size=(600, 800), threats=("gun", "knife"))
    modes = enhance.MODES
    cols = 4
    rows = int(np.ceil(len(modes) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(12, 2.5 * rows + 0.4), dpi=90)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, mode in zip(axes.ravel(), modes):
        ax.imshow(enhance.render(bag.scan, mode))
        ax.set_title(f"{enhance.MODE_LABELS[mode]} ({mode})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def private_figures(folder: Path) -> list[str]:
    """Figures from research data: never committed (see module docstring)."""
    from xrayscreen.imaging.readers import open_scan

    written = []
    cargo = SHARED / "dual_energy_cargo" / "5.npy"
    if cargo.exists():
        scan = open_scan(cargo)
        fig, axes = plt.subplots(3, 1, figsize=(10, 10), dpi=100)
        for ax, (img, title) in zip(
            axes,
            [
                (scan.rgb, "Real cargo radiograph (Rapiscan Eagle R60, 6/4 MeV): our false colour"),
                (enhance.render(scan, "high"), "High energy"),
                (enhance.render(scan, "high_pen"), "High penetration"),
            ],
        ):
            ax.imshow(img)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        fig.tight_layout()
        p = folder / "imaging_cargo.png"
        fig.savefig(p)
        plt.close(fig)
        written.append(str(p))
    sixray = sorted((SHARED / "sixray" / "normal").glob("*.jpg"))[:1]
    if sixray:
        scan = open_scan(sixray[0])
        res = project_threat(scan, "knife", seed=3)
        fig, ax = plt.subplots(figsize=(6, 7), dpi=100)
        ax.imshow(res.scan.rgb)
        _boxes(ax, [res.box])
        ax.set_title(f"TIP: knife projected into {sixray[0].name}", fontsize=9)
        ax.axis("off")
        p = folder / "imaging_tip_sixray.png"
        fig.savefig(p)
        plt.close(fig)
        written.append(str(p))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    parser.add_argument("--private", type=Path, default=REPO / "build" / "docs_private")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.private.mkdir(parents=True, exist_ok=True)
    colour_table_figure(args.out / "imaging_colour_table.png")
    info = simulated_bag_figure(args.out / "imaging_simulated_bag.png")
    modes_figure(args.out / "imaging_modes.png")
    private = private_figures(args.private)
    print(
        json.dumps(
            {
                "committed": sorted(str(p) for p in args.out.glob("imaging_*.png")),
                "private_do_not_commit": private,
                **info,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
