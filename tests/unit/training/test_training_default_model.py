"""The bundled default model: present, small, safe to load, calibrated, the X-ray
configuration at 800 px, and it scores the bundled demo scans."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np

from xrayscreen.model.bundle import META, load_bundle
from xrayscreen.training.default_model import default_config

BUNDLE = Path(str(resources.files("xrayscreen.resources") / "default_model"))


def test_default_model_is_small_and_complete():
    size = sum(f.stat().st_size for f in BUNDLE.iterdir() if f.is_file())
    # 6 MB: the float16 generator, discriminator and memory (~4.7 MB) and, since the tenth
    # session, a projected-threat head that reads a 4x4 grid of the encoder map (~0.2 MB).
    assert size < 6_000_000, f"default model is {size / 1e6:.2f} MB"
    meta = json.loads((BUNDLE / META).read_text())
    assert meta["weights"]["dtype"] == "float16" and meta["weights"]["has_discriminator"]
    b = load_bundle(BUNDLE, with_discriminator=True)
    assert b.input.representation == "rgb_attenuation" and b.input.scale.longer_side == 800
    # The issue-7 X-ray configuration: memory + unexplained density, per scan, with
    # spatial context, calibrated on whole held-out scans.
    assert b.score.kind == "feature_knn_excess" and b.score.params["scan_norm"] == "robust_z"
    assert b.feature_bank is not None and len(b.feature_bank.memory) <= 1500
    assert b.score.params["context_px"] == 128.0 and b.score.params["context_self"] == 0.25
    assert b.score.params["zoom"] == 2.0 and b.score.params["zoom_mix"] == "max"
    assert b.score.params["ref_scale_zoom"] > 0
    assert b.score.params["sign"] == 1.0
    # The projected-threat head, fitted on the simulator's threats in its training bags.
    assert b.tip_head is not None and b.score.params["tip_weight"] == 1.0
    assert b.training["tip_head"]["projected_bags"] == b.provenance["n_train_scans"]
    assert b.training["calibration_context"] == "held-out scans scored whole"
    assert b.input.window == 64 and b.config.nc == 3
    assert b.calibration is not None and b.calibration.n_windows > 100
    # Bag maxima are the held-out bags' heat-map peaks (scored whole, 7 bags).
    assert len(b.calibration.bag_maxima) == 7
    assert b.calibration.target_bag_far == 0.10 and b.calibration.bag_rule == "gumbel"
    assert b.training["calibration_source"] == "validation"
    # Trained with the documented regenerating settings.
    cfg = b.training["config"]
    expected = default_config().to_dict()
    keys = ("ngf", "ndf", "nz", "window", "stride", "representation", "lr", "seed", "score_kind")
    ctx = ("context_px", "context_self", "zoom", "zoom_mix", "target_bag_far", "bag_rule")
    memory = ("bank_level", "bank_k", "bank_size", "tip_weight", "tip_per_bag")
    for key in (*keys, "scan_norm", *ctx, *memory, "research"):
        assert cfg[key] == expected[key], key
    assert len(b.provenance["data_fingerprint"]) == 64


def test_default_model_scores_demo_scans():
    from xrayscreen.imaging.demo import demo_scan_paths
    from xrayscreen.imaging.readers import open_scan
    from xrayscreen.inference.engine import ScoringEngine

    paths = demo_scan_paths()
    assert paths, "demo scans missing"
    engine = ScoringEngine(load_bundle(BUNDLE), "cpu")
    res = engine.score_scan_sync(open_scan(paths[0]), residual=False)
    assert res is not None and res.n_scored > 0
    assert np.isfinite(res.window_calibrated).all()
