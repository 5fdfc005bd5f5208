"""The instrument against the published floor table (real SIXray data; skipped when absent).

Pool (b) (threat-free windows of the 64 boxed threat bags) is fully reproducible
from the folder: under the README's conventions the four floors must match its
table within +-0.01 in every column.
"""

from __future__ import annotations

import pytest

from xrayscreen.evaluation.annotations import AnnotationSource
from xrayscreen.evaluation.dataset import README_COMPAT, prepare_dataset
from xrayscreen.evaluation.runner import evaluate
from xrayscreen.evaluation.scorers import FloorScorer

README_POOL_B = {  # all, gun, knife
    "max_density": (0.850, 0.874, 0.840),
    "mean_darkness": (0.869, 0.897, 0.857),
    "edge_density": (0.697, 0.667, 0.709),
    "blue_fraction": (0.768, 0.800, 0.754),
}


@pytest.mark.data
def test_floors_match_the_readme_on_pool_b(shared_data):
    d = shared_data / "sixray" / "threat"
    labels = d / "labels_yolo"
    boxed = sorted(p for p in (d / "images").glob("*.jpg") if (labels / f"{p.stem}.txt").exists())
    assert len(boxed) == 64
    ds = prepare_dataset([], boxed, AnnotationSource(labels), README_COMPAT, progress=False)
    ev = evaluate(ds, [FloorScorer()], progress=False)
    for kind, ref in README_POOL_B.items():
        w = ev.summary["kinds"][kind]["window"]["b"]
        ours = tuple(w[c]["auc"] for c in ("all", "gun", "knife"))
        assert ours == pytest.approx(ref, abs=0.01), kind
