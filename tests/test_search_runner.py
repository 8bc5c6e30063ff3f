"""run_search: budgets, failures, resume after SIGKILL, replay, locking, CLI."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autodistill.errors import ConfigError, SearchError
from autodistill.search.baselines import NSGA2, RandomSearch
from autodistill.search.evaluators import SyntheticEvaluator
from autodistill.search.runner import _StoreLock, make_searcher, run_search
from autodistill.search.store import TrialStore, resolve_store_path
from autodistill.search.types import TrialResult
from autodistill.space import build_pool, load_space

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def space():
    return load_space("minilm")


@pytest.fixture(scope="module")
def pool(space):
    return build_pool(space)


def small_engine(pool, seed=0):
    from autodistill.search.engine import EngineConfig, SearchEngine
    return SearchEngine(pool, EngineConfig(seed=seed, mc_samples=16, acq_candidates=256, n_initial=4, fit_maxiter=40))


def test_budget_failures_and_nans_are_recorded(tmp_path, space, pool):
    ev = SyntheticEvaluator(seed=1, failure_rate=0.2, nan_rate=0.1)
    s = run_search(space=space, evaluator=ev, store=tmp_path / "r", budget=30, searcher=RandomSearch(pool, 0),
                   pool=pool)
    # the budget counts completed trials: failures are recorded beside them, not in their place
    assert s.n_completed == 30 and s.n_failed > 0 and not s.resumed
    with TrialStore(tmp_path / "r") as st:
        trials = st.trials()
        assert [t.trial_id for t in trials] == list(range(1, 31 + s.n_failed))
        errs = [t.error for t in trials if t.status == "failed"]
        assert any("TrialFailed" in e for e in errs) and any("non-finite" in e for e in errs)
        assert all(t.cost_model_version for t in trials)
        assert st.get_meta("pool")["size"] == len(pool)
    # extending the budget resumes; evaluators raising other errors are failures too
    class Broken:
        def evaluate(self, arch, trial_id):
            if trial_id % 2:
                raise ValueError("worker lost")
            return TrialResult(0.5)
    s2 = run_search(space=space, evaluator=Broken(), store=tmp_path / "r", budget=34, searcher=RandomSearch(pool, 0),
                    pool=pool)
    assert s2.resumed and s2.n_completed == 34 and s2.n_evaluated_now == 4 + (s2.n_failed - s.n_failed)
    with TrialStore(tmp_path / "r") as st:
        odd = [t for t in st.trials() if t.trial_id > 30 + s.n_failed and t.trial_id % 2]
        assert odd and all("ValueError: worker lost" in t.error for t in odd)


def test_a_fixed_rerun_after_failures_gets_its_whole_budget(tmp_path, space, pool):
    # the evaluator breaks: the search stops after 5 failures in a row with 3 trials completed ...
    class Flaky:
        def __init__(self, broken_after):
            self.n, self.broken_after = 0, broken_after

        def evaluate(self, arch, trial_id):
            self.n += 1
            if self.n > self.broken_after:
                raise ValueError("CUDA error")
            return TrialResult(0.5)

    with pytest.raises(SearchError, match="5 trials in a row failed"):
        run_search(space=space, evaluator=Flaky(3), store=tmp_path / "s", budget=10, searcher=RandomSearch(pool, 0),
                   pool=pool, max_consecutive_failures=5)
    # ... and the rerun with the evaluator fixed ends with all 10 completed; the 5 failures stay on record
    s = run_search(space=space, evaluator=Flaky(100), store=tmp_path / "s", budget=10, searcher=RandomSearch(pool, 0),
                   pool=pool, max_consecutive_failures=5)
    assert (s.n_completed, s.n_failed) == (10, 5)


def test_consecutive_failures_stop_the_search(tmp_path, space, pool):
    with pytest.raises(SearchError, match="in a row failed"):
        run_search(space=space, evaluator=SyntheticEvaluator(failure_rate=1.0), store=tmp_path / "f", budget=50,
                   searcher=RandomSearch(pool, 0), pool=pool, max_consecutive_failures=5)
    with TrialStore(tmp_path / "f") as st:
        assert st.counts()["failed"] == 5


def test_resume_refuses_other_settings_and_concurrent_runs(tmp_path, space, pool):
    run_search(space=space, evaluator=SyntheticEvaluator(), store=tmp_path / "a", budget=3,
               searcher=RandomSearch(pool, 0), pool=pool)
    with pytest.raises(SearchError, match="different seed"):
        run_search(space=space, evaluator=SyntheticEvaluator(), store=tmp_path / "a", budget=5,
                   searcher=RandomSearch(pool, 1), pool=pool)
    with _StoreLock(resolve_store_path(tmp_path / "a")):
        with pytest.raises(SearchError, match="another search"):
            run_search(space=space, evaluator=SyntheticEvaluator(), store=tmp_path / "a", budget=5,
                       searcher=RandomSearch(pool, 0), pool=pool)


def test_resume_refuses_another_profile_of_the_same_name(tmp_path, space, pool):
    import dataclasses

    run_search(space=space, evaluator=SyntheticEvaluator(), store=tmp_path / "a", budget=2,
               searcher=RandomSearch(pool, 0), pool=pool)
    # another tpu_v4i.toml on the profile path: same name, other terms, other latencies
    other = dataclasses.replace(pool, latency_s=pool.latency_s * 5.0)
    with pytest.raises(SearchError, match=r"different latency_digest .*profile's terms \(another file of the same"):
        run_search(space=space, evaluator=SyntheticEvaluator(), store=tmp_path / "a", budget=3,
                   searcher=RandomSearch(other, 0), pool=other)
    # a store written before latencies were pinned resumes, and is pinned from then on
    with TrialStore(tmp_path / "a") as st:
        meta = st.get_meta("pinned")
        del meta["latency_digest"]
        st.set_meta({"pinned": meta})
    run_search(space=space, evaluator=SyntheticEvaluator(), store=tmp_path / "a", budget=3,
               searcher=RandomSearch(pool, 0), pool=pool)
    with TrialStore(tmp_path / "a", create=False, readonly=True) as st:
        assert st.get_meta("pinned")["latency_digest"] and st.n_finished == 3


def test_parallel_workers_and_nsga2(tmp_path, space, pool):
    ev = SyntheticEvaluator(seed=0, delay_s=0.01)
    s = run_search(space=space, evaluator=ev, store=tmp_path / "w", budget=24, searcher=NSGA2(pool, 0, population=6),
                   pool=pool, batch_size=4, workers=4)
    assert s.n_completed == 24 and len(s.pareto) >= 1 and s.hypervolume > 0
    with TrialStore(tmp_path / "w") as st:
        trials = st.trials()
    assert {t.source for t in trials} >= {"random", "nsga2"}
    assert len({t.arch for t in trials}) == 24


def test_engine_resume_replays_an_uninterrupted_run(tmp_path, space, pool):
    """A run interrupted mid-batch and resumed proposes exactly what an uninterrupted run does."""
    ev = SyntheticEvaluator(seed=2, failure_rate=0.1)
    run_search(space=space, evaluator=ev, store=tmp_path / "full", budget=9, searcher=small_engine(pool), pool=pool,
               batch_size=2)

    class Interrupt:
        def evaluate(self, arch, trial_id):
            if trial_id == 7:
                raise KeyboardInterrupt  # like a kill: trial 7 stays 'running'
            return ev.evaluate(arch, trial_id)

    with pytest.raises(KeyboardInterrupt):
        run_search(space=space, evaluator=Interrupt(), store=tmp_path / "cut", budget=9, searcher=small_engine(pool),
                   pool=pool, batch_size=2)
    with TrialStore(tmp_path / "cut") as st:
        assert st.get(7).status == "running" and st.get(8).status == "pending"
    s = run_search(space=space, evaluator=ev, store=tmp_path / "cut", budget=9, searcher=small_engine(pool),
                   pool=pool, batch_size=2)
    assert s.resumed
    with TrialStore(tmp_path / "full") as a, TrialStore(tmp_path / "cut") as b:
        ta, tb = a.trials(), b.trials()
    assert [(t.arch, t.status, t.accuracy) for t in ta] == [(t.arch, t.status, t.accuracy) for t in tb]


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from autodistill.space import load_space, build_pool
    from autodistill.search.engine import EngineConfig, SearchEngine
    from autodistill.search.evaluators import SyntheticEvaluator
    from autodistill.search.runner import run_search
    store, budget, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    space = load_space("minilm")
    pool = build_pool(space)
    eng = SearchEngine(pool, EngineConfig(seed=0, mc_samples=16, acq_candidates=256, n_initial=4, fit_maxiter=40))
    run_search(space=space, evaluator=SyntheticEvaluator(seed=0, delay_s=delay, failure_rate=0.1), store=store,
               budget=budget, searcher=eng, pool=pool, batch_size=2)
""")


def test_sigkill_mid_run_loses_no_completed_trial(tmp_path, private_kernel_dir):
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    store = tmp_path / "killed"
    budget = 12
    # killed mid-run, possibly while building BoTorch's kernel: in a folder of its own
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"), AUTODISTILL_TORCH_EXTENSIONS_DIR=str(private_kernel_dir))
    proc = subprocess.Popen([sys.executable, str(script), str(store), str(budget), "0.3"], env=env)
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                with TrialStore(store, create=False, readonly=True) as st:
                    done = [t for t in st.trials() if t.finished]
            except SearchError:  # not created yet
                continue
            if len(done) >= 5:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
        else:
            pytest.fail("the run made no progress")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with TrialStore(store, create=False, readonly=True) as st:
        before = {t.trial_id: t for t in st.trials() if t.finished}
        assert len(before) < budget
    # the same command resumes and finishes the budget
    subprocess.run([sys.executable, str(script), str(store), str(budget), "0"], env=env, check=True, timeout=180)
    with TrialStore(store, create=False, readonly=True) as st:
        after = {t.trial_id: t for t in st.trials()}
        counts = st.counts()
    for tid, t in before.items():
        assert after[tid].status == t.status and after[tid].accuracy == t.accuracy and after[tid].arch == t.arch
    assert counts["completed"] == budget  # failed trials do not use up the budget
    assert counts["pending"] == counts["running"] == 0
    assert sorted(after) == list(range(1, budget + counts["failed"] + 1))


def test_make_searcher_names():
    with pytest.raises(SearchError, match="valid choices: engine, nsga2, random"):
        make_searcher("grid", None)  # type: ignore[arg-type]


# ------------------------------------------------------------------ CLI
def parser():
    from autodistill.cli import build_parser
    return build_parser()


def test_cli_search_and_trials(tmp_path, capsys):
    p = parser()
    store = tmp_path / "runs" / "cli"
    args = p.parse_args(["search", "--space", "minilm", "--profile", "cpu_generic", "--budget", "10", "--store",
                         str(store), "--n-initial", "8", "--no-progress", "--csv", str(tmp_path / "t.csv")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "new search: " in out and "Pareto set" in out and "hypervolume" in out
    assert (tmp_path / "t.csv").exists()
    # resumable: the same command with a larger budget goes on
    args = p.parse_args(["search", "--space", "minilm", "--profile", "cpu_generic", "--budget", "11", "--store",
                         str(store), "--n-initial", "8", "--no-progress"])
    assert args.func(args) == 0
    assert "resumed search: " in capsys.readouterr().out
    args = p.parse_args(["trials", str(store), "--limit", "3"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "completed 11" in out and "Pareto set" in out and "qlognehvi" in out


def test_cli_errors(tmp_path):
    p = parser()
    args = p.parse_args(["search", "--space", "nope", "--budget", "2", "--store", str(tmp_path / "x")])
    with pytest.raises(ConfigError, match="valid choices"):
        args.func(args)
    args = p.parse_args(["search", "--space", "minilm", "--budget", "2", "--store", str(tmp_path / "x"),
                         "--evaluator", "nomodule"])
    with pytest.raises(ConfigError, match="package.module:factory"):
        args.func(args)
    args = p.parse_args(["trials", str(tmp_path / "missing")])
    with pytest.raises(SearchError, match="no trial store"):
        args.func(args)


# ------------------------------------------------------------------ load_evaluator
_FACTORIES = '''
from autodistill.search.evaluators import SyntheticEvaluator


def make():
    return SyntheticEvaluator(noise_sd=0.0, seed=42)


def not_an_evaluator():
    return 3
'''


def test_load_evaluator_reads_synthetic_and_factory_specs(tmp_path, monkeypatch):
    from autodistill.search.evaluators import load_evaluator

    assert load_evaluator("synthetic", noise_sd=0.01, seed=7) == SyntheticEvaluator(noise_sd=0.01, seed=7)
    assert load_evaluator("synthetic") == SyntheticEvaluator(noise_sd=0.003, seed=0)
    (tmp_path / "autodistill_test_factories.py").write_text(_FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    # a factory is called with no arguments: noise_sd and seed are the synthetic evaluator's only
    assert load_evaluator("autodistill_test_factories:make", noise_sd=0.5, seed=1) == SyntheticEvaluator(0.0, 42)


@pytest.mark.parametrize("spec,phrase", [
    ("nomodule", "evaluator 'nomodule': expected 'synthetic' or package.module:factory"),
    (":make", "evaluator ':make': expected 'synthetic' or package.module:factory"),
    ("autodistill_test_factories:", "expected 'synthetic' or package.module:factory"),
    ("autodistill_no_such_module:make", "evaluator 'autodistill_no_such_module:make': cannot load it (No module"),
    ("autodistill_test_factories:missing", "'autodistill_test_factories:missing': cannot load it ("),
    ("autodistill_test_factories:not_an_evaluator",
     "'autodistill_test_factories:not_an_evaluator' returned int, which has no evaluate(arch, trial_id) method"),
])
def test_load_evaluator_names_a_bad_spec(tmp_path, monkeypatch, spec, phrase):
    from autodistill.search.evaluators import load_evaluator

    (tmp_path / "autodistill_test_factories.py").write_text(_FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as e:
        load_evaluator(spec)
    assert phrase in str(e.value)
    with pytest.raises(ConfigError, match="^--evaluator "):  # the CLI names its flag
        load_evaluator(spec, what="--evaluator")


@pytest.mark.parametrize("argv,phrase", [
    (["search", "--space", "minilm", "--budget", "2", "--store", "X", "--seq", "0"], "--seq 0 must be an integer"),
    (["search", "--space", "minilm", "--budget", "2", "--store", "X", "--batch", "0"], "--batch 0 must be an integer"),
    (["search", "--space", "minilm", "--budget", "2", "--store", "X", "--min-accuracy", "2"],
     "--min-accuracy 2.0 must be an accuracy in [0, 1]"),
    (["trials", "X", "--limit", "-5"], "--limit -5 must be >= 0"),
])
def test_cli_bad_numbers_are_refused_not_defaulted(tmp_path, capsys, argv, phrase):
    from autodistill import cli

    argv = [str(tmp_path / a) if a == "X" else a for a in argv]
    assert cli.main(argv) == 2
    assert phrase in capsys.readouterr().err
    assert not (tmp_path / "X").exists()
