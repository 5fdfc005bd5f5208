import json

from xrayscreen.settings import (
    RECENT_MAX,
    Preferences,
    load_preferences,
    preferences_path,
    save_preferences,
)


def test_defaults_when_missing(_isolated_home):
    p = load_preferences()
    assert p.stride == 16 and p.device == "auto" and p.operator_id
    assert str(preferences_path()).startswith(str(_isolated_home))


def test_roundtrip_and_recent_cap(tmp_path):
    files = []
    for i in range(RECENT_MAX + 3):
        f = tmp_path / f"s{i}.png"
        f.write_bytes(b"x")
        files.append(f)
    p = Preferences(stride=32, device="cpu", colour_map="viridis", operator_id="ann")
    for f in files:
        p.add_recent(f)
    p.add_recent(files[0])  # re-opening moves it to the front, no duplicate
    save_preferences(p)
    back = load_preferences()
    assert (back.stride, back.device, back.colour_map, back.operator_id) == (
        32,
        "cpu",
        "viridis",
        "ann",
    )
    assert len(back.recent_files) == RECENT_MAX
    assert back.recent_files[0] == str(files[0])
    assert back.recent_files.count(str(files[0])) == 1


def test_missing_recent_files_dropped(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"x")
    p = Preferences()
    p.add_recent(a)
    p.add_recent(b)  # never existed
    p.add_recent(f"{a}|{b}")  # a pair with one file missing
    save_preferences(p)
    assert load_preferences().recent_files == [str(a)]


def test_corrupt_or_invalid_values_fall_back(tmp_path):
    path = preferences_path()
    path.write_text("{not json")
    assert load_preferences().stride == 16
    path.write_text(
        json.dumps({"stride": -3, "device": "tpu", "colour_map": 5, "operator_id": "bob"})
    )
    p = load_preferences()
    assert (p.stride, p.device, p.colour_map, p.operator_id) == (16, "auto", "inferno", "bob")


def test_write_is_atomic_no_temp_left(tmp_path):
    save_preferences(Preferences(), tmp_path / "prefs.json")
    assert [f.name for f in tmp_path.iterdir()] == ["prefs.json"]
