"""The run folder's typed contract: config dataclasses, records, the folder, selection and the latency objective."""
from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from autodistill.arch import reference_arch
from autodistill.errors import ConfigError
from autodistill.run import RunConfig, RunFolder, load_config
from autodistill.run.config import SECTIONS, default_config_text
from autodistill.run.records import SCHEMA_VERSION, ConfirmRecord, RecordError, StudentRecord

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


# ------------------------------------------------------------------------------------------------- config
def test_default_config_is_printed_from_the_dataclasses_and_reads_back() -> None:
    text = default_config_text()
    assert RunConfig.from_dict(tomllib.loads(text)) == RunConfig() == load_config()
    # every key of every table is in the printed config (rarely set ones commented out)
    for sec, cls in SECTIONS.items():
        assert f"[{sec}]" in text
        for f in dataclasses.fields(cls):
            assert f"{f.name} = " in text, (sec, f.name)
    # a default changed in the dataclass is what the printed config and the loaded config say
    assert 'budget = 8 ' in text and load_config().search.budget == 8


@pytest.mark.parametrize("section, values, match", [
    ("run", {"name": "../../escape"}, r"\[run\] name = '../../escape' must be a plain folder name"),
    ("run", {"seed": -1}, r"\[run\] seed = -1 must be >= 0"),
    ("search", {"searcher": "grid"}, r"\[search\] unknown searcher 'grid'; valid choices: engine, nsga2, random"),
    ("search", {"serving_mix": [{"batch": 1, "seq": 0, "weight": 1.0}]}, r"\[search\] serving_mix"),
    ("full", {"baseline": "gpt-9"}, r"\[full\] baseline = 'gpt-9'.*unknown reference architecture 'gpt-9'"),
    ("confirm", {"device": "npu"}, r"\[confirm\] unknown device 'npu'; valid choices: cpu, gpu, tpu"),
    ("confirm", {"enabled": 1}, r"\[confirm\] enabled = 1 must be of type bool"),
    ("data", {"heldout_fraction": 1.0}, r"\[data\] heldout_fraction = 1.0 must be in \[0, 1\)"),
    ("glue", {"steps": 0}, r"\[glue\] steps = 0 must be >= 1"),
])
def test_every_config_value_is_checked_when_loaded(section: str, values: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(overrides={section: values})


def test_config_choices_match_the_stages_that_use_them() -> None:
    from autodistill.measure.cases import PLATFORMS
    from autodistill.run import config
    from autodistill.search.runner import SEARCHERS

    assert config.SEARCHERS == SEARCHERS and config.DEVICES == PLATFORMS


def test_bad_glue_task_and_folder_are_refused_by_check(tmp_path: Path) -> None:
    pytest.importorskip("jax")
    with pytest.raises(ConfigError, match=r"\[glue\] unknown task 'mnli2'"):
        load_config(overrides={"glue": {"tasks": ["mnli2"]}}).glue.check()
    cfg = load_config(overrides={"glue": {"tasks": ["sst2"], "glue_dir": str(tmp_path / "nope")}})
    with pytest.raises(ConfigError, match=r"glue_dir .*nope' does not exist"):
        cfg.glue.check()


def test_resume_difference_names_each_changed_key() -> None:
    cfg = load_config()
    assert cfg.resume_difference(cfg.resume_key) == []
    changed = load_config(overrides={"flash": {"steps": 6}, "search": {"budget": 20}, "confirm": {"seq": 32}})
    # budget and [confirm] may change; flash steps may not, and the message names it with both values
    assert changed.resume_difference(cfg.resume_key) == ["[flash] steps: 30 -> 6"]
    # an older folder saved only the keys it set; the rest took the defaults, and still match
    old = {"run": {"name": "default", "seed": 0}, "flash": {"steps": 30, "batch_size": 16}}
    assert cfg.resume_difference(old) == []


# ------------------------------------------------------------------------------------------------- records
def _record(**kw) -> StudentRecord:
    return StudentRecord(**{"name": "trial0001", "arch": reference_arch("tinybert-4"), "status": "ok",
                            "finished": True, "mlm_accuracy": 0.12, "trial_id": 1, "flash_accuracy": 0.08,
                            "est_latency_s": 4e-5, **kw})


def test_student_record_round_trips_and_defines_ready_once() -> None:
    rec = _record(glue={"sst2/accuracy": 0.8})
    assert StudentRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec
    assert rec.to_dict()["schema"] == SCHEMA_VERSION
    assert rec.ready and not _record(finished=False).ready and not _record(status="nan_loss").ready
    base = _record(name="baseline", baseline=True, trial_id=None, flash_accuracy=None, est_latency_s=None)
    assert "trial_id" not in base.to_dict() and StudentRecord.from_dict(base.to_dict()).baseline


def test_result_json_written_before_records_still_loads(tmp_path: Path) -> None:
    # the layout pipeline.py wrote (no schema; NaN accuracy of an unfinished run; added by export and GLUE)
    arch = reference_arch("mobilebert-tiny").to_dict()
    old = {"name": "trial0003", "arch": arch, "trial_id": 3, "flash_accuracy": 0.07, "est_latency_s": 1e-4,
           "status": "ok", "finished": True, "mlm_accuracy": 0.11, "steps": 100, "wall_time_s": 12.5,
           "train_tokens_per_s": 900.0, "message": "", "exported": "/x/hf", "glue": {"sst2/accuracy": 0.79}}
    f = tmp_path / "students" / "trial0003" / "result.json"
    f.parent.mkdir(parents=True)
    f.write_text(json.dumps(old))
    (tmp_path / "students" / "baseline").mkdir()
    (tmp_path / "students" / "baseline" / "result.json").write_text(json.dumps(
        {"name": "baseline", "arch": arch, "baseline": True, "status": "ok", "finished": False,
         "mlm_accuracy": float("nan"), "steps": 3, "wall_time_s": 1.0, "train_tokens_per_s": 1.0, "message": ""}))
    folder = RunFolder(tmp_path)
    recs = folder.students()
    assert [r.name for r in recs] == ["baseline", "trial0003"] and math.isnan(recs[0].mlm_accuracy)
    assert [r.name for r in folder.students(ready=True)] == ["trial0003"]
    assert recs[1].exported == "/x/hf" and recs[1].glue == {"sst2/accuracy": 0.79}


def test_damaged_or_newer_records_are_refused_naming_the_file(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    folder.save_student(_record())
    f = tmp_path / "students" / "trial0001" / "result.json"
    f.write_text(f.read_text()[:40])
    with pytest.raises(RecordError, match=r"result.json' is not valid JSON"):
        folder.students()
    f.write_text(json.dumps({**_record().to_dict(), "schema": SCHEMA_VERSION + 1}))
    with pytest.raises(RecordError, match=r"schema version 2; this autodistill reads up to 1"):
        folder.student("trial0001")
    f.write_text(json.dumps({"name": "x"}))
    with pytest.raises(RecordError, match=r"lacks arch, status, finished"):
        folder.student("trial0001")
    (tmp_path / "confirm.json").write_bytes(b"\xff\xfe")
    with pytest.raises(RecordError, match=r"confirm.json' is not UTF-8"):
        folder.confirm()


@pytest.mark.parametrize("path", sorted(RESULTS.glob("**/goal_run*confirm.json")), ids=lambda p: p.name)
def test_committed_confirm_json_files_load(path: Path, tmp_path: Path) -> None:
    raw = json.loads(path.read_text())
    rec = ConfirmRecord.from_dict(raw)
    assert len(rec.students) == len(raw["students"]) > 0 and rec.time_column == raw.get("time_column")
    assert rec.by_name()["baseline"].measured_latency_s == raw["students"][0]["measured_latency_s"]
    assert rec.drift_check() is not None and rec.drift_check().ratio == pytest.approx(raw["drift"]["ratio"])
    # written back, it reads the same
    folder = RunFolder(tmp_path)
    folder.save_confirm(rec)
    assert folder.confirm() == rec


def test_committed_confirm_files_exist() -> None:
    assert len(sorted(RESULTS.glob("**/goal_run*confirm.json"))) >= 2


def test_state_marks_stages_atomically(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "r")
    assert not folder.state().done("search")
    folder.mark("search", wall_s=1.5, n_completed=3)
    st = folder.state()
    assert st.done("search") and st.stages["search"].info == {"n_completed": 3} and st.stages["search"].wall_s == 1.5
    assert not list((tmp_path / "r").glob(".*tmp"))
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        RunFolder(tmp_path / "f")


# ------------------------------------------------------------------------------------------------- selection
def _t(i, acc, lat, ok=True):
    return SimpleNamespace(trial_id=i, accuracy=acc, latency_s=lat, ok=ok)


def test_select_students_spreads_the_front_over_latency() -> None:
    from autodistill.search.selection import select_students, spread_over_latency

    front = [_t(i, 0.1 + 0.01 * i, 1.0 + i) for i in range(7)]  # fastest first
    assert [t.trial_id for t in select_students(front, front, 3)] == [0, 3, 6]
    assert [t.trial_id for t in spread_over_latency(front, 1)] == [6]  # the most accurate
    assert select_students(front, front, 0) == []
    # a front smaller than k: the next layer's most accurate fill it
    rest = front[:1] + [_t(9, 0.05, 2.0), _t(10, 0.09, 3.0)]
    assert [t.trial_id for t in select_students(front[:1], rest, 2)] == [0, 10]


# ------------------------------------------------------------------------------------------------- objective
def test_one_latency_objective_prices_the_pool_and_the_report() -> None:
    from autodistill.run.context import latency_objective, load_space_and_pool

    cfg = load_config(overrides={"search": {"serving_mix": [{"batch": 1, "seq": 64, "weight": 0.5},
                                                            {"batch": 4, "seq": 128, "weight": 0.5}],
                                            "mix_statistic": "p99_s"}})
    _, pool = load_space_and_pool(cfg)
    obj = latency_objective(cfg, pool)
    idx = np.arange(0, len(pool), max(1, len(pool) // 16))
    archs = [pool.arch(int(i)) for i in idx]
    np.testing.assert_allclose(obj.latency_s(archs), pool.latency_s[idx], rtol=1e-12)
    assert obj.describe() == f"p99_s over 2 request shape(s) on {pool.profile}"
    # without a mix: the pool's own request shape, the mean
    cfg1 = load_config()
    _, pool1 = load_space_and_pool(cfg1)
    np.testing.assert_allclose(latency_objective(cfg1, pool1).latency_s(pool1.features[:5]), pool1.latency_s[:5])


# ------------------------------------------------------------------------------------------------- run() end to end
TINY_SPACE = {
    "name": "tiny", "base": "mobilebert",
    "fields": {"num_hidden_layers": {"choices": [1, 2]}, "hidden_size": {"choices": [16, 32]},
               "intra_bottleneck_size": {"choices": [8, 16]}, "num_attention_heads": {"choices": [1, 2]},
               "intermediate_size": {"choices": [16, 32]}},
    "tied": {"embedding_size": "intra_bottleneck_size"},
    "constraints": {"relations": ["intra_bottleneck_size <= hidden_size"]},
    "objective": {"profile": "tpu_v4i", "batch": 1, "seq": 32},
}


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` (the search store aside): (size, mtime in ns), by relative path."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "state.json" and "search" not in p.relative_to(root).parts}


def test_run_end_to_end_on_a_tiny_config_then_a_resume_redoes_nothing(tmp_path: Path, monkeypatch) -> None:
    """`run()` as the CLI calls it: 2 trials of 2 flash steps, full distillation of 2 steps, stop after
    distill; the same call again trains nothing, adds no trial and rewrites no student file."""
    from autodistill.distill import full as full_mod
    from autodistill.distill.evaluator import FlashDistillEvaluator
    from autodistill.run import run
    from autodistill.search.store import TrialStore

    from distill_support import make_teacher_folder, tiny_docs

    teacher = make_teacher_folder(tmp_path / "teacher")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, d in enumerate(tiny_docs()[:12]):
        (corpus / f"doc{i:02d}.txt").write_text(d.text)
    # kt_fraction 0: one compiled train step per student instead of two (XLA compiles are most of the time;
    # layer-wise transfer has its own tests in test_distill_flash/full)
    cfg = load_config(overrides={
        "run": {"name": "tiny"}, "teacher": {"path": str(teacher)},
        "data": {"corpus": [str(corpus)], "seq_len": 32, "heldout_fraction": 0.2, "max_heldout_sequences": 16},
        "search": {"space": TINY_SPACE, "profile": "tpu_v4i", "budget": 2, "batch_size": 1},
        "flash": {"steps": 2, "batch_size": 4, "kt_fraction": 0.0},
        "full": {"steps": 2, "batch_size": 4, "top_k": 1, "baseline": "none", "kt_fraction": 0.0}})
    out = tmp_path / "run"
    res = run(cfg, out, progress=False, stop_after="distill")
    assert res.stages_run == ("search", "distill")
    folder = RunFolder(out)
    st = folder.state()
    assert st.done("search") and st.done("distill") and not st.done("export")
    with TrialStore(folder.store_dir, create=False, readonly=True) as store:
        trials = [(t.trial_id, t.status, t.accuracy, t.latency_s, t.arch) for t in store.trials()]
    assert [s for _, s, *_ in trials] == ["completed", "completed"]
    recs = folder.students()
    assert len(recs) == 1 and recs[0].ready and recs[0].steps == 2 and recs[0].trial_id in {t[0] for t in trials}
    assert recs[0].mlm_predictions > 0  # the held-out token count behind the report's standard error
    assert list(folder.checkpoint_dir(recs[0].name).iterdir())  # the full distillation's checkpoint
    files = _files(out)
    assert any(k.endswith("result.json") for k in files)

    # Resume: every stage finds its work done. Training anything now fails the test.
    def no_training(*a, **k):
        raise AssertionError("the resume trained a model")

    monkeypatch.setattr(FlashDistillEvaluator, "evaluate", no_training)
    monkeypatch.setattr(full_mod, "full_distill", no_training)
    res2 = run(cfg, out, progress=False, stop_after="distill")
    assert res2.stages_run == ("search", "distill")
    with TrialStore(folder.store_dir, create=False, readonly=True) as store:
        assert [(t.trial_id, t.status, t.accuracy, t.latency_s, t.arch) for t in store.trials()] == trials
    assert folder.students() == recs
    assert _files(out) == files  # no student record, checkpoint or cache file written again


# ------------------------------------------------------------------------------------------------- issue 16
def test_search_min_accuracy_and_feasibility_level_reach_the_engine(tmp_path: Path) -> None:
    from autodistill.hardware import SPEC_ONLY_ERROR_BAND
    from autodistill.run.context import RunContext

    assert RunConfig().search.min_accuracy is None and RunConfig().search.feasibility_level == 0.9
    text = default_config_text()
    assert "# min_accuracy = 0.5" in text and "# feasibility_level = 0.9" in text
    assert RunConfig.from_dict(tomllib.loads(text)).search == RunConfig().search
    for bad, match in ((1.5, r"min_accuracy = 1.5 must be in \[0, 1\]"), (-0.1, "must be in"),
                       ("high", "must be of type float"), (True, "must be of type float")):
        with pytest.raises(ConfigError, match=match):
            RunConfig.from_dict({"search": {"min_accuracy": bad}})
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ConfigError, match=r"feasibility_level = .* must be in \(0, 1\)"):
            RunConfig.from_dict({"search": {"feasibility_level": bad}})
    cfg = RunConfig.from_dict({"run": {"seed": 3}, "search": {"min_accuracy": 0.4, "feasibility_level": 0.8,
                                                              "space": "minilm", "profile": "cpu_generic"}})
    assert RunConfig.from_dict(cfg.to_dict()) == cfg  # config.json round trip (a Ray worker's copy)
    ctx = RunContext(cfg, RunFolder(tmp_path / "r"), progress=False)
    ec = ctx.engine_config()
    assert (ec.min_accuracy, ec.feasibility_level, ec.seed) == (0.4, 0.8, 3)
    f = ctx.latency_feasibility()  # the minilm space's 5 ms budget on cpu_generic (spec-only)
    assert f is not None and f.budget_s == 5e-3 and f.level == 0.8
    assert (f.band_low, f.band_high) == (SPEC_ONLY_ERROR_BAND.low, SPEC_ONLY_ERROR_BAND.high)
    assert RunContext(RunConfig(), RunFolder(tmp_path / "s"), progress=False).latency_feasibility() is None
    assert RunContext(RunConfig(), RunFolder(tmp_path / "s"), progress=False).engine_config().min_accuracy is None
