"""Search benchmark on a recorded real landscape: every method through `run_search` on the table.

    .venv/bin/python benchmarks/bench_search_real.py [--table benchmarks/data/landscape_small.csv]
        [--objective acc_120] [--seeds 5] [--budget 40] [--methods engine,engine-q4,random,nsga2,tpe,
        optuna-nsga2,optuna-gp] [--json out.json]

The table (`benchmarks/record_landscape.py`) holds flash-distilled students of the ``small`` space with
their held-out MLM accuracy (``--objective``) and cost-model latency (``latency_s``). Each method
searches the table's rows as a candidate table (`autodistill.candidates.load_candidates`, inputs:
the space's searched fields) with `TableEvaluator`, which reveals a row's accuracy only when the row
is evaluated; every method runs through `run_search` with a temporary store, so timings include it.

Metric: hypervolume, in the (accuracy, -ln latency_s) plane, of the rows evaluated so far as a
fraction of the whole table's hypervolume (reference point: the table front's nadir moved out by 10%
of its range, `autodistill.search.pareto.reference_point`; the searchers are not told it). Printed
per method: the median over seeds of the fraction after 10/20/30 evaluations, evaluations to reach
90% and 95% (median, and per seed), and the searcher's median wall time per step.

Methods: ``engine`` (`SearchEngine`, q = 1), ``engine-q4`` (batches of 4), ``random``, ``nsga2``
(autodistill's), and Optuna's multi-objective ``tpe``, ``optuna-nsga2`` and ``optuna-gp`` (GPSampler)
when optuna is installed: each suggests one value per input column from the table's values; a
combination that is not an unused row is told to Optuna as failed and redrawn (up to 50 times, then a
random unused row), at no evaluation's cost.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TABLE = REPO / "benchmarks" / "data" / "landscape_small.csv"
INPUTS = ("num_hidden_layers", "hidden_size", "intra_bottleneck_size", "num_attention_heads",
          "intermediate_size", "num_feedforward_networks")
METHODS = ("engine", "engine-q4", "random", "nsga2", "tpe", "optuna-nsga2", "optuna-gp")


class OptunaTableSearcher:
    """An Optuna sampler over a candidate table's input columns (see the module docstring)."""

    def __init__(self, table, kind: str, seed: int) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        samplers = {"tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True),
                    "optuna-nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed, population_size=10),
                    "optuna-gp": lambda: optuna.samplers.GPSampler(seed=seed)}
        self.name = kind
        self.table, self.seed = table, seed
        self.study = optuna.create_study(directions=["maximize", "minimize"], sampler=samplers[kind]())
        self._open: dict[int, object] = {}
        self._used = np.zeros(len(table), dtype=bool)
        self._rng = np.random.default_rng(seed)
        self._choices = [sorted(set(col)) for col in zip(*table.input_values)]
        self._row_of = {tuple(v): i for i, v in enumerate(table.input_values)}

    def observe(self, trial) -> None:
        i = self.table.index_of(trial.arch)
        if i is None:
            return
        self._used[i] = True
        ot = self._open.pop(i, None) if trial.finished else None
        if ot is not None:
            import optuna
            if trial.ok:
                self.study.tell(ot, [trial.accuracy, math.log(trial.latency_s)])
            else:
                self.study.tell(ot, state=optuna.trial.TrialState.FAIL)

    def suggest_detailed(self, n: int):
        import optuna

        from autodistill.search.types import Suggestion

        out = []
        names = self.table.space.inputs
        for _ in range(n):
            idx, ot = None, None
            for _try in range(50):
                ot = self.study.ask()
                vec = tuple(ot.suggest_categorical(c, ch) for c, ch in zip(names, self._choices))
                pos = self._row_of.get(vec)
                if pos is not None and not self._used[pos]:
                    idx = pos
                    break
                self.study.tell(ot, state=optuna.trial.TrialState.FAIL)
                ot = None
            if idx is None:
                idx = int(self._rng.choice(np.flatnonzero(~self._used)))
            self._used[idx] = True
            if ot is not None:
                self._open[idx] = ot
            out.append(Suggestion(arch=self.table.arch(idx), source=self.name, pool_index=idx,
                                  latency_s=float(self.table.latency_s[idx]), num_parameters=None))
        return out


def run_method(method: str, table, seed: int, budget: int, tmp: Path):
    from autodistill.search.engine import EngineConfig
    from autodistill.search.evaluators import TableEvaluator
    from autodistill.search.runner import make_searcher, run_search
    from autodistill.search.store import TrialStore

    if method.startswith("engine"):
        searcher = make_searcher("engine", table, EngineConfig(seed=seed))
    elif method in ("random", "nsga2"):
        searcher = make_searcher(method, table, seed=seed)
    else:
        searcher = OptunaTableSearcher(table, method, seed)
    store = tmp / f"{method}-{seed}"
    t0 = time.perf_counter()
    run_search(space=table.space, evaluator=TableEvaluator(table), store=store, budget=budget, searcher=searcher,
               pool=table, batch_size=4 if method == "engine-q4" else 1)
    wall = time.perf_counter() - t0
    with TrialStore(store) as st:
        trials = st.trials()
    rows = [table.index_of(t.arch) for t in trials if t.ok]
    steps: dict[int, float] = {}
    for t in trials:  # one suggest_s per batch; for the engine only its BO steps (the design is free)
        if not method.startswith("engine") or t.source == "qlognehvi":
            steps.setdefault(t.batch_id, t.suggest_s or 0.0)
    return rows, list(steps.values()), wall


def evals_to(curve: np.ndarray, frac: float) -> float:
    hit = np.flatnonzero(curve >= frac)
    return float(hit[0] + 1) if len(hit) else math.inf


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(DEFAULT_TABLE))
    ap.add_argument("--objective", default="acc_120")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=40)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from autodistill.candidates import load_candidates
    from autodistill.search.pareto import hypervolume, objective_matrix, pareto_mask, reference_point

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"--methods: unknown {bad}; choices: {', '.join(METHODS)}")
    try:
        import optuna  # noqa: F401
    except ImportError:
        skipped = [m for m in methods if m in ("tpe", "optuna-nsga2", "optuna-gp")]
        if skipped:
            print(f"optuna is not installed: skipping {', '.join(skipped)}")
        methods = [m for m in methods if m not in skipped]
    table = load_candidates(args.table, inputs=INPUTS, known="latency_s", objective=args.objective)
    acc, lat = table.objective_values, table.latency_s
    ok = np.isfinite(acc)
    mask = pareto_mask(objective_matrix(np.where(ok, acc, -np.inf), lat)) & ok
    ra, rl = reference_point(acc[mask], lat[mask])
    hv_true = hypervolume(acc[mask], lat[mask], ra, rl)
    print(f"table {args.table}: {len(table)} rows ({int(ok.sum())} scored), objective {args.objective}, "
          f"front of {int(mask.sum())}, reference point (acc {ra:.4f}, latency {rl * 1e3:.4f} ms)")

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as td:
        for m in methods:
            curves, steps, walls = [], [], []
            for s in range(args.seeds):
                rows, st, wall = run_method(m, table, s, args.budget, Path(td))
                a, lt = acc[rows], lat[rows]
                curve = np.array([hypervolume(a[:k], lt[:k], ra, rl) for k in range(1, len(rows) + 1)]) / hv_true
                curves.append(curve)
                steps += st
                walls.append(wall)
            e90 = [evals_to(c, 0.90) for c in curves]
            e95 = [evals_to(c, 0.95) for c in curves]
            at = {k: statistics.median(float(c[min(k, len(c)) - 1]) for c in curves) for k in (10, 20, 30)}
            results[m] = {"hv_at": at, "evals_to_90": e90, "evals_to_95": e95,
                          "median_evals_to_90": statistics.median(e90), "median_evals_to_95": statistics.median(e95),
                          "step_s_median": statistics.median(steps) if steps else 0.0,
                          "wall_s_median": statistics.median(walls), "curves": [c.tolist() for c in curves]}
            print(f"{m:13s} HV@10 {at[10]:.3f} @20 {at[20]:.3f} @30 {at[30]:.3f} | to 90%: median "
                  f"{statistics.median(e90):g} {e90} | to 95%: median {statistics.median(e95):g} {e95} | "
                  f"step {results[m]['step_s_median']:.3f} s", flush=True)
    others = {m: r["median_evals_to_90"] for m, r in results.items() if not m.startswith("engine")}
    if "engine" in results and others:
        best = min(others, key=others.get)
        e = results["engine"]
        ratio = others[best] / e["median_evals_to_90"] if e["median_evals_to_90"] else math.nan
        print(f"goal 1 (>= 95% HV within 30 evaluations on every seed): engine "
              f"{sum(x <= 30 for x in e['evals_to_95'])}/{len(e['evals_to_95'])} seeds")
        print(f"goal 2 (>= 2x fewer evaluations to 90% than the best other method): engine "
              f"{e['median_evals_to_90']:g} vs {best} {others[best]:g}: {ratio:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"table": args.table, "objective": args.objective,
                                               "hv_true": hv_true, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
