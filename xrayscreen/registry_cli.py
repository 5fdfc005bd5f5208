"""``xrayscreen export``: list, export, import, activate and roll back registered models.

Examples::

    xrayscreen export list
    xrayscreen export export gan-20261129-101500-ab12cd34 station3.xrsmodel
    xrayscreen export import station3.xrsmodel
    xrayscreen export activate gan-20261129-101500-ab12cd34
    xrayscreen export rollback
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xrayscreen.errors import XrayscreenError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-commands of ``xrayscreen export``."""
    parser.add_argument("--root", help="registry folder (default: the per-user data dir)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="registered models (the active one is marked *)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser("export", help="write a model to a single .xrsmodel file")
    p.add_argument("model_id")
    p.add_argument("file")
    p = sub.add_parser(
        "import", help="validate and register a .xrsmodel file or a bundle folder (not activated)"
    )
    p.add_argument("file")
    p.add_argument("--activate", action="store_true", help="also make it the active model")
    p = sub.add_parser("activate", help="make a registered model the active one")
    p.add_argument("model_id")
    sub.add_parser("rollback", help="re-activate the previously active model")
    p = sub.add_parser("remove", help="delete a registered model (not the active one)")
    p.add_argument("model_id")


def run(args: argparse.Namespace) -> int:
    """Run one action; user errors print a message and return 1 (no traceback)."""
    from xrayscreen.registry import Registry

    try:
        reg = Registry(args.root)
        if args.action == "list":
            return _list(reg, args.json)
        if args.action == "export":
            path = reg.export(args.model_id, args.file)
            print(f"exported {args.model_id} to {path}")
        elif args.action == "import":
            src = Path(args.file)
            rec = reg.register(src) if src.is_dir() else reg.import_(src)
            print(f"imported {rec.model_id}")
            if args.activate:
                reg.activate(rec.model_id)
                print(f"active model: {rec.model_id}")
        elif args.action == "activate":
            rec = reg.activate(args.model_id)
            print(f"active model: {rec.model_id}")
        elif args.action == "rollback":
            rec = reg.rollback()
            print(f"rolled back; active model: {rec.model_id}")
        elif args.action == "remove":
            reg.remove(args.model_id)
            print(f"removed {args.model_id}")
    except (XrayscreenError, OSError) as exc:
        print(f"xrayscreen export {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def _list(reg, as_json: bool) -> int:
    records = reg.list()
    if as_json:
        print(json.dumps([r.to_dict() for r in records], indent=1))
        return 0
    if not records:
        print("no models (the bundled default model is missing from this install)")
        return 0
    for r in records:
        mark = "*" if r.is_active else " "
        kind = "default" if r.is_default else f"{r.n_scans if r.n_scans is not None else '?'} scans"
        ev = r.evaluation or {}
        far = ev.get("bag_far")
        far_txt = f"  bag FAR {far:.1%}" if isinstance(far, (int, float)) else ""
        print(f"{mark} {r.model_id}  {r.created}  {kind}{far_txt}")
    return 0
