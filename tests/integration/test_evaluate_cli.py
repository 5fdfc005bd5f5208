"""``xrayscreen evaluate`` end to end on generated bags, with a tiny real GANomaly bundle."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from xrayscreen.cli import main
from xrayscreen.evaluation.annotations import AnnotationSource
from xrayscreen.evaluation.dataset import prepare_dataset
from xrayscreen.evaluation.scorers import EngineScorer, ModelScorer
from xrayscreen.imaging.representation import WorkingScale
from xrayscreen.inference.engine import ScoringEngine
from xrayscreen.model.bundle import InputSpec, ModelBundle, load_bundle, save_bundle
from xrayscreen.model.calibration import Calibration
from xrayscreen.model.ganomaly import GANomalyConfig, build_generator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "evaluation"))
from test_eval_runner import make_folder

TINY = GANomalyConfig(isize=64, ngf=8, ndf=8, nz=16)


def _bundle(tmp_path, scale=800, calibrated=True) -> Path:
    torch.manual_seed(0)
    b = ModelBundle(
        config=TINY,
        generator=build_generator(TINY),
        input=InputSpec(scale=WorkingScale(longer_side=scale)),
    )
    if calibrated:
        b.calibration = Calibration.fit(np.random.default_rng(0).random(500))
    return save_bundle(b, tmp_path / f"bundle{scale}")


@pytest.fixture
def folder(tmp_path):
    normal, threat, labels = make_folder(tmp_path, n_benign=2, n_threat=2)
    (threat / "corrupt.png").write_bytes(b"definitely not an image")
    return normal, threat, labels


def test_evaluate_writes_every_output(tmp_path, folder, capsys):
    normal, threat, labels = folder
    out = tmp_path / "report"
    rc = main(
        [
            "evaluate",
            "--model",
            str(_bundle(tmp_path)),
            "--normal",
            str(normal),
            "--threat",
            str(threat),
            "--labels",
            str(labels),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    for name in (
        "report.json",
        "report.md",
        "roc_window_a.png",
        "roc_window_b.png",
        "roc_bags.png",
        "montage.png",
    ):
        assert (out / name).stat().st_size > 0, name
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["kinds"]) == {
        "max_density",
        "mean_darkness",
        "edge_density",
        "blue_fraction",
        "latent",
        "residual",
        "residual_max",
    }
    assert rep["model"]["model_id"] and rep["model"]["scorer"] == "EngineScorer"
    assert [k["file"].endswith("corrupt.png") for k in rep["data"]["skipped"]] == [True]
    assert len(rep["data"]["scans"]) == 4 and all(
        len(s["sha256"]) == 64 for s in rep["data"]["scans"]
    )
    assert rep["data"]["annotation_shared"][0]["file"].endswith("classes.txt")
    assert rep["settings"]["longer_side"] == 800 and rep["montage_kind"] == "latent"
    md = (out / "report.md").read_text()
    assert "## Window ROC AUC" in md and "| latent |" in md
    assert "95 % bootstrap intervals" in md and " %]" in md  # bag figures carry intervals
    assert "### Bag level against the floors (paired)" in md and "| latent | max density" in md
    assert "95 % intervals of these AUCs with the *bags* resampled" in md
    assert "corrupt.png" in capsys.readouterr().err


def test_unknown_class_refused_with_exit_2(tmp_path, folder, capsys):
    normal, threat, labels = folder
    (labels / "P1.txt").write_text("5 0.5 0.5 0.2 0.2\n")
    rc = main(
        [
            "evaluate",
            "--threat",
            str(threat),
            "--labels",
            str(labels),
            "--out",
            str(tmp_path / "r"),
            "--quiet",
        ]
    )
    assert rc == 2
    assert "class id 5 is not defined in classes.txt" in capsys.readouterr().err


def test_model_at_another_scale_is_refused_unless_forced(tmp_path, folder, capsys):
    normal, threat, labels = folder
    b = _bundle(tmp_path, scale=1000)
    args = [
        "evaluate",
        "--model",
        str(b),
        "--threat",
        str(threat),
        "--labels",
        str(labels),
        "--out",
        str(tmp_path / "r"),
        "--quiet",
        "--no-plots",
    ]
    assert main(args) == 2
    assert "--force-protocol-scale" in capsys.readouterr().err
    assert main([*args, "--force-protocol-scale"]) == 0


def test_engine_scorer_windows_are_the_engines_own(tmp_path, folder):
    """Same windows, same scores as the product's score_scan on the protocol image."""
    normal, threat, labels = folder
    ds = prepare_dataset(
        [],
        sorted(threat.glob("P*.png")),
        AnnotationSource(labels),
        progress=False,
    )
    bundle = load_bundle(_bundle(tmp_path))
    scorer = EngineScorer(bundle)
    engine = ScoringEngine(bundle, "cpu")
    for scan in ds.scans[:1]:
        mine = scorer.score(scan)
        ref = engine.score_scan_sync(scan.scan, stride=16)
        assert (ref.background == scan.labels.belt).all()
        assert np.allclose(
            mine["latent"].window[~ref.background],
            ref.window_scores[~ref.background],
            rtol=1e-4,
            atol=1e-5,
        )
        assert np.allclose(mine["latent"].heat, ref.latent_map, atol=1e-4)
        assert np.allclose(mine["residual"].heat, ref.residual_map, atol=1e-4)


def test_model_scorer_matches_engine_scorer(tmp_path, folder):
    normal, threat, labels = folder
    ds = prepare_dataset(
        [], sorted(threat.glob("P*.png")), AnnotationSource(labels), progress=False
    )
    bundle = load_bundle(_bundle(tmp_path))
    a = EngineScorer(bundle).score(ds.scans[0])
    b = ModelScorer(bundle, ["latent", "residual"]).score(ds.scans[0])
    for k in ("latent", "residual"):
        assert np.allclose(a[k].window, b[k].window, rtol=2e-2, atol=2e-3)


def test_engine_scorer_applies_the_bundles_scan_normalisation(tmp_path, folder):
    """A per-scan-normalised bundle: evaluate scores what the product shows."""
    from xrayscreen.model.bundle import ScoreSpec

    normal, threat, labels = folder
    ds = prepare_dataset(
        [], sorted(threat.glob("P*.png")), AnnotationSource(labels), progress=False
    )
    bundle = load_bundle(_bundle(tmp_path))
    bundle.score = ScoreSpec(kind="latent", params={"scan_norm": "robust_z"})
    scan = ds.scans[0]
    mine = EngineScorer(bundle).score(scan)
    ref = ScoringEngine(bundle, "cpu").score_scan_sync(scan.scan, stride=16)
    fg = ~ref.background
    assert fg.sum() >= 16
    np.testing.assert_allclose(mine["latent"].window[fg], ref.window_scores[fg], atol=1e-3)
    assert abs(float(np.median(mine["latent"].window[fg]))) < 1e-3
    assert np.allclose(mine["latent"].heat, ref.latent_map, atol=1e-3)
    b = ModelScorer(bundle, ["latent"]).score(scan)
    np.testing.assert_allclose(b["latent"].window[fg], ref.window_scores[fg], atol=5e-2)


def test_scorers_apply_the_bundles_zoomed_view_as_the_engine_does(tmp_path, folder):
    """A bundle with a zoomed-out view: evaluate (both scorers) scores what the product shows."""
    from xrayscreen.model.bundle import ScoreSpec

    normal, threat, labels = folder
    ds = prepare_dataset(
        [], sorted(threat.glob("P*.png")), AnnotationSource(labels), progress=False
    )
    bundle = load_bundle(_bundle(tmp_path))
    bundle.score = ScoreSpec(
        kind="latent", params={"scan_norm": "robust_z", "zoom": 2.0, "zoom_weight": 0.5}
    )
    scan = ds.scans[0]
    ref = ScoringEngine(bundle, "cpu").score_scan_sync(scan.scan, stride=16)
    assert ref.raw_zoom_scores is not None
    fg = ~ref.background
    mine = EngineScorer(bundle).score(scan)
    np.testing.assert_allclose(mine["latent"].window[fg], ref.window_scores[fg], atol=1e-3)
    assert np.allclose(mine["latent"].heat, ref.latent_map, atol=1e-3)
    b = ModelScorer(bundle, ["latent"]).score(scan)
    np.testing.assert_allclose(b["latent"].window[fg], ref.window_scores[fg], atol=5e-2)
    bundle.score = ScoreSpec(kind="latent", params={"scan_norm": "robust_z"})
    plain = EngineScorer(bundle).score(scan)
    assert not np.allclose(plain["latent"].window[fg], ref.window_scores[fg], atol=1e-3)


@pytest.mark.parametrize("with_zoom", [False, True])
def test_scorers_add_window_density_as_the_engine_does(tmp_path, folder, with_zoom):
    """A bundle whose score adds window density: evaluate scores what the product shows."""
    from xrayscreen.model.bundle import ScoreSpec

    normal, threat, labels = folder
    ds = prepare_dataset(
        [], sorted(threat.glob("P*.png")), AnnotationSource(labels), progress=False
    )
    bundle = load_bundle(_bundle(tmp_path))
    params = {"scan_norm": "robust_z", "density_weight": 1.0}
    if with_zoom:
        params["zoom"] = 2.0
    bundle.score = ScoreSpec(kind="latent", params=params)
    scan = ds.scans[0]
    ref = ScoringEngine(bundle, "cpu").score_scan_sync(scan.scan, stride=16)
    assert ref.raw_density is not None
    assert (ref.raw_density_zoom is not None) == with_zoom
    fg = ~ref.background
    mine = EngineScorer(bundle).score(scan)
    np.testing.assert_allclose(mine["latent"].window[fg], ref.window_scores[fg], atol=1e-3)
    assert np.allclose(mine["latent"].heat, ref.latent_map, atol=1e-3)
    b = ModelScorer(bundle, ["latent"]).score(scan)
    np.testing.assert_allclose(b["latent"].window[fg], ref.window_scores[fg], atol=5e-2)
    bundle.score = ScoreSpec(
        kind="latent", params={k: v for k, v in params.items() if k != "density_weight"}
    )
    plain = EngineScorer(bundle).score(scan)
    assert not np.allclose(plain["latent"].window[fg], ref.window_scores[fg], atol=1e-3)


@pytest.mark.parametrize("cells", [0, 2, (2, "max"), ("conv", 4)])
@pytest.mark.parametrize("with_zoom", [False, True])
def test_scorers_add_the_projected_threat_head_as_the_engine_does(
    tmp_path, folder, with_zoom, cells
):
    """A bundle whose score adds its projected-threat head: evaluate (both scorers) scores
    what the product shows, and the head changes it."""
    from torch import nn

    from xrayscreen.model.bundle import ScoreSpec
    from xrayscreen.model.feature_bank import FeatureBank, encoder_map, pool
    from xrayscreen.model.tip_head import ConvTipHead, TipHead, input_dim

    normal, threat, labels = folder
    ds = prepare_dataset(
        [], sorted(threat.glob("P*.png")), AnnotationSource(labels), progress=False
    )
    bundle = load_bundle(_bundle(tmp_path))
    with torch.no_grad():
        x = torch.rand(200, 3, 64, 64) * 2 - 1
        bank = FeatureBank.fit(pool(encoder_map(bundle.generator.encoder1.body, x, 2)), level=2)
    torch.manual_seed(1)
    conv = cells[1] if isinstance(cells, tuple) and cells[0] == "conv" else 0
    cells, cell_max = (
        cells if isinstance(cells, tuple) and not conv else (0 if conv else cells, None)
    )
    params = {"scan_norm": "robust_z", "density_weight": 0.5, "tip_weight": 1.0, **bank.params()}
    if conv:  # a convolutional head on the max-pooled encoder map
        ch = bank.memory.shape[1] // 2
        nets = [nn.Sequential(nn.Conv2d(ch, 6, 3), nn.ReLU(), nn.Conv2d(6, 1, 1)) for _ in range(2)]
        head = ConvTipHead.from_modules(nets)
        params["tip_conv"] = conv
    else:
        dim = input_dim(bank.memory.shape[1], cells, bool(cell_max))  # it reads the map too
        nets = [nn.Sequential(nn.Linear(dim, 8), nn.ReLU(), nn.Linear(8, 1)) for _ in range(2)]
        head = TipHead.from_modules(nets)
    bundle.feature_bank, bundle.tip_head = bank, head
    if cells:
        params["tip_cells"] = cells
    if cell_max:
        params["tip_cell_max"] = True
    if with_zoom:
        params["zoom"] = 2.0
    bundle.score = ScoreSpec(kind="feature_knn", params=params)
    bundle = load_bundle(save_bundle(bundle, tmp_path / "head"))
    scan = ds.scans[0]
    ref = ScoringEngine(bundle, "cpu").score_scan_sync(scan.scan, stride=16)
    assert ref.raw_head is not None and (ref.raw_head_zoom is not None) == with_zoom
    fg = ~ref.background
    mine = EngineScorer(bundle).score(scan)
    np.testing.assert_allclose(mine["feature_knn"].window[fg], ref.window_scores[fg], atol=1e-3)
    assert np.allclose(mine["feature_knn"].heat, ref.latent_map, atol=1e-3)
    b = ModelScorer(bundle, ["feature_knn"]).score(scan)
    np.testing.assert_allclose(b["feature_knn"].window[fg], ref.window_scores[fg], atol=5e-2)
    other = ModelScorer(bundle, ["latent"]).score(scan)  # the head joins the own kind only
    bundle.score.params = {k: v for k, v in params.items() if k != "tip_weight"}
    plain = EngineScorer(bundle).score(scan)
    assert not np.allclose(plain["feature_knn"].window[fg], ref.window_scores[fg], atol=1e-3)
    np.testing.assert_allclose(
        other["latent"].window, ModelScorer(bundle, ["latent"]).score(scan)["latent"].window
    )


def _rename(folder: Path, old: str, new: str) -> None:
    for f in folder.glob(f"{old}.*"):
        f.rename(f.with_name(new + f.suffix))


def test_rescan_groups_resample_physical_bags_and_flag_split_straddlers(tmp_path, capsys):
    normal, threat, labels = make_folder(tmp_path, n_benign=3, n_threat=2)
    # SIXray-style names: two val benign scans of one suitcase, a third whose rescan is
    # in the test split, and two val threat scans of one staged bag.
    for i, name in enumerate(("N0000181", "N0000182", "N0000183")):
        _rename(normal, f"N{i}", name)
    for i, name in enumerate(("P00001", "P00004")):
        _rename(threat, f"P{i}", name)
        _rename(labels, f"P{i}", name)
    groups = tmp_path / "rescans.txt"
    groups.write_text("N0000181 N0000182\nN0000183 N0000241  # val and test\nP00001 P00004\n")
    out = tmp_path / "report"
    args = ["evaluate", "--normal", str(normal), "--threat", str(threat)]
    args += ["--labels", str(labels), "--split", "val", "--out", str(out), "--quiet"]
    assert main([*args, "--groups", str(groups), "--no-plots"]) == 0
    err = capsys.readouterr().err
    assert "rescan group N0000183 straddles splits" in err
    rep = json.loads((out / "report.json").read_text())
    assert rep["counts"]["physical_bags"] == {"benign": 2, "threat": 1}
    assert rep["settings"]["groups"]["straddling"] == [
        {"group": "N0000183", "splits": {"val": ["N0000183"], "test": ["N0000241"]}}
    ]
    bag = rep["kinds"]["max_density"]["bag"]
    assert bag["ci"]["unit"] == "physical bag (rescan groups)"
    md = (out / "report.md").read_text()
    assert "intervals resample physical bags (2 benign, 1 threat)" in md
    assert "rescan group N0000183 straddles splits" in md
    # Without the file the same run resamples scans.
    out2 = tmp_path / "plain"
    assert main([*args[:-3], "--out", str(out2), "--quiet", "--no-plots"]) == 0
    plain = json.loads((out2 / "report.json").read_text())
    assert plain["kinds"]["max_density"]["bag"]["ci"]["unit"] == "bag"
    assert "physical_bags" not in plain["counts"] and "groups" not in plain["settings"]


def test_a_bad_groups_file_is_a_clear_error(tmp_path, folder, capsys):
    normal, threat, labels = folder
    bad = tmp_path / "groups.txt"
    bad.write_text("N0 N1\nN1\n")
    rc = main(
        ["evaluate", "--normal", str(normal), "--threat", str(threat), "--groups", str(bad)]
        + ["--out", str(tmp_path / "r"), "--quiet", "--no-plots"]
    )
    assert rc == 2
    assert "N1 is already listed on line 1" in capsys.readouterr().err


def test_scans_the_model_has_seen_are_flagged(tmp_path, capsys):
    import hashlib

    normal, threat, labels = make_folder(tmp_path, n_benign=3, n_threat=2)
    bundle = _bundle(tmp_path)
    digest = {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in normal.iterdir()}
    # As `xrayscreen train` writes it: N0 trained on, N1 held out to calibrate.
    (bundle / "training_report.json").write_text(
        json.dumps(
            {
                "train_scans": [digest["N0"]],
                "val_scans": [digest["N1"]],
                "train_scan_names": ["N0.png"],
                "val_scan_names": ["N1.png"],
            }
        )
    )
    groups = tmp_path / "rescans.txt"
    groups.write_text("N0 N2\n")  # N2 is another scan of the bag N0 trained on
    out = tmp_path / "report"
    args = ["evaluate", "--model", str(bundle), "--normal", str(normal), "--threat", str(threat)]
    args += ["--labels", str(labels), "--out", str(out), "--quiet", "--no-plots"]
    assert main([*args, "--groups", str(groups)]) == 0
    err = capsys.readouterr().err
    assert "1 evaluated scan(s) were among the model's training scans: N0" in err
    assert "were the model's held-out calibration scans: N1" in err
    assert "are rescans (same group) of the model's training scans: N2" in err
    rep = json.loads((out / "report.json").read_text())
    assert rep["settings"]["training_overlap"] == {
        "trained_on": ["N0"],
        "held_out_for_calibration": ["N1"],
        "rescans_of_trained": ["N2"],
    }
    assert (
        "**1 evaluated scan(s) were among the model's training scans**"
        in (out / "report.md").read_text()
    )
    # Held-out bags only: nothing to say.
    clean = tmp_path / "clean"
    for p in normal.glob("N[01].*"):
        p.unlink()
    args[args.index(str(out))] = str(clean)
    assert main(args) == 0
    assert "evaluated scan(s)" not in capsys.readouterr().err
    assert not any(
        json.loads((clean / "report.json").read_text())["settings"]["training_overlap"].values()
    )
