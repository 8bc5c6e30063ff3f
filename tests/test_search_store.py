"""TrialStore: WAL, transitions, records, Pareto/hypervolume and exports."""
from __future__ import annotations

import math
import sqlite3

import pytest

from autodistill.arch import reference_arch
from autodistill.costmodel import COST_MODEL_VERSION
from autodistill.errors import SearchError
from autodistill.search.store import TrialStore, resolve_store_path
from autodistill.search.types import Suggestion, Trial, TrialResult


def sugg(name: str, lat: float, src: str = "initial") -> Suggestion:
    return Suggestion(arch=reference_arch(name), source=src, latency_s=lat, num_parameters=1000,
                      predicted_accuracy=0.5, predicted_accuracy_sd=0.1, acq_value=-1.0)


def test_lifecycle_and_records(tmp_path):
    with TrialStore(tmp_path / "run") as st:
        assert st.db_path == tmp_path / "run" / "trials.sqlite"
        mode = sqlite3.connect(st.db_path).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
        ids = st.add_proposals([sugg("mobilebert", 5e-4), sugg("mobilebert-tiny", 3e-4)], suggest_s=0.25,
                               cost_model_version=COST_MODEL_VERSION)
        assert ids == [1, 2]
        assert [t.status for t in st.trials()] == ["pending", "pending"]
        st.mark_running(1)
        st.complete(1, TrialResult(0.8, measured_latency_s=6e-4, metrics={"loss": 1.5, "nan": math.nan}), eval_s=2.0)
        st.mark_running(2)
        st.complete(2, TrialResult(float("nan")), eval_s=1.0)
        ids2 = st.add_proposals([sugg("tinybert-4", 1e-4, "qlognehvi")], suggest_s=1.0)
        st.fail(ids2[0], "TrialFailed: boom")
        t1, t2, t3 = st.trials()
        assert t1.status == "completed" and t1.accuracy == 0.8 and t1.measured_latency_s == 6e-4
        assert t1.metrics == {"loss": 1.5, "nan": "nan"} and t1.eval_s == 2.0 and t1.suggest_s == 0.25
        assert t1.cost_model_version == COST_MODEL_VERSION and t1.batch_id == 1 and t3.batch_id == 2
        assert t1.started_at <= t1.finished_at and t1.proposed_at <= t1.started_at
        assert t1.arch == reference_arch("mobilebert")
        assert t2.status == "failed" and "non-finite" in t2.error
        assert t3.status == "failed" and t3.error == "TrialFailed: boom"
        assert st.counts() == {"pending": 0, "running": 0, "completed": 1, "failed": 2}
        assert st.n_finished == 3


def test_illegal_transitions(tmp_path):
    with TrialStore(tmp_path / "s.sqlite") as st:
        (i,) = st.add_proposals([sugg("mobilebert", 5e-4)])
        st.complete(i, TrialResult(0.7))
        with pytest.raises(SearchError, match="is 'completed'"):
            st.complete(i, TrialResult(0.9))
        with pytest.raises(SearchError, match="no trial 99"):
            st.mark_running(99)
        with pytest.raises(SearchError, match="valid choices"):
            st.trials("done")


def test_meta_pareto_hypervolume_and_exports(tmp_path):
    st = TrialStore(tmp_path / "r")
    names = ["mobilebert", "mobilebert-tiny", "tinybert-4", "bert-base"]
    lats = [5e-4, 3e-4, 1e-4, 6e-4]
    accs = [0.85, 0.80, 0.70, 0.84]  # bert-base is dominated by mobilebert
    ids = st.add_proposals([sugg(n, lat) for n, lat in zip(names, lats)])
    for i, a in zip(ids, accs):
        st.complete(i, TrialResult(a))
    st.set_meta({"budget": 4, "nested": {"a": (1, 2)}})
    assert st.get_meta("nested") == {"a": [1, 2]}
    front = st.pareto()
    assert [t.arch for t in front] == [reference_arch(n) for n in ("tinybert-4", "mobilebert-tiny", "mobilebert")]
    ref = st.reference_point()
    assert st.hypervolume() > 0 and st.hypervolume(*ref) == st.hypervolume()
    # inferred beyond every trial (not only the front): bert-base's latency is the slowest
    assert ref[1] > max(lats) and ref[0] < min(accs)
    st.set_meta({"reference_point": {"accuracy": 0.5, "latency_s": 1e-3}})
    assert st.reference_point() == (0.5, 1e-3)
    df = st.to_dataframe()
    assert list(df["trial_id"]) == ids and df["pareto"].sum() == 3
    assert "arch.hidden_size" in df.columns and "cost_model_version" in df.columns
    out = st.to_csv(tmp_path / "x" / "t.csv")
    assert out.read_text().splitlines()[0].startswith("trial_id,status")
    st.close()
    ro = TrialStore(tmp_path / "r", create=False, readonly=True)
    assert len(ro.trials()) == 4
    with pytest.raises(sqlite3.OperationalError):
        ro.set_meta({"x": 1})
    ro.close()


def test_missing_store_and_paths(tmp_path):
    with pytest.raises(SearchError, match="no trial store"):
        TrialStore(tmp_path / "nope", create=False)
    assert resolve_store_path("runs/a").name == "trials.sqlite"
    assert resolve_store_path("x.db").name == "x.db"
    bad = tmp_path / "bad.sqlite"
    bad.write_text("this is not sqlite" * 100)
    with pytest.raises(SearchError, match="not a usable trial store"):
        TrialStore(bad)


def test_trial_record_validation():
    with pytest.raises(SearchError, match="valid choices"):
        Trial(1, reference_arch("mobilebert"), "done")
    with pytest.raises(SearchError, match="must be a number"):
        TrialResult("high")  # type: ignore[arg-type]
    assert not TrialResult(float("nan")).ok and TrialResult(0.5).ok


# ------------------------------------------------------------------ nothing a user does loses data
@pytest.mark.parametrize("content,phrase", [
    (b"", r"exists but is empty \(0 bytes\)"),
    (b"this is not a database at all, just some text" * 20, "not a usable trial store"),
])
def test_an_unreadable_store_file_is_refused_not_restarted(tmp_path, content, phrase):
    run = tmp_path / "run"
    run.mkdir()
    (run / "trials.sqlite").write_bytes(content)
    for kw in ({}, {"create": False, "readonly": True}):
        with pytest.raises(SearchError, match=phrase):
            TrialStore(run, **kw)
    assert (run / "trials.sqlite").read_bytes() == content  # untouched


def test_an_sqlite_file_that_is_no_store_is_refused(tmp_path):
    db = tmp_path / "other.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE notes (x)")
    con.commit()
    con.close()
    with pytest.raises(SearchError, match="exists but is not a trial store"):
        TrialStore(db)
    assert sqlite3.connect(db).execute("SELECT name FROM sqlite_master").fetchall() == [("notes",)]


def test_csv_never_over_a_store_and_over_other_files_only_with_force(tmp_path):
    pytest.importorskip("pandas")
    with TrialStore(tmp_path / "run") as st:
        st.add_proposals([sugg("mobilebert", 5e-4)], suggest_s=0.1)
        for target in (st.db_path, tmp_path / "run" / "trials.sqlite-wal"):
            with pytest.raises(SearchError, match="it is a trial store"):
                st.to_csv(target, force=True)
        other = sqlite3.connect(tmp_path / "elsewhere.db")
        other.execute("CREATE TABLE t (x)")
        other.commit()
        other.close()
        with pytest.raises(SearchError, match="it is a trial store"):
            st.to_csv(tmp_path / "elsewhere.db", force=True)
        notes = tmp_path / "notes.txt"
        notes.write_text("my notes\n")
        with pytest.raises(SearchError, match="exists and is not a trials CSV written by autodistill; pass --force"):
            st.to_csv(notes)
        assert notes.read_text() == "my notes\n"
        st.to_csv(notes, force=True)
        assert notes.read_text().startswith("trial_id,status,source")
        out = st.to_csv(tmp_path / "t.csv")
        st.to_csv(out)  # an earlier export is replaced without --force
    with TrialStore(tmp_path / "run", create=False, readonly=True) as st:
        assert len(st.trials()) == 1


def test_cli_trials_csv_over_the_store_exits_2_and_keeps_it(tmp_path, capsys):
    pytest.importorskip("pandas")
    from autodistill import cli

    with TrialStore(tmp_path / "run") as st:
        st.add_proposals([sugg("mobilebert", 5e-4)], suggest_s=0.1)
    before = (tmp_path / "run" / "trials.sqlite").read_bytes()[:16]
    assert cli.main(["trials", str(tmp_path / "run"), "--csv", str(tmp_path / "run" / "trials.sqlite")]) == 2
    assert "it is a trial store" in capsys.readouterr().err
    assert (tmp_path / "run" / "trials.sqlite").read_bytes()[:16] == before
    with TrialStore(tmp_path / "run", create=False, readonly=True) as st:
        assert len(st.trials()) == 1
