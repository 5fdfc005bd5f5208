"""``xrayscreen scan`` end to end: a folder with good scans and a corrupt file,
outputs on disk, exit status, missing model, and a 2-process torchrun on CPU (gloo)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from xrayscreen.cli import main
from xrayscreen.imaging.representation import WorkingScale
from xrayscreen.model.bundle import InputSpec, ModelBundle, save_bundle
from xrayscreen.model.calibration import Calibration
from xrayscreen.model.ganomaly import GANomalyConfig, build_generator

TINY = GANomalyConfig(isize=64, ngf=8, ndf=8, nz=16)


@pytest.fixture
def bundle_dir(tmp_path) -> Path:
    torch.manual_seed(0)
    cal = Calibration.fit(np.random.default_rng(0).uniform(0, 1e-3, 1000))
    b = ModelBundle(
        config=TINY,
        generator=build_generator(TINY),
        input=InputSpec(scale=WorkingScale(longer_side=200)),
        calibration=cal,
    )
    return save_bundle(b, tmp_path / "model")


@pytest.fixture
def scan_folder(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    root = tmp_path / "scans"
    (root / "sub").mkdir(parents=True)
    for rel, (h, w) in {"bag_a.png": (180, 240), "sub/bag_b.jpg": (220, 160)}.items():
        img = np.full((h, w, 3), 245, np.uint8)
        img[30:-30, 30:-30] = rng.integers(0, 200, (h - 60, w - 60, 3), dtype=np.uint8)
        cv2.imwrite(str(root / rel), img)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (root / "notes.txt").write_text("not a scan")
    return root


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_folder_with_a_corrupt_file(bundle_dir, scan_folder, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["scan", str(scan_folder), "--model", str(bundle_dir), "--out", str(out),
               "--stride", "32", "--device", "cpu"])  # fmt: skip
    assert rc == 1  # one file failed
    err = capsys.readouterr().err
    assert "broken.png" in err
    rows = {Path(r["file"]).name: r for r in _rows(out)}
    assert set(rows) == {"bag_a.png", "bag_b.jpg", "broken.png"}
    assert rows["broken.png"]["status"] == "failed" and rows["broken.png"]["error"]
    for name in ("bag_a.png", "bag_b.jpg"):
        r = rows[name]
        assert r["status"] == "ok"
        overlay = cv2.imread(str(out / r["overlay"]))
        doc = json.loads((out / r["json"]).read_text())
        assert overlay.shape[:2] == (int(r["scan_h"]), int(r["scan_w"]))
        assert doc["model_id"] == r["model_id"] and doc["threshold"] == 2.0  # model default
        assert doc["peak"] == pytest.approx(max(doc["windows"]["calibrated"]), abs=1e-3)
        assert len(doc["windows"]["raw"]) == doc["n_windows"] == int(r["n_windows"])
        assert doc["timings"]["total_s"] > 0
        for reg in doc["regions"]:
            assert 0 <= reg["x0"] < reg["x1"] <= doc["scan_shape"][1]
            assert reg["peak"] >= 2.0
        assert r["alarm"] == str(bool(doc["regions"]))


def test_all_good_files_exit_zero_and_explicit_threshold(bundle_dir, scan_folder, tmp_path):
    out = tmp_path / "out"
    files = [str(scan_folder / "bag_a.png"), str(scan_folder / "sub" / "bag_b.jpg")]
    rc = main(["scan", *files, "--model", str(bundle_dir), "--out", str(out),
               "--threshold", "1e9", "--no-windows"])  # fmt: skip
    assert rc == 0
    rows = _rows(out)
    assert len(rows) == 2 and all(r["alarm"] == "False" for r in rows)
    doc = json.loads((out / rows[0]["json"]).read_text())
    assert "windows" not in doc and doc["regions"] == []


def test_no_model_is_a_clear_error(scan_folder, tmp_path, capsys, monkeypatch):
    import xrayscreen.registry as registry

    monkeypatch.setattr(registry, "active_bundle_path", lambda: tmp_path / "nowhere")
    rc = main(["scan", str(scan_folder), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "pass --model" in capsys.readouterr().err


def test_torchrun_two_cpu_ranks_merge_one_csv(bundle_dir, scan_folder, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "xrayscreen", "scan", str(scan_folder), "--model", str(bundle_dir),
           "--out", str(out), "--stride", "32", "--device", "cpu"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, proc.stderr  # the corrupt file fails the batch
    rows = _rows(out)
    assert sorted(Path(r["file"]).name for r in rows) == ["bag_a.png", "bag_b.jpg", "broken.png"]
    assert {r["rank"] for r in rows} == {"0", "1"}  # both ranks did work
    assert sum(r["status"] == "ok" for r in rows) == 2
    assert len(list(out.glob("*.overlay.png"))) == 2
