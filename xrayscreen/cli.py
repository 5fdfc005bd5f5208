"""The ``xrayscreen`` command. ``gui`` is the default sub-command.

Each sub-command lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so
``xrayscreen scan`` never imports Qt and ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from xrayscreen import __version__

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "gui": ("xrayscreen.gui.app", "open the operator workstation (default)"),
    "scan": ("xrayscreen.inference.batch", "screen scans headless: heat maps, regions, CSV"),
    "evaluate": ("xrayscreen.evaluation.cli", "run the X-ray benchmark protocol on labelled bags"),
    "train": ("xrayscreen.training.cli", "fit a GANomaly model on curated normal scans"),
    "export": ("xrayscreen.registry_cli", "export / import model bundles"),
    "info": ("xrayscreen.info", "show versions, device and the active model"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xrayscreen", description="X-ray baggage screening with GANomaly heat maps."
    )
    parser.add_argument("--version", action="version", version=f"xrayscreen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``xrayscreen`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv = ["gui", *argv]
    if argv[0] in ("-h", "--help", "--version"):
        build_parser().parse_args(argv)
        return 0
    name, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(f"xrayscreen {name}: not available in this build ({exc})", file=sys.stderr)
            return 2
        raise
    parser = argparse.ArgumentParser(prog=f"xrayscreen {name}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    return int(module.run(args) or 0)
