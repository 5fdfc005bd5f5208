"""DistributedDataParallel smoke test: 2 CPU processes (gloo) under torchrun train a tiny
model for a few steps; both ranks must end with identical weights, and rank 0 alone
writes the bundle."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from test_train_cli import make_bags  # same folder (pytest prepends it to sys.path)

from xrayscreen.model.bundle import load_bundle

WORKER = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from safetensors.torch import save_file
    from xrayscreen.training import TrainConfig, iter_train
    from xrayscreen.training.checkpoint import module_tensors

    bags, out, dump = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    cfg = TrainConfig(window=32, stride=16, ngf=8, ndf=8, nz=8, batch_size=8,
                      longer_side=128, epochs=2, val_fraction=0.34, device="cpu", threads=1)
    events = list(iter_train(cfg, [bags], out))
    res = events[-1].result
    import os; rank = os.environ["RANK"]  # the process group is closed by now
    steps = sum(1 for e in events if e.phase == "train")
    t = {**module_tensors(res.bundle.generator, "netg"),
         **module_tensors(res.bundle.discriminator, "netd")}
    save_file(t, str(dump / f"rank{rank}.safetensors"), metadata={"steps": str(steps)})
    """
)


@pytest.mark.slow
def test_two_cpu_processes_agree(tmp_path):
    bags = make_bags(tmp_path / "normal", n=6, seed=4)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(script), str(bags), str(tmp_path / "model"), str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    r0 = load_file(str(tmp_path / "rank0.safetensors"))
    r1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks disagree on {k}"
    # Training changed the weights (not two untouched initialisations) ...
    from xrayscreen.training.config import TrainConfig
    from xrayscreen.training.loop import GanomalyTrainer

    cfg = TrainConfig(window=32, ngf=8, ndf=8, nz=8, device="cpu")
    init = GanomalyTrainer(cfg, torch.device("cpu")).netg.state_dict()
    assert not torch.equal(init["encoder1.body.0.weight"], r0["netg.encoder1.body.0.weight"])
    # ... and only rank 0 wrote the bundle, which holds the same weights.
    b = load_bundle(tmp_path / "model", with_discriminator=True)
    for k, v in b.generator.state_dict().items():
        assert torch.equal(v, r0[f"netg.{k}"]), k
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "model", "normal", "rank0.safetensors", "rank1.safetensors", "worker.py",
    ]  # fmt: skip
