"""The model registry: every bundle a station has trained or imported, and which one is active.

Layout under ``xrayscreen.paths.data_dir() / "models"``::

    models/
      <model_id>/model.json            the bundle's own description (the record)
      <model_id>/weights.safetensors
      <model_id>/evaluation.json       optional: held-out bag false-alarm rate, detection rate
      active.json                      {"model_id": ..., "previous": [...], "activated": ...}

There is no separate index file to get out of step with the bundles: each bundle's
``model.json`` *is* its registry record. The only mutable shared state is the
``active.json`` pointer, replaced atomically (temp file + ``os.replace``), so a
crash or a killed process leaves either the old or the new pointer, never half of
one. Nothing activates a model by itself; only :meth:`Registry.activate` and
:meth:`Registry.rollback` move the pointer.

The bundled default model (``resources/default_model/``) is always available: when
nothing is active, or the active bundle is missing or corrupt,
:func:`active_bundle_path` falls back to it.

Exchange files (``.xrsmodel``) are plain zip archives holding exactly the two
bundle files. Importing one never executes code: members are checked (names, no
paths, sizes, compression ratio) before anything is extracted, and the extracted
bundle goes through :func:`xrayscreen.model.bundle.load_bundle`, which refuses
pickles and inconsistent tensors.
"""

from __future__ import annotations

import datetime as _dt
import importlib.resources
import json
import os
import re
import shutil
import struct
import tempfile
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xrayscreen.atomic import atomic_write_json
from xrayscreen.errors import BundleError
from xrayscreen.model.bundle import FORMAT, META, WEIGHTS, load_bundle
from xrayscreen.paths import data_dir

ACTIVE = "active.json"
EVALUATION = "evaluation.json"
EXPORT_SUFFIX = ".xrsmodel"
HISTORY_LIMIT = 20

# Import limits: a bundle's JSON is a few hundred kB at most (calibration tables);
# weights of the largest sensible GANomaly (ngf 128, fp32) are well under 1 GiB.
MAX_META_BYTES = 8 * 1024 * 1024
MAX_WEIGHTS_BYTES = 1024 * 1024 * 1024
MAX_COMPRESSION_RATIO = 200  # zip-bomb guard: safetensors barely compresses

# Model ids become directory names: no separators, no "..", nothing hidden.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class ModelRecord:
    """What the registry knows about one model, read from its files (weights not loaded).

    Attributes:
        model_id: Unique id (also the directory name for registered models).
        path: Bundle directory.
        created: ISO-8601 UTC creation time from ``model.json``.
        n_scans: Number of scans in the training set, when recorded.
        fingerprint: Training-set fingerprint (hash of the scans' sha256s), when recorded.
        calibration: Summary: n_windows, default_threshold, target_window_far,
            target_bag_far, bag_rule, n_bags.
        evaluation: Contents of ``evaluation.json`` (None if never evaluated).
        architecture: The GANomaly config dict.
        input: The input spec dict.
        is_default: True for the bundled default model.
        is_active: True for the model :func:`active_bundle_path` resolves to.
    """

    model_id: str
    path: Path
    created: str = ""
    n_scans: int | None = None
    fingerprint: str | None = None
    calibration: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    architecture: dict[str, Any] = field(default_factory=dict)
    input: dict[str, Any] = field(default_factory=dict)
    is_default: bool = False
    is_active: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view (for ``xrayscreen export list --json``)."""
        d = dict(self.__dict__)
        d["path"] = str(self.path)
        return d


# ------------------------------------------------------------------------- module API
def default_bundle_path() -> Path:
    """The bundled default model's directory (``xrayscreen.resources/default_model``)."""
    return Path(str(importlib.resources.files("xrayscreen.resources") / "default_model"))


def active_bundle_path(root: str | os.PathLike[str] | None = None) -> Path:
    """Directory of the model to use now: the active registered one, else the bundled default.

    Falls back to the default when nothing is active or when the active bundle is
    missing or visibly corrupt (unreadable ``model.json`` or a weights file that is
    not safetensors). It never raises for a bad pointer: the operator keeps a model.
    """
    return Registry(root).active_path()


def list_models(root: str | os.PathLike[str] | None = None) -> list[ModelRecord]:
    """Records of the bundled default and every registered model (see :meth:`Registry.list`)."""
    return Registry(root).list()


def activate(model_id: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Make ``model_id`` active (see :meth:`Registry.activate`); returns its bundle directory."""
    return Registry(root).activate(model_id).path


def rollback(root: str | os.PathLike[str] | None = None) -> Path:
    """Re-activate the previous model (see :meth:`Registry.rollback`); returns its directory."""
    return Registry(root).rollback().path


def safe_model_id(model_id: str) -> str:
    """Return ``model_id`` if it is usable as a directory name, else raise BundleError."""
    if not isinstance(model_id, str) or not _ID_RE.match(model_id) or ".." in model_id:
        raise BundleError(f"model id {model_id!r} is not a valid id (letters, digits, . _ -)")
    return model_id


# ---------------------------------------------------------------------------- registry
class Registry:
    """Registered model bundles and the active-model pointer.

    Args:
        root: Registry directory; default ``data_dir() / "models"``.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else data_dir() / "models"
        self.root.mkdir(parents=True, exist_ok=True)

    # -- reading ------------------------------------------------------------------
    def list(self, *, include_default: bool = True) -> list[ModelRecord]:
        """All readable registered models, oldest first, plus the bundled default (first).

        Bundles whose ``model.json`` cannot be read are skipped (they are not
        usable); temp directories of interrupted writes (hidden names) are ignored.
        """
        active = self.active_id()
        records: list[ModelRecord] = []
        default = _record_or_none(default_bundle_path(), is_default=True)
        if include_default and default is not None:
            records.append(default)
        registered = []
        for d in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if d.name.startswith(".") or not d.is_dir():
                continue
            rec = _record_or_none(d)
            if rec is not None and rec.model_id == d.name:
                registered.append(rec)
        registered.sort(key=lambda r: (r.created, r.model_id))
        records.extend(registered)
        effective = self._effective_id(active, default)
        for r in records:
            r.is_active = r.model_id == effective
        return records

    def get(self, model_id: str) -> ModelRecord:
        """The record of ``model_id`` (a registered model or the bundled default).

        Raises:
            BundleError: unknown id or unreadable bundle.
        """
        path = self.path_of(model_id)
        rec = _read_record(path, is_default=path == default_bundle_path())
        rec.is_active = self.active_path() == path
        return rec

    def path_of(self, model_id: str) -> Path:
        """Bundle directory of ``model_id``. Raises BundleError when it is not known."""
        if isinstance(model_id, str) and _ID_RE.match(model_id) and ".." not in model_id:
            d = self.root / model_id
            if (d / META).is_file():
                return d
        default = default_bundle_path()
        if _meta_id(default) == model_id:
            return default
        raise BundleError(f"no registered model with id {model_id!r}")

    def active_id(self) -> str | None:
        """Id in the active pointer, or None when nothing was ever activated (or it is unreadable)."""
        ptr = self._read_pointer()
        mid = ptr.get("model_id")
        return mid if isinstance(mid, str) else None

    def history(self) -> list[str]:
        """Previously active ids, most recent first (what :meth:`rollback` walks back through)."""
        prev = self._read_pointer().get("previous", [])
        return [p for p in prev if isinstance(p, str)] if isinstance(prev, list) else []

    def active_path(self) -> Path:
        """See :func:`active_bundle_path`."""
        mid = self.active_id()
        if mid is not None:
            try:
                path = self.path_of(mid)
            except BundleError:
                return default_bundle_path()
            if _looks_intact(path):
                return path
        return default_bundle_path()

    # -- writing ------------------------------------------------------------------
    def register(self, bundle_dir: str | os.PathLike[str], *, copy: bool = True) -> ModelRecord:
        """Add a bundle directory to the registry (validated by loading it first).

        Copies (or, with ``copy=False``, moves) ``model.json``, ``weights.safetensors``
        and, if present, ``evaluation.json`` into ``root/<model_id>/``. The new
        directory appears in one ``os.replace``; an interrupted register leaves only
        a hidden temp directory that :meth:`list` ignores.

        Raises:
            BundleError: invalid bundle, unsafe id, or a different model already
                registered under the same id.
        """
        src = Path(bundle_dir)
        bundle = load_bundle(src)  # validates JSON + safetensors + shapes; never unpickles
        model_id = safe_model_id(bundle.model_id)
        dest = self.root / model_id
        if dest.exists():
            if _same_files(src, dest):
                return self.get(model_id)
            raise BundleError(f"a different model is already registered as {model_id!r}")
        if model_id == _meta_id(default_bundle_path()):
            raise BundleError(f"{model_id!r} is the id of the bundled default model")
        tmp = Path(tempfile.mkdtemp(prefix=f".{model_id}.", suffix=".tmp", dir=self.root))
        try:
            names = [META, WEIGHTS] + ([EVALUATION] if (src / EVALUATION).is_file() else [])
            for name in names:
                if copy:
                    shutil.copyfile(src / name, tmp / name)
                else:
                    shutil.move(str(src / name), str(tmp / name))
                with open(tmp / name, "rb") as fh:
                    os.fsync(fh.fileno())
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if not copy:
            shutil.rmtree(src, ignore_errors=True)
        return self.get(model_id)

    def set_evaluation(self, model_id: str, evaluation: dict[str, Any]) -> None:
        """Store (atomically replace) a model's ``evaluation.json``. Not for the bundled default."""
        path = self.path_of(model_id)
        if path == default_bundle_path():
            raise BundleError("the bundled default model is read-only")
        atomic_write_json(path / EVALUATION, evaluation)

    def activate(self, model_id: str, *, previous: str | None = None) -> ModelRecord:
        """Make ``model_id`` the active model (after checking it loads).

        The pointer file is replaced with one ``os.replace``; the previously
        effective model goes to the front of the history for :meth:`rollback`.

        Args:
            model_id: Registered model (or the bundled default's id).
            previous: The model actually in use when it differs from the pointer
                (e.g. one the GUI loaded from a folder and registered); it becomes
                what :meth:`rollback` returns to. Must be registered.

        Raises:
            BundleError: unknown id, or a bundle that does not load.
        """
        path = self.path_of(model_id)
        load_bundle(path)  # refuse to point at something that will not load
        current = self._effective_id(self.active_id(), _record_or_none(default_bundle_path()))
        chain = []
        if previous is not None:
            self.path_of(previous)  # must be known, or rollback could not return to it
            chain.append(previous)
        if current is not None:
            chain.append(current)
        history: list[str] = []
        for mid in [*chain, *self.history()]:
            if mid != model_id and mid not in history:
                history.append(mid)
        self._write_pointer(model_id, history)
        return self.get(model_id)

    def rollback(self) -> ModelRecord:
        """Re-activate the most recent previous model that still exists (one click in the GUI).

        Raises:
            BundleError: when there is nothing to roll back to.
        """
        previous = self.history()
        while previous:
            candidate, previous = previous[0], previous[1:]
            try:
                path = self.path_of(candidate)
            except BundleError:
                continue  # removed since; keep walking back
            if _looks_intact(path):
                self._write_pointer(candidate, previous)
                return self.get(candidate)
        raise BundleError("there is no previous model to roll back to")

    def remove(self, model_id: str) -> None:
        """Delete a registered model. The active model and the bundled default cannot be removed.

        Raises:
            BundleError: default, active, or unknown id.
        """
        path = self.path_of(model_id)
        if path == default_bundle_path():
            raise BundleError("the bundled default model cannot be removed")
        if self.active_path() == path:
            raise BundleError(
                f"{model_id} is the active model; activate another one before removing it"
            )
        # Rename first so a half-deleted directory is never listed as a model.
        trash = self.root / f".{model_id}.removing-{uuid.uuid4().hex[:6]}"
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    # -- exchange -----------------------------------------------------------------
    def export(self, model_id: str, file: str | os.PathLike[str]) -> Path:
        """Write ``model_id`` as a single ``.xrsmodel`` zip with just the two bundle files.

        The archive is written to a temp file and moved into place, so a failed
        export never leaves a truncated file under the requested name.
        """
        src = self.path_of(model_id)
        dest = Path(file)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        try:
            with zipfile.ZipFile(tmp, "w") as zf:
                zf.write(src / META, META, compress_type=zipfile.ZIP_DEFLATED)
                zf.write(src / WEIGHTS, WEIGHTS, compress_type=zipfile.ZIP_STORED)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest

    def import_(self, file: str | os.PathLike[str]) -> ModelRecord:
        """Validate an ``.xrsmodel`` file and register the bundle it holds (not activated).

        Raises:
            BundleError: not a zip, members other than exactly ``model.json`` and
                ``weights.safetensors``, paths, oversize or zip-bomb members, a
                pickle / torch.save file, or a bundle that fails to load.
        """
        src = Path(file)
        if not src.is_file():
            raise BundleError(f"no such file: {src}")
        _refuse_pickle_file(src)
        if not zipfile.is_zipfile(src):
            raise BundleError(f"{src.name} is not an xrayscreen model file (.xrsmodel zip)")
        tmp = Path(tempfile.mkdtemp(prefix=".import.", suffix=".tmp", dir=self.root))
        try:
            try:
                with zipfile.ZipFile(src) as zf:
                    _check_members(zf, src.name)
                    for name in (META, WEIGHTS):
                        _extract_limited(zf, name, tmp / name)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
                raise BundleError(f"{src.name} is corrupt: {exc}") from None
            meta_id = _meta_id(tmp)
            if meta_id is None:
                load_bundle(tmp)  # raises the precise BundleError
            safe_model_id(str(meta_id))
            return self.register(tmp, copy=False)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- internals ----------------------------------------------------------------
    @property
    def pointer_path(self) -> Path:
        """The ``active.json`` file."""
        return self.root / ACTIVE

    def _read_pointer(self) -> dict[str, Any]:
        try:
            data = json.loads(self.pointer_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_pointer(self, model_id: str, previous: list[str]) -> None:
        atomic_write_json(
            self.pointer_path,
            {
                "model_id": model_id,
                "previous": previous[:HISTORY_LIMIT],
                "activated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            },
        )

    def _effective_id(self, active: str | None, default: ModelRecord | None) -> str | None:
        """Id of the model in use: the active one if intact, else the default's."""
        path = self.active_path()
        if active is not None and path != default_bundle_path():
            return active
        return default.model_id if default is not None else None


# ------------------------------------------------------------------------- helpers
def _meta_id(bundle_dir: Path) -> str | None:
    try:
        meta = json.loads((bundle_dir / META).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return None
    mid = meta.get("model_id")
    return mid if isinstance(mid, str) else None


def _read_record(path: Path, *, is_default: bool = False) -> ModelRecord:
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path / META} cannot be read: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model_id" not in meta:
        raise BundleError(f"{path} is not an xrayscreen bundle")
    prov = meta.get("provenance") or {}
    data = prov.get("data") if isinstance(prov.get("data"), dict) else {}
    n_scans = _first(prov, data, keys=("n_scans", "n_train_scans", "scans"))
    fingerprint = _first(prov, data, keys=("fingerprint", "data_fingerprint", "dataset_sha256"))
    cal = meta.get("calibration")
    cal_summary = None
    if isinstance(cal, dict):
        cal_summary = {
            "n_windows": cal.get("n_windows"),
            "default_threshold": cal.get("default_threshold"),
            "target_window_far": cal.get("target_window_far"),
            "target_bag_far": cal.get("target_bag_far"),
            "bag_rule": cal.get("bag_rule", "empirical"),
            "n_bags": len(cal.get("bag_maxima") or []),
        }
    evaluation = None
    try:
        ev = json.loads((path / EVALUATION).read_text(encoding="utf-8"))
        evaluation = ev if isinstance(ev, dict) else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        evaluation = None
    arch = meta.get("architecture") or {}
    return ModelRecord(
        model_id=str(meta["model_id"]),
        path=path,
        created=str(meta.get("created", "")),
        n_scans=int(n_scans) if isinstance(n_scans, (int, float)) else None,
        fingerprint=str(fingerprint) if fingerprint is not None else None,
        calibration=cal_summary,
        evaluation=evaluation,
        architecture=dict(arch.get("config") or {}),
        input=dict(meta.get("input") or {}),
        is_default=is_default,
    )


def _first(*dicts: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for d in dicts:
        for k in keys:
            if d.get(k) is not None:
                return d[k]
    return None


def _record_or_none(path: Path, *, is_default: bool = False) -> ModelRecord | None:
    try:
        return _read_record(path, is_default=is_default)
    except BundleError:
        return None


def _looks_intact(path: Path) -> bool:
    """Cheap integrity check (no tensor loading): readable meta and a plausible safetensors header."""
    if _meta_id(path) is None:
        return False
    w = path / WEIGHTS
    try:
        size = w.stat().st_size
        with open(w, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                return False
            (n,) = struct.unpack("<Q", head)
            if n == 0 or 8 + n > size:
                return False
            header = json.loads(fh.read(n).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, struct.error):
        return False
    if not isinstance(header, dict):
        return False
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return 8 + n + (max(ends) if ends else 0) == size


def _same_files(a: Path, b: Path) -> bool:
    try:
        return all((a / n).read_bytes() == (b / n).read_bytes() for n in (META, WEIGHTS))
    except OSError:
        return False


def _refuse_pickle_file(src: Path) -> None:
    with open(src, "rb") as fh:
        head = fh.read(2)
    if head in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        raise BundleError(
            f"{src.name} is a pickle file; pickles can run code when loaded and are refused"
        )


def _check_members(zf: zipfile.ZipFile, name: str) -> None:
    infos = zf.infolist()
    names = [i.filename for i in infos]
    if any(n.endswith(".pkl") or "/data/" in n or n.endswith("data.pkl") for n in names):
        raise BundleError(
            f"{name} is a torch.save / pickle archive; such files can run code when loaded "
            "and are refused. Only .xrsmodel files exported by xrayscreen can be imported."
        )
    if sorted(names) != sorted([META, WEIGHTS]) or len(names) != 2:
        bad = [n for n in names if n not in (META, WEIGHTS)] or names
        raise BundleError(
            f"{name} must hold exactly {META} and {WEIGHTS}; found unexpected or duplicate "
            f"members {bad[:5]}"
        )
    for info in infos:
        if info.is_dir() or "/" in info.filename or "\\" in info.filename:
            raise BundleError(f"{name}: member {info.filename!r} has a path; refused")
        if info.flag_bits & 0x1:
            raise BundleError(f"{name}: encrypted members are not supported")
        limit = MAX_META_BYTES if info.filename == META else MAX_WEIGHTS_BYTES
        if info.file_size > limit:
            raise BundleError(f"{name}: {info.filename} is too large ({info.file_size} bytes)")
        if info.compress_size and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO:
            raise BundleError(f"{name}: {info.filename} has an implausible compression ratio")


def _extract_limited(zf: zipfile.ZipFile, member: str, dest: Path) -> None:
    """Extract one member, never writing more than its limit (declared sizes can lie)."""
    limit = MAX_META_BYTES if member == META else MAX_WEIGHTS_BYTES
    written = 0
    with zf.open(member) as src, open(dest, "wb") as out:
        while chunk := src.read(1 << 20):
            written += len(chunk)
            if written > limit:
                raise BundleError(f"{member} is larger than the {limit}-byte limit")
            out.write(chunk)
