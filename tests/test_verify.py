from __future__ import annotations

import pytest

from autodistill.arch import StudentArch, reference_arch
from autodistill.costmodel import CostModel
from autodistill.errors import ConfigError
from autodistill.hardware import load_profile
from autodistill.verify import confirm, measure_students

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
    rep = confirm(_students(), prof, batch=1, seq=64, tolerance=0.10, measurements=rows)
    assert rep.recalibrated is None
    assert all(c.error == pytest.approx(1 / 1.05 - 1) for c in rep.students)
    assert rep.summary()["within_10pct_after"] == 1.0


def test_large_errors_trigger_a_recalibration_that_must_help() -> None:
    prof = load_profile("cpu_generic")  # spec-only: far from this machine's truth below
    cm = CostModel(prof, "fp32")
    rows = [{"latency_s": cm.latency_s(a, 1, 64) * 2.0} for _, a in _students()]
    rep = confirm(_students(), prof, batch=1, seq=64, tolerance=0.10, measurements=rows)
    s = rep.summary()
    if rep.recalibrated is not None:
        assert s["mape_after"] < s["mape_before"]
        assert rep.recalibrated.name == "cpu_generic_recalibrated"
    else:
        assert "did not help" in rep.note
    with pytest.raises(ConfigError, match="2 measurements for 3 students"):
        confirm(_students(), prof, measurements=rows[:2])
    with pytest.raises(ConfigError, match="tolerance=0 must be in"):
        confirm(_students(), prof, tolerance=0, measurements=rows)


def test_measuring_in_a_pinned_child_process() -> None:
    pytest.importorskip("jax")
    rows = measure_students([TINY], 1, 16, budget_s=0.2)
    assert len(rows) == 1 and rows[0]["latency_s"] > 0
