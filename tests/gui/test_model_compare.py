"""The retraining comparison card: differences with paired intervals, coloured only when
the bags can tell the models apart."""

from __future__ import annotations

import numpy as np

from xrayscreen.gui.model_compare import BETTER, WORSE, ModelCompareCard
from xrayscreen.retrain_eval import Comparison, ModelEvaluation


def _ev(peaks, tpeaks, thr=2.0):
    p, t = np.asarray(peaks, float), np.asarray(tpeaks, float)
    return ModelEvaluation(
        "m", thr, len(p), float((p >= thr).mean()), list(p), "fp",
        len(t), float((t >= thr).mean()), list(t), True,
    )  # fmt: skip


def _card(qtbot, comparison):
    card = ModelCompareCard(comparison)
    qtbot.addWidget(card)
    return card


def test_a_clear_difference_is_shown_and_coloured(qtbot):
    rng = np.random.default_rng(0)
    bags, threats = rng.normal(1.5, 1, 40), rng.normal(2.5, 1, 40)  # ~30 % / ~70 % alarm
    # New: fewer false alarms (better) and fewer detections (worse), both clearly.
    card = _card(qtbot, Comparison(_ev(bags - 3.0, threats - 3.0), _ev(bags, threats)))
    far, det = card.cells[("far", "diff")], card.cells[("det", "diff")]
    assert far.text().startswith("-") and "points [" in far.text()
    assert (
        BETTER.name() in far.styleSheet()
        and BETTER.name() in card.cells[("far", "new")].styleSheet()
    )
    assert WORSE.name() in det.styleSheet()
    assert "95 % interval" in card.note.text()


def test_a_one_bag_difference_is_shown_but_not_coloured(qtbot):
    bags = np.r_[np.full(19, 0.0), 3.0]  # one of twenty bags alarms with the active model
    threats = np.full(20, 3.0)
    card = _card(qtbot, Comparison(_ev(np.zeros(20), threats), _ev(bags, threats)))
    far = card.cells[("far", "diff")]
    assert far.text().startswith("-5.0 points [")
    assert far.styleSheet() == "" and card.cells[("far", "new")].styleSheet() == ""
    assert card.cells[("det", "diff")].text().startswith("+0.0 points")


def test_no_active_model_no_difference(qtbot):
    card = _card(qtbot, Comparison(_ev([0.0, 3.0], [3.0]), None))
    assert card.cells[("far", "diff")].text() == "—"


def test_a_head_trained_on_projected_threats_is_named_in_the_note(qtbot):
    import dataclasses

    rng = np.random.default_rng(1)
    bags, threats = rng.normal(1.5, 1, 20), rng.normal(2.5, 1, 20)
    plain = _ev(bags, threats)
    card = _card(qtbot, Comparison(plain, plain))
    assert "optimistic" not in card.note.text()
    headed = dataclasses.replace(plain, tip_trained=True)
    card = _card(qtbot, Comparison(headed, plain))
    assert "The new model's score includes a head trained on threats" in card.note.text()
    card = _card(qtbot, Comparison(headed, headed))
    assert "Both models' scores include a head" in card.note.text()
    card = _card(qtbot, Comparison(plain, headed))
    assert "The active model's score includes a head" in card.note.text()
    # An evaluation written before the field existed still loads (default: no head).
    old = {k: v for k, v in plain.to_dict().items() if k != "tip_trained"}
    assert Comparison.from_dict({"new": old, "active": None}).new.tip_trained is False
