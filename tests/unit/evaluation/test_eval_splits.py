"""The standard dev split: deterministic, disjoint, and consistent with the real folder."""

from __future__ import annotations

from xrayscreen.evaluation import splits


def test_benign_split_is_disjoint_and_complete():
    tr, va, te = set(splits.BENIGN_TRAIN), set(splits.BENIGN_VAL), set(splits.BENIGN_TEST)
    assert len(tr) == 180 and len(va) == 60 and len(te) == 60
    assert not (tr & va or tr & te or va & te)
    assert tr | va | te == {f"N{i:07d}" for i in range(1, 301)}


def test_threat_split_is_disjoint_balanced_and_never_in_train():
    va, te = set(splits.THREAT_VAL), set(splits.THREAT_TEST)
    assert not va & te and len(va | te) == 77
    assert (len(va), len(te)) == (40, 37)  # one extra val bag per odd-sized stratum
    assert splits.SPLITS["train"]["threat"] == ()
    for stratum in (splits._KNIFE_ONLY, splits._GUN_AND_KNIFE, splits._MASK_ONLY):
        assert abs(len(set(stratum) & va) - len(set(stratum) & te)) <= 1


def test_split_matches_the_real_folder(shared_data):
    d = shared_data / "sixray"
    images = {p.stem for p in (d / "threat" / "images").glob("*.jpg")}
    assert images == set(splits.THREAT_VAL) | set(splits.THREAT_TEST)
    benign, threat = splits.sixray_files(d, "test")
    assert len(benign) == 60 and len(threat) == len(splits.THREAT_TEST)
    # The frozen strata agree with the label files.
    for stem in splits._KNIFE_ONLY + splits._GUN_AND_KNIFE:
        ids = {
            ln.split()[0]
            for ln in (d / "threat" / "labels_yolo" / f"{stem}.txt").read_text().splitlines()
            if ln.strip()
        }
        assert ("0" in ids) == (stem in splits._GUN_AND_KNIFE) and "1" in ids
    for stem in splits._MASK_ONLY:
        assert not (d / "threat" / "labels_yolo" / f"{stem}.txt").exists()
        assert (d / "threat" / "masks" / f"{stem}.png").exists()


def test_scan_lists_and_split_selection(tmp_path):
    from pathlib import Path

    import pytest

    from xrayscreen.errors import ScanError
    from xrayscreen.evaluation.dataset import list_scans

    for name in ("N0000001.jpg", "N0000250.jpg", "P00031.jpg", "notes.md"):
        (tmp_path / name).write_bytes(b"x")
    lst = tmp_path / "list.txt"
    lst.write_text("# benign\nN0000250.jpg\n" + str(tmp_path / "P00031.jpg") + "  # threat\n")
    assert list_scans([lst]) == [tmp_path / "N0000250.jpg", tmp_path / "P00031.jpg"]
    found = list_scans([tmp_path])
    assert [p.name for p in found] == ["N0000001.jpg", "N0000250.jpg", "P00031.jpg"]
    test = splits.SPLITS["test"]
    assert splits.select(found, test["benign"]) == [tmp_path / "N0000250.jpg"]
    assert splits.select(found, test["threat"]) == []  # P00031 is a val bag
    assert splits.select(found, splits.SPLITS["val"]["threat"]) == [Path(tmp_path / "P00031.jpg")]
    with pytest.raises(ScanError, match="no such file"):
        list_scans([tmp_path / "missing"])
