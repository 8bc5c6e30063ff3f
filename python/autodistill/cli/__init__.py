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

from autodistill.errors import AutodistillError, ConfigError

logger = logging.getLogger(__name__)

#: Subcommands that run long enough to report progress on stderr; each takes ``--no-progress`` (a test
#: checks), so that a script can pass it to all of them.
LONG_COMMANDS = ("calibrate", "verify", "search", "distill flash", "distill full", "run")

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


#: One example per subcommand, shown at the end of its ``--help`` (a test parses each one).
EXAMPLES = {
    "profiles": "autodistill profiles list",
    "profiles list": "autodistill profiles list",
    "profiles show": "autodistill profiles show tpu_v4i",
    "archs": "autodistill archs",
    "estimate": "autodistill estimate --profile tpu_v4i --arch mobilebert --batch 8 --seq 128",
    "table": "autodistill table --batch 1 --seq 128",
    "calibrate": "autodistill calibrate --device cpu --out profiles/my_cpu.toml",
    "rescale": "autodistill rescale --profile cpu_local --device cpu --out profiles/cpu_here.toml",
    "verify": "autodistill verify --profile cpu_local --device cpu --arch tinybert-4 --shape 1x128 --out v.json",
    "search": "autodistill search --space small --profile tpu_v4i --budget 24 --store runs/s1",
    "trials": "autodistill trials runs/s1 --limit 10 --csv runs/s1.csv",
    "distill": "autodistill distill flash --student tinybert-4 --kt-steps 30 --pd-steps 60",
    "distill flash": "autodistill distill flash --student tinybert-4 --student mobilebert-tiny --pd-steps 60",
    "distill full": "autodistill distill full --student tinybert-4 --checkpoint-dir ck/t4 --export hf/t4",
    "distill export": "autodistill distill export --checkpoint-dir ck/t4 --out hf/t4",
    "run": "autodistill run configs/shared_data.toml --out runs/goal",
}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; every option's help ends with its default unless it names one already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        d = action.default
        if (action.option_strings and text and "default" not in text and d is not argparse.SUPPRESS
                and d is not None and d is not False and not isinstance(action, argparse._CountAction)
                and not (isinstance(d, list) and not d)):
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autodistill", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    parser.add_argument("--version", action="version", version=f"autodistill {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in SUBCOMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    for name, p in _subcommands(parser):
        # -v after the subcommand too; counted apart, since a subcommand's default would replace the top one
        p.add_argument("-v", "--verbose", action="count", default=0, dest="sub_verbose",
                       help="more logging (-v info, -vv debug)")
        p.formatter_class = _HelpFormatter
        if name in EXAMPLES:
            p.epilog = ((p.epilog + "\n\n") if p.epilog else "") + f"example:\n  {EXAMPLES[name]}"
    return parser


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> list[tuple[str, argparse.ArgumentParser]]:
    """Every subcommand parser below ``parser`` with its name (``"distill flash"``), depth first."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, p in action.choices.items():
                full = f"{prefix}{name}"
                out.append((full, p))
                out += _subcommands(p, full + " ")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = args.verbose + getattr(args, "sub_verbose", 0)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        seed = getattr(args, "seed", None)
        if isinstance(seed, int) and not 0 <= seed < 2**32:  # every --seed feeds NumPy, JAX or torch generators
            raise ConfigError(f"--seed {seed} must be an integer in 0..{2**32 - 1}")
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
