"""Scoring-engine benchmark: naive reference vs the engine, matmul peak, start-up, RSS.

In ONE run, on the SAME generator weights (GANomaly ngf 64, nz 100, 64x64x3;
random init unless ``--model`` names a bundle: speed does not depend on the
values):

(a) naive reference: model input in numpy, crop each (foreground) window in numpy,
    fp32, batch 1, the generator as built (NCHW, batch-norm layers);
(b) the engine end to end (file read -> heat map) at stride 16 and 32 on a
    simulated 2000x1000 bag (native scale) and on SIXray dev scans resized to
    longer side 800 (``--sixray``, default ``../shared/data/sixray`` when present);
    eager bf16/fp32 and, unless ``--no-compile``, ``torch.compile``;
(c) the machine's bf16 and fp32 matmul peak (square matmuls, median).

Reported: windows/s (forward only and end to end), seconds per scan, speed-up over
(a), the fraction of (c) reached (FLOPs per window counted from the layers), start-up
(import, bundle load, engine preparation, warm-up, compile) separately, and the peak
RSS of a separate process scoring an 8000x2000 scan.

Prints one JSON object. Medians over ``--repeats``. The CPU here is shared with
other jobs: compare ratios measured within one run.

    python benchmarks/bench_engine.py [--device cpu|cuda] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T_IMPORT0 = time.perf_counter()
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from xrayscreen.imaging.readers import open_scan  # noqa: E402
from xrayscreen.imaging.representation import WorkingScale, model_input  # noqa: E402
from xrayscreen.inference.engine import ScoringEngine, air_value  # noqa: E402
from xrayscreen.inference.windows import WindowGrid, belt_mask, pad_to_grid  # noqa: E402
from xrayscreen.model.bundle import InputSpec, ModelBundle, load_bundle, save_bundle  # noqa: E402
from xrayscreen.model.ganomaly import GANomalyConfig, build_generator  # noqa: E402
from xrayscreen.model.score import latent_score  # noqa: E402

IMPORT_S = time.perf_counter() - T_IMPORT0
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_forward import generator_flops  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SIXRAY = REPO.parent / "shared" / "data" / "sixray"


# ------------------------------------------------------------------------ helpers
def matmul_peak(dtype: torch.dtype, device: torch.device, n: int, repeats: int) -> float:
    """Median GFLOP/s of an n x n x n matmul."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    times = []
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def naive_reference(scan, bundle, stride: int, max_windows: int) -> dict:
    """Crop windows in numpy, one at a time, fp32, plain generator. Times up to
    ``max_windows`` foreground windows and extrapolates to the scan."""
    t0 = time.perf_counter()
    x = model_input(scan, bundle.input.representation, bundle.input.scale)
    c, h, w = x.shape
    grid = WindowGrid(h, w, bundle.input.window, stride)
    ph, pw = grid.padded_shape
    xp = np.empty((c, ph, pw), np.float32)
    xp[:] = np.asarray(air_value(bundle.input.representation), np.float32)[:, None, None]
    xp[:, :h, :w] = x
    grey = ((x.mean(axis=0) + 1.0) / 2.0) if bundle.input.representation == "rgb" else None
    fg = np.ones(len(grid), bool)
    if grey is not None:  # same belt rule as the engine
        g = pad_to_grid(torch.from_numpy(grey), grid, 1.0)
        fg = ~belt_mask(g, grid).numpy()
    prep = time.perf_counter() - t0
    gen = bundle.generator.eval()
    dev = next(gen.parameters()).device  # each crop goes up on its own: the naive way
    win = grid.window
    origins = grid.origins()[fg]
    take = origins[:max_windows]
    t = time.perf_counter()
    with torch.inference_mode():
        for y, xo in take:
            crop = torch.from_numpy(np.ascontiguousarray(xp[None, :, y : y + win, xo : xo + win]))
            out = gen(crop.to(dev))
            latent_score(out.z, out.z_hat).item()
    dt = time.perf_counter() - t
    rate = len(take) / dt
    return {
        "windows_timed": len(take),
        "windows_per_s": rate,
        "n_scored": int(fg.sum()),
        "s_per_scan": prep + int(fg.sum()) / rate,
    }


def engine_scans(
    engine, files: list[Path], stride: int, repeats: int, probe=None, flops: int = 0
) -> dict:
    """End-to-end (read -> heat map) over ``files``, ``repeats`` passes.

    ``probe()`` (if given) runs right before each pass and returns
    ``(bf16_matmul_gflops, naive_windows_per_s)`` measured at that moment, so the
    ratios of each pass compare figures taken under the same CPU load.
    """
    per_scan, fwd_rates, e2e_rates, frac, speedup = [], [], [], [], []
    probes = []
    n_scored = 0
    for _ in range(repeats):
        mm, naive = probe() if probe else (None, None)
        run_tot, run_fwd, run_n = 0.0, 0.0, 0
        for f in files:
            t = time.perf_counter()
            scan = open_scan(f)
            res = engine.score_scan_sync(scan, stride=stride)
            dt = time.perf_counter() - t
            per_scan.append(dt)
            run_tot += dt
            run_fwd += res.timings["forward_s"]
            run_n += res.n_scored
        n_scored = run_n
        fwd_rates.append(run_n / run_fwd)
        e2e_rates.append(run_n / run_tot)
        if mm:
            probes.append({"bf16_matmul_gflops": mm, "naive_windows_per_s": naive})
            frac.append(fwd_rates[-1] * flops / 1e9 / mm)
            if naive:
                speedup.append(e2e_rates[-1] / naive)
    out = {
        "scans": len(files),
        "stride": stride,
        "windows_scored_per_pass": n_scored,
        "s_per_scan_median": statistics.median(per_scan),
        "forward_windows_per_s": statistics.median(fwd_rates),
        "end_to_end_windows_per_s": statistics.median(e2e_rates),
        "per_pass_forward_windows_per_s": fwd_rates,
    }
    if frac:
        out["fraction_of_bf16_matmul_peak_forward_same_time"] = statistics.median(frac)
        out["probes"] = probes
    if speedup:
        out["speedup_vs_naive_same_time"] = statistics.median(speedup)
    return out


def rss_child(model_dir: str, png: str, stride: int, device: str, threads: int) -> dict:
    """Read and score a big scan file in a fresh process; report its peak RSS.

    Peak RSS is the process's high-water mark, imports included: ``VmHWM`` from
    ``/proc/self/status`` where available. ``getrusage().ru_maxrss`` is reported too,
    but on Linux a child inherits the parent's high-water mark across fork + exec
    (so it reads at least this big benchmark process's RSS) and is not used.
    """
    code = f"""
import json, resource, time
def mb():
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
import torch
torch.set_num_threads({threads})
from xrayscreen.imaging.readers import open_scan
from xrayscreen.inference.engine import ScoringEngine
from xrayscreen.model.bundle import load_bundle
after_import = mb()
eng = ScoringEngine(load_bundle({model_dir!r}), {device!r})
eng.warmup()
after_model = mb()
t = time.perf_counter()
scan = open_scan({png!r})
after_read = mb()
res = eng.score_scan_sync(scan, stride={stride})
print(json.dumps({{"scan_shape_hw": list(scan.shape), "stride": {stride},
    "n_windows": len(res.grid), "n_scored": res.n_scored,
    "seconds": time.perf_counter() - t,
    "peak_rss_after_imports_mb": after_import, "peak_rss_after_model_mb": after_model,
    "peak_rss_after_read_mb": after_read, "peak_rss_mb": mb(),
    "ru_maxrss_mb_inherited": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_big_scan(rgb: np.ndarray, path: Path) -> Path:
    """Tile a 1000 x 2000 bag 2 x 4 into a 2000 x 8000 PNG (a long belt scan)."""
    big = np.ascontiguousarray(np.tile(rgb, (2, 4, 1)))
    cv2.imwrite(str(path), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    return path


def regions_timing(maps: dict[str, np.ndarray], repeats: int = 15) -> dict:
    """Median ms of threshold_mask and extract_regions on 2000x1500 maps, at the
    map's 50/90/99/99.9th percentiles as thresholds."""
    from xrayscreen.inference.regions import extract_regions, threshold_mask

    out = {}
    for name, heat in maps.items():
        heat = cv2.resize(heat.astype(np.float32), (2000, 1500), interpolation=cv2.INTER_LINEAR)
        rows = []
        for q in (50, 90, 99, 99.9):
            t = float(np.percentile(heat, q))
            tm, tr = [], []
            for _ in range(repeats):
                a = time.perf_counter()
                threshold_mask(heat, t)
                tm.append(time.perf_counter() - a)
                a = time.perf_counter()
                regs = extract_regions(heat, t)
                tr.append(time.perf_counter() - a)
            rows.append(
                {
                    "percentile": q,
                    "n_regions": len(regs),
                    "threshold_mask_ms": 1000 * statistics.median(tm),
                    "extract_regions_ms": 1000 * statistics.median(tr),
                }
            )
        out[name] = rows
    return out


def sixray_files(root: Path, n: int) -> list[Path]:
    normal = sorted((root / "normal").glob("*.jpg"))[: n - n // 2]
    threat = sorted((root / "threat" / "images").glob("*.jpg"))[: n // 2]
    return normal + threat


# ------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default=None, help="bundle to take weights from")
    ap.add_argument("--sixray", default=str(DEFAULT_SIXRAY))
    ap.add_argument("--sixray-scans", type=int, default=6)
    ap.add_argument("--naive-windows", type=int, default=120)
    ap.add_argument("--probe-windows", type=int, default=40)
    ap.add_argument("--matmul-n", type=int, default=4096)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--variants", default=None, help="e.g. eager_bf16,compiled_bf16")
    ap.add_argument("--sim-size", default="1000,2000", help="H,W of the simulated bag")
    ap.add_argument("--no-rss", action="store_true")
    ap.add_argument("--only-regions", action="store_true", help="just the regions timing")
    ap.add_argument("--rss-stride", type=int, default=16)
    ap.add_argument("--strides", default="16,32")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="bench_engine_"))
    out: dict = {
        "benchmark": "scoring_engine",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg_at_start": os.getloadavg(),
    }

    # Same weights for every variant: one generator, two input specs (native / 800 px).
    t = time.perf_counter()
    if args.model:
        src = load_bundle(args.model)
        cfg, gen = src.config, src.generator
    else:
        cfg = GANomalyConfig(isize=64, nc=3, nz=100, ngf=64, ndf=64)
        torch.manual_seed(0)
        gen = build_generator(cfg)
    native = save_bundle(
        ModelBundle(config=cfg, generator=gen, input=InputSpec(scale=WorkingScale())),
        tmp / "native",
    )
    protocol = save_bundle(
        ModelBundle(
            config=cfg, generator=gen, input=InputSpec(scale=WorkingScale(longer_side=800))
        ),
        tmp / "protocol",
    )
    flops = generator_flops(cfg)
    out["model"] = {"ngf": cfg.ngf, "nz": cfg.nz, "flops_per_window": flops}
    out["startup"] = {"import_s": IMPORT_S}
    t = time.perf_counter()
    b_native = load_bundle(native)
    out["startup"]["bundle_load_s"] = time.perf_counter() - t
    b_protocol = load_bundle(protocol)

    # Test scans: simulated 2000 x 1000 bag written as PNG (read back by open_scan).
    from xrayscreen.imaging.simulator import simulate_bag

    sim_hw = tuple(int(v) for v in args.sim_size.split(","))
    sim = simulate_bag(0, size=sim_hw).scan
    sim_png = tmp / "sim.png"
    out["sim_scan_hw"] = list(sim_hw)
    cv2.imwrite(str(sim_png), cv2.cvtColor(sim.rgb, cv2.COLOR_RGB2BGR))
    sim_scan = open_scan(sim_png)
    six_root = Path(args.sixray)
    six = sixray_files(six_root, args.sixray_scans) if six_root.is_dir() else []
    out["sixray_scans"] = [p.name for p in six]
    if args.only_regions:
        res = ScoringEngine(b_native, device).score_scan_sync(sim_scan, stride=32)
        out["regions_2000x1500"] = regions_timing({"engine_latent_map": res.latent_map})
        print(json.dumps(out, indent=1))
        return out

    # (c) matmul peak
    out["matmul_gflops"] = {
        "fp32": matmul_peak(torch.float32, device, args.matmul_n, 5),
        "bf16": matmul_peak(torch.bfloat16, device, args.matmul_n, 5),
    }

    # (a) naive reference
    b_native.generator.to(device)
    naive = naive_reference(sim_scan, b_native, 16, args.naive_windows)
    out["naive_reference"] = {"scan": f"sim {sim_hw[1]}x{sim_hw[0]} stride 16", **naive}

    # (b) engine variants; before every pass a quick bf16 matmul and naive probe
    # measure the machine at that moment (other jobs share this CPU).
    def probe(with_naive: bool):
        def run():
            mm = matmul_peak(torch.bfloat16, device, 2048, 3)
            nv = (
                naive_reference(sim_scan, b_native, 16, args.probe_windows)["windows_per_s"]
                if with_naive
                else None
            )
            return mm, nv

        return run

    variants = [
        ("eager_bf16", {"autocast": "auto"}),
        # A/B of the oneDNN conv+activation fusion (on by default on CPU).
        ("eager_bf16_unfused", {"autocast": "auto", "fuse_act": False}),
        ("eager_fp32", {"autocast": "off"}),
    ]
    if not args.no_compile:
        variants.append(("compiled_bf16", {"autocast": "auto", "compile": True}))
    if args.variants:
        keep = set(args.variants.split(","))
        variants = [v for v in variants if v[0] in keep]
    strides = [int(s) for s in args.strides.split(",")]
    out["engine"] = {}
    for name, kw in variants:
        t = time.perf_counter()
        eng_n = ScoringEngine(b_native, device, **kw)
        prep = time.perf_counter() - t
        warm = eng_n.warmup()
        eng_p = ScoringEngine(b_protocol, device, **kw)
        eng_p.warmup()
        v: dict = {
            "settings": eng_n.describe(),
            "startup": {"engine_prepare_s": prep, "warmup_or_compile_s": warm},
        }
        for stride in strides:
            if name == "eager_fp32" and stride != strides[0]:
                continue  # fp32 shown once, for the bf16 gain
            rec = {
                "sim_native": engine_scans(
                    eng_n, [sim_png], stride, args.repeats, probe(stride == 16), flops
                )
            }
            if six and name != "eager_fp32":
                rec["sixray_longer_side_800"] = engine_scans(
                    eng_p, six, stride, args.repeats, probe(False), flops
                )
            v[f"stride_{stride}"] = rec
            print(json.dumps({name: {f"stride_{stride}": rec}}), file=sys.stderr, flush=True)
        out["engine"][name] = v

    # Alarm regions on 2000 x 1500 maps: the engine's map of the simulated bag, and a
    # harsher smooth-noise field with hundreds of components.
    res = ScoringEngine(b_native, device).score_scan_sync(sim_scan, stride=16)
    rng = np.random.default_rng(0)
    noise = cv2.GaussianBlur(rng.standard_normal((1500, 2000)).astype(np.float32), (0, 0), 12)
    out["regions_2000x1500"] = regions_timing(
        {"engine_latent_map": res.latent_map, "smooth_noise_sigma12": noise}
    )

    if not args.no_rss:
        big = write_big_scan(sim.rgb, tmp / "big_8000x2000.png")
        out["rss_8000x2000"] = rss_child(
            str(native), str(big), args.rss_stride, str(device), args.threads
        )
    out["load_avg_at_end"] = os.getloadavg()
    out["self_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
