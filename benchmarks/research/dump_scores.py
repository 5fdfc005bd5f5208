"""Dump per-window raw scores of bundles on protocol scans, for offline calibration and
bag-level analysis (issue 7).

For every scan of the lists (prepared once, at the protocol scale) and every bundle,
stores the bundle's RAW window score (before per-scan normalisation and context), and
per scan the belt mask, the window labels, the grid and two floors (max density, mean
darkness), plus the threat pixels packed as bits. Analysis scripts then apply the
product's own ``scan_norm`` / ``context`` / ``Calibration`` to these arrays, so a
calibration or bag rule can be compared without re-running the network::

    python benchmarks/research/dump_scores.py --out /tmp/dump.npz \\
        --bundles /tmp/models/a /tmp/models/b \\
        --normal /tmp/sixray_lists/benign_val.txt --threat /tmp/sixray_lists/threat_val.txt \\
        --labels ../shared/data/sixray/threat/labels_yolo --masks ../shared/data/sixray/threat/masks

Prints one JSON line (counts, seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import cv2
import numpy as np
import torch

from xrayscreen.evaluation.annotations import AnnotationSource, parse_mask_classes
from xrayscreen.evaluation.dataset import ProtocolSettings, list_scans, prepare_dataset
from xrayscreen.evaluation.floors import floor_scores
from xrayscreen.evaluation.scorers import EngineScorer
from xrayscreen.imaging.representation import model_input
from xrayscreen.inference.windows import gather_windows, pad_with_air
from xrayscreen.model.bundle import load_bundle


@torch.no_grad()
def _dfeat(bundle, xw: torch.Tensor, batch: int = 256) -> np.ndarray:
    """Discriminator-feature residual per window: mean squared difference of D's last
    feature map (the one the adversarial feature-matching loss uses) on x and x_hat."""
    out = []
    for i in range(0, len(xw), batch):
        x = xw[i : i + batch]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            xh = bundle.generator(x).x_hat
            fx = bundle.discriminator.features(x).float()
            fh = bundle.discriminator.features(xh).float()
        out.append((fx - fh).pow(2).flatten(1).mean(1).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


@torch.no_grad()
def _embed(bundle, xw: torch.Tensor, batch: int = 512) -> np.ndarray:
    """The feature memory's standardised embedding of each window (pooled G_E map at the
    memory's level), float16: what the k-NN compares, for heads trained on it."""
    from xrayscreen.model import feature_bank

    bank = bundle.feature_bank
    body = feature_bank.encoder_body(bundle.generator.eval())
    out = []
    for i in range(0, len(xw), batch):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            f = feature_bank.encoder_map(body, xw[i : i + batch], bank.level)
        out.append(((feature_bank.pool(f) - bank.mean) / bank.std).half().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(bank.mean)), np.float16)


def _zoomed_windows(scan, sc, g, idx: torch.Tensor, zoom: float) -> torch.Tensor:
    """For each protocol window ``idx``, the product's zoomed-out window (same size,
    same centre, on the scan shrunk ``zoom`` times; ``xrayscreen.inference.zoom``)."""
    from xrayscreen.inference.zoom import ZoomedView

    view = ZoomedView(scan.scan, g, zoom, sc.bundle.input.representation, sc._air)
    return view.windows(idx).contiguous()


def _rerender(rgb: np.ndarray, gamma: float, hue: float) -> np.ndarray:
    """``rgb`` (H, W, 3 uint8) with transmission raised to ``gamma`` and hue rotated by
    ``hue`` degrees (OpenCV HSV, saturation and value kept)."""
    out = rgb
    if gamma != 1.0:
        out = np.clip(255.0 * (out.astype(np.float32) / 255.0) ** gamma + 0.5, 0, 255)
        out = out.astype(np.uint8)
    if hue:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + int(round(hue / 2.0))) % 180).astype(
            np.uint8
        )
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return np.ascontiguousarray(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--bundles", nargs="+", required=True)
    p.add_argument("--normal", nargs="+", default=[])
    p.add_argument("--threat", nargs="+", default=[])
    p.add_argument("--labels")
    p.add_argument("--masks")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--flip",
        choices=("none", "h", "v"),
        default="none",
        help="score every window mirrored (test-time augmentation research)",
    )
    p.add_argument(
        "--dfeat",
        action="store_true",
        help="also store the discriminator-feature residual mean((D(x) - D(x_hat))^2)",
    )
    p.add_argument(
        "--kind",
        default=None,
        help="score these bundles with another score kind (same params), e.g. feature_knn",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a numeric score parameter of every bundle (e.g. k=1)",
    )
    p.add_argument(
        "--embed",
        action="store_true",
        help="also store each window's feature-memory embedding (float16; TIP-head research)",
    )
    p.add_argument(
        "--embed-only",
        action="store_true",
        help="store the embeddings and skip the scores (they are then zeros)",
    )
    p.add_argument(
        "--zoom",
        type=float,
        default=1.0,
        help="score, for every protocol window, the concentric 64 px window of the scan "
        "shrunk by this factor (it sees zoom x zoom times the area; multi-scale research)",
    )
    p.add_argument(
        "--longer-side",
        type=int,
        default=None,
        help="protocol scale other than 800 px (scale-sensitivity research; implies --force-scale)",
    )
    p.add_argument(
        "--force-scale",
        action="store_true",
        help="accept bundles whose working scale is not the protocol's (with --zoom)",
    )
    p.add_argument(
        "--gamma",
        type=float,
        default=1.0,
        help="render every scan as another scanner might: transmission T -> T ** gamma "
        "(> 1 denser-looking, < 1 thinner; labels unchanged; rendering-robustness research)",
    )
    p.add_argument(
        "--hue",
        type=float,
        default=0.0,
        help="rotate every scan's false-colour hue by this many degrees (another palette)",
    )
    a = p.parse_args(argv)
    dims = {"none": None, "h": (-1,), "v": (-2,)}[a.flip]
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    source = AnnotationSource(
        labels=a.labels, masks=a.masks, mask_classes=parse_mask_classes("gun,knife")
    )
    settings = ProtocolSettings()
    if a.longer_side:
        settings = ProtocolSettings(longer_side=a.longer_side)
        a.force_scale = True
    ds = prepare_dataset(
        list_scans(a.normal), list_scans(a.threat), source, settings, progress=False
    )
    if a.gamma != 1.0 or a.hue:
        for sc in ds.scans:
            sc.scan = dataclasses.replace(sc.scan, rgb=_rerender(sc.scan.rgb, a.gamma, a.hue))
            sc.release()
    loaded = [load_bundle(b) for b in a.bundles]
    if a.kind:
        from xrayscreen.model.bundle import ScoreSpec

        for b in loaded:
            b.score = ScoreSpec(kind=a.kind, norm=b.score.norm, params=dict(b.score.params))
    for item in a.set:
        key, _, value = item.partition("=")
        for b in loaded:
            b.score.params = {**b.score.params, key: float(value)}
            if b.feature_bank is not None and key == "k":
                b.feature_bank.k = int(float(value))
    scorers = [
        EngineScorer(
            b,
            device="cpu",
            force_protocol_scale=a.force_scale,
            protocol_longer_side=settings.longer_side,
        )
        for b in loaded
    ]
    nets = [load_bundle(b, with_discriminator=True) for b in a.bundles] if a.dfeat else []
    for n in nets:
        n.generator.eval()
        n.discriminator.eval()
    out: dict[str, np.ndarray] = {}
    names, kinds, shas = [], [], []
    for i, scan in enumerate(ds.scans):
        g, lab = scan.grid, scan.labels
        key = f"s{i}"
        names.append(scan.name)
        kinds.append(scan.kind)
        shas.append(scan.sha256)
        out[f"{key}_grid"] = np.array([g.height, g.width, g.window, g.stride, g.rows, g.cols])
        out[f"{key}_belt"] = lab.belt
        out[f"{key}_pos"] = lab.positives
        out[f"{key}_neg"] = lab.negatives
        out[f"{key}_cls"] = lab.cls
        fl = floor_scores(scan.rgb_padded(), g)
        out[f"{key}_maxd"] = np.asarray(fl["max_density"], dtype=np.float32)
        out[f"{key}_meand"] = np.asarray(fl["mean_darkness"], dtype=np.float32)
        if scan.annotated:
            tp = scan.annotation.threat_pixels()
            if tp is not None:
                out[f"{key}_tpx"] = np.packbits(tp.ravel())
        idx = torch.nonzero(~torch.from_numpy(lab.belt)).flatten()
        for j, sc in enumerate(scorers):
            raw = np.zeros(len(g), dtype=np.float32)
            if len(idx):
                if a.zoom != 1.0:
                    xw = _zoomed_windows(scan, sc, g, idx, a.zoom)
                else:
                    x = torch.from_numpy(
                        model_input(
                            scan.scan, sc.bundle.input.representation, sc.bundle.input.scale
                        )
                    )
                    padded = pad_with_air(x, g, sc._air)
                    xw = gather_windows(padded, g, idx)
                if dims is not None:
                    xw = xw.flip(dims)
                if not a.embed_only:
                    o = sc.engine.score_windows(xw, residual=False)
                    raw[idx.numpy()] = o.latent.float().cpu().numpy()
                if a.embed or a.embed_only:
                    e = _embed(sc.bundle, xw)
                    emb = np.zeros((len(g), e.shape[1]), np.float16)
                    emb[idx.numpy()] = e
                    out[f"{key}_m{j}_emb"] = emb
                if nets:
                    df = np.zeros(len(g), dtype=np.float32)
                    df[idx.numpy()] = _dfeat(nets[j], xw)
                    out[f"{key}_m{j}_dfeat"] = df
            out[f"{key}_m{j}"] = raw
        scan.release()
    out["names"] = np.array(names)
    out["kinds"] = np.array(kinds)
    out["sha256"] = np.array(shas)
    out["bundles"] = np.array(a.bundles)
    np.savez_compressed(a.out, **out)
    print(
        json.dumps(
            {
                "scans": len(ds.scans),
                "bundles": len(scorers),
                "skipped": len(ds.skipped),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
