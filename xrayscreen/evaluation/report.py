"""Evaluation outputs: ``report.json``, ``report.md``, ROC curve PNGs and a montage.

Plots use matplotlib's Agg backend (headless; never a display). Writes of the
two reports go through :func:`xrayscreen.atomic` helpers so a crash never leaves
half a report.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

from xrayscreen.evaluation.dataset import BENIGN, THREAT, Dataset, file_sha256
from xrayscreen.evaluation.floors import FLOOR_LABELS, FLOOR_NAMES
from xrayscreen.evaluation.labelling import INSIDE_FRACTION, IOU_THRESHOLD, MASK_FRACTION
from xrayscreen.evaluation.overlap import OVERLAP_TEXT
from xrayscreen.evaluation.runner import POOL_TEXT, POOLS, Evaluation
from xrayscreen.inference.windows import BELT_FRACTION, BELT_GREY

MONTAGE_PER_ROW = 4


def data_fingerprints(dataset: Dataset) -> dict[str, Any]:
    """Per-file sha256 of every input (scans and annotations) and one overall digest."""
    scans = []
    for s in dataset.scans:
        entry: dict[str, Any] = {
            "name": s.name,
            "kind": s.kind,
            "file": str(s.path),
            "sha256": s.sha256,
        }
        if s.kind == THREAT:
            entry["labels"] = s.labels.rule
            entry["annotation_files"] = [
                {"file": str(p), "sha256": file_sha256(p)} for p in s.annotation_files
            ]
        scans.append(entry)
    shared = [
        {"file": str(p), "sha256": file_sha256(p)}
        for p in dataset.annotation_shared_files
        if Path(p).is_file()
    ]
    h = hashlib.sha256()
    for e in scans:
        h.update(e["sha256"].encode())
        for a in e.get("annotation_files", []):
            h.update(a["sha256"].encode())
    for a in shared:
        h.update(a["sha256"].encode())
    return {
        "digest": h.hexdigest(),
        "scans": scans,
        "annotation_shared": shared,
        "skipped": [{"file": str(k.path), "reason": k.reason} for k in dataset.skipped],
    }


def build_report(
    evaluation: Evaluation,
    dataset: Dataset,
    *,
    model: dict[str, Any] | None,
    command: list[str] | None = None,
    extra_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``report.json`` document."""
    import xrayscreen

    settings = {
        **dataset.settings.to_dict(),
        "iou_threshold": IOU_THRESHOLD,
        "inside_fraction": INSIDE_FRACTION,
        "mask_fraction": MASK_FRACTION,
        "belt_grey": BELT_GREY,
        "belt_fraction": BELT_FRACTION,
        "window_labels_from": "boxes when a bag has boxes, else its mask",
        "bag_score": "peak of the heat map",
        **(extra_settings or {}),
    }
    return {
        "tool": "xrayscreen evaluate",
        "xrayscreen": xrayscreen.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "command": command,
        "settings": settings,
        "model": model,
        "classes": list(dataset.classes),
        "data": data_fingerprints(dataset),
        "counts": evaluation.summary["counts"],
        "timing_s": evaluation.summary.get("timing_s", {}),
        "kinds": evaluation.summary["kinds"],
        "montage_kind": evaluation.montage_kind,
    }


# ------------------------------------------------------------------------ markdown
def _f(v: Any, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.1f} %" if pct else f"{v:.3f}"


def _ci(interval: Any, pct: bool = False) -> str:
    """`` [lo-hi]`` for a bootstrap interval (nothing for reports without one)."""
    if not interval or interval[0] is None or interval[1] is None:
        return ""
    lo, hi = interval
    return f" [{100 * lo:.0f}-{100 * hi:.0f} %]" if pct else f" [{lo:.3f}-{hi:.3f}]"


def _diff(d: dict | None, scale: float = 1.0, fmt: str = "+.3f") -> str:
    """A paired difference and its interval, signed: ``+0.012 [-0.020 to +0.045]``."""
    if not d:
        return "n/a"
    lo, hi = d["ci"]
    return f"{scale * d['diff']:{fmt}} [{scale * lo:{fmt}} to {scale * hi:{fmt}}]"


def _op_ci(op: dict, key: str) -> Any:
    return (op.get("ci") or {}).get(key)


def _kind_label(name: str) -> str:
    return FLOOR_LABELS.get(name, name)


def _md(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|")


def window_table(report: dict[str, Any], metric: str = "auc", pct: bool = False) -> list[str]:
    """Markdown rows: one per score kind, columns all/per-class for pools (a) and (b)."""
    classes = [c for c in report["counts"]["windows"].get("positives", {}) if c != "all"]
    cols = [(p, c) for p in POOLS for c in ["all", *classes]]
    head = "| score | " + " | ".join(f"{c} ({p})" for p, c in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    for name, k in report["kinds"].items():
        vals = []
        for p, c in cols:
            cell = k["window"].get(p, {}).get(c)
            vals.append(_f(cell[metric] if cell else None, pct))
        lines.append(f"| {_md(_kind_label(name))} | " + " | ".join(vals) + " |")
    return lines


def window_ci_table(report: dict[str, Any]) -> list[str]:
    """Markdown rows of the bag-resampled 95 % intervals of the window AUCs (kinds that
    have them), laid out like :func:`window_table`; no rows when none has one."""
    classes = [c for c in report["counts"]["windows"].get("positives", {}) if c != "all"]
    cols = [(p, c) for p in POOLS for c in ["all", *classes]]
    lines = []
    for name, k in report["kinds"].items():
        cells = [k["window"].get(p, {}).get(c) or {} for p, c in cols]
        if not any(cell.get("auc_ci") for cell in cells):
            continue
        vals = [_ci(cell.get("auc_ci")).strip() or "n/a" for cell in cells]
        lines.append(f"| {_md(_kind_label(name))} | " + " | ".join(vals) + " |")
    if not lines:
        return []
    head = "| score | " + " | ".join(f"{c} ({p})" for p, c in cols) + " |"
    return [head, "|---" * (len(cols) + 1) + "|", *lines]


def render_markdown(report: dict[str, Any]) -> str:
    """``report.md``: the tables an analyst reads."""
    s = report["settings"]
    c = report["counts"]
    w = c["windows"]
    out = ["# xrayscreen evaluate report", ""]
    m = report.get("model")
    out.append(
        f"Model: **{m['model_id']}** ({m.get('path')})" if m else "Model: none (floors only)"
    )
    out += [
        "",
        f"Created {report['created']}, xrayscreen {report['xrayscreen']}. Data digest "
        f"`{report['data']['digest'][:16]}`.",
        "",
        "## Protocol",
        "",
        f"- scans resized so the longer side is {s['longer_side']} px ({s['interpolation']} "
        f"interpolation); {s['window']}x{s['window']} windows, stride {s['stride']}, grid padded "
        f"with air{'; windows reaching into the padding left out' if s['exclude_border'] else ''};",
        f"- anomalous window: IoU with a threat box > {s['iou_threshold']} or >= "
        f"{s['inside_fraction']:.0%} of the window inside it (masks: >= {s['mask_fraction']:.0%} "
        f"threat pixels); normal: touches no threat; {s['window_labels_from']};",
        f"- empty belt (left out of both sides): >= {s['belt_fraction']:.0%} of pixels with grey "
        f"> {s['belt_grey']};",
        f"- pools: (a) {POOL_TEXT['a']}, (b) {POOL_TEXT['b']}; detection rate at "
        f"{s['far']:.0%} window false-alarm rate;",
        f"- bags: {c['bags']['benign']} benign, {c['bags']['threat']} threat "
        f"({c['bags']['threat_annotated']} annotated; {c['bags']['threat_bag_level_only']} "
        "count at bag level only).",
    ]
    if s.get("split"):
        out.append(f"- split: `{s['split']}` (xrayscreen.evaluation.splits)")
    ov = s.get("training_overlap") or {}
    for key, text in OVERLAP_TEXT.items():
        if ov.get(key):
            out.append(
                f"- **{len(ov[key])} evaluated scan(s) {text}** (not held out): "
                + ", ".join(ov[key])
            )
    g = s.get("groups")
    if g:
        phys = c.get("physical_bags", {})
        out.append(
            f"- rescan groups from `{g['file']}`: intervals resample physical bags "
            f"({phys.get('benign', 'n/a')} benign, {phys.get('threat', 'n/a')} threat), not "
            "scans;"
        )
        for st in g.get("straddling", []):
            where = "; ".join(f"{k}: {', '.join(v)}" for k, v in st["splits"].items())
            out.append(f"- **rescan group {st['group']} straddles splits** ({where}): not held out")
    pos = w.get("positives", {})
    neg = w.get("negatives", {})
    out += [
        "",
        "Windows: "
        + ", ".join(f"{v} anomalous {k}" for k, v in pos.items())
        + f"; normal: {neg.get('a', 0)} in pool (a), {neg.get('b', 0)} in pool (b).",
    ]
    skipped = report["data"]["skipped"]
    if skipped:
        out += ["", f"**Skipped {len(skipped)} file(s):**", ""]
        out += [f"- `{k['file']}`: {k['reason']}" for k in skipped]
    out += ["", "## Window ROC AUC", "", *window_table(report, "auc")]
    ci_rows = window_ci_table(report)
    if ci_rows:
        out += [
            "",
            "95 % intervals of these AUCs with the *bags* resampled (the windows of one bag "
            "are not independent; pool (b) draws each threat bag with its own box-free "
            "windows):",
            "",
            *ci_rows,
        ]
    out += [
        "",
        f"## Detection rate at {s['far']:.0%} window false-alarm rate",
        "",
        *window_table(report, "detection_at_far", pct=True),
    ]
    pix = {k: v["pixel"] for k, v in report["kinds"].items() if v.get("pixel")}
    if pix:
        any_p = next(iter(pix.values()))
        out += [
            "",
            f"## Pixel AUROC of the heat map ({any_p['n_scans']} scans with masks)",
            "",
            "| score | pixel AUROC |",
            "|---|---|",
        ]
        out += [f"| {_md(_kind_label(k))} | {_f(v['auroc'])} |" for k, v in pix.items()]
    out += [
        "",
        "## Bag level (bag score = peak of the heat map)",
        "",
        "AUC: threat bags vs benign bags by peak; localised: the peak *inside* the threat "
        "vs benign peaks. Alarm columns: share of annotated threat bags with an alarm "
        "overlapping the threat at the threshold that alarms on at most 5 % / 10 % of "
        "benign bags. In brackets: 95 % bootstrap intervals, bags resampled (the "
        "threshold re-derived from each resampled benign set): what this many bags can tell.",
        "",
        "| score | AUC | AUC localised | on threat @ <=5 % benign | on threat @ <=10 % benign |",
        "|---|---|---|---|---|",
    ]
    for k, v in report["kinds"].items():
        ops = {o["target_benign_alarm"]: o for o in v["bag"]["operating"]}
        at5, at10 = ops.get(0.05, {}), ops.get(0.10, {})
        out.append(
            f"| {_md(_kind_label(k))} | {_f(v['bag']['auc_peak'])}"
            f"{_ci(v['bag'].get('auc_peak_ci'))} | {_f(v['bag']['auc_localised'])} | "
            f"{_f(at5.get('threat_alarm_on_threat'), True)}"
            f"{_ci(_op_ci(at5, 'threat_alarm_on_threat'), True)} "
            f"({_f(at5.get('benign_alarmed'), True)} benign) | "
            f"{_f(at10.get('threat_alarm_on_threat'), True)}"
            f"{_ci(_op_ci(at10, 'threat_alarm_on_threat'), True)} "
            f"({_f(at10.get('benign_alarmed'), True)} benign) |"
        )
    paired = [
        (k, f, d)
        for k, v in report["kinds"].items()
        for f, d in v["bag"].get("vs_floors", {}).items()
    ]
    if paired:
        out += [
            "",
            "### Bag level against the floors (paired)",
            "",
            "The score minus the floor, on the same bags; 95 % intervals from resampling the "
            "bags for both at once, so bags both find easy or hard cancel out. An interval "
            "that holds 0 means these bags cannot tell the two apart.",
            "",
            "| score | floor | AUC difference | on threat @ <=5 % benign, difference (points) |",
            "|---|---|---|---|",
        ]
        for k, f, d in paired:
            out.append(
                f"| {_md(_kind_label(k))} | {_md(_kind_label(f))} | {_diff(d.get('auc_peak'))} | "
                f"{_diff(d.get('on_threat'), 100.0, '+.1f')} |"
            )
    mk = report.get("montage_kind")
    if mk and mk in report["kinds"] and report["kinds"][mk]["bag"]["operating"]:
        out += [
            "",
            f"### Operating table: {_md(_kind_label(mk))}",
            "",
            "| threshold | benign bags alarmed | threat bags alarmed on the threat | threat bags with any alarm |",
            "|---|---|---|---|",
        ]
        seen = set()
        for o in report["kinds"][mk]["bag"]["operating"]:
            if o["threshold"] in seen:  # few benign bags: targets sharing a threshold
                continue
            seen.add(o["threshold"])
            out.append(
                f"| {o['threshold']:.6g} | {_f(o['benign_alarmed'], True)} | "
                f"{_f(o['threat_alarm_on_threat'], True)}"
                f"{_ci(_op_ci(o, 'threat_alarm_on_threat'), True)} | "
                f"{_f(o['threat_any_alarm'], True)}{_ci(_op_ci(o, 'threat_any_alarm'), True)} |"
            )
        d = report["kinds"][mk]["bag"].get("at_default_threshold")
        if d:
            out.append(
                f"| **{d['threshold']:.6g} (the model's default)** | "
                f"{_f(d['benign_alarmed'], True)} | {_f(d['threat_alarm_on_threat'], True)} | "
                f"{_f(d['threat_any_alarm'], True)} |"
            )
        by = [o for o in report["kinds"][mk]["bag"]["operating"] if o.get("on_threat_by_contents")]
        labels = sorted({c for o in by for c in o["on_threat_by_contents"]})
        if len(labels) > 1:
            out += [
                "",
                "Threat bags alarmed on the threat, by what they hold (a detector can carry "
                "every bag with one class and miss the bags holding only another):",
                "",
                "| benign bags alarmed (target) | " + " | ".join(_md(c) for c in labels) + " |",
                "|---" * (len(labels) + 1) + "|",
            ]
            for o in by:
                cells = []
                for c in labels:
                    r = o["on_threat_by_contents"].get(c)
                    cells.append(f"{r['alarmed_on_threat']} / {r['bags']}" if r else "–")
                out.append(f"| {_f(o['target_benign_alarm'], True)} | " + " | ".join(cells) + " |")
    t = report.get("timing_s", {})
    if t:
        out += ["", "Timing (s): " + ", ".join(f"{k} {v}" for k, v in t.items())]
    out += [
        "",
        "Figures: `roc_window_a.png`, `roc_window_b.png`, `roc_bags.png`, `montage.png`.",
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_rocs(evaluation: Evaluation, report: dict[str, Any], out_dir: Path) -> list[Path]:
    """One ROC PNG per window pool and one for bags, every score kind on it."""
    plt = _plt()
    written = []
    panels = [
        ("window_a", "Windows: pool (a) benign bags", "auc", "a"),
        ("window_b", "Windows: pool (b) threat-free windows of threat bags", "auc", "b"),
        ("bag", "Bags: peak of heat map", None, None),
    ]
    for key, title, _metric, pool in panels:
        fig, ax = plt.subplots(figsize=(5.5, 5), dpi=110)
        drawn = 0
        for name, curves in evaluation.curves.items():
            c = curves.get(key)
            if not c:
                continue
            k = report["kinds"][name]
            auc = k["window"][pool]["all"]["auc"] if pool else k["bag"]["auc_peak"]
            style = "--" if name in FLOOR_NAMES else "-"
            ax.plot(c["fpr"], c["tpr"], style, lw=1.4, label=f"{_kind_label(name)} ({_f(auc)})")
            drawn += 1
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
        ax.set(
            xlabel="false-alarm rate",
            ylabel="detection rate",
            title=title,
            xlim=(0, 1),
            ylim=(0, 1),
        )
        if drawn:
            ax.legend(fontsize=7, loc="lower right")
        path = out_dir / f"roc_{key.replace('window_', 'window_')}.png"
        if key == "bag":
            path = out_dir / "roc_bags.png"
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def plot_montage(
    evaluation: Evaluation, dataset: Dataset, out_dir: Path, n: int = MONTAGE_PER_ROW
) -> Path | None:
    """Worst misses (threat bags whose threat scores lowest) and worst false alarms
    (benign bags with the highest peak, else threat bags' highest peak off the threat),
    each with its heat map over the scan and the threat outlined."""
    kind = evaluation.montage_kind
    if not kind or kind not in evaluation.heat_small:
        return None
    bags = evaluation.bags[kind]
    scans = {s.name: s for s in dataset.scans}
    misses = sorted(bags["hit"], key=lambda k: bags["hit"][k])[:n]
    benign = [s.name for s in dataset.scans if s.kind == BENIGN]
    if benign:
        false = sorted(benign, key=lambda k: -bags["peak"][k])[:n]
        false_label = "benign bag, peak"
    else:
        false = sorted(bags["out"], key=lambda k: -bags["out"][k])[:n]
        false_label = "off-threat peak"
    rows = [
        ("worst miss: peak on threat", misses, bags["hit"]),
        (false_label, false, bags["peak"] if benign else bags["out"]),
    ]
    rows = [r for r in rows if r[1]]
    if not rows:
        return None
    shown = [evaluation.heat_small[kind][nm].values for _, names, _ in rows for nm in names]
    lo = float(np.percentile(np.concatenate([h.ravel() for h in shown]).astype(np.float32), 5))
    hi = float(max(np.max(h) for h in shown))
    plt = _plt()
    fig, axes = plt.subplots(
        len(rows), n, figsize=(3.2 * n, 2.8 * len(rows)), dpi=100, squeeze=False
    )
    for r, (label, names, values) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(names):
                continue
            s = scans[names[c]]
            ax.imshow(s.scan.rgb)
            hm = evaluation.heat_small[kind][names[c]]
            h = hm.values.astype(np.float32)
            # Cells beyond the image are padding: the extent keeps pixels registered.
            ext = (0, h.shape[1] * hm.cell, h.shape[0] * hm.cell, 0)
            ax.imshow(h, cmap="jet", alpha=0.45, vmin=lo, vmax=hi, extent=ext)
            ax.set_xlim(0, s.shape[1])
            ax.set_ylim(s.shape[0], 0)
            for b in s.annotation.boxes:
                ax.add_patch(
                    plt.Rectangle(
                        (b.x0, b.y0), b.x1 - b.x0, b.y1 - b.y0, fill=False, ec="lime", lw=1.2
                    )
                )
            if s.annotation.has_mask:
                from xrayscreen.evaluation.annotations import rescale_mask

                ax.contour(
                    rescale_mask(s.annotation.mask, s.shape) > 0,
                    levels=[0.5],
                    colors="cyan",
                    linewidths=0.8,
                )
            ax.set_title(f"{s.name}: {label} {values[names[c]]:.3g}", fontsize=7)
    fig.suptitle(
        f"{_kind_label(kind)}: worst misses (top) and worst false alarms (bottom)", fontsize=9
    )
    fig.tight_layout()
    path = out_dir / "montage.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(
    evaluation: Evaluation,
    dataset: Dataset,
    out_dir: str | Path,
    *,
    model: dict[str, Any] | None = None,
    command: list[str] | None = None,
    extra_settings: dict[str, Any] | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Write every output into ``out_dir`` (created); returns the report dict."""
    from xrayscreen.atomic import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(
        evaluation, dataset, model=model, command=command, extra_settings=extra_settings
    )
    atomic_write_text(out / "report.json", json.dumps(report, indent=1))
    atomic_write_text(out / "report.md", render_markdown(report))
    if plots:
        plot_rocs(evaluation, report, out)
        plot_montage(evaluation, dataset, out)
    return report
