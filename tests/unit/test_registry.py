import io
import json
import pickle
import zipfile

import pytest
import torch

import xrayscreen.atomic as atomic
import xrayscreen.registry as reg
from xrayscreen.errors import BundleError
from xrayscreen.model.bundle import META, WEIGHTS, InputSpec, ModelBundle, load_bundle, save_bundle
from xrayscreen.model.calibration import Calibration
from xrayscreen.model.ganomaly import GANomalyConfig, build_generator
from xrayscreen.registry import Registry, active_bundle_path

CFG = GANomalyConfig(isize=16, nc=3, nz=4, ngf=4, ndf=4)


def _make(tmp_path, name, seed=0, model_id=None):
    torch.manual_seed(seed)
    b = ModelBundle(
        config=CFG,
        generator=build_generator(CFG),
        input=InputSpec(window=16),
        calibration=Calibration.fit(torch.rand(200).numpy(), scan_scores=[torch.rand(9).numpy()]),
        provenance={"n_scans": 7, "fingerprint": f"fp{seed}"},
    )
    if model_id:
        b.model_id = model_id
    return save_bundle(b, tmp_path / "src" / name), b.model_id


@pytest.fixture
def default(tmp_path, monkeypatch):
    """A bundled default model in a temp dir (the real one ships with the training issue)."""
    path, mid = _make(tmp_path, "default_model", seed=99, model_id="default-sim-1")
    monkeypatch.setattr(reg, "default_bundle_path", lambda: path)
    return path, mid


def test_register_list_get(tmp_path, default):
    r = Registry()
    assert r.root.parent.name == "data"  # under XRAYSCREEN_HOME, never the real user dir
    src, mid = _make(tmp_path, "a", seed=1)
    rec = r.register(src)
    assert rec.model_id == mid and rec.path == r.root / mid
    assert src.is_dir()  # copied, source kept
    assert rec.n_scans == 7 and rec.fingerprint == "fp1"
    assert rec.calibration["n_bags"] == 1 and rec.calibration["default_threshold"] == 2.0
    ids = [x.model_id for x in r.list()]
    assert ids == [default[1], mid]
    assert r.list()[0].is_default and r.list()[0].is_active  # nothing activated yet
    assert not r.get(mid).is_active
    # registering the same bundle again is a no-op; a different one under the same id is refused
    assert r.register(src).model_id == mid
    src2, _ = _make(tmp_path, "b", seed=2, model_id=mid)
    with pytest.raises(BundleError, match="already registered"):
        r.register(src2)


def test_register_refuses_invalid_and_moves(tmp_path, default):
    r = Registry()
    src, mid = _make(tmp_path, "a", seed=1)
    (src / WEIGHTS).write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(BundleError, match="pickle"):
        r.register(src)
    assert [p.name for p in r.root.iterdir()] == []
    src, mid = _make(tmp_path, "b", seed=2)
    r.register(src, copy=False)
    assert not src.exists() and (r.root / mid / WEIGHTS).is_file()


def test_activate_rollback_and_pointer_is_atomic(tmp_path, default, monkeypatch):
    r = Registry()
    a = r.register(_make(tmp_path, "a", seed=1)[0]).model_id
    b = r.register(_make(tmp_path, "b", seed=2)[0]).model_id
    assert active_bundle_path() == default[0]
    r.activate(a)
    assert active_bundle_path() == r.root / a
    r.activate(b)
    assert r.active_id() == b and r.history() == [a, default[1]]
    assert load_bundle(active_bundle_path()).model_id == b
    # The pointer is replaced with os.replace of a temp file in the same directory.
    calls = []
    real = atomic.os.replace

    def spy(src, dst):
        calls.append((str(src), str(dst)))
        return real(src, dst)

    with monkeypatch.context() as m:
        m.setattr(atomic.os, "replace", spy)
        r.rollback()
    assert calls and calls[-1][1] == str(r.pointer_path)
    assert r.active_id() == a and r.history() == [default[1]]
    r.rollback()
    assert active_bundle_path() == default[0]
    with pytest.raises(BundleError, match="no previous"):
        r.rollback()
    assert not list(r.root.glob(".*tmp"))


def test_activate_refuses_broken_bundle_and_keeps_pointer(tmp_path, default):
    r = Registry()
    a = r.register(_make(tmp_path, "a", seed=1)[0]).model_id
    b = r.register(_make(tmp_path, "b", seed=2)[0]).model_id
    r.activate(a)
    w = r.root / b / WEIGHTS
    w.write_bytes(w.read_bytes()[:50])
    with pytest.raises(BundleError):
        r.activate(b)
    assert r.active_id() == a
    with pytest.raises(BundleError, match="no registered model"):
        r.activate("../etc")


def test_default_fallback_when_active_missing_or_corrupt(tmp_path, default):
    r = Registry()
    a = r.register(_make(tmp_path, "a", seed=1)[0]).model_id
    r.activate(a)
    w = r.root / a / WEIGHTS
    good = w.read_bytes()
    w.write_bytes(good[:-10])  # truncated weights
    assert active_bundle_path() == default[0]
    w.write_bytes(good)
    assert active_bundle_path() == r.root / a
    (r.root / a / META).write_text("{broken")
    assert active_bundle_path() == default[0]
    r.pointer_path.write_text("not json")
    assert r.active_id() is None and active_bundle_path() == default[0]


def test_real_default_bundle_path_is_in_resources():
    p = reg.default_bundle_path()
    assert p.name == "default_model" and p.parent.name == "resources"


def test_remove_never_active_or_default(tmp_path, default):
    r = Registry()
    a = r.register(_make(tmp_path, "a", seed=1)[0]).model_id
    b = r.register(_make(tmp_path, "b", seed=2)[0]).model_id
    r.activate(a)
    with pytest.raises(BundleError, match="active"):
        r.remove(a)
    with pytest.raises(BundleError, match="default"):
        r.remove(default[1])
    r.remove(b)
    assert [x.model_id for x in r.list()] == [default[1], a]
    assert sorted(p.name for p in r.root.iterdir()) == sorted([a, "active.json"])


def test_rollback_skips_removed_models(tmp_path, default):
    r = Registry()
    a = r.register(_make(tmp_path, "a", seed=1)[0]).model_id
    b = r.register(_make(tmp_path, "b", seed=2)[0]).model_id
    c = r.register(_make(tmp_path, "c", seed=3)[0]).model_id
    r.activate(a)
    r.activate(b)
    r.activate(c)
    r.activate(a)  # a moves to the front, history has no duplicates
    assert r.history() == [c, b, default[1]]
    r.remove(c)
    assert r.rollback().model_id == b


def test_evaluation_is_stored_with_the_record(tmp_path, default):
    r = Registry()
    a = r.register(_make(tmp_path, "a", seed=1)[0]).model_id
    assert r.get(a).evaluation is None
    r.set_evaluation(a, {"bag_far": 0.05, "threshold": 2.0, "n_bags": 20})
    assert r.get(a).evaluation["bag_far"] == 0.05
    with pytest.raises(BundleError, match="read-only"):
        r.set_evaluation(default[1], {})


def test_export_import_roundtrip(tmp_path, default):
    r = Registry()
    src, a = _make(tmp_path, "a", seed=1)
    r.register(src)
    f = r.export(a, tmp_path / "out" / "m.xrsmodel")
    with zipfile.ZipFile(f) as zf:
        assert sorted(zf.namelist()) == [META, WEIGHTS]
    other = Registry(tmp_path / "station2")
    rec = other.import_(f)
    assert rec.model_id == a and other.active_id() is None  # imported, not activated
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(
        load_bundle(rec.path).generator(x).z_hat, load_bundle(src).generator(x).z_hat
    )
    assert other.import_(f).model_id == a  # idempotent
    assert not [p for p in other.root.iterdir() if p.name.startswith(".")]


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _files(tmp_path):
    src, _ = _make(tmp_path, "a", seed=1)
    return (src / META).read_bytes(), (src / WEIGHTS).read_bytes()


@pytest.mark.parametrize(
    "members,match",
    [
        ({"extra.txt": b"x"}, "exactly"),
        ({"../weights.safetensors": b"x"}, "exactly"),
        ({"sub/model.json": b"x"}, "exactly"),
    ],
)
def test_import_refuses_extra_and_traversal_members(tmp_path, default, members, match):
    meta, weights = _files(tmp_path)
    base = {META: meta, WEIGHTS: weights}
    bad = _zip(tmp_path / "bad.xrsmodel", {**base, **members})
    r = Registry()
    with pytest.raises(BundleError, match=match):
        r.import_(bad)
    assert [p.name for p in r.root.iterdir()] == []
    assert not (tmp_path / "weights.safetensors").exists()


def test_import_refuses_path_member_named_like_bundle_file(tmp_path, default):
    meta, weights = _files(tmp_path)
    bad = tmp_path / "trav.xrsmodel"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr(META, meta)
        zf.writestr("../" + WEIGHTS, weights)
    with pytest.raises(BundleError):
        Registry().import_(bad)
    # duplicate member names (a zip can hold two entries with one name)
    dup = tmp_path / "dup.xrsmodel"
    with pytest.warns(UserWarning), zipfile.ZipFile(dup, "w") as zf:
        zf.writestr(META, meta)
        zf.writestr(WEIGHTS, weights)
        zf.writestr(WEIGHTS, weights)
    with pytest.raises(BundleError, match="exactly|duplicate"):
        Registry().import_(dup)


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_MARKER",))


def test_import_refuses_pickles_and_never_executes(tmp_path, default, monkeypatch):
    monkeypatch.chdir(tmp_path)
    meta, _ = _files(tmp_path)
    r = Registry()
    buf = io.BytesIO()
    torch.save({"x": _Exploit()}, buf)
    (tmp_path / "torch.xrsmodel").write_bytes(buf.getvalue())
    with pytest.raises(BundleError, match="pickle"):
        r.import_(tmp_path / "torch.xrsmodel")
    (tmp_path / "raw.xrsmodel").write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(BundleError, match="pickle"):
        r.import_(tmp_path / "raw.xrsmodel")
    # the two right names, but a pickle where the safetensors should be
    z = _zip(tmp_path / "inner.xrsmodel", {META: meta, WEIGHTS: pickle.dumps(_Exploit())})
    with pytest.raises(BundleError, match="pickle"):
        r.import_(z)
    assert not (tmp_path / "PWNED_MARKER").exists()
    assert [p.name for p in r.root.iterdir()] == []


def test_import_refuses_corrupt_json_and_bad_ids(tmp_path, default):
    meta, weights = _files(tmp_path)
    r = Registry()
    z = _zip(tmp_path / "j.xrsmodel", {META: b"{not json", WEIGHTS: weights})
    with pytest.raises(BundleError, match="JSON"):
        r.import_(z)
    m = json.loads(meta)
    m["model_id"] = "../../evil"
    z = _zip(tmp_path / "id.xrsmodel", {META: json.dumps(m), WEIGHTS: weights})
    with pytest.raises(BundleError, match="not a valid id"):
        r.import_(z)
    (tmp_path / "trunc.xrsmodel").write_bytes(
        _zip(tmp_path / "t.zip", {META: meta, WEIGHTS: weights}).read_bytes()[:300]
    )
    with pytest.raises(BundleError):
        r.import_(tmp_path / "trunc.xrsmodel")
    (tmp_path / "text.xrsmodel").write_text("hello")
    with pytest.raises(BundleError, match="not an xrayscreen model file"):
        r.import_(tmp_path / "text.xrsmodel")
    assert [p.name for p in r.root.iterdir()] == []


def test_import_refuses_zip_bomb(tmp_path, default, monkeypatch):
    meta, _ = _files(tmp_path)
    bomb = tmp_path / "bomb.xrsmodel"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(META, meta)
        zf.writestr(WEIGHTS, b"\0" * (20 * 1024 * 1024))
    with pytest.raises(BundleError, match="compression ratio"):
        Registry().import_(bomb)
    monkeypatch.setattr(reg, "MAX_WEIGHTS_BYTES", 1000)
    with pytest.raises(BundleError, match="too large"):
        Registry().import_(bomb)


def test_cli_export_import_activate_rollback(tmp_path, default, capsys):
    from xrayscreen.cli import main

    src, a = _make(tmp_path, "a", seed=1)
    assert main(["export", "import", str(src)]) == 0
    f = tmp_path / "a.xrsmodel"
    assert main(["export", "export", a, str(f)]) == 0 and f.is_file()
    assert main(["export", "activate", a]) == 0
    assert Registry().active_id() == a
    capsys.readouterr()
    assert main(["export", "list"]) == 0
    out = capsys.readouterr().out
    assert f"* {a}" in out and default[1] in out
    assert main(["export", "rollback"]) == 0 and active_bundle_path() == default[0]
    bad = _zip(tmp_path / "bad.xrsmodel", {"x.txt": b"1"})
    assert main(["export", "import", str(bad)]) == 1
    assert "exactly" in capsys.readouterr().err


def test_module_functions_used_by_the_gui(tmp_path, default):
    a = Registry().register(_make(tmp_path, "a", seed=1)[0]).model_id
    assert [r.model_id for r in reg.list_models()] == [default[1], a]
    assert reg.activate(a) == Registry().root / a == active_bundle_path()
    assert reg.rollback() == default[0] == active_bundle_path()


def test_activate_with_explicit_previous(tmp_path, default):
    r = Registry()
    a = r.register(_make(tmp_path, "a", seed=1)[0]).model_id
    b = r.register(_make(tmp_path, "b", seed=2)[0]).model_id
    r.activate(b, previous=a)  # the GUI was using a (loaded from a folder), not the pointer's
    assert r.history() == [a, default[1]] and r.rollback().model_id == a
    with pytest.raises(BundleError):
        r.activate(b, previous="unknown-id")
