"""Training report: ``training_report.json`` and a loss-curve PNG, written atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from xrayscreen.atomic import atomic_write_bytes, atomic_write_json

REPORT = "training_report.json"
CURVE = "loss_curve.png"


def loss_curve_png(history: list[dict[str, Any]], kept_epoch: int | None = None) -> bytes:
    """PNG bytes of the per-epoch losses (train L_con, L_enc, L_adv, D; validation loss)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # Figure directly: no pyplot global state

    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    ep = [r["epoch"] for r in history]
    for key, label in (("con", "train L_con"), ("val_con", "val L_con")):
        if history and key in history[0]:
            ax1.plot(ep, [r.get(key) for r in history], marker="o", label=label)
    for key, label in (
        ("enc", "train L_enc"),
        ("adv", "train L_adv"),
        ("d", "D loss"),
        ("val_enc", "val L_enc"),
    ):
        if history and key in history[0]:
            ax2.plot(ep, [r.get(key) for r in history], marker=".", label=label)
    for ax in (ax1, ax2):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if kept_epoch:
            ax.axvline(kept_epoch, color="grey", ls="--", lw=1)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    ax1.set_title("reconstruction (L1)")
    ax2.set_title("latent / adversarial / D")
    ax2.set_yscale("log")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_report(folder: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write the JSON report and the loss curve into ``folder``; returns both paths."""
    rp = atomic_write_json(folder / REPORT, report)
    png = loss_curve_png(report.get("history", []), report.get("kept_epoch"))
    cp = atomic_write_bytes(folder / CURVE, png)
    return rp, cp
