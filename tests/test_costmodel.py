from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from autodistill import costmodel_reference as ref
from autodistill.arch import FEATURE_NAMES, reference_arch, reference_names
from autodistill.costmodel import CostModel, features_of
from autodistill.errors import CostModelError
from autodistill.hardware import (
    OP_CLASSES,
    RESIDUAL_CLASSES,
    RESIDUAL_LEN,
    RESIDUAL_MAX_LOG,
    ROOFLINES,
    Calibration,
    ClassTerms,
    load_profile,
)

from strategies import examples, student_archs

PROFILES = [load_profile(n) for n in ("tpu_v4i", "tpu_v4", "tpu_v3", "a100", "h100", "cpu_generic")]


@st.composite
def profiles(draw):
    """Shipped profiles, some with random calibration terms and dtypes, in either roofline mode."""
    p = draw(st.sampled_from(PROFILES))
    if draw(st.booleans()):
        eff = st.floats(0.05, 1.0)
        k0 = st.one_of(st.just(0.0), st.floats(0, 4096))
        terms = {c: ClassTerms(draw(eff), draw(eff), draw(st.floats(0, 1e-4)), draw(k0)) for c in OP_CLASSES}
        res = {c: tuple(draw(st.lists(st.floats(-1, 1), min_size=RESIDUAL_LEN, max_size=RESIDUAL_LEN)))
               for c in RESIDUAL_CLASSES if draw(st.booleans())}  # shape residuals, clipped or not
        p = p.with_calibration(Calibration(terms, fitted=True, fixed_overhead_s=draw(st.floats(0, 1e-3)),
                                           residuals=res))
    units = draw(st.one_of(st.just(0), st.integers(1, 512)))  # waves (and split-K) on or off
    p = dataclasses.replace(p, roofline=draw(st.sampled_from(ROOFLINES)), parallel_units=units)
    return p, draw(st.sampled_from(p.dtypes))


workloads = st.tuples(st.integers(1, 64), st.integers(1, 1024))


@settings(max_examples=examples(3), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(student_archs(), profiles(), workloads, st.booleans())
def test_cpp_equals_python_reference(arch, prof_dtype, wl, mlm) -> None:
    prof, dtype = prof_dtype
    batch, seq = wl
    est = CostModel(prof, dtype).estimate(arch, batch, seq, mlm_head=mlm)
    r_total, r_ops = ref.estimate(arch, prof, batch, seq, dtype=dtype, mlm_head=mlm)
    assert est.roofline == prof.roofline
    assert est.latency_s == pytest.approx(r_total, rel=1e-9)
    assert [o.name for o in est.ops] == [o.name for o in r_ops]
    for o, r in zip(est.ops, r_ops):
        for f in dataclasses.fields(r):
            a, b = getattr(o, f.name), getattr(r, f.name)
            if isinstance(b, float):
                assert a == pytest.approx(b, rel=1e-9, abs=1e-300), (o.name, f.name)
            else:
                assert a == b, (o.name, f.name)
    # The batch path gives the same number as the scalar path.
    batch_est = CostModel(prof, dtype).estimate_batch(arch.features()[None, :], batch, seq, mlm_head=mlm)
    assert batch_est[0] == pytest.approx(est.latency_s, rel=1e-12)


@settings(max_examples=examples(3), deadline=None)
@given(student_archs(), profiles(), workloads, st.booleans())
def test_roofline_bounds_and_breakdown_sum(arch, prof_dtype, wl, mlm) -> None:
    prof, dtype = prof_dtype
    batch, seq = wl
    cm = CostModel(prof, dtype)
    est = cm.estimate(arch, batch, seq, mlm_head=mlm)
    hw = cm.resolved
    assert math.isfinite(est.latency_s) and est.latency_s > 0
    assert math.fsum(o.latency_s for o in est.ops) + est.fixed_overhead_s == pytest.approx(est.latency_s, rel=1e-12)
    # Each op is at least as slow as its ideal compute and its ideal memory time at the best efficiency.
    best_ce = max(hw[f"{c}_compute_efficiency"] for c in OP_CLASSES)
    best_me = max(hw[f"{c}_memory_efficiency"] for c in OP_CLASSES)
    fastest_bw = max(hw["onchip_bytes_per_s"], hw["hbm_bytes_per_s"]) * best_me
    # a shape residual may speed a matmul up by at most exp(RESIDUAL_MAX_LOG)
    slack = math.exp(-RESIDUAL_MAX_LOG) if any(hw[f"{c}_residual"] for c in RESIDUAL_CLASSES) else 1.0
    assert est.latency_s >= slack * est.flops / (hw["peak_flops_per_s"] * best_ce) * (1 - 1e-12)
    assert est.latency_s >= slack * est.bytes_moved / fastest_bw * (1 - 1e-12)
    for o in est.ops:
        assert o.padded_flops >= o.flops
        assert o.latency_s >= slack * max(o.compute_s, o.vector_s, o.memory_s) * (1 - 1e-12)


@settings(max_examples=examples(2), deadline=None)
@given(student_archs(), profiles(), workloads, st.booleans())
def test_sum_roofline_adds_the_terms_and_bounds_max(arch, prof_dtype, wl, mlm) -> None:
    """The same profile with roofline "sum" is never faster than with "max", op by op and in total."""
    prof, dtype = prof_dtype
    batch, seq = wl
    est = {m: CostModel(dataclasses.replace(prof, roofline=m), dtype).estimate(arch, batch, seq, mlm_head=mlm)
           for m in ROOFLINES}
    assert est["sum"].latency_s >= est["max"].latency_s * (1 - 1e-12)
    for mx, sm in zip(est["max"].ops, est["sum"].ops):
        assert mx.name == sm.name
        assert (mx.compute_s, mx.vector_s, mx.memory_s, mx.overhead_s) == pytest.approx(
            (sm.compute_s, sm.vector_s, sm.memory_s, sm.overhead_s), rel=1e-12)  # the same terms, combined differently
        assert sm.latency_s == pytest.approx(
            (sm.compute_s + sm.vector_s + sm.memory_s + sm.overhead_s) * sm.shape_factor, rel=1e-12)
        assert mx.latency_s == pytest.approx(
            (max(mx.compute_s, mx.vector_s, mx.memory_s) + mx.overhead_s) * mx.shape_factor, rel=1e-12)
        assert sm.latency_s >= mx.latency_s * (1 - 1e-12)
        assert sm.bound == mx.bound  # the dominant term is the largest one in either mode
    cm_sum = CostModel(dataclasses.replace(prof, roofline="sum"), dtype)
    assert cm_sum.estimate_batch(arch.features()[None, :], batch, seq, mlm_head=mlm)[0] == pytest.approx(
        est["sum"].latency_s, rel=1e-12)


def test_roofline_field_errors_name_the_valid_choices() -> None:
    from autodistill import _costmodel

    hw = load_profile("a100").resolve()
    assert _costmodel.Hardware(**hw).roofline == "max"
    assert _costmodel.Hardware(**{**hw, "roofline": "sum"}).roofline == "sum"
    with pytest.raises(ValueError, match=r"unknown roofline 'avg'; valid choices: max, sum"):
        _costmodel.Hardware(**{**hw, "roofline": "avg"})
    with pytest.raises(ValueError, match=r"roofline must be a string; valid choices: max, sum"):
        _costmodel.Hardware(**{**hw, "roofline": 1.0})


def _lat(arch, prof, batch=1, seq=128):
    return CostModel(prof).latency_s(arch, batch, seq)


@settings(max_examples=examples(2), deadline=None)
@given(student_archs(max_layers=24, max_width=1024), st.sampled_from(PROFILES), st.integers(1, 24),
       workloads)
def test_monotone_in_layers(arch, prof, extra, wl) -> None:
    deeper = dataclasses.replace(arch, num_hidden_layers=arch.num_hidden_layers + extra)
    assert _lat(deeper, prof, *wl) >= _lat(arch, prof, *wl)


@settings(max_examples=examples(2), deadline=None)
@given(student_archs(max_layers=24, max_width=1024), st.sampled_from(PROFILES), st.integers(2, 3), workloads)
def test_monotone_in_width(arch, prof, k, wl) -> None:
    w = dict(hidden_size=arch.hidden_size * k, intra_bottleneck_size=arch.intra_bottleneck_size * k,
             intermediate_size=arch.intermediate_size * k, embedding_size=arch.embedding_size * k)
    if arch.family == "bert":
        w["embedding_size"] = w["hidden_size"]
    wider = dataclasses.replace(arch, **w)
    assert _lat(wider, prof, *wl) >= _lat(arch, prof, *wl)
    # Each width alone, too.
    for field in ("intermediate_size",):
        one = dataclasses.replace(arch, **{field: getattr(arch, field) * k})
        assert _lat(one, prof, *wl) >= _lat(arch, prof, *wl)


@settings(max_examples=examples(2), deadline=None)
@given(student_archs(max_layers=24, max_width=1024), st.sampled_from(PROFILES), st.integers(1, 16),
       st.integers(1, 512), st.integers(1, 512))
def test_monotone_in_sequence_length(arch, prof, batch, seq, extra) -> None:
    assert _lat(arch, prof, batch, seq + extra) >= _lat(arch, prof, batch, seq)


def test_padding_penalizes_off_tile_shapes_on_tpu() -> None:
    cm = CostModel(load_profile("tpu_v4i"))
    est = cm.estimate(reference_arch("mobilebert"), 1, 128)
    scores = next(o for o in est.ops if o.name == "attention_scores")
    assert scores.padded_flops == pytest.approx(4 * scores.flops)  # head size 32 padded to the 128-wide MXU


def test_batch_matches_scalar_for_reference_models() -> None:
    archs = [reference_arch(n) for n in reference_names()]
    for p in PROFILES:
        cm = CostModel(p)
        got = cm.estimate_batch(features_of(archs), batch=2, seq=96)
        want = [cm.latency_s(a, 2, 96) for a in archs]
        np.testing.assert_allclose(got, want, rtol=1e-12)
        got_threads = cm.estimate_batch(np.repeat(features_of(archs), 2000, axis=0), 2, 96, threads=2)
        np.testing.assert_allclose(got_threads, np.repeat(want, 2000), rtol=1e-12)


# ----------------------------------------------------------------------------------------- malformed input
def _good_rows(n: int = 5) -> np.ndarray:
    return np.repeat(reference_arch("mobilebert").features()[None, :], n, axis=0)


@pytest.mark.parametrize(
    "col, value, match",
    [
        ("hidden_size", 0, r"row 3: feature 'hidden_size'=0 is not an integer in 1\.\."),
        ("hidden_size", -512, r"feature 'hidden_size'=-512 is not an integer"),
        ("num_hidden_layers", float("nan"), r"feature 'num_hidden_layers'=nan"),
        ("intermediate_size", float("inf"), r"feature 'intermediate_size'=inf"),
        ("intermediate_size", 1e30, r"feature 'intermediate_size'=1e\+30 is not an integer in 1\.\.1048576"),
        ("intermediate_size", 2.5, r"feature 'intermediate_size'=2.5"),
        ("num_attention_heads", 3, r"feature 'num_attention_heads'=3 does not divide the attention width 128"),
        ("family", 2, r"feature 'family'=2 is not an integer in 0\.\.1"),
        ("hidden_act", 9, r"feature 'hidden_act'=9"),
    ],
)
def test_malformed_rows_raise_clear_errors(col: str, value: float, match: str) -> None:
    rows = _good_rows()
    rows[3, FEATURE_NAMES.index(col)] = value
    cm = CostModel(load_profile("tpu_v4i"))
    with pytest.raises(CostModelError, match=match):
        cm.estimate_batch(rows)
    big = np.tile(rows, (5000, 1))  # the multi-threaded path reports the lowest bad row too
    with pytest.raises(CostModelError, match=r"row 3: "):
        cm.estimate_batch(big, threads=2)


@pytest.mark.parametrize(
    "features, match",
    [
        (np.zeros((4, len(FEATURE_NAMES) - 1)), r"features must have shape \(n, 15\)"),
        (np.zeros((len(FEATURE_NAMES),)), r"features must have shape \(n, 15\)"),
        (np.zeros((2, 3, len(FEATURE_NAMES))), r"features must have shape \(n, 15\)"),
        (np.array([["a"] * len(FEATURE_NAMES)]), r"features must be numeric"),
    ],
)
def test_wrong_shapes_raise(features, match: str) -> None:
    with pytest.raises(CostModelError, match=match):
        CostModel(load_profile("a100")).estimate_batch(features)


def test_workload_and_dtype_errors() -> None:
    cm = CostModel(load_profile("a100"))
    a = reference_arch("bert-base")
    for bad in (0, -1, 2**21, 1.5, True):
        with pytest.raises(CostModelError, match=r"batch=.* must be an integer in 1\.\.1048576"):
            cm.estimate(a, batch=bad)
        with pytest.raises(CostModelError, match=r"seq=.* must be an integer"):
            cm.estimate_batch(a.features()[None, :], seq=bad)
    with pytest.raises(CostModelError, match="arch must be a StudentArch"):
        cm.estimate("bert-base")  # type: ignore[arg-type]
    assert cm.estimate_batch(np.zeros((0, len(FEATURE_NAMES)))).shape == (0,)
    assert cm.estimate_batch(features_of([])).shape == (0,)


def test_non_contiguous_and_integer_arrays_are_accepted() -> None:
    cm = CostModel(load_profile("tpu_v4"))
    rows = _good_rows(6)
    want = cm.estimate_batch(rows)
    np.testing.assert_allclose(cm.estimate_batch(np.asfortranarray(rows)), want)
    np.testing.assert_allclose(cm.estimate_batch(rows.astype(np.int64)), want)
    np.testing.assert_allclose(cm.estimate_batch(np.repeat(rows, 2, axis=0)[::2]), want)


def test_hostile_input_never_crashes_the_process() -> None:
    """Random garbage rows in a child process: it must exit normally with only CostModelErrors raised."""
    code = r"""
import numpy as np
from autodistill.costmodel import CostModel
from autodistill.errors import CostModelError
from autodistill.hardware import load_profile
cm = CostModel(load_profile("tpu_v4i"))
rng = np.random.default_rng(0)
specials = np.array([0, -1, 1, 2, 3, 1e300, -1e300, np.nan, np.inf, -np.inf, 2**20, 2**20 + 1, 0.5, 128, 4096])
ok = bad = 0
for i in range(3000):
    rows = rng.choice(specials, size=(int(rng.integers(1, 8)), 15))
    try:
        out = cm.estimate_batch(rows)
        assert np.isfinite(out).all() and (out > 0).all()
        ok += 1
    except CostModelError:
        bad += 1
print(ok, bad)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    ok, bad = map(int, proc.stdout.split())
    assert bad > 0


def test_latency_ranking_sanity() -> None:
    # BERT-large is slower than BERT-base everywhere; TinyBERT-4 is faster than BERT-base everywhere.
    for p in PROFILES:
        cm = CostModel(p)
        base = cm.latency_s(reference_arch("bert-base"))
        assert cm.latency_s(reference_arch("bert-large")) > base
        assert cm.latency_s(reference_arch("tinybert-4")) < base


def test_import_does_not_load_torch_or_jax() -> None:
    code = ("import sys, autodistill, autodistill.costmodel as c; "
            "c.estimate('tpu_v4i', 'mobilebert'); "
            "print(any(m in sys.modules for m in ('torch', 'jax', 'flax', 'botorch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_batch_call_releases_the_gil() -> None:
    """A Python thread keeps running while a large batch is scored (it could not if the GIL were held)."""
    import threading

    cm = CostModel(load_profile("tpu_v4i"))
    rows = np.tile(reference_arch("mobilebert").features(), (1_000_000, 1))
    ticks = []
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())

    t = threading.Thread(target=spin)
    t.start()
    try:
        time.sleep(0.01)
        t0 = time.perf_counter()
        cm.estimate_batch(rows, threads=1)
        t1 = time.perf_counter()
    finally:
        stop.set()
        t.join()
    during = [x for x in ticks if t0 < x < t1]
    assert len(during) > 1000, f"only {len(during)} ticks of the other thread during {t1 - t0:.3f}s"


def test_serving_mix_mean_and_quantiles() -> None:
    from autodistill.costmodel import ServingMix, mix_latency

    cm = CostModel(load_profile("a100"))
    archs = [reference_arch("bert-base"), reference_arch("tinybert-4")]
    mix = ServingMix(((1, 128, 0.7), (8, 128, 0.29), (32, 512, 0.01)))
    got = mix_latency(cm, archs, mix)
    per_shape = np.array([[cm.latency_s(a, b, s) for b, s, _ in mix.shapes] for a in archs])
    np.testing.assert_allclose(got["mean_s"], per_shape @ np.array([0.7, 0.29, 0.01]), rtol=1e-12)
    np.testing.assert_allclose(got["p50_s"], per_shape[:, 0])   # 70% of requests are the smallest shape
    np.testing.assert_allclose(got["p99_s"], per_shape[:, 1])   # 99% reached with the second shape
    single = mix_latency(cm, archs, ServingMix.single(4, 64))
    np.testing.assert_allclose(single["p99_s"], [cm.latency_s(a, 4, 64) for a in archs])
    with pytest.raises(CostModelError, match="weight -1 .* must be finite and > 0"):
        ServingMix(((1, 128, -1),))
    with pytest.raises(CostModelError, match=r"unknown serving-mix key\(s\) \['sequence'\]"):
        ServingMix.from_list([{"batch": 1, "sequence": 128}])
    with pytest.raises(CostModelError, match="batch=0"):
        ServingMix(((0, 128, 1.0),))
