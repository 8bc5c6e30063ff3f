"""The timing harness, XLA cost analysis and the benchmark suites (small and fast)."""
from __future__ import annotations

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
pytest.importorskip("pandas")

from autodistill.arch import StudentArch  # noqa: E402
from autodistill.errors import CalibrationError  # noqa: E402
from autodistill.measure import (  # noqa: E402
    CASE_KINDS,
    FINGERPRINT_COLUMNS,
    TABLE_COLUMNS,
    Case,
    LoadMeter,
    RunOptions,
    _cost_value,
    build_case,
    compile_fn,
    env_fingerprint,
    hlo_dot_flops,
    load_measurements,
    micro_suite,
    models_available,
    run_cases,
    save_measurements,
    student_suite,
    summarize,
    time_compiled,
    time_fn,
    xla_cost,
)


def test_time_fn_on_a_tiny_jitted_function() -> None:
    x = jnp.arange(64.0)
    t = time_fn(lambda v: jnp.sin(v) * 2.0, x, warmup=1, min_repeats=3, max_repeats=20, budget_s=0.2)
    assert 3 <= t.n <= 20 and len(t.samples) == t.n
    assert t.stop_reason in ("spread", "budget", "max_repeats")
    assert 0 < t.min_s <= t.median_s <= max(t.samples)
    assert t.iqr_s >= 0 and math.isfinite(t.rel_spread)
    assert t.compile_s > 0


def test_time_compiled_stops_on_spread_budget_or_cap() -> None:
    calls = []

    def call():
        calls.append(1)
        return jnp.zeros(())

    t = time_compiled(call, warmup=2, min_repeats=4, max_repeats=7, rel_spread=0.0, budget_s=10.0)
    assert t.n <= 7 and len(calls) == 2 + t.n
    t = time_compiled(call, warmup=0, min_repeats=2, max_repeats=1000, rel_spread=0.0, budget_s=1e-9)
    assert t.stop_reason in ("budget", "spread") and t.n == 2


@pytest.mark.parametrize("kw", [dict(min_repeats=0), dict(max_repeats=2, min_repeats=3), dict(budget_s=0.0),
                                dict(warmup=-1), dict(rel_spread=-0.1)])
def test_time_compiled_rejects_bad_settings(kw) -> None:
    with pytest.raises(CalibrationError):
        time_compiled(lambda: jnp.zeros(()), **kw)


def test_summarize_quartiles_and_empty() -> None:
    t = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert t.median_s == 3.0 and t.min_s == 1.0 and t.iqr_s == pytest.approx(2.0)
    with pytest.raises(CalibrationError):
        summarize([])


def test_env_fingerprint_names_device_versions_flags_host_date() -> None:
    fp = env_fingerprint()
    assert set(FINGERPRINT_COLUMNS) <= set(fp)
    assert fp["platform"] == "cpu" and fp["jax_version"] == jax.__version__
    assert fp["date"].endswith("+00:00")


def test_load_meter_is_finite_and_non_negative() -> None:
    m = LoadMeter().start()
    sum(range(10000))
    v = m.stop()
    assert math.isnan(v) or v >= 0


def test_xla_cost_of_a_matmul_and_hlo_dot_parser() -> None:
    a, b = jnp.ones((48, 100)), jnp.ones((100, 312))
    compiled, _, _ = compile_fn(lambda x, y: x @ y, a, b)
    c = xla_cost(compiled)
    assert c["xla_dot_flops"] == 2 * 48 * 100 * 312
    assert c["xla_flops"] == pytest.approx(2 * 48 * 100 * 312, rel=0.02)
    hlo = """
    %fused (p0: f32[2,8,16], p1: f32[2,16,4]) -> f32[2,8,4] {
      %p0 = f32[2,8,16]{2,1,0} parameter(0)
      %p1 = f32[2,16,4]{2,1,0} parameter(1)
      ROOT %d = f32[2,8,4]{2,1,0} dot(%p0, %p1), lhs_batch_dims={0}, lhs_contracting_dims={2}, rhs_batch_dims={0}, rhs_contracting_dims={1}
    }"""  # noqa: E501 - an HLO instruction is one line
    assert hlo_dot_flops(hlo) == 2 * 2 * 8 * 4 * 16
    assert hlo_dot_flops("ROOT %d = f32[2,2]{1,0} dot(%unknown, %x), lhs_contracting_dims={1}") != 0  # NaN


@pytest.mark.parametrize("ca,want", [({"flops": 10.0}, 10.0), ({"flops": -1.0}, math.nan), ({}, math.nan),
                                     (None, math.nan), ([{"flops": 3.0}, {"flops": -1}], 3.0),
                                     ({"flops": "x"}, math.nan)])
def test_cost_analysis_guard(ca, want) -> None:
    got = _cost_value(ca, "flops")
    assert (math.isnan(got) and math.isnan(want)) or got == want


def test_suites_are_seeded_and_valid() -> None:
    tiny = micro_suite("tiny")
    assert {c.kind for c in tiny} <= set(CASE_KINDS)
    small, full = micro_suite("small", seed=1), micro_suite("full", seed=1)
    assert [c.name for c in small] == [c.name for c in micro_suite("small", seed=1)]
    assert len(full) > 100 and {c.kind for c in full} == set(CASE_KINDS) - {"student"}
    assert any(c.kind == "matmul" and c.params["n"] % 16 for c in full)  # off the 6x16 tile
    with pytest.raises(CalibrationError, match="valid choices"):
        micro_suite("huge")
    with pytest.raises(CalibrationError):
        Case("conv", "x", {})


def test_student_suite_split_budget_and_uniqueness() -> None:
    s = student_suite(20, seed=3, test_fraction=0.25, max_gflops=2.0)
    assert [c.name for c in s] == [c.name for c in student_suite(20, seed=3, test_fraction=0.25, max_gflops=2.0)]
    assert len({c.name for c in s}) == 20
    assert sum(c.split == "test" for c in s) == 5 and sum(c.split == "train" for c in s) == 15
    for c in s:
        a = c.arch()
        assert a.flops_per_token(c.seq) * c.batch * c.seq <= 2e9
    assert len({c.batch for c in s}) > 1 and len({c.seq for c in s}) > 1
    with pytest.raises(CalibrationError):
        student_suite(3, test_fraction=1.0)


def test_run_cases_table_and_csv_round_trip(tmp_path) -> None:
    cases = [c for c in micro_suite("tiny") if c.kind in ("matmul", "softmax")][:2]
    df = run_cases(cases, opts=RunOptions(warmup=1, min_repeats=3, max_repeats=10, budget_s=0.05))
    assert list(df.columns[:len(TABLE_COLUMNS)]) == list(TABLE_COLUMNS)
    assert set(FINGERPRINT_COLUMNS) <= set(df.columns)
    assert (df["median_s"] > 0).all() and (df["n"] >= 3).all()
    assert len(df.loc[0, "samples_s"].split()) == df.loc[0, "n"]
    path = save_measurements(df, tmp_path / "m.csv")
    back = load_measurements(path)
    assert back["median_s"].tolist() == pytest.approx(df["median_s"].tolist())
    assert back["name"].tolist() == df["name"].tolist()
    with pytest.raises(CalibrationError, match=".csv or .parquet"):
        save_measurements(df, tmp_path / "m.txt")
    with pytest.raises(CalibrationError, match="does not exist"):
        load_measurements(tmp_path / "nope.csv")


def test_layer_case_builds_and_runs() -> None:
    case = next(c for c in micro_suite("tiny") if c.kind == "layer")
    fn, args = build_case(case)
    out = jax.jit(fn)(*args)
    b, s, h = case.params["b"], case.params["s"], case.arch().hidden_size
    assert out.shape == (b, s, h) and bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.skipif(not models_available(), reason="autodistill.models (the Flax student) is not importable")
def test_flops_cross_check_one_small_student() -> None:
    """The cost model's FLOPs agree with XLA's for a whole student (within 2%)."""
    from autodistill.costmodel import CostModel
    from autodistill.hardware import load_profile

    arch = StudentArch(num_hidden_layers=2, hidden_size=256, embedding_size=64, num_attention_heads=2,
                       intermediate_size=512, num_feedforward_networks=2, intra_bottleneck_size=128,
                       vocab_size=1000, hidden_act="relu", normalization_type="no_norm")
    case = Case("student", "s", {"arch": arch.to_dict(), "b": 2, "s": 32})
    fn, args = build_case(case)
    compiled, _, _ = compile_fn(fn, *args)
    x = xla_cost(compiled)
    est = CostModel(load_profile("cpu_generic"), "fp32").estimate(arch, 2, 32)
    vector = sum(o.vector_flops for o in est.ops)
    # matmul FLOPs: the model's against every dot XLA kept
    assert est.flops == pytest.approx(x["xla_dot_flops"], rel=0.02)
    # cost_analysis() total (dots + elementwise): against the model's matmul + fused elementwise FLOPs
    assert math.isfinite(x["xla_flops"])
    assert est.flops + vector == pytest.approx(x["xla_flops"], rel=0.02)
    assert est.flops == pytest.approx(x["xla_flops"], rel=0.03)


def test_sampled_students_are_valid_archs() -> None:
    from autodistill.measure import sample_student

    rng = np.random.default_rng(0)
    archs = [sample_student(rng) for _ in range(200)]
    assert {a.family for a in archs} == {"bert", "mobilebert"}
    assert all(isinstance(a, StudentArch) for a in archs)


def test_corrected_times_take_the_smaller_of_wall_and_cpu() -> None:
    t = summarize([1.0, 2.0, 3.0], cpu_samples=[0.5, 4.0, 0.0])  # waited / ran on 2 cores / no CPU clock
    assert t.corrected_samples == (0.5, 2.0, 3.0)
    assert t.stats("corrected")["median_s"] == 2.0 and t.stats("cpu")["min_s"] == 0.0
    assert summarize([1.0]).corrected_samples == (1.0,)  # no CPU samples: wall times
    with pytest.raises(CalibrationError, match="spread_on"):
        time_compiled(lambda: jnp.zeros(()), spread_on="cpu")


def test_pin_cores_zero_keeps_every_core() -> None:
    import os

    from autodistill.measure import pin_cores

    before = os.sched_getaffinity(0)
    assert pin_cores(0) == before and os.sched_getaffinity(0) == before


def test_student_suite_draws_from_search_spaces() -> None:
    s = student_suite(6, seed=1, sources=("small", "broad"), max_gflops=2.0)
    small = [c.arch() for c in s[::2]]
    assert all(a.family == "mobilebert" and a.use_bottleneck and a.num_hidden_layers in (2, 3, 4, 6) for a in small)
    with pytest.raises(CalibrationError, match="search space 'nope'"):
        student_suite(2, sources=("nope",))


@pytest.mark.parametrize("op", ["dense", "softmax"])
def test_chain_case_runs_n_ops_with_the_models_flops(op) -> None:
    """A chain case compiles to ``n`` of its op in one call: XLA's dot FLOPs are n times one op's."""
    from autodistill.calibration import case_ops
    from autodistill.hardware import load_profile

    prof = load_profile("cpu_generic")
    shapes = {"dense": {"m": 8, "h": 16}, "softmax": {"b": 1, "heads": 2, "s": 8}}[op]
    dots = []
    for n in (1, 3):
        case = Case("chain", f"chain-{op}-{n}", {"op": op, "n": n, **shapes})
        fn, args = build_case(case)
        compiled, dargs, _ = compile_fn(fn, *args)
        out = compiled(*dargs)
        assert bool(jnp.all(jnp.isfinite(out)))
        rows = case_ops("chain", case.params, prof)
        assert len(rows) == 1 and rows[0].count == n
        dots.append(xla_cost(compiled)["xla_dot_flops"])
        if op == "dense":
            assert rows[0].flops == pytest.approx(dots[-1])  # totals over the n ops
        else:
            assert rows[0].flops == 0 and rows[0].vector_flops == pytest.approx(n * 5 * 2 * 8 * 8)
    if op == "dense":
        assert dots[1] == pytest.approx(3 * dots[0])
    with pytest.raises(CalibrationError, match="valid choices"):
        build_case(Case("chain", "bad", {"op": "conv", "n": 2, **shapes}))


# ------------------------------------------------------------------------- accelerators, dtypes, time limits
def test_accelerator_suites_size_the_base_rate_cases_for_the_device() -> None:
    from autodistill.measure import micro_suite as ms

    cpu, gpu = ms("full", seed=0), ms("full", seed=0, platform="gpu")
    base = {"peak", "stream", "vector_peak"}
    by = {p: [c for c in s if c.kind in base] for p, s in (("cpu", cpu), ("gpu", gpu))}
    assert by["gpu"][0].params["m"] == 8192 > by["cpu"][0].params["m"]
    assert max(c.params["n"] for c in by["gpu"] if c.kind == "stream") * 4 >= 1 << 30  # past any L2
    # the op cases (the students' shapes) are the same on every platform
    assert [c.name for c in cpu if c.kind not in base] == [c.name for c in gpu if c.kind not in base]
    with pytest.raises(CalibrationError, match="platform 'fpga'.*valid choices"):
        ms("full", platform="fpga")


def test_profile_dtypes_map_to_jax_dtypes_and_bf16_students_hold_bf16_weights() -> None:
    import jax.numpy as jnp

    from autodistill.measure import jax_dtype

    assert jax_dtype("fp32") == jnp.float32 and jax_dtype("tf32") == jnp.float32
    assert jax_dtype("bf16") == jnp.bfloat16 and jax_dtype("fp16") == jnp.float16
    with pytest.raises(CalibrationError, match="measurement dtype 'int8'.*valid choices"):
        jax_dtype("int8")
    case = next(c for c in micro_suite("tiny") if c.kind == "matmul")
    fn, args = build_case(case, jnp.bfloat16)
    assert all(a.dtype == jnp.bfloat16 for a in args)
    stream = build_case(Case("stream", "s", {"n": 64}), jnp.bfloat16)[1][0]
    assert stream.dtype == np.float32  # bandwidth is read off 4-byte elements whatever the matmul dtype
    arch = StudentArch(family="bert", num_hidden_layers=1, hidden_size=32, embedding_size=32, num_attention_heads=2,
                       intermediate_size=64, num_feedforward_networks=1, use_bottleneck=False,
                       intra_bottleneck_size=32, key_query_shared_bottleneck=False, trigram_input=False,
                       normalization_type="layer_norm", hidden_act="gelu", vocab_size=100)
    fn, (params, ids, mask) = build_case(Case("student", "st", {"arch": arch.to_dict(), "b": 1, "s": 8}),
                                         jnp.bfloat16)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
    assert jax.jit(fn)(params, ids, mask).dtype == jnp.bfloat16


def test_time_compiled_warms_up_for_warmup_s() -> None:
    calls = []

    def call():
        calls.append(1)
        return jax.numpy.zeros(())

    t = time_compiled(call, warmup=1, warmup_s=0.05, min_repeats=2, max_repeats=2)
    assert t.n == 2 and len(calls) > 3  # more than the one warm-up call plus the two timed ones


def test_run_cases_stops_starting_cases_at_the_time_limit() -> None:
    cases = [c for c in micro_suite("tiny") if c.kind in ("matmul", "softmax", "layernorm")]
    assert len(cases) >= 3
    opts = RunOptions(warmup=1, min_repeats=2, max_repeats=3, budget_s=0.01)
    df = run_cases(cases, opts=opts, max_time_s=1e-9)
    assert len(df) == 1  # the first case always runs; none starts after the limit
    assert len(run_cases(cases, opts=opts, max_time_s=600)) == len(cases)


def test_log_flops_spread_covers_small_students_evenly() -> None:
    def gflops(cases):
        return np.array([c.arch().flops_per_token(c.seq) * c.batch * c.seq / 1e9 for c in cases])

    kw = dict(seed=4, test_fraction=0.25, max_gflops=4.0)
    even = student_suite(24, spread="log_flops", **kw)
    assert [c.name for c in even] == [c.name for c in student_suite(24, spread="log_flops", **kw)]
    assert len({c.name for c in even}) == 24 and sum(c.split == "test" for c in even) == 6
    g_even, g_uni = gflops(even), gflops(student_suite(24, **kw))
    assert g_even.max() <= 4.0
    # the same budget, but far more of the suite in the smaller half of the log range
    lo, hi = np.log10(g_even.min()), np.log10(g_even.max())
    mid = 10 ** ((lo + hi) / 2)
    assert (g_even < mid).sum() >= 8 and (g_even < mid).sum() > (g_uni < mid).sum()
    with pytest.raises(CalibrationError, match="student spread 'wide'.*valid choices"):
        student_suite(4, spread="wide")


# ------------------------------------------------------------------ device time: back-to-back calls
def test_back_to_back_samples_run_k_calls_and_report_per_call_time() -> None:
    calls = []

    def call():
        calls.append(1)
        return jnp.zeros(())

    t = time_compiled(call, warmup=1, min_repeats=3, max_repeats=3, rel_spread=0.0, budget_s=10.0, calls_per_sample=8)
    assert t.calls_per_sample == 8 and t.n == 3 and len(calls) == 1 + 3 * 8
    # auto: enough calls that a sample spans DEVICE_SAMPLE_S
    from autodistill.measure import DEVICE_SAMPLE_S, MAX_CALLS_PER_SAMPLE, calls_for

    calls.clear()
    t = time_compiled(call, warmup=0, min_repeats=2, max_repeats=2, rel_spread=0.0, calls_per_sample=0)
    assert 1 < t.calls_per_sample <= MAX_CALLS_PER_SAMPLE and len(calls) == 1 + 2 * t.calls_per_sample
    assert calls_for(DEVICE_SAMPLE_S / 2) == 2 and calls_for(1.0) == 1 and calls_for(0.0) == MAX_CALLS_PER_SAMPLE
    assert calls_for(1e-6) == MAX_CALLS_PER_SAMPLE
    with pytest.raises(CalibrationError, match="calls_per_sample=-1 must be an integer in 0..256"):
        time_compiled(call, calls_per_sample=-1)


def test_accelerators_time_device_time_and_keep_end_to_end_beside_it() -> None:
    assert RunOptions.for_device("gpu").calls_per_sample == 0 and RunOptions.for_device("tpu").calls_per_sample == 0
    assert RunOptions.for_device("cpu").calls_per_sample == 1
    case = Case("matmul", "mm", {"m": 64, "k": 64, "n": 64})
    from autodistill.measure import measure_case

    row = measure_case(case, opts=RunOptions(calls_per_sample=0, budget_s=0.2, xla_cost=False))
    assert row["calls_per_sample"] > 1
    assert math.isfinite(row["e2e_min_s"]) and math.isfinite(row["e2e_median_s"]) and row["e2e_min_s"] > 0
    one = measure_case(case, opts=RunOptions(budget_s=0.2, xla_cost=False))
    assert one["calls_per_sample"] == 1 and one["e2e_min_s"] == one["min_s"]  # single calls are end to end
