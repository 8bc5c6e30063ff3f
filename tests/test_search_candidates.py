"""Search over any candidate table (issue 16): a CSV row is a candidate, its inputs what the searchers see, one
column a known objective (the latency's role) and one the black box, read from the table by `TableEvaluator`
or scored by an evaluator of your own. The engine, random, nsga2, the store and resume are those of a space."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from autodistill.candidates import TableRow, load_candidates
from autodistill.cli import main
from autodistill.errors import SearchError
from autodistill.search.evaluators import TableEvaluator
from autodistill.search.runner import make_searcher, run_search
from autodistill.search.store import TrialStore
from autodistill.search.types import TrialResult

INPUTS = ("hidden", "layers", "act")
ACTS = ("relu", "gelu", "swish", "tanh")


def _write_table(path: Path, n_hidden: int = 10) -> Path:
    """200 rows (10 widths x 5 depths x 4 activations): accuracy grows with size, latency too."""
    rows = []
    for h in (32 * (i + 1) for i in range(n_hidden)):
        for layers in (2, 4, 6, 8, 12):
            for k, act in enumerate(ACTS):
                lat = 1e-5 * h * layers * (1 + 0.05 * k)
                acc = 0.95 - 0.4 * math.exp(-h * layers / 1500) - 0.01 * abs(k - 1)
                rows.append({"name": f"m{len(rows)}", "hidden": h, "layers": layers, "act": act,
                             "latency_s": f"{lat:.6g}", "accuracy": f"{acc:.6f}"})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture
def table_csv(tmp_path: Path) -> Path:
    return _write_table(tmp_path / "bench.csv")


def _top_rows(path: Path, k: int) -> set[int]:
    with open(path) as f:
        acc = [float(r["accuracy"]) for r in csv.DictReader(f)]
    return {int(i) + 1 for i in np.argsort(acc)[::-1][:k]}


def test_load_encodes_numbers_and_one_hot_categories(table_csv: Path) -> None:
    t = load_candidates(table_csv, inputs="hidden,layers,act", objective="accuracy")
    assert len(t) == 200 and t.space.categorical == ("act",) and t.space.dims == (10, 5, 4)
    assert t.encoding_names == ("hidden", "layers", *(f"act={a}" for a in sorted(ACTS)), "log_latency_s")
    assert t.encoded.shape == (200, 7) and t.encoded.min() >= 0 and t.encoded.max() <= 1
    assert np.all(t.encoded[:, 2:6].sum(axis=1) == 1)  # one category a row
    assert np.all(np.diff(t.codes) > 0)  # code order: what nsga2 looks children up in
    row = t.arch(0)
    assert isinstance(row, TableRow) and t.index_of(row) == 0 and set(row.values) == set(INPUTS)
    assert t.index_of(TableRow(row.row, {**row.values, "act": "other"})) is None
    # a numeric column can be made categorical; the digest follows the roles and the cells
    t2 = load_candidates(table_csv, inputs=INPUTS, objective="accuracy", categorical="layers")
    assert t2.space.categorical == ("layers", "act") and "layers=12" in t2.encoding_names
    assert t2.space.digest != t.space.digest
    assert load_candidates(table_csv, inputs=INPUTS, objective="accuracy").space.digest == t.space.digest


def test_engine_finds_the_top_rows_and_stores_the_known_objective(table_csv: Path, tmp_path: Path) -> None:
    from autodistill.search.engine import EngineConfig

    t = load_candidates(table_csv, inputs=INPUTS, objective="accuracy")
    s = run_search(space=t.space, pool=t, evaluator=TableEvaluator(t), store=tmp_path / "e", budget=16,
                   searcher=make_searcher("engine", t, EngineConfig(seed=0, n_initial=6)))
    assert s.n_completed == 16
    with TrialStore(tmp_path / "e") as st:
        trials = st.trials()
        meta = st.meta()
    rows = [tr.arch.row for tr in trials]
    assert len(set(rows)) == 16 and all(isinstance(tr.arch, TableRow) for tr in trials)
    best = max(trials, key=lambda tr: tr.accuracy)
    assert best.arch.row in _top_rows(table_csv, 10), best
    # each trial's latency_s is its row's known objective
    by_row = dict(zip(t.rows.tolist(), t.latency_s.tolist()))
    assert all(tr.latency_s == pytest.approx(by_row[tr.arch.row]) for tr in trials)
    assert meta["pinned"]["space"]["table"]["digest"] == t.space.digest
    assert meta["pinned"]["evaluator"] == {"spec": "table", "objective": "accuracy"}
    # the front holds the fastest row (a known objective: the engine proposes it early) and a top row
    assert s.pareto and s.hypervolume > 0


def test_random_search_from_the_cli_finds_the_top_rows(table_csv: Path, tmp_path: Path, capsys) -> None:
    store = tmp_path / "r"
    assert main(["search", "--candidates", str(table_csv), "--inputs", "hidden,layers,act", "--searcher", "random",
                 "--budget", "100", "--store", str(store), "--no-progress", "--csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "200 candidates" in out and "latency_s" in out
    with TrialStore(store) as st:
        found = {tr.arch.row for tr in st.trials("completed")}
    assert len(found) == 100 and found & _top_rows(table_csv, 5)
    with open(tmp_path / "t.csv") as f:
        header = next(csv.reader(f))
    assert {"row", "input.hidden", "input.act"} <= set(header)
    assert main(["trials", str(store), "--limit", "3"]) == 0
    assert "candidate table (200 rows)" in capsys.readouterr().out


def test_nsga2_searches_a_table(table_csv: Path, tmp_path: Path) -> None:
    t = load_candidates(table_csv, inputs=INPUTS, objective="accuracy")
    run_search(space=t.space, pool=t, evaluator=TableEvaluator(t), store=tmp_path / "n", budget=30,
               searcher=make_searcher("nsga2", t, seed=1, population=8))
    with TrialStore(tmp_path / "n") as st:
        trials = st.trials()
    assert len({tr.arch.row for tr in trials}) == 30
    assert any(tr.source == "nsga2" for tr in trials)


class _Interrupt(TableEvaluator):
    """Scores from the table, and is killed (KeyboardInterrupt) at trial ``stop``."""

    def __init__(self, table, stop: int) -> None:
        super().__init__(table)
        object.__setattr__(self, "stop", stop)

    def evaluate(self, arch, trial_id):
        if trial_id == self.stop:
            raise KeyboardInterrupt
        return super().evaluate(arch, trial_id)


def test_resume_after_an_interruption_continues_without_duplicates(table_csv: Path, tmp_path: Path) -> None:
    t = load_candidates(table_csv, inputs=INPUTS, objective="accuracy")
    with pytest.raises(KeyboardInterrupt):
        run_search(space=t.space, pool=t, evaluator=_Interrupt(t, 5), store=tmp_path / "k", budget=10,
                   searcher=make_searcher("random", t, seed=3))
    with TrialStore(tmp_path / "k") as st:
        assert st.counts()["completed"] == 4 and st.counts()["running"] == 1
        interrupted = st.get(5).arch
    t = load_candidates(table_csv, inputs=INPUTS, objective="accuracy")  # a fresh process would reload it
    s = run_search(space=t.space, pool=t, evaluator=TableEvaluator(t), store=tmp_path / "k", budget=10,
                   searcher=make_searcher("random", t, seed=3))
    assert s.resumed and s.n_completed == 10 and s.n_evaluated_now == 6
    with TrialStore(tmp_path / "k") as st:
        trials = st.trials()
    assert [tr.trial_id for tr in trials] == list(range(1, 11)) and all(tr.ok for tr in trials)
    assert len({tr.arch.row for tr in trials}) == 10 and trials[4].arch == interrupted
    # an uninterrupted search of the same seed evaluates the same rows
    run_search(space=t.space, pool=t, evaluator=TableEvaluator(t), store=tmp_path / "u", budget=10,
               searcher=make_searcher("random", t, seed=3))
    with TrialStore(tmp_path / "u") as st:
        assert [tr.arch.row for tr in st.trials()] == [tr.arch.row for tr in trials]


def test_a_resume_with_a_changed_table_is_refused(table_csv: Path, tmp_path: Path) -> None:
    t = load_candidates(table_csv, inputs=INPUTS, objective="accuracy")
    run_search(space=t.space, pool=t, evaluator=TableEvaluator(t), store=tmp_path / "c", budget=3,
               searcher=make_searcher("random", t))
    text = table_csv.read_text().splitlines()
    cells = text[7].split(",")
    cells[-1] = "0.99"
    table_csv.write_text("\n".join([*text[:7], ",".join(cells), *text[8:]]) + "\n")
    t2 = load_candidates(table_csv, inputs=INPUTS, objective="accuracy")
    with pytest.raises(SearchError, match="the candidate table differs .*digest stored"):
        run_search(space=t2.space, pool=t2, evaluator=TableEvaluator(t2), store=tmp_path / "c", budget=4,
                   searcher=make_searcher("random", t2))
    t3 = load_candidates(table_csv, inputs=INPUTS, objective="accuracy", categorical="hidden")
    with pytest.raises(SearchError, match="categorical stored"):
        run_search(space=t3.space, pool=t3, evaluator=TableEvaluator(t3), store=tmp_path / "c", budget=4,
                   searcher=make_searcher("random", t3))
    # the same table, moved: resumes
    moved = tmp_path / "moved.csv"
    moved.write_text((tmp_path / "bench.csv").read_text())
    t4 = load_candidates(moved, inputs=INPUTS, objective="accuracy")
    assert t4.space.digest == t2.space.digest


class RowScorer:
    """An evaluator of one's own: receives the row (its number and inputs), not an architecture."""

    def __init__(self) -> None:
        self.seen: list[TableRow] = []

    def evaluate(self, arch: TableRow, trial_id: int) -> TrialResult:
        self.seen.append(arch)
        return TrialResult(accuracy=float(arch.values["hidden"]) / 320 - (arch.values["act"] == "relu") * 0.1)


def test_python_api_with_an_evaluator_of_ones_own_and_no_objective_column(table_csv: Path, tmp_path: Path,
                                                                           monkeypatch) -> None:
    t = load_candidates(table_csv, inputs=["hidden", "layers", "act"])  # no objective: the evaluator scores
    assert t.objective_values is None and t.space.objective is None
    with pytest.raises(Exception, match="needs the objective column"):
        TableEvaluator(t)
    ev = RowScorer()
    s = run_search(space=t.space, pool=t, evaluator=ev, store=tmp_path / "o.sqlite", budget=12,
                   searcher=make_searcher("engine", t))
    assert s.n_completed == 12 and len(ev.seen) == 12
    assert all(isinstance(r, TableRow) and r.values["act"] in ACTS for r in ev.seen)
    assert max(tr.accuracy for tr in s.pareto) > 0.85
    with pytest.raises(SearchError, match="needs pool=its CandidateTable"):
        run_search(space=t.space, evaluator=ev, store=tmp_path / "o2.sqlite", budget=1)
    # the same from the CLI: --evaluator package.module:factory
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    assert main(["search", "--candidates", str(table_csv), "--inputs", "hidden,layers,act", "--searcher", "random",
                 "--evaluator", "test_search_candidates:RowScorer", "--budget", "3", "--store", str(tmp_path / "f"),
                 "--no-progress"]) == 0
    with TrialStore(tmp_path / "f") as st:
        assert st.get_meta("pinned")["evaluator"] == {"spec": "test_search_candidates:RowScorer"}


def test_an_empty_objective_cell_is_a_failed_trial(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("k,latency_s,accuracy\n1,0.1,\n2,0.2,0.5\n3,0.3,0.7\n4,0.4,nan\n")
    t = load_candidates(p, inputs="k", objective="accuracy")
    s = run_search(space=t.space, pool=t, evaluator=TableEvaluator(t), store=tmp_path / "s", budget=2,
                   searcher=make_searcher("random", t))
    assert (s.n_completed, s.n_failed) == (2, 2)
