"""Thin command-line interface over the library functions.

Each group of subcommands is a module of this package exposing
``register(subparsers)``: it turns flags into the typed arguments of library
functions and prints what they return; this file only wires the groups
together and turns errors into exit codes. Rules: the CLI holds no logic of
its own, and nothing outside this package imports it (the ``autodistill``
script and ``python -m autodistill`` enter through `main`).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from autodistill.errors import AutodistillError

logger = logging.getLogger(__name__)

#: Modules that contribute subcommands, in help order. Imported lazily (heavy stages stay unloaded).
SUBCOMMAND_MODULES = (
    "autodistill.cli.estimate",
    "autodistill.cli.calibrate",
    "autodistill.cli.verify",
    "autodistill.cli.search",
    "autodistill.cli.distill",
    "autodistill.cli.run",
)


def _version() -> str:
    from autodistill import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autodistill", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    parser.add_argument("--version", action="version", version=f"autodistill {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in SUBCOMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except AutodistillError as e:
        print(f"autodistill: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autodistill: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
