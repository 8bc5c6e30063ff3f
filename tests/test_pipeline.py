"""End-to-end runs of the whole job on a tiny random teacher and a tiny corpus (seconds per stage)."""
from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import pytest

from autodistill.errors import ConfigError, DistillError
from autodistill.run import load_config, run

from distill_support import make_teacher_folder, tiny_docs

TINY_SPACE = """
name = "tiny"
base = "mobilebert"
[fields]
num_hidden_layers = { choices = [1, 2] }
hidden_size = { choices = [16, 32] }
intra_bottleneck_size = { choices = [8, 16] }
num_attention_heads = { choices = [1, 2] }
intermediate_size = { choices = [16, 32] }
[tied]
embedding_size = "intra_bottleneck_size"
[constraints]
relations = ["intra_bottleneck_size <= hidden_size"]
[objective]
profile = "tpu_v4i"
batch = 1
seq = 32
"""


def _config(tmp: Path, teacher: Path, corpus: Path, **extra: str) -> Path:
    (tmp / "space.toml").write_text(TINY_SPACE)
    text = f"""
[run]
name = "tiny"
[teacher]
path = "{teacher}"
[data]
corpus = ["{corpus}"]
seq_len = 32
heldout_fraction = 0.2
[search]
space = "{tmp / 'space.toml'}"
profile = "tpu_v4i"
budget = 3
batch_size = 1
[flash]
steps = 4
batch_size = 4
[full]
steps = 4
batch_size = 4
top_k = 2
[full.baseline]
num_hidden_layers = 2
hidden_size = 32
embedding_size = 16
intra_bottleneck_size = 16
num_attention_heads = 2
intermediate_size = 16
num_feedforward_networks = 2
max_position_embeddings = 64
[confirm]
profile = "cpu_generic"
seq = 32
{extra.get('confirm', '')}
"""
    p = tmp / "run.toml"
    p.write_text(text)
    return p


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipe")
    teacher = make_teacher_folder(tmp / "teacher")
    corpus = tmp / "corpus"
    corpus.mkdir()
    for i, d in enumerate(tiny_docs()[:12]):
        (corpus / f"doc{i:02d}.txt").write_text(d.text)
    return tmp, teacher, corpus


@pytest.mark.slow
def test_whole_job_runs_and_resumes_without_redoing_work(tiny_setup) -> None:
    tmp, teacher, corpus = tiny_setup
    cfg = load_config(_config(tmp, teacher, corpus))
    out = tmp / "run1"
    res = run(cfg, out, progress=False)
    assert res.report_html.is_file() and res.report_md.is_file()
    students = sorted(p.name for p in (out / "students").iterdir())
    assert "baseline" in students and len(students) >= 2
    for s in students:
        r = json.loads((out / "students" / s / "result.json").read_text())
        assert r["finished"] and r["status"] == "ok" and 0.0 <= r["mlm_accuracy"] <= 1.0
        assert (out / "students" / s / "hf" / "config.json").is_file()
    conf = json.loads((out / "confirm.json").read_text())
    assert len(conf["students"]) == len(students)
    assert all(c["measured_latency_s"] > 0 and c["est_latency_s"] > 0 for c in conf["students"])
    md = res.report_md.read_text()
    assert re.search(r"^\| baseline +\|", md, re.M) and "bert-base (ref)" in md and "## Against the baseline" in md
    assert md.splitlines()[4].startswith("- Take trial") and "## Every trial" in md  # the answer first
    html = res.report_html.read_text()
    assert "id=summary" in html and "students/" in html and "<h2>Run</h2>" in html
    assert "measured latency: fastest call per case, fastest of the timing passes" in md
    # Resume: nothing is redone (same trials, same results, same measurements).
    before = {s: (out / "students" / s / "result.json").read_text() for s in students}
    t0 = time.perf_counter()
    res2 = run(cfg, out, progress=False)
    assert {s: (out / "students" / s / "result.json").read_text() for s in students} == before
    assert json.loads((out / "confirm.json").read_text())["students"] == conf["students"]
    assert res2.stages_run[-1] == "report"
    assert time.perf_counter() - t0 < res.wall_time_s
    # Measurements timed with another statistic (a confirm.json from before the fastest call was compared)
    # are not reused: the confirmation times the students again.
    assert conf["time_column"] == "min_s"
    old = dict(conf, time_column="corrected_median_s",
               students=[dict(c, measured_latency_s=123.0) for c in conf["students"]])
    (out / "confirm.json").write_text(json.dumps(old))
    run(cfg, out, progress=False)
    again = json.loads((out / "confirm.json").read_text())
    assert again["time_column"] == "min_s" and all(c["measured_latency_s"] < 1.0 for c in again["students"])


@pytest.mark.slow
def test_resume_with_a_larger_budget_adds_trials(tiny_setup) -> None:
    from autodistill.search.store import TrialStore

    tmp, teacher, corpus = tiny_setup
    out = tmp / "run2"
    run(load_config(_config(tmp, teacher, corpus)), out, progress=False, stop_after="search")
    with TrialStore(out / "search", create=False, readonly=True) as st:
        assert st.n_finished == 3
    cfg = load_config(_config(tmp, teacher, corpus), overrides={"search": {"budget": 4}})
    run(cfg, out, progress=False, stop_after="search")
    with TrialStore(out / "search", create=False, readonly=True) as st:
        assert st.n_finished == 4


def test_changed_config_is_refused_on_resume(tiny_setup) -> None:
    tmp, teacher, corpus = tiny_setup
    out = tmp / "run3"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(load_config(_config(tmp, teacher, corpus)).resume_key))
    cfg = load_config(_config(tmp, teacher, corpus), overrides={"flash": {"steps": 6}})
    with pytest.raises(ConfigError, match="different configuration"):
        run(cfg, out, progress=False, stop_after="search")


@pytest.mark.parametrize(
    "section, values, match",
    [
        ("search", {"budget": 0}, r"\[search\] budget = 0 must be >= 1"),
        ("search", {"executor": "dask"}, r"unknown executor 'dask'; valid choices: local, ray"),
        ("search", {"mix_statistic": "p95_s"}, r"valid choices: mean_s, p50_s, p99_s"),
        ("search", {"budgett": 3}, r"unknown key 'budgett' in \[search\]"),
        ("flash", {"steps": "many"}, r"\[flash\] steps = 'many' must be of type int"),
        ("confirm", {"tolerance": 0}, r"tolerance = 0 must be in \(0, 10\)"),
        ("confirm", {"passes": 0}, r"\[confirm\] passes = 0 must be >= 1"),
        ("confirm", {"anchors": -1}, r"\[confirm\] anchors = -1 must be >= 0"),
        ("full", {"kt_fraction": 1.5}, r"\[full\] kt_fraction = 1.5 must be in \[0, 1\]"),
        ("data", {"corpus": []}, r"corpus is empty"),
    ],
)
def test_bad_config_values_are_clear_errors(section: str, values: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(overrides={section: values})


def test_config_file_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    f = tmp_path / "cfg" / "run.toml"
    f.write_text('[data]\ncorpus = ["builtin", "../text", "/abs/books"]\nheldout = ["held.txt"]\n'
                 '[teacher]\npath = "teachers/bert"\n')
    cfg = load_config(f)
    assert cfg.data.corpus == ("builtin", str(tmp_path / "cfg" / "../text"), "/abs/books")
    assert cfg.data.heldout == (str(tmp_path / "cfg" / "held.txt"),)
    assert cfg.teacher.path == str(tmp_path / "cfg" / "teachers/bert")
    # command-line overrides stay relative to the working directory; the embedded default is untouched
    assert load_config(f, {"teacher": {"path": "x"}}).teacher.path == "x"
    assert load_config().teacher.path == "default"
    shipped = load_config(Path(__file__).resolve().parents[1] / "configs" / "shared_data.toml")
    assert all(Path(p).is_absolute() for p in shipped.data.corpus)


def test_bad_inputs_fail_before_any_work(tiny_setup, tmp_path: Path) -> None:
    tmp, teacher, corpus = tiny_setup
    with pytest.raises(DistillError, match="does not exist"):
        run(load_config(_config(tmp, tmp / "no-teacher", corpus)), tmp_path / "a", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DistillError):
        run(load_config(_config(tmp, teacher, empty)), tmp_path / "b", progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = load_config(_config(tmp, teacher, corpus), overrides={"search": {"executor": "ray",
                                                                          "address": f"127.0.0.1:{port}"}})
    with pytest.raises(ConfigError, match="unreachable"):
        run(cfg, tmp_path / "c", progress=False)
    for d in ("a", "b", "c"):
        assert not (tmp_path / d / "search").exists()
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_pareto_layers_fill_top_k() -> None:
    from types import SimpleNamespace

    from autodistill.search.selection import pareto_layers as _pareto_layers

    def t(i, acc, lat, ok=True):
        return SimpleNamespace(trial_id=i, accuracy=acc, latency_s=lat, ok=ok)

    trials = [t(0, 0.10, 1.0), t(1, 0.20, 2.0),          # front
              t(2, 0.09, 1.5), t(3, 0.15, 2.5), t(4, 0.05, 3.0),  # second layer: 2 and 3 (4 is dominated by them)
              t(5, 0.50, 0.5, ok=False)]                 # failed trials never count
    assert [x.trial_id for x in _pareto_layers(trials, 2)] == [0, 1]
    assert [x.trial_id for x in _pareto_layers(trials, 3)] == [0, 1, 3]   # best accuracy of the next layer
    assert [x.trial_id for x in _pareto_layers(trials, 4)] == [0, 2, 1, 3]
    assert [x.trial_id for x in _pareto_layers(trials, 10)] == [0, 2, 1, 3, 4]
