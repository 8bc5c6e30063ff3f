"""``autodistill search`` and ``autodistill trials``: run/resume a search, inspect its store.

    autodistill search --space mobilebert --profile tpu_v4i --budget 40 --store runs/mb1
    autodistill search --candidates bench.csv --inputs hidden,layers,act --budget 40 --store runs/t1
    autodistill trials runs/mb1 [--csv runs/mb1/trials.csv]

``search`` is resumable: killed at any point, the same command picks up where it stopped.
The evaluator defaults to the synthetic landscape (`autodistill.search.evaluators`); a real one
is named as ``package.module:factory`` (called with no arguments, returning an `Evaluator`).
``--candidates FILE.csv`` searches the rows of a table instead of a space (`autodistill.candidates`).
"""
from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from typing import Any

from autodistill.errors import ConfigError, SearchError

logger = logging.getLogger(__name__)

__all__ = ["cmd_search", "cmd_trials", "register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("search", help="multi-objective architecture search (resumable)",
                              description="Bayesian multi-objective search of student architectures: accuracy "
                                          "from an evaluator, latency from the cost model. Rerun the same command "
                                          "to resume.")
    from autodistill.space import list_spaces

    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--space", help=f"search space: a preset ({', '.join(list_spaces())}) or a TOML file")
    what.add_argument("--candidates", metavar="FILE.csv",
                      help="search the rows of this CSV table instead of a space (one candidate a row; see --inputs, "
                           "--known, --objective)")
    p.add_argument("--inputs", metavar="COL,COL", help="with --candidates (required): the columns the searchers see; "
                                                       "numbers are scaled, other columns one-hot encoded")
    p.add_argument("--known", default="latency_s", metavar="COL",
                   help="with --candidates: the known objective's column (minimised, > 0; the latency's role)")
    p.add_argument("--objective", metavar="COL",
                   help="with --candidates: the black-box objective's column (maximised), read by the table evaluator "
                        "(default: accuracy with --evaluator table; none with an evaluator of your own)")
    p.add_argument("--categorical", metavar="COL,COL",
                   help="with --candidates: inputs to one-hot encode although their cells are numbers")
    p.add_argument("--profile", help="hardware profile of the latency objective (default: the space's)")
    p.add_argument("--budget", type=int, required=True, help="total trials to finish, counting earlier runs")
    p.add_argument("--store", required=True, help="run folder (runs/NAME) or .sqlite file")
    p.add_argument("--seed", type=int, default=0, help="seed of the searcher, the evaluator and the pool sample")
    p.add_argument("--searcher", default="engine", choices=("engine", "random", "nsga2"),
                   help="engine: Bayesian (BoTorch); random and nsga2: baselines")
    p.add_argument("--mode", default="pareto", choices=("pareto", "scalarized"),
                   help="engine objective: Pareto front (qLogNEHVI) or accuracy*(latency/target)^w (qLogNEI)")
    p.add_argument("--proposals", type=int, default=1, help="proposals per step (q), evaluated concurrently by "
                                                        "--workers")
    p.add_argument("--batch-size", type=int, dest="proposals", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=1, help="evaluations run concurrently (threads)")
    p.add_argument("--evaluator",
                   help="'synthetic', 'table' (the --candidates objective column) or package.module:factory "
                        "returning an Evaluator (default: synthetic for --space, table for --candidates)")
    p.add_argument("--noise-sd", type=float, default=0.003, help="synthetic evaluator noise (accuracy units)")
    p.add_argument("--n-initial", type=int, default=6, help="initial design size")
    p.add_argument("--min-accuracy", type=float, help="outcome constraint: accuracy >= this")
    p.add_argument("--feasibility-level", type=float, metavar="P",
                   help="engine: propose only candidates with P(latency <= budget) >= P under the profile's error "
                        "band (the budget: --target-latency-s, else the space's; default: the estimate only)")
    p.add_argument("--ref-accuracy", type=float, help="hypervolume reference accuracy (default: inferred)")
    p.add_argument("--ref-latency-s", type=float, help="hypervolume reference latency (default: inferred)")
    p.add_argument("--target-latency-s", type=float, help="scalarized mode latency target")
    p.add_argument("--batch", type=int, help="objective workload batch (default: the space's)")
    p.add_argument("--seq", type=int, help="objective workload sequence length (default: the space's)")
    p.add_argument("--max-candidates", type=int, default=1_000_000,
                   help="enumerate up to this many combinations, else sample this many")
    p.add_argument("--csv", help="also export all trials to this CSV (never over a store; over another existing "
                                 "file only with --force)")
    p.add_argument("--force", action="store_true", help="let --csv replace an existing file that is not a trials CSV")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_search)

    t = subparsers.add_parser("trials", help="table, Pareto set and hypervolume of a search store",
                              description="Print the trials of a search store and its Pareto set.")
    t.add_argument("store", help="search folder (its trials.sqlite), `autodistill run` folder (its search/) or "
                                 ".sqlite file")
    t.add_argument("--status", choices=("pending", "running", "completed", "failed"), help="only this status")
    t.add_argument("--limit", type=int, default=0, help="show only the last N trials (0: all)")
    t.add_argument("--csv", help="export all trials to this CSV (needs pandas; never over a store; over another "
                                 "existing file only with --force)")
    t.add_argument("--force", action="store_true", help="let --csv replace an existing file that is not a trials CSV")
    t.set_defaults(func=cmd_trials)


def cmd_search(args: argparse.Namespace) -> int:
    from autodistill.search.evaluators import describe_evaluator, load_evaluator
    from autodistill.search.runner import make_searcher, run_search
    from autodistill.search.store import check_csv_path, resolve_store_path
    from autodistill.space import build_pool, load_space

    db = resolve_store_path(args.store)  # a file as the folder, a run folder: refused before any work
    if args.csv:
        check_csv_path(args.csv, db, force=args.force)
    if args.candidates is not None:
        return _search_table(args)
    for flag, v in (("--inputs", args.inputs), ("--objective", args.objective), ("--categorical", args.categorical)):
        if v is not None:
            raise ConfigError(f"{flag} describes a candidate table; it needs --candidates FILE.csv")
    for flag, v in (("--batch", args.batch), ("--seq", args.seq)):
        if v is not None and not 1 <= v <= 1 << 20:  # 0 is not "the space's default"
            raise ConfigError(f"{flag} {v} must be an integer in 1..1048576 (leave it out for the space's default)")
    if args.min_accuracy is not None and not (math.isfinite(args.min_accuracy) and 0.0 <= args.min_accuracy <= 1.0):
        raise ConfigError(f"--min-accuracy {args.min_accuracy} must be an accuracy in [0, 1]")
    fl = args.feasibility_level
    if fl is not None and not (math.isfinite(fl) and 0.0 < fl < 1.0):
        raise ConfigError(f"--feasibility-level {fl} must be a probability in (0, 1)")
    space = load_space(args.space)
    profile = args.profile or space.objective.profile
    if profile is None:
        raise ConfigError(f"space {space.name!r} names no objective profile; pass --profile")
    pool = build_pool(space, profile, batch=args.batch, seq=args.seq, max_candidates=args.max_candidates,
                      seed=args.seed)
    print(f"space {space.name}: {len(pool):,} feasible candidates of {space.size:,} "
          f"({'sampled' if pool.sampled else 'enumerated'}); latency objective {profile} "
          f"batch {pool.batch} seq {pool.seq}")
    searcher = make_searcher(args.searcher, pool, _engine_config(args), seed=args.seed)
    spec = args.evaluator or "synthetic"
    evaluator = load_evaluator(spec, noise_sd=args.noise_sd, seed=args.seed, what="--evaluator")
    summary = run_search(space=space, evaluator=evaluator, store=args.store, budget=args.budget,
                         profile=profile, searcher=searcher, pool=pool, batch_size=args.proposals,
                         workers=args.workers, progress=not args.no_progress,
                         evaluator_settings=describe_evaluator(evaluator, spec))
    _print_summary(args, summary)
    return 0


def _engine_config(args: argparse.Namespace) -> Any:
    if args.searcher != "engine":
        return None
    from autodistill.search.engine import EngineConfig
    return EngineConfig(mode=args.mode, seed=args.seed, n_initial=args.n_initial, min_accuracy=args.min_accuracy,
                        ref_accuracy=args.ref_accuracy, ref_latency_s=args.ref_latency_s,
                        target_latency_s=args.target_latency_s, feasibility_level=args.feasibility_level)


def _search_table(args: argparse.Namespace) -> int:
    """``search --candidates FILE.csv``: the rows of a table, with the engine, random or nsga2."""
    from autodistill.candidates import load_candidates
    from autodistill.search.evaluators import describe_evaluator, load_evaluator
    from autodistill.search.runner import make_searcher, run_search

    for flag, v in (("--profile", args.profile), ("--batch", args.batch), ("--seq", args.seq)):
        if v is not None:
            raise ConfigError(f"{flag} sets the cost-model latency of a space; with --candidates the known "
                              f"objective is the table's column --known ({args.known}): leave {flag} out")
    if not args.inputs:
        raise ConfigError(f"--candidates {args.candidates}: name its input columns with --inputs COL,COL")
    spec = args.evaluator or "table"
    objective = args.objective if args.objective is not None or spec != "table" else "accuracy"
    table = load_candidates(args.candidates, inputs=args.inputs, known=args.known, objective=objective,
                            categorical=args.categorical)
    print(table.space.describe())
    searcher = make_searcher(args.searcher, table, _engine_config(args), seed=args.seed)
    evaluator = load_evaluator(spec, noise_sd=args.noise_sd, seed=args.seed, what="--evaluator", table=table)
    summary = run_search(space=table.space, pool=table, evaluator=evaluator, store=args.store, budget=args.budget,
                         searcher=searcher, batch_size=args.proposals, workers=args.workers,
                         progress=not args.no_progress, evaluator_settings=describe_evaluator(evaluator, spec))
    _print_summary(args, summary, known=table.space.known)
    return 0


def _print_summary(args: argparse.Namespace, summary: Any, known: str | None = None) -> None:
    print(f"{'resumed' if summary.resumed else 'new'} search: {summary.n_completed} completed, {summary.n_failed} "
          f"failed of budget {summary.budget} ({summary.n_evaluated_now} evaluated now, {summary.wall_s:.1f}s, "
          f"searcher {summary.suggest_s_total:.1f}s)")
    _print_pareto(summary.pareto, summary.hypervolume, summary.reference_point, known)
    print(f"store: {summary.store}")
    if args.csv:
        from autodistill.search.store import TrialStore
        with TrialStore(args.store) as st:
            print(f"wrote {st.to_csv(args.csv, force=args.force)}")


def _fmt(v: Any, spec: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec) if spec else str(v)


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda r: "  ".join(c.rjust(w) if i not in (2, 3) else c.ljust(w)  # noqa: E731
                               for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _trial_rows(trials: Sequence[Any], known: str | None = None) -> list[list[str]]:
    """Table rows; ``known`` (a table search's known objective column) is shown as it is, not as ms."""
    return [[str(t.trial_id), t.status, t.source, t.arch.short_name(),
             _fmt(t.num_parameters / 1e6 if t.num_parameters else None, ".2f"),
             _fmt(t.latency_s * (1 if known else 1e3) if t.latency_s else None, ".4g" if known else ".4f"),
             _fmt(t.accuracy, ".4f"), _fmt(t.predicted_accuracy, ".4f"), _fmt(t.eval_s, ".2f"),
             _fmt(t.suggest_s, ".2f"), (t.error or "").splitlines()[0][:40] if t.error else ""] for t in trials]


_HEADER = ["id", "status", "source", "arch", "params_M", "latency_ms", "accuracy", "predicted", "eval_s",
           "suggest_s", "error"]


def _header(known: str | None) -> list[str]:
    return _HEADER if known is None else [known if h == "latency_ms" else h for h in _HEADER]


def _print_pareto(front: Sequence[Any], hv: float, ref: tuple[float, float] | None, known: str | None = None) -> None:
    print(f"\nPareto set ({len(front)} trials; accuracy up, {known or 'cost-model latency'} down):")
    if front:
        print(_table(_trial_rows(front, known), _header(known)))
    if ref is not None:
        lat = f"latency {ref[1] * 1e3:.4f} ms" if known is None else f"{known} {ref[1]:.4g}"
        print(f"hypervolume {hv:.6g} in the (accuracy, -ln {known or 'latency_s'}) plane from reference point "
              f"(accuracy {ref[0]:.4f}, {lat})")


def cmd_trials(args: argparse.Namespace) -> int:
    from autodistill.search.store import TrialStore, check_csv_path

    if args.limit < 0:
        raise ConfigError(f"--limit {args.limit} must be >= 0 (0: all trials)")
    with TrialStore(args.store, create=False, readonly=True) as st:  # a store, a search's or a run's folder
        if args.csv:
            check_csv_path(args.csv, st.db_path, force=args.force)
        meta = st.meta()
        pinned = meta.get("pinned", {})
        trials = st.trials(args.status)
        if args.limit and args.limit > 0:
            trials = trials[-args.limit:]
        c = st.counts()
        table = pinned.get("space", {}).get("table")
        known = table.get("known") if isinstance(table, dict) else None
        name = f"candidate table ({table.get('n_rows')} rows)" if isinstance(table, dict) else \
            pinned.get("space", {}).get("name", "?")
        print(f"store {st.db_path}: space {name}, profile {pinned.get('profile')}, "
              f"searcher {pinned.get('searcher')}, seed {pinned.get('seed')}, budget {meta.get('budget')}, "
              f"cost model {meta.get('cost_model_version')}")
        print("trials: " + ", ".join(f"{k} {v}" for k, v in c.items()))
        print(_table(_trial_rows(trials, known), _header(known)))
        _print_pareto(st.pareto(), st.hypervolume(), st.reference_point(), known)
        if args.csv:
            try:
                print(f"wrote {st.to_csv(args.csv, force=args.force)}")
            except ImportError as e:
                raise SearchError(f"--csv needs pandas ({e})") from None
    return 0
