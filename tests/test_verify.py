from __future__ import annotations

import dataclasses
import json

import pytest

from autodistill.arch import StudentArch, reference_arch
from autodistill.costmodel import CostModel
from autodistill.errors import ConfigError
from autodistill.hardware import load_profile, save_profile
from autodistill.verify import (
    Anchor,
    DriftCheck,
    anchor_students,
    confirm,
    match_reused,
    measure_items,
    measurement_table_of,
)

TINY = StudentArch(family="bert", num_hidden_layers=1, hidden_size=32, embedding_size=32, num_attention_heads=2,
                   intermediate_size=64, num_feedforward_networks=1, use_bottleneck=False, intra_bottleneck_size=32,
                   key_query_shared_bottleneck=False, trigram_input=False, normalization_type="layer_norm",
                   hidden_act="gelu", vocab_size=100)


def _students():
    return [("a", reference_arch("tinybert-4")), ("b", reference_arch("minilm-l6-h384")),
            ("c", reference_arch("mobilebert-tiny"))]


def test_within_tolerance_keeps_the_profile() -> None:
    prof = load_profile("cpu_local")
    cm = CostModel(prof, "fp32")
    rows = [{"latency_s": cm.latency_s(a, 1, 64) * 1.05} for _, a in _students()]
    rep = confirm(_students(), prof, batch=1, seq=64, tolerance=0.10, measurements=rows, anchors=0)
    assert rep.recalibrated is None and rep.drift is None
    assert all(c.drift_latency_s is None and c.drift_error is None for c in rep.students)
    assert "mape_drift_corrected" not in rep.summary()
    assert all(c.error == pytest.approx(1 / 1.05 - 1) for c in rep.students)
    assert rep.summary()["within_10pct_after"] == 1.0


def _twice_the_estimates(prof):
    """Measurements of `_students` at b1 x s64 that take twice what ``prof`` estimates: every error is -50%."""
    cm = CostModel(prof, "fp32")
    return [{"latency_s": cm.latency_s(a, 1, 64) * 2.0} for _, a in _students()]


def _spy_on_recalibrate(monkeypatch, replace=None) -> list:
    """Record each call of `autodistill.calibration.recalibrate` from `confirm` (its observations);
    ``replace(profile, obs, **kw)`` stands in for the refit when given."""
    import autodistill.calibration as calibration

    real, calls = calibration.recalibrate, []

    def spy(profile, obs, **kw):
        calls.append(list(obs))
        return (replace or real)(profile, obs, **kw)

    monkeypatch.setattr(calibration, "recalibrate", spy)
    return calls


def test_large_errors_trigger_a_recalibration_that_must_help(monkeypatch) -> None:
    prof = load_profile("cpu_generic")
    rows = _twice_the_estimates(prof)
    calls = _spy_on_recalibrate(monkeypatch)
    rep = confirm(_students(), prof, batch=1, seq=64, tolerance=0.10, measurements=rows, anchors=0)
    assert all(c.error == pytest.approx(-0.5) for c in rep.students)  # the constructed 2x error
    # the recalibration branch ran on the three measurements, and its refit was kept because it helped
    assert len(calls) == 1 and [o["latency_s"] for o in calls[0]] == [r["latency_s"] for r in rows]
    assert rep.recalibrated is not None and rep.recalibrated.name == "cpu_generic_recalibrated" and rep.note == ""
    s = rep.summary()
    assert s["recalibrated"] == 1.0 and s["mape_before"] == pytest.approx(0.5)
    assert s["mape_after"] < s["mape_before"] / 2 and s["within_10pct_after"] > s["within_10pct_before"] == 0.0
    cm2 = CostModel(rep.recalibrated, "fp32")
    for c in rep.students:  # the students are re-estimated with the refitted profile
        assert c.recal_latency_s == pytest.approx(cm2.latency_s(c.arch, 1, 64))
        assert abs(c.final_error) < abs(c.error)
    with pytest.raises(ConfigError, match="2 measurements for 3 students"):
        confirm(_students(), prof, measurements=rows[:2], anchors=0)
    with pytest.raises(ConfigError, match="tolerance=0 must be in"):
        confirm(_students(), prof, tolerance=0, measurements=rows)
    with pytest.raises(ConfigError, match="anchors=-1 must be >= 0"):
        confirm(_students(), prof, measurements=rows, anchors=-1)


def test_a_recalibration_that_does_not_help_is_refused(monkeypatch) -> None:
    prof = load_profile("cpu_generic")
    rows = _twice_the_estimates(prof)
    # a refit that changes nothing: the error stays at 50%, so the profile as given is kept
    calls = _spy_on_recalibrate(monkeypatch, replace=lambda p, obs, **kw: dataclasses.replace(p, name=kw["name"]))
    rep = confirm(_students(), prof, batch=1, seq=64, tolerance=0.10, measurements=rows, anchors=0)
    assert len(calls) == 1
    assert rep.recalibrated is None and rep.note.startswith("recalibration did not help (mean |error| 50.0% -> 50.0%)")
    assert all(c.recal_latency_s is None and c.final_error == c.error for c in rep.students)
    s = rep.summary()
    assert s["recalibrated"] == 0.0 and s["mape_after"] == s["mape_before"] == pytest.approx(0.5)


def _profile_with_table(tmp_path, students):
    """A copy of cpu_generic saved in tmp_path with a calibration table of ``(arch, b, s, seconds)`` students."""
    import pandas as pd

    path = save_profile(load_profile("cpu_generic"), tmp_path / "mycpu.toml")
    rows = []
    for i, (a, b, s, t) in enumerate(students):
        for pass_, slower in ((0, 1.3), (1, 1.0)):  # the fastest pass is the one kept
            rows.append({"case_id": f"s{i}#0", "kind": "student", "name": f"s{i}", "repeat": 0, "pass": pass_,
                         "params": json.dumps({"arch": a.to_dict(), "b": b, "s": s}),
                         "median_s": t * slower * 1.1, "min_s": t * slower})
    rows.append({"case_id": "m#0", "kind": "matmul", "name": "m", "repeat": 0, "pass": 0, "params": "{}",
                 "median_s": 1e-4, "min_s": 1e-4})
    pd.DataFrame(rows).to_csv(tmp_path / "mycpu_measurements.csv", index=False)
    return load_profile(path)


def test_anchor_students_are_spread_over_the_profiles_table(tmp_path) -> None:
    pytest.importorskip("pandas")
    assert anchor_students(load_profile("cpu_generic")) == []  # shipped spec profile: no table beside it
    archs = [reference_arch(n) for n in ("tinybert-4", "minilm-l6-h384", "mobilebert-tiny", "bert-base")]
    times = [1e-3, 2e-3, 4e-3, 8e-3, 16e-3, 0.2]
    prof = _profile_with_table(tmp_path, [(archs[i % 4], 1 + i, 16, t) for i, t in enumerate(times)])
    assert measurement_table_of(prof) == tmp_path / "mycpu_measurements.csv"
    got = anchor_students(prof, 3)
    assert [a.then_s for a in got] == pytest.approx([1e-3, 4e-3, 16e-3])  # fastest pass; 0.2 s is over max_s
    assert [a.batch for a in got] == [1, 3, 5] and got[0].arch == archs[0]
    assert len(anchor_students(prof, 10)) == 5 and anchor_students(prof, 0) == []


def test_drift_check_median_and_round_trip() -> None:
    a = reference_arch("tinybert-4")
    d = DriftCheck(tuple(Anchor(f"x{i}", a, 1, 16, 1.0, now) for i, now in enumerate((1.2, 0.9, 1.1, None))))
    assert d.ratios == pytest.approx([1.2, 0.9, 1.1]) and d.ratio == pytest.approx(1.1)
    back = DriftCheck.from_dict(json.loads(json.dumps(d.to_dict())))
    assert back == d and back.to_dict()["n"] == 3
    assert DriftCheck(()).ratio != DriftCheck(()).ratio  # nan: nothing re-timed


def test_a_given_drift_is_reported_and_its_anchors_join_the_refit(monkeypatch) -> None:
    prof = load_profile("cpu_generic")
    cm = CostModel(prof, "fp32")
    rows = _twice_the_estimates(prof)
    # anchors the profile priced right at calibration time (then_s), re-timed now at twice that: drift 2.0
    tb4 = reference_arch("tinybert-4")
    anchors = tuple(Anchor(f"x{b}", tb4, b, 32, cm.latency_s(tb4, b, 32), 2.0 * cm.latency_s(tb4, b, 32))
                    for b in (2, 8))
    calls = _spy_on_recalibrate(monkeypatch)
    rep = confirm(_students(), prof, batch=1, seq=64, measurements=rows, drift=DriftCheck(anchors))
    s = rep.summary()
    assert s["drift_anchors"] == 2 and s["drift_ratio"] == pytest.approx(2.0) and rep.drift.anchors == anchors
    assert s["within_10pct_before"] == 0.0
    for c in rep.students:  # the drift-corrected estimate is the profile's scaled by the anchors' median ratio
        assert c.drift_latency_s == pytest.approx(c.est_latency_s * 2.0)
        assert c.drift_error == pytest.approx(c.est_latency_s * 2.0 / c.measured_latency_s - 1) == pytest.approx(0)
    assert s["mape_drift_corrected"] == pytest.approx(
        sum(abs(c.drift_error) for c in rep.students) / len(rep.students))
    # the refit ran on the three students and the two re-timed anchors, and was kept
    assert len(calls) == 1 and len(calls[0]) == 5
    assert [(o["batch"], o["seq"], o["latency_s"]) for o in calls[0][3:]] == [(x.batch, x.seq, x.now_s)
                                                                              for x in anchors]
    assert rep.recalibrated is not None and s["recalibrated"] == 1.0 and s["mape_after"] < s["mape_before"]
    cm2 = CostModel(rep.recalibrated, "fp32")
    for x in anchors:  # the refit saw the anchors: their estimates move toward the re-timed values
        assert abs(cm2.latency_s(x.arch, x.batch, x.seq) / x.now_s - 1) < abs(
            cm.latency_s(x.arch, x.batch, x.seq) / x.now_s - 1)


def test_measuring_students_and_anchors_in_one_pinned_child_process(tmp_path) -> None:
    pytest.importorskip("jax")
    pytest.importorskip("pandas")
    prof = _profile_with_table(tmp_path, [(TINY, 2, 8, 1e-3)])
    rep = confirm([("t", TINY)], prof, batch=1, seq=16, budget_s=0.2, anchors=1)
    assert rep.students[0].measured_latency_s > 0
    assert rep.drift is not None and len(rep.drift.ratios) == 1 and rep.drift.anchors[0].now_s > 0
    assert rep.summary()["drift_anchors"] == 1
    with pytest.raises(ConfigError, match="passes=0 must be >= 1"):
        measure_items([(TINY, 1, 8)], passes=0)


# ------------------------------------------------------------------------------------------ match_reused
def _record(students, batch=2, seq=32):
    """One shape of an earlier confirmation, as `ConfirmationReport.to_dict` writes it."""
    prof = load_profile("cpu_local")
    rows = [{"latency_s": 1e-3 * (i + 1), "rel_spread": 0.01 * (i + 1)} for i in range(len(students))]
    rep = confirm(students, prof, batch=batch, seq=seq, measurements=rows, anchors=0, tolerance=9.0)
    return json.loads(json.dumps(rep.to_dict(batch, seq)))


def test_match_reused_takes_rows_by_architecture_in_the_students_order() -> None:
    rec = _record(_students())
    b, c = _students()[1][1], _students()[2][1]
    # other names, another order: matched by fields
    got = match_reused(rec, [("x", c), ("y", b)])
    assert got == [{"latency_s": pytest.approx(3e-3), "rel_spread": pytest.approx(0.03)},
                   {"latency_s": pytest.approx(2e-3), "rel_spread": pytest.approx(0.02)}]
    # the rows are what confirm takes: re-scoring gives the same measured times
    rep = confirm([("x", c), ("y", b)], load_profile("cpu_local"), batch=2, seq=32, measurements=got, anchors=0)
    assert [s.measured_latency_s for s in rep.students] == pytest.approx([3e-3, 2e-3])


def test_match_reused_names_every_missing_student_and_the_source() -> None:
    rec = _record(_students()[:1])
    a = _students()[0][1]
    with pytest.raises(ConfigError, match=r"^--reuse 'v.json' has no b2xs32 measurement of the architecture of "
                                          r"b, tinybert-4$"):
        match_reused(rec, [("a", a), ("b", reference_arch("bert-base")),
                           ("tinybert-4", a.replace(num_hidden_layers=24))], source="--reuse 'v.json'")
    # one field differing is another architecture
    with pytest.raises(ConfigError, match="the earlier measurements has no b2xs32 measurement"):
        match_reused(rec, [("a", a.replace(vocab_size=100))])
    assert match_reused(rec, [("renamed", a)])[0]["latency_s"] == pytest.approx(1e-3)


def test_match_reused_refuses_a_damaged_record() -> None:
    rec = _record(_students()[:1])
    rec["students"][0]["measured_latency_s"] = "fast"
    with pytest.raises(ConfigError, match=r"src: student 0 of the b2xs32 measurements is not a valid record"):
        match_reused(rec, _students()[:1], source="src")
    rec["students"][0] = {"arch": {"hiden_size": 3}, "measured_latency_s": 1.0}
    with pytest.raises(ConfigError, match=r"student 0 .* not a valid record .*hiden_size"):
        match_reused(rec, _students()[:1])
    rec["students"][0] = {"arch": TINY.to_dict(), "measured_latency_s": 1.0, "measured_spread": None}
    row = match_reused(rec, [("t", TINY)])[0]
    assert row["latency_s"] == 1.0 and row["rel_spread"] != row["rel_spread"]  # null spread reads as NaN
