"""Subcommand of the whole job: ``autodistill run [CONFIG.toml]``."""
from __future__ import annotations

import argparse

from autodistill.run.stages import STAGES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the whole job: search -> full distillation -> export -> confirm -> report",
                       description="Run (or resume) model exploration with flash distillation, full distillation "
                                   "of the Pareto set, export, on-device confirmation and the report. Without "
                                   "CONFIG the embedded default runs (MiniLM teacher, built-in corpus, CPU).")
    p.add_argument("config", nargs="?", default=None, help="TOML config (default: the embedded default)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<run.name>); the same folder resumes")
    p.add_argument("--budget", type=int, default=None, help="override [search] budget (trials)")
    p.add_argument("--executor", choices=("local", "ray"), default=None, help="override [search] executor")
    p.add_argument("--address", default=None, help="Ray cluster HOST:PORT (default: a local instance on 127.0.0.1)")
    p.add_argument("--workers", type=int, default=None, help="override [search] workers (parallel trials)")
    p.add_argument("--stop-after", choices=STAGES, default=None, help="end the run after this stage")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--print-default-config", action="store_true", help="print the embedded default config and exit")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from autodistill.run import default_config_text, load_config, run

    if args.print_default_config:
        print(default_config_text().strip())
        return 0
    cfg = load_config(args.config, overrides={"search": {"budget": args.budget, "executor": args.executor,
                                                         "address": args.address, "workers": args.workers}})
    res = run(cfg, args.out, progress=not args.no_progress, stop_after=args.stop_after)
    print(f"run folder: {res.run_dir}  ({res.wall_time_s:.0f} s; stages: {', '.join(res.stages_run)})")
    if res.report_md.is_file():
        print(res.report_md.read_text())
        print(f"report: {res.report_html}")
    return 0
