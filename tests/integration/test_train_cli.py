"""``xrayscreen train`` on a tiny folder of generated images: bundle, report, refusal to
overwrite, progress events, and the bundle scoring through the engine."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from xrayscreen.cli import main
from xrayscreen.errors import BundleError, ConfigError
from xrayscreen.model.bundle import META, WEIGHTS, load_bundle
from xrayscreen.model.calibration import MIN_FIT_BAGS

TINY = [
    "--epochs", "2", "--window", "32", "--stride", "16", "--ngf", "8", "--ndf", "8",
    "--nz", "8", "--batch-size", "16", "--longer-side", "128", "--val-fraction", "0.34",
    "--threads", "1", "--device", "cpu", "--quiet",
]  # fmt: skip


def make_bags(folder: Path, n: int = 6, seed: int = 0) -> Path:
    """Small bag-like pictures: white belt, a coloured case, a few blobs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = 120 + 10 * i, 160
        im = np.full((h, w, 3), 245, np.uint8)
        cv2.rectangle(im, (20, 20), (140, h - 20), (int(rng.integers(60, 200)), 140, 60), -1)
        for _ in range(5):
            c = tuple(int(v) for v in rng.integers(0, 255, 3))
            centre = (int(rng.integers(30, 130)), int(rng.integers(30, h - 30)))
            cv2.circle(im, centre, int(rng.integers(5, 20)), c, -1)
        cv2.imwrite(str(folder / f"bag{i}.png"), im)
    return folder


def held_out_engine_scores(b, bags: Path, out: Path) -> tuple[list[Path], list[np.ndarray]]:
    """The held-out scans the training report names, and the uncalibrated engine's
    non-background window scores of each (what the scan calibration must hold)."""
    from xrayscreen.imaging.readers import open_scan
    from xrayscreen.inference.engine import ScoringEngine

    report = json.loads((out / "training_report.json").read_text())
    held = [p for p in sorted(bags.glob("*.png")) if open_scan(p).sha256 in report["val_scans"]]
    assert held, "the report names the held-out scans"
    cal, b.calibration = b.calibration, None
    try:
        eng = ScoringEngine(b, "cpu")
        results = [eng.score_scan_sync(open_scan(p), stride=16) for p in held]
    finally:
        b.calibration = cal
    if zoom_on(b):
        assert all(r.raw_zoom_scores is not None for r in results)
    return held, [r.window_scores[~r.background] for r in results]


def zoom_on(b) -> bool:
    return float(b.score.params.get("zoom", 1.0)) > 1.0


def test_cli_trains_a_loadable_calibrated_bundle(tmp_path, capsys):
    bags = make_bags(tmp_path / "normal")
    out = tmp_path / "model"
    assert main(["train", str(bags), "--out", str(out), *TINY]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["scans"] == 6 and summary["val_windows"] > 0
    b = load_bundle(out, with_discriminator=True)
    assert b.discriminator is not None and b.calibration is not None
    assert b.calibration.n_windows == summary["val_windows"]
    assert b.input.window == 32 and b.input.scale.longer_side == 128
    prov = b.provenance
    assert prov["n_scans"] == 6 and len(prov["data_fingerprint"]) == 64 and prov["epochs"] == 2
    assert b.training["config"]["lr"] == 2e-4
    # bf16 where this machine's CPU has bf16 units (the X-ray default's auto), recorded.
    from xrayscreen.inference.engine import cpu_has_bf16

    assert b.training["config"]["bf16"] is None
    assert prov["precision"] == ("bf16" if cpu_has_bf16() else "fp32")
    # Default preset = the X-ray configuration of issue 7 (two timescales, feature_knn).
    assert b.training["optimizer"]["lr_g"] == 1e-4 and b.training["optimizer"]["lr_d"] == 4e-4
    assert b.score.kind == "feature_knn_excess" and b.score.params["scan_norm"] == "robust_z"
    assert b.score.params["context_px"] == 128.0 and b.score.params["context_self"] == 0.25
    assert b.score.params["zoom"] == 2.0 and b.score.params["zoom_mix"] == "max"
    assert b.score.params["ref_scale_zoom"] > 0 and "zoom_weight" not in b.score.params
    assert b.score.params["density_weight"] == 0.5
    assert b.training["config"]["bank_gammas"] == [0.8, 1.25]  # the memory's rendered copies
    # A head trained on threats projected into the training bags joins the evidence.
    assert b.score.params["tip_weight"] == 1.0 and b.tip_head is not None
    assert summary["tip_head"]["projected_bags"] == b.provenance["n_train_scans"]
    # The generator trained on windows rendered as other scanners might.
    assert b.training["config"]["jitter_gamma"] == 1.25 and b.training["config"]["jitter_hue"] == 20
    assert (
        b.score.params["sign"] == 1.0
        and b.score.params["knn_scale"] > 0
        and b.score.params["res_scale"] > 0
    )
    assert b.input.representation == "rgb_attenuation" and b.feature_bank is not None
    # The default threshold is set for 10 % of normal bags, read off a Gumbel law fitted
    # to the held-out bags' heat-map peaks (never below the window rule's 2.0).
    cal = b.calibration
    assert cal.target_bag_far == 0.10 and cal.bag_rule == "gumbel"
    assert cal.default_threshold >= 2.0
    if len(cal.bag_maxima) >= MIN_FIT_BAGS and cal.default_threshold > 2.0:
        assert cal.bag_far_fitted(cal.default_threshold) == pytest.approx(0.10, abs=1e-6)
    report = json.loads((out / "training_report.json").read_text())
    assert len(report["history"]) == 2 and report["kept_epoch"] == 2
    assert not set(report["train_scans"]) & set(report["val_scans"])
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    # Checkpoints are cleaned up after success; nothing else left beside the bundle.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "normal"]

    # The trained bundle scores a scan through the engine.
    from xrayscreen.imaging.readers import open_scan
    from xrayscreen.inference.engine import ScoringEngine

    res = ScoringEngine(b, "cpu").score_scan_sync(open_scan(bags / "bag0.png"))
    assert res is not None and np.isfinite(res.window_scores).all()

    # A second run into the same folder is refused and leaves the bundle untouched.
    before = (out / WEIGHTS).read_bytes(), (out / META).read_text()
    assert main(["train", str(bags), "--out", str(out), *TINY]) == 1
    assert "already exists" in capsys.readouterr().err
    assert ((out / WEIGHTS).read_bytes(), (out / META).read_text()) == before


def test_api_streams_progress_and_keeps_best_val(tmp_path):
    from xrayscreen.training import TrainConfig, iter_train

    bags = make_bags(tmp_path / "normal", n=5, seed=1)
    cfg = TrainConfig(
        window=32,
        stride=16,
        ngf=8,
        ndf=8,
        nz=8,
        batch_size=16,
        longer_side=128,
        epochs=3,
        val_fraction=0.4,
        device="cpu",
        threads=1,
        keep="best_val",
        half_weights=True,
    )
    events = list(iter_train(cfg, [bags], tmp_path / "m"))
    phases = [e.phase for e in events]
    assert phases[0] == "loading" and phases[-1] == "done"
    assert {"train", "validate", "calibrate", "saving"} <= set(phases)
    steps = [e for e in events if e.phase == "train"]
    assert steps[-1].epoch == 3 and steps[-1].step == steps[-1].steps_per_epoch
    assert all(e.eta_s is not None and e.eta_s >= 0 for e in steps)
    res = events[-1].result
    hist = res.history
    best = min(range(3), key=lambda i: hist[i]["val_loss"]) + 1
    assert res.kept_epoch == best
    meta = json.loads((tmp_path / "m" / META).read_text())
    assert meta["weights"]["dtype"] == "float16" and meta["training"]["kept_epoch"] == best


def test_cli_missing_folder_is_a_clean_error(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope"), "--out", str(tmp_path / "m"), *TINY]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path / "m")])  # no sources: argparse error


def test_cli_feature_knn_bundle_carries_its_bank_and_is_calibrated_on_it(tmp_path, capsys):
    """``--score-kind feature_knn``: the memory holds TRAINING windows only, the
    calibration holds the engine's scores of the held-out ones."""
    import torch

    from xrayscreen.inference.engine import ScoringEngine
    from xrayscreen.training.config import TrainConfig
    from xrayscreen.training.data import decode, load_windows, split_by_scan

    bags = make_bags(tmp_path / "normal")
    out = tmp_path / "model"
    args = [*TINY, "--score-kind", "feature_knn", "--bank-size", "150", "--bank-k", "3"]
    # raw window scores, no context: comparable with score_windows below
    args += ["--scan-norm", "none", "--context-px", "0", "--zoom", "1", "--density-weight", "0"]
    assert main(["train", str(bags), "--out", str(out), *args]) == 0
    capsys.readouterr()
    b = load_bundle(out)
    assert b.score.kind == "feature_knn" and b.score.params == {"level": 2, "k": 3}
    bank = b.feature_bank
    assert bank is not None and bank.memory.shape == (150, 4 * 8)
    # Recompute the held-out windows exactly as training split them; their engine
    # scores are the calibration's sample.
    cfg = TrainConfig.from_dict(b.training["config"])
    ws = load_windows([bags], cfg)
    split = split_by_scan(ws, cfg.val_fraction, cfg.seed, cfg.min_val_scans)
    eng = ScoringEngine(b, "cpu")
    s = eng.score_windows(decode(split.val.data), residual=False).latent.numpy()
    assert b.calibration is not None and b.calibration.n_windows == len(s)
    np.testing.assert_allclose(s.max(), max(b.calibration.values), rtol=2e-2)
    assert torch.isfinite(bank.memory).all()


def test_cli_scan_norm_calibrates_normalised_scores(tmp_path, capsys):
    """``--scan-norm robust_z``: reference statistics stored, calibration on per-scan
    normalised held-out scores, and the engine's scores of a scan centred on 0."""
    from xrayscreen.imaging.readers import open_scan
    from xrayscreen.inference.engine import ScoringEngine

    bags = make_bags(tmp_path / "normal")
    out = tmp_path / "model"
    args = ["train", str(bags), "--out", str(out), *TINY, "--scan-norm", "robust_z"]
    alone = ["--context-px", "0", "--zoom", "1", "--density-weight", "0", "--tip-weight", "0"]
    assert main([*args, *alone]) == 0  # the normalisation alone
    capsys.readouterr()
    b = load_bundle(out)
    p = b.score.params
    assert p["scan_norm"] == "robust_z" and p["ref_scale"] > 0 and np.isfinite(p["ref_median"])
    # Normalised scores of normal scans centre on 0: the calibration's median level does.
    cal = b.calibration
    assert cal is not None and abs(float(np.interp(0.5, cal.levels, cal.values))) < 0.5
    res = ScoringEngine(b, "cpu").score_scan_sync(open_scan(bags / "bag5.png"), stride=16)
    fg = ~res.background
    assert fg.sum() >= 16  # enough windows for the scan's own statistics
    assert abs(float(np.median(res.window_scores[fg]))) < 1e-3


def test_cli_paper_preset_is_the_published_configuration(tmp_path, capsys):
    bags = make_bags(tmp_path / "normal", n=4)
    out = tmp_path / "paper"
    assert main(["train", str(bags), "--out", str(out), *TINY, "--preset", "paper"]) == 0
    capsys.readouterr()
    b = load_bundle(out)
    assert b.training["optimizer"]["lr_g"] == b.training["optimizer"]["lr_d"] == 2e-4
    assert b.score.kind == "latent" and b.score.params == {} and b.feature_bank is None
    assert b.input.representation == "rgb" and b.training["config"]["research"] == {}


def test_cli_context_is_calibrated_on_whole_held_out_scans(tmp_path, capsys):
    """``--context-px``: the bundle carries the radius, and its calibration holds exactly
    the engine's scores of the held-out scans (normalised, context-averaged windows)."""
    from xrayscreen.imaging.readers import open_scan
    from xrayscreen.inference.engine import ScoringEngine

    bags = make_bags(tmp_path / "normal")
    out = tmp_path / "model"
    args = ["train", str(bags), "--out", str(out), *TINY, "--context-px", "48"]
    args += ["--target-bag-far", "0.1", "--bag-rule", "empirical"]
    assert main(args) == 0
    capsys.readouterr()
    b = load_bundle(out)
    assert b.score.params["context_px"] == 48.0
    assert b.training["calibration_context"] == "held-out scans scored whole"
    held, scores = held_out_engine_scores(b, bags, out)
    cal = b.calibration
    assert cal.n_windows == sum(len(s) for s in scores)
    assert len(cal.bag_maxima) == len(held)
    top = max(float(s.max()) for s in scores)
    assert cal.values[-1] == pytest.approx(top, rel=1e-4, abs=1e-5)
    # Bag maxima are the held-out scans' heat-map peaks, as the calibrated engine draws them,
    # and the default threshold lets at most 10 % of them (rounded down) alarm.
    eng = ScoringEngine(b, "cpu")
    peaks = [float(eng.score_scan_sync(open_scan(p), stride=16).latent_map.max()) for p in held]
    np.testing.assert_allclose(sorted(cal.bag_maxima), sorted(peaks), rtol=1e-4, atol=1e-4)
    assert cal.bag_far(cal.default_threshold) <= 0.1


def test_cli_zoom_is_calibrated_on_the_engines_mixed_scores(tmp_path, capsys):
    """``--zoom``: the bundle carries the zoomed view, its own fallback statistics, and a
    calibration that holds exactly the engine's mixed scores of the held-out scans."""
    bags = make_bags(tmp_path / "normal")
    out = tmp_path / "model"
    args = ["train", str(bags), "--out", str(out), *TINY, "--zoom", "2"]
    args += ["--zoom-mix", "mean", "--zoom-weight", "0.4"]
    assert main(args) == 0
    capsys.readouterr()
    b = load_bundle(out)
    p = b.score.params
    assert p["zoom"] == 2.0 and p["zoom_mix"] == "mean" and p["zoom_weight"] == 0.4
    assert p["ref_scale_zoom"] > 0 and "ref_median_zoom" in p
    assert b.training["calibration_context"] == "held-out scans scored whole"
    _, scores = held_out_engine_scores(b, bags, out)
    cal = b.calibration
    assert cal.n_windows == sum(len(s) for s in scores)
    top = max(float(s.max()) for s in scores)
    assert cal.values[-1] == pytest.approx(top, rel=1e-4, abs=1e-5)


def test_cli_density_weight_is_calibrated_on_the_engines_scores(tmp_path, capsys):
    """``--density-weight``: the bundle adds window density, and its calibration holds
    exactly the engine's scores (model and density z, both views) of the held-out scans."""
    bags = make_bags(tmp_path / "normal")
    out = tmp_path / "model"
    args = ["train", str(bags), "--out", str(out), *TINY, "--density-weight", "1.5"]
    assert main(args) == 0
    capsys.readouterr()
    b = load_bundle(out)
    assert b.score.params["density_weight"] == 1.5 and zoom_on(b)
    assert b.training["config"]["density_weight"] == 1.5
    _, scores = held_out_engine_scores(b, bags, out)
    cal = b.calibration
    assert cal.n_windows == sum(len(s) for s in scores)
    top = max(float(s.max()) for s in scores)
    assert cal.values[-1] == pytest.approx(top, rel=1e-4, abs=1e-5)


def test_cli_tip_weight_fits_a_head_and_calibrates_with_it(tmp_path, capsys):
    """``--tip-weight``: a head is fitted on threats projected into the TRAINING scans,
    stored in the bundle, and the calibration holds the engine's scores with it."""
    bags = make_bags(tmp_path / "normal")
    out = tmp_path / "model"
    args = ["train", str(bags), "--out", str(out), *TINY, "--tip-weight", "1", "--tip-per-bag", "3"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    b = load_bundle(out)
    assert b.tip_head is not None and b.score.params["tip_weight"] == 1.0
    info = b.training["tip_head"]
    report = json.loads((out / "training_report.json").read_text())
    assert info == summary["tip_head"] == report["tip_head"]
    assert info["projected_bags"] == len(report["train_scans"])
    assert info["projected_threats"] == 3 * info["projected_bags"]
    assert info["threat_windows"] > 0 and info["per_bag"] == 3
    _, scores = held_out_engine_scores(b, bags, out)
    cal = b.calibration
    assert cal.n_windows == sum(len(s) for s in scores)
    top = max(float(s.max()) for s in scores)
    assert cal.values[-1] == pytest.approx(top, rel=1e-4, abs=1e-5)
    # Without the head's term the same scans score otherwise: it is in the calibration.
    b.score.params = {k: v for k, v in b.score.params.items() if k != "tip_weight"}
    b.calibration = None
    from xrayscreen.imaging.readers import open_scan
    from xrayscreen.inference.engine import ScoringEngine

    held, _ = held_out_engine_scores(load_bundle(out), bags, out)
    plain = ScoringEngine(b, "cpu").score_scan_sync(open_scan(held[0]), stride=16)
    assert plain.raw_head is None
    assert not np.allclose(plain.window_scores[~plain.background], scores[0], atol=1e-4)


def test_api_without_scans_to_read_again_ships_no_head(tmp_path):
    """Pre-cut windows only: no scan to project threats into, so the head is left out
    with a warning, and the bundle loads and scores without it."""
    from xrayscreen.training import TrainConfig, train
    from xrayscreen.training.data import load_windows

    bags = make_bags(tmp_path / "normal", n=5, seed=2)
    cfg = TrainConfig.xray(
        window=32, stride=16, ngf=8, ndf=8, nz=8, batch_size=16, longer_side=128, epochs=1,
        val_fraction=0.4, device="cpu", threads=1, tip_weight=0.5,
    )  # fmt: skip
    res = train(cfg, [], tmp_path / "m", windows=load_windows([bags], cfg))
    assert any("projected-threat head not fitted" in w for w in res.warnings)
    b = load_bundle(tmp_path / "m")
    assert b.tip_head is None and "tip_weight" not in b.score.params
    assert "tip_head" not in b.training


def test_cli_head_follows_the_score_kind(tmp_path, capsys):
    """The default head is left out of a score without a feature memory; asked for
    explicitly there, it is a clean error."""
    bags = make_bags(tmp_path / "normal", n=3)
    base = ["train", str(bags), *TINY, "--score-kind", "latent", "--scan-norm", "none",
            "--density-weight", "0"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    b = load_bundle(tmp_path / "m")
    assert b.tip_head is None and "tip_weight" not in b.score.params
    assert main([*base, "--out", str(tmp_path / "m2"), "--tip-weight", "0.5"]) == 2
    assert "tip_weight adds a head" in capsys.readouterr().err


def test_cli_density_weight_needs_the_scan_normalisation(tmp_path, capsys):
    bags = make_bags(tmp_path / "normal", n=3)
    args = ["train", str(bags), "--out", str(tmp_path / "m"), *TINY, "--density-weight", "1"]
    assert main([*args, "--scan-norm", "none"]) == 2
    assert "scan_norm" in capsys.readouterr().err
    assert main([*args[:-1], "-2"]) == 2
    assert "density_weight" in capsys.readouterr().err


def test_cli_zoom_out_of_range_is_a_clean_error(tmp_path, capsys):
    bags = make_bags(tmp_path / "normal", n=3)
    assert main(["train", str(bags), "--out", str(tmp_path / "m"), *TINY, "--zoom", "0.5"]) == 2
    assert "zoom" in capsys.readouterr().err


def test_cli_context_must_not_be_negative(tmp_path, capsys):
    bags = make_bags(tmp_path / "normal")
    assert (
        main(["train", str(bags), "--out", str(tmp_path / "m"), *TINY, "--context-px", "-8"]) == 2
    )
    assert "context_px" in capsys.readouterr().err


def test_cli_bank_gammas_flag():
    import argparse

    from xrayscreen.training.cli import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)

    def cfg(*extra):
        return config_from_args(parser.parse_args(["bags", "--out", "m", *extra]))

    assert cfg().bank_gammas == [0.8, 1.25]
    assert cfg("--bank-gammas").bank_gammas == []  # no values: the training windows only
    assert cfg("--bank-gammas", "0.9", "1.1").bank_gammas == [0.9, 1.1]
    with pytest.raises(ConfigError, match="bank_gammas"):
        cfg("--bank-gammas", "1")


def test_cli_render_jitter_flags():
    import argparse

    from xrayscreen.training.cli import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)

    def cfg(*extra):
        return config_from_args(parser.parse_args(["bags", "--out", "m", *extra]))

    got = cfg("--jitter-gamma", "1.25", "--jitter-hue", "20")
    assert (got.jitter_gamma, got.jitter_hue) == (1.25, 20.0)
    with pytest.raises(ConfigError, match="three-channel"):
        cfg("--representation", "log_attenuation", "--jitter-hue", "20")
    raw = cfg("--representation", "log_attenuation")  # the default's palette jitter is dropped
    assert (raw.jitter_gamma, raw.jitter_hue) == (1.25, 0.0)
    assert cfg("--bank-hues", "20", "-20").bank_hues == [20.0, -20.0]
    assert cfg("--bank-hues").bank_hues == []


def test_cli_tip_cell_max_flag():
    import argparse

    from xrayscreen.training.cli import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)

    def cfg(*extra):
        return config_from_args(parser.parse_args(["bags", "--out", "m", *extra]))

    assert cfg("--tip-cell-max", "on").tip_cell_max is True
    assert cfg("--tip-cell-max", "off").tip_cell_max is False
    with pytest.raises(SystemExit):  # argparse refuses it with a usage line
        cfg("--tip-cell-max", "maybe")
    with pytest.raises(ConfigError, match="needs a grid"):
        cfg("--tip-cells", "0", "--tip-cell-max", "on")


def test_cli_tip_conv_flag():
    import argparse

    from xrayscreen.training.cli import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)

    def cfg(*extra):
        return config_from_args(parser.parse_args(["bags", "--out", "m", *extra]))

    assert cfg().tip_conv == 0
    assert cfg("--tip-cells", "0", "--tip-conv", "8").tip_conv == 8
    with pytest.raises(ConfigError, match="excludes tip_cells"):
        cfg("--tip-conv", "8")  # the X-ray default grid must be switched off with it


@pytest.mark.parametrize("conv", [0, 4])
def test_cli_tip_abs_share_fits_its_reference_on_the_held_out_scans(tmp_path, capsys, conv):
    """``--tip-abs-share``: the head's absolute reading gets its per-view location and
    scale from the held-out scans' logits, and the calibration holds the engine's scores
    with it; with ``--tip-conv`` the head trained end to end is a convolutional one."""
    from xrayscreen.imaging.readers import open_scan
    from xrayscreen.inference.engine import ScoringEngine
    from xrayscreen.model.tip_head import ConvTipHead, TipHead

    bags = make_bags(tmp_path / "normal")
    out = tmp_path / "model"
    args = ["train", str(bags), "--out", str(out), *TINY, "--tip-weight", "1",
            "--tip-per-bag", "3", "--tip-abs-share", "0.5", "--tip-cells", "0",
            "--tip-conv", str(conv)]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    b = load_bundle(out)
    assert isinstance(b.tip_head, ConvTipHead if conv else TipHead)
    assert b.score.params.get("tip_conv", 0) == conv
    p = b.score.params
    assert p["tip_abs_share"] == 0.5 and len(p["tip_abs_loc"]) == len(p["tip_abs_scale"]) == 2
    # The reference is the median and 1.4826 x MAD of the held-out windows' logits.
    held, scores = held_out_engine_scores(b, bags, out)
    eng = ScoringEngine(b, "cpu")
    logits = []
    for path in held:
        r = eng.score_scan_sync(open_scan(path), stride=16)
        logits.append(r.raw_head[~r.background])
    x = np.concatenate(logits)
    med = float(np.median(x))
    assert p["tip_abs_loc"][0] == pytest.approx(med, abs=1e-4)
    mad = float(np.median(np.abs(x - med))) * 1.4826
    assert p["tip_abs_scale"][0] == pytest.approx(max(mad, 0.02), rel=1e-3, abs=1e-4)
    cal = b.calibration
    top = max(float(s.max()) for s in scores)
    assert cal.values[-1] == pytest.approx(top, rel=1e-4, abs=1e-5)
    # The absolute reading is in the score: without it the held-out scans score otherwise.
    b.score.params = {**p, "tip_abs_share": 0.0}
    cal, b.calibration = b.calibration, None
    plain = ScoringEngine(b, "cpu").score_scan_sync(open_scan(held[0]), stride=16)
    assert not np.allclose(plain.window_scores[~plain.background], scores[0], atol=1e-4)
    # A model.json asking for the reading without its reference is refused when loading.
    meta = json.loads((out / META).read_text())
    del meta["score"]["params"]["tip_abs_scale"]
    (out / META).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="tip_abs_loc and tip_abs_scale"):
        load_bundle(out)


def test_cli_rescan_groups_keep_a_bags_scans_on_one_side_of_the_held_out_split(tmp_path, capsys):
    bags = make_bags(tmp_path / "normal")
    groups = tmp_path / "rescans.txt"
    groups.write_text("bag0 bag1 bag2  # one suitcase, three scans\nbag3 bag4\n")
    out = tmp_path / "model"
    args = [*TINY, "--tip-weight", "0", "--groups", str(groups)]
    assert main(["train", str(bags), "--out", str(out), *args]) == 0
    report = json.loads((out / "training_report.json").read_text())
    held = set(report["val_scan_names"])
    assert held and len(held) == len(report["val_scans"])
    for bag in ({"bag0.png", "bag1.png", "bag2.png"}, {"bag3.png", "bag4.png"}):
        assert bag <= held or not bag & held, held
    assert report["config"]["groups"] == str(groups)
    # A groups file that names none of the scans is said, not silently ignored.
    groups.write_text("N0000188 N0000189\n")
    out2 = tmp_path / "model2"
    assert main(["train", str(bags), "--out", str(out2), *args]) == 0
    assert any("names none of the training scans" in w for w in _report_warnings(out2, capsys))
    # A broken one is a clear error before any training.
    groups.write_text("bag0 bag1\nbag1\n")
    assert main(["train", str(bags), "--out", str(tmp_path / "model3"), *args]) == 2
    assert "bag1 is already listed on line 1" in capsys.readouterr().err


def _report_warnings(out: Path, capsys) -> list[str]:
    """The run's warnings, from its report and its output."""
    report = json.loads((out / "training_report.json").read_text())
    printed = capsys.readouterr()
    return [*report.get("warnings", []), printed.out + printed.err]
