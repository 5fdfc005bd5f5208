"""Per-epoch training checkpoints: safetensors + JSON, written atomically, no pickle.

A checkpoint is a directory ``epoch-NNNN/`` inside the work directory holding
``state.safetensors`` (network weights, batch-norm buffers, both Adam states
flattened to named tensors, the torch RNG state) and ``state.json`` (epoch,
history, optimiser hyper-parameters, settings, data fingerprint). It is assembled
in a temporary directory and renamed into place; then the pointer file
``latest.json`` is replaced atomically, then older checkpoints are removed. A
SIGKILL at any moment leaves either the previous or the new checkpoint usable.

Nothing here unpickles: Adam's state is all tensors plus JSON-able hyper-parameters.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from xrayscreen.atomic import atomic_write_json
from xrayscreen.errors import ConfigError

LATEST = "latest.json"
STATE_T = "state.safetensors"
STATE_J = "state.json"


@dataclass
class Checkpoint:
    """A loaded checkpoint: tensors by name plus the JSON state."""

    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]
    path: Path


def flatten_optimizer(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict, dict]:
    """Split an optimiser state into named tensors and a JSON-able rest."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{prefix}.state.{pid}.{k}"] = v.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    groups = json.loads(json.dumps(sd["param_groups"]))  # tuples -> lists, validates JSON
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict, prefix: str
) -> None:
    """Load what :func:`flatten_optimizer` produced back into ``opt``."""
    state: dict[int, dict[str, Any]] = {}
    head = prefix + ".state."
    for name, t in tensors.items():
        if name.startswith(head):
            pid, key = name[len(head) :].split(".", 1)
            state.setdefault(int(pid), {})[key] = t
    for pid, kv in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(kv)
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def module_tensors(net: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """State dict of ``net`` as named CPU tensors (copies)."""
    return {
        f"{prefix}.{k}": v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()
    }


def load_module(net: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str) -> None:
    """Load ``prefix.*`` tensors into ``net`` (strict)."""
    own = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    net.load_state_dict(own, strict=True)


def save_checkpoint(
    work_dir: Path, epoch: int, tensors: dict[str, torch.Tensor], state: dict[str, Any]
) -> Path:
    """Write checkpoint ``epoch`` atomically and point ``latest.json`` at it."""
    work_dir.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epoch:04d}"
    dest = work_dir / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=work_dir))
    try:
        save_file(tensors, str(tmp / STATE_T))
        (tmp / STATE_J).write_text(json.dumps(state, indent=1), encoding="utf-8")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if dest.exists():  # a stale copy from a run killed after rename, before the pointer
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_json(work_dir / LATEST, {"checkpoint": name, "epoch": epoch})
    for old in work_dir.glob("epoch-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    for stale in work_dir.glob(".epoch-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    return dest


def load_latest(work_dir: Path) -> Checkpoint | None:
    """The newest complete checkpoint in ``work_dir``, or ``None`` when there is none.

    Raises:
        ConfigError: if the pointer names a checkpoint that is missing or unreadable.
    """
    ptr = work_dir / LATEST
    if not ptr.is_file():
        return None
    try:
        name = json.loads(ptr.read_text(encoding="utf-8"))["checkpoint"]
        d = work_dir / str(name)
        state = json.loads((d / STATE_J).read_text(encoding="utf-8"))
        tensors = load_file(str(d / STATE_T))
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(
            f"cannot resume: checkpoint in {work_dir} is unreadable ({exc})"
        ) from None
    return Checkpoint(tensors=tensors, state=state, path=d)


def rng_tensor() -> torch.Tensor:
    """The CPU torch RNG state as a tensor (for the checkpoint)."""
    return torch.get_rng_state().clone()
