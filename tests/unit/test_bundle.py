import io
import json
import pickle
import zipfile

import pytest
import torch

from xrayscreen.errors import BundleError
from xrayscreen.model.bundle import META, WEIGHTS, InputSpec, ModelBundle, load_bundle, save_bundle
from xrayscreen.model.calibration import Calibration
from xrayscreen.model.ganomaly import GANomalyConfig, build_discriminator, build_generator

CFG = GANomalyConfig(isize=32, nc=3, nz=8, ngf=8, ndf=8)


def _bundle(with_d=False):
    torch.manual_seed(0)
    g = build_generator(CFG)
    cal = Calibration.fit(torch.rand(1000).numpy())
    return ModelBundle(
        config=CFG,
        generator=g,
        input=InputSpec(window=32),
        calibration=cal,
        discriminator=build_discriminator(CFG) if with_d else None,
        provenance={"seed": 1},
    )


def test_roundtrip_and_outputs_identical(tmp_path):
    b = _bundle(with_d=True)
    save_bundle(b, tmp_path / "m")
    loaded = load_bundle(tmp_path / "m", with_discriminator=True)
    assert loaded.model_id == b.model_id
    assert loaded.calibration.values == pytest.approx(b.calibration.values)
    assert not loaded.generator.training
    x = torch.randn(2, 3, 32, 32)
    b.generator.eval()
    torch.testing.assert_close(loaded.generator(x).z_hat, b.generator(x).z_hat)
    assert loaded.discriminator is not None
    meta = json.loads((tmp_path / "m" / META).read_text())
    assert meta["provenance"]["seed"] == 1 and "torch" in meta["provenance"]


def test_half_precision_is_smaller_and_close(tmp_path):
    b = _bundle()
    save_bundle(b, tmp_path / "f32")
    save_bundle(b, tmp_path / "f16", half=True)
    s32 = (tmp_path / "f32" / WEIGHTS).stat().st_size
    s16 = (tmp_path / "f16" / WEIGHTS).stat().st_size
    assert s16 < 0.6 * s32
    loaded = load_bundle(tmp_path / "f16")
    x = torch.randn(2, 3, 32, 32)
    b.generator.eval()
    torch.testing.assert_close(loaded.generator(x).x_hat, b.generator(x).x_hat, atol=2e-2, rtol=0)


def test_never_replaces_existing_silently(tmp_path):
    save_bundle(_bundle(), tmp_path / "m")
    first = json.loads((tmp_path / "m" / META).read_text())["model_id"]
    with pytest.raises(BundleError, match="refusing"):
        save_bundle(_bundle(), tmp_path / "m")
    assert json.loads((tmp_path / "m" / META).read_text())["model_id"] == first
    b2 = _bundle()
    save_bundle(b2, tmp_path / "m", overwrite=True)
    assert load_bundle(tmp_path / "m").model_id == b2.model_id
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp leftovers


def test_failed_write_leaves_no_partial_bundle(tmp_path, monkeypatch):
    import xrayscreen.model.bundle as mb

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(mb, "save_file", boom)
    with pytest.raises(OSError):
        save_bundle(_bundle(), tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_missing_and_invalid_json(tmp_path):
    save_bundle(_bundle(), tmp_path / "m")
    (tmp_path / "m" / META).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path / "m")
    (tmp_path / "m" / META).unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(tmp_path / "m")
    with pytest.raises(BundleError, match="no model bundle"):
        load_bundle(tmp_path / "nowhere")


def test_json_that_is_not_a_bundle(tmp_path):
    save_bundle(_bundle(), tmp_path / "m")
    (tmp_path / "m" / META).write_text(json.dumps({"format": "other"}))
    with pytest.raises(BundleError, match="not an xrayscreen bundle"):
        load_bundle(tmp_path / "m")


def test_tensors_not_matching_config(tmp_path):
    save_bundle(_bundle(), tmp_path / "m")
    meta = json.loads((tmp_path / "m" / META).read_text())
    meta["architecture"]["config"]["ngf"] = 16
    (tmp_path / "m" / META).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="shape|match"):
        load_bundle(tmp_path / "m")


def test_corrupt_weights(tmp_path):
    save_bundle(_bundle(), tmp_path / "m")
    w = tmp_path / "m" / WEIGHTS
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(BundleError, match="corrupt"):
        load_bundle(tmp_path / "m")


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_MARKER",))


def test_crafted_pickle_is_refused_and_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_bundle(_bundle(), tmp_path / "m")
    # 1. a torch.save zip archive holding a code-executing object, in place of the weights
    buf = io.BytesIO()
    torch.save({"x": _Exploit()}, buf)
    (tmp_path / "m" / WEIGHTS).write_bytes(buf.getvalue())
    with pytest.raises(BundleError, match="pickle"):
        load_bundle(tmp_path / "m")
    # 2. a raw pickle, and a torch.save file offered directly as "the model"
    (tmp_path / "m" / WEIGHTS).write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(BundleError, match="pickle"):
        load_bundle(tmp_path / "m")
    (tmp_path / "model.pt").write_bytes(buf.getvalue())
    with pytest.raises(BundleError, match="pickle"):
        load_bundle(tmp_path / "model.pt")
    assert zipfile.is_zipfile(tmp_path / "model.pt")
    assert not (tmp_path / "PWNED_MARKER").exists()


def test_nan_weights_refused(tmp_path):
    b = _bundle()
    with torch.no_grad():
        next(b.generator.parameters())[0].fill_(float("nan"))
    save_bundle(b, tmp_path / "m")
    with pytest.raises(BundleError, match="NaN"):
        load_bundle(tmp_path / "m")
