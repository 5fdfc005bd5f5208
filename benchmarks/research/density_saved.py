"""Window and bag figures of GANomaly's evidence plus window density, from saved raw
scores (``dump_scores.py``: a working-scale dump and a ``--zoom 2`` dump of the same scans).
Research for issue 7 (the density term, ``xrayscreen.inference.density``).

Each view's raw score is normalised per scan (the product's ``scan_norm``); the density
z-score (``density.normalise`` of the dump's mean darkness; the zoomed window's is
approximated by the mean of the four working-scale windows it covers, exact for a 2x view
on a stride that divides 32 px) is added with weight ``w`` in the form chosen by ``--form``;
then the views' max, the bundle's context and the metrics::

    python benchmarks/research/density_saved.py --fine /tmp/dump_val.npz \\
        --coarse /tmp/dump_val_z2.npz --benign-list /tmp/sixray_lists/benign_val.txt \\
        --weights 0 0.5 1 --forms pair

Forms: ``pair`` (each view + its own window's density: the product's), ``fine`` (the
working-scale density added after the max), ``max`` (the larger density after the max),
``zoomed`` (density on the zoomed view only), ``only`` (the density alone: the control).
``--feature maxd`` uses the max-density floor instead of mean darkness. Prints one JSON
line per (bundle, form, weight).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from calib_analysis import Tally, load

from xrayscreen.evaluation.metrics import roc_auc
from xrayscreen.inference import context, density, scan_norm
from xrayscreen.model.bundle import load_bundle

FORMS = ("pair", "fine", "max", "zoomed", "only")


def _zoomed_density(values: np.ndarray, grid, feature: str) -> np.ndarray:
    """A 2x zoomed window's density from the four working-scale windows it covers."""
    m = values.reshape(grid.rows, grid.cols).astype(np.float32)
    o = 32 // grid.stride
    p = np.zeros((grid.rows + 2 * o, grid.cols + 2 * o), np.float32)  # air outside
    p[o:-o, o:-o] = m
    parts = [p[dy : dy + grid.rows, dx : dx + grid.cols] for dy in (0, 2 * o) for dx in (0, 2 * o)]
    out = np.maximum.reduce(parts) if feature == "maxd" else sum(parts) / 4.0
    return out.ravel()


def evidence(spec, raw, raw_zoom, dens, dens_zoom, w: float, form: str, valid) -> torch.Tensor:
    """Per-scan evidence before the context, in one of :data:`FORMS`."""
    zf = scan_norm.normalise(spec, torch.from_numpy(raw), valid)
    zz = scan_norm.normalise(spec, torch.from_numpy(raw_zoom), valid)
    df = density.normalise(torch.from_numpy(dens), valid)
    dz = density.normalise(torch.from_numpy(dens_zoom), valid)
    if form == "only":
        return torch.maximum(df, dz)
    if form == "pair":
        return torch.maximum(zf + w * df, zz + w * dz)
    if form == "zoomed":
        return torch.maximum(zf, zz + w * dz)
    s = torch.maximum(zf, zz)
    return s + w * (df if form == "fine" else torch.maximum(df, dz))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fine", required=True)
    p.add_argument("--coarse", required=True, help="the --zoom 2 dump of the same scans")
    p.add_argument("--benign-list", required=True)
    p.add_argument("--weights", nargs="+", type=float, default=[0.0, 0.5, 1.0])
    p.add_argument("--forms", nargs="+", choices=FORMS, default=["pair"])
    p.add_argument("--feature", choices=("meand", "maxd"), default="meand")
    a = p.parse_args(argv)
    fine = load(a.fine)
    coarse = {b.name: b for b in load(a.coarse)}
    bundles = np.load(a.fine)["bundles"]
    keep = {Path(x.strip()).stem for x in open(a.benign_list) if x.strip()}
    for j, path in enumerate(bundles):
        spec = load_bundle(str(path)).score
        for form in a.forms:
            for w in a.weights:
                tally = Tally()
                for b in fine:
                    if b.name not in coarse or (b.kind == "benign" and b.name not in keep):
                        continue
                    valid = torch.from_numpy(~b.belt)
                    feat = getattr(b, a.feature)
                    s = evidence(
                        spec,
                        b.raw[j],
                        coarse[b.name].raw[j],
                        feat,
                        _zoomed_density(feat, b.grid, a.feature),
                        w,
                        form,
                        valid,
                    )
                    tally.add(b, context.apply(spec, s, b.grid, valid).double().numpy())
                out = {"bundle": str(path), "form": form, "w": w, "feature": a.feature}
                out.update(tally.window_figures())
                _, on_threat, window_far, _ = tally.bag_point(0.05)
                out["bag_on_threat@5%"] = round(on_threat, 4)
                out["bag_on_threat@5%_ci95"] = tally.bag_interval(0.05)
                # What the bag operating point asks of a window: the share of benign-bag
                # windows above it (the tail the bag goal is read in).
                out["window_far_at_bag5%"] = round(window_far, 6)
                out["bag_auc"] = round(
                    roc_auc(np.array(tally.peaks_t_any), np.array(tally.peaks_b)), 4
                )
                print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
