"""Probe (issue 7, thirteenth session): does averaging the projected-threat head's logit
over flipped copies of each window steady its reading at bag level?

The val bags' highest benign peaks are often one view's head firing alone (N0000189:
the window view's head z 7.9, the zoomed view's 0.1), where a real threat tends to light
both. A detector's spurious spikes are less stable under a flip of its input than its
true responses, so the mean logit over flips (test-time augmentation) may lower benign
peaks more than threat peaks. This probe scores the bundle's OWN head (no refit) on the
val bags' windows under each flip, per view, normalises each mean within the scan as the
product does (:func:`xrayscreen.inference.tip_evidence.normalise`) and recombines it with
the other terms saved by ``evidence_terms.py`` (same formula, bag point read at the
highest window). Prints JSON::

    python benchmarks/research/tta_head_probe.py --bundle /tmp/models/t12_s6 \\
        --terms /tmp/s12/dec_t12_s6.npz \\
        --normal /tmp/sixray_lists/benign_val.txt --threat /tmp/sixray_lists/threat_val.txt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from xrayscreen.inference import tip_evidence
from xrayscreen.inference.engine import ScoringEngine
from xrayscreen.model.bundle import load_bundle

sys.path.insert(0, str(Path(__file__).parent))
from evidence_terms import add_bag_lists, bag_figures, bag_views, load_terms

#: Flips of a window (dims of an ``(N, C, h, w)`` batch): none, left-right, up-down, both.
FLIPS: dict[str, tuple[int, ...]] = {"none": (), "lr": (-1,), "ud": (-2,), "both": (-2, -1)}

#: Which flips each reported setting averages.
SETTINGS: dict[str, tuple[str, ...]] = {
    "none": ("none",),
    "lr": ("none", "lr"),
    "all4": ("none", "lr", "ud", "both"),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--terms", required=True, help="evidence_terms.py output for the same bundle")
    add_bag_lists(p)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    b = load_bundle(a.bundle)
    if b.tip_head is None:
        raise SystemExit(f"{a.bundle} has no projected-threat head")
    cells = int(b.score.params.get("tip_cells", 0))
    head = b.tip_head
    bags = load_terms(a.terms)
    engine = ScoringEngine(b, torch.device("cpu"))
    per_flip: list[dict[str, dict[str, torch.Tensor]]] = []  # bag -> view -> flip -> logits
    for bag, idx, views in bag_views(b, bags, a.normal, a.threat, a.labels, a.masks):
        kept: dict[str, dict[str, torch.Tensor]] = {}
        for v, (key, w) in enumerate(zip(("h", "hz"), views)):
            kept[key] = {}
            for name, dims in FLIPS.items():
                logit = torch.zeros(len(bag["valid"]))
                wf = torch.flip(w, dims) if dims else w
                logit[idx] = head.logits(engine.embed_windows(wf, cells))[:, v]
                kept[key][name] = logit
        per_flip.append(kept)

    def figures(flips: tuple[str, ...]) -> dict[str, float]:
        for bag, kept in zip(bags, per_flip):
            valid = torch.from_numpy(bag["valid"])
            for key, by_flip in kept.items():
                logit = torch.stack([by_flip[f] for f in flips]).mean(0)
                bag[key] = tip_evidence.normalise(logit, valid).numpy()
        return bag_figures(bags)

    saved = bag_figures(bags, saved=True)
    out = {name: figures(flips) for name, flips in SETTINGS.items()}
    print(
        json.dumps(
            {
                "bundle": a.bundle,
                "cells": cells,
                "saved": saved,
                **out,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
