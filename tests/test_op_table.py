"""Per-op tables: bad input names row and column; the fit recovers known terms; tile waves and split-K."""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autodistill import costmodel_reference as ref
from autodistill.calibration import base_rates, predict, theta_of
from autodistill.errors import CalibrationError
from autodistill.hardware import load_profile
from autodistill.op_table import OpSample, fit_op_table, op_matrix, read_op_table

REPO = Path(__file__).resolve().parents[1]
GOOD = {"op": "matmul", "batch": 1, "m": 512, "n": 512, "k": 512, "rows": None, "width": None, "dtype": "fp32",
        "latency_s": 1e-4}

# one row: change to the good row (None: drop the column), the phrase the error must hold
BAD = [
    ({"latency_s": None}, "missing column(s) ['latency_s']"),
    ({"op": None}, "missing column(s) ['op']"),
    ({"op": "conv2d"}, "row 2, column 'op': unknown op kind 'conv2d'; valid choices: bmm, elementwise"),
    ({"dtype": "fp8"}, "row 2, column 'dtype': unknown dtype 'fp8'"),
    ({"latency_s": -1.0}, "row 2, column 'latency_s': -1.0 is not a finite time > 0"),
    ({"latency_s": 0.0}, "row 2, column 'latency_s': 0.0 is not a finite time > 0"),
    ({"latency_s": float("nan")}, "row 2, column 'latency_s': nan is not a finite time > 0"),
    ({"m": 12.5}, "row 2, column 'm': 12.5 is not an integer"),
    ({"k": 0}, "row 2, column 'k': 0 is not an integer in 1.."),
    ({"k": float("nan")}, "row 2, column 'k': is empty; it is needed for op 'matmul'"),
    ({"op": "layernorm", "rows": 64}, "row 2, column 'width': is empty; it is needed for op 'layernorm'"),
]


@pytest.mark.parametrize("change,phrase", BAD, ids=[p for _, p in BAD])
def test_bad_table_names_row_and_column(tmp_path, change, phrase):
    second = dict(GOOD)
    for k, v in change.items():
        second[k] = v
    df = pd.DataFrame([GOOD, second])
    for k, v in change.items():
        if v is None and k in ("latency_s", "op"):
            df = df.drop(columns=[k])
    path = tmp_path / "ops.csv"
    df.to_csv(path, index=False)
    with pytest.raises(CalibrationError) as e:
        read_op_table(str(path))
    assert phrase in str(e.value) and str(path) in str(e.value)


def test_empty_missing_and_garbage_tables(tmp_path):
    with pytest.raises(CalibrationError, match="does not exist"):
        read_op_table(str(tmp_path / "none.csv"))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(CalibrationError, match="not a readable CSV table"):
        read_op_table(str(tmp_path / "empty.csv"))
    (tmp_path / "header.csv").write_text("op,dtype,latency_s\n")
    with pytest.raises(CalibrationError, match="no rows"):
        read_op_table(str(tmp_path / "header.csv"))


def test_cli_from_ops_bad_table_exits_2(tmp_path):
    path = tmp_path / "ops.csv"
    pd.DataFrame([GOOD, dict(GOOD, latency_s=-2)]).to_csv(path, index=False)
    res = subprocess.run([sys.executable, "-m", "autodistill.cli", "calibrate", "--device", "gpu", "--base",
                          "a100_pcie_40gb", "--from-ops", str(path), "--out", str(tmp_path / "x.toml")],
                         capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 2, res.stderr
    assert "row 2, column 'latency_s'" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x.toml").exists()


def _synthetic(profile, n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        kind = rng.choice(["matmul", "bmm", "layernorm", "elementwise"])
        if kind in ("matmul", "bmm"):
            m, nn, k = (int(2 ** rng.uniform(5, 12)) for _ in range(3))
            out.append(OpSample(kind, "fp32", 1.0, batch=int(rng.integers(1, 64)) if kind == "bmm" else 1,
                                m=m, n=nn, k=k))
        else:
            out.append(OpSample(kind, "fp32", 1.0, rows=int(2 ** rng.uniform(8, 16)),
                                width=int(2 ** rng.uniform(6, 13))))
    return out


def test_fit_recovers_known_terms_and_predicts_held_out_rows():
    base = load_profile("a100_pcie_40gb")
    # true terms: matmul 0.7 / 0.8 / 4 us / K ramp 96; attention 0.5 / 0.9 / 6 us / 32; vector 0.6 / 0.7 / 3 us
    true = [0.7, 0.8, 4e-6, 96.0, 0.5, 0.9, 6e-6, 32.0, 0.6, 0.7, 3e-6, 0.0, 1.0, 1.0, 5e-6, 0.0, 2e-5]
    samples = _synthetic(base, 400, seed=3)
    t = predict(np.array(true), op_matrix(samples, base), base_rates(base, "fp32"), "max")
    noisy = t * np.exp(np.random.default_rng(4).normal(0, 0.01, len(t)))
    samples = [dataclasses.replace(s, latency_s=float(v)) for s, v in zip(samples, noisy)]
    fit = fit_op_table(samples, base, roofline="max", seed=0)
    assert fit.heldout["mape"] < 0.02 and fit.heldout["within_10pct"] == 1.0
    cal = fit.profile.calibration
    assert cal.terms["matmul"].compute_efficiency == pytest.approx(0.7, rel=0.05)
    assert cal.terms["matmul"].half_rate_k == pytest.approx(96, rel=0.25)
    assert cal.terms["vector"].memory_efficiency == pytest.approx(0.7, rel=0.05)
    assert cal.terms["gather"].overhead_s == base.op_overhead_s  # no rows: the base's value is kept
    # the spec-only profile is far off on the same rows: the fit did the work
    spec = predict(theta_of(base), op_matrix(samples, base), base_rates(base, "fp32"), "max")
    assert np.mean(np.abs(spec / noisy - 1)) > 0.2


def test_fit_refuses_mixed_dtypes_and_unknown_dtype_peak():
    base = load_profile("a100_pcie_40gb")
    s = OpSample("matmul", "fp32", 1e-4, m=64, n=64, k=64)
    with pytest.raises(CalibrationError, match="one dtype per fitted profile"):
        fit_op_table([s, dataclasses.replace(s, dtype="fp16")], load_profile("a100"))
    with pytest.raises(CalibrationError, match="no peak for dtype 'bf16'"):
        fit_op_table([dataclasses.replace(s, dtype="bf16")], base)


# ------------------------------------------------------------------ the shape-aware matmul
def _hw(units, tile=(128, 128, 64)):
    prof = dataclasses.replace(load_profile("h200"), parallel_units=units, matrix_tile_m=tile[0],
                               matrix_tile_n=tile[1], matrix_tile_k=tile[2])
    return prof.resolve("bf16")


def test_waves_step_at_the_unit_count():
    hw = _hw(132)
    full, _ = ref.matmul_flops(*ref.tile_candidates(hw, 132.0, 128, 128, 64), 0.0)  # 132 tiles: one wave
    over, _ = ref.matmul_flops(*ref.tile_candidates(hw, 133.0, 128, 128, 64), 0.0)  # 133 tiles: two waves
    assert over == pytest.approx(2 * full)
    plain, _ = ref.matmul_flops(*ref.tile_candidates(_hw(0), 133.0, 128, 128, 64), 0.0)
    assert plain == pytest.approx(133 / 132 * full)  # without units: padding only


def test_split_k_under_one_wave():
    hw = _hw(132)
    a, b = ref.tile_candidates(hw, 1.0, 128, 128, 4096)  # one tile, long K: 16 splits, one wave
    flops, way = ref.matmul_flops(a, b, 0.0)
    assert ref.SPLITS[way] == 16
    assert flops == pytest.approx(2.0 * 132 * 128 * 128 * (256 + 16 * ref.SPLIT_COST_K))
    _, way = ref.matmul_flops(*ref.tile_candidates(hw, 132.0, 128, 128, 4096), 0.0)  # a full wave never splits
    assert way == 0
    _, way = ref.matmul_flops(*ref.tile_candidates(hw, 1.0, 128, 128, 64), 0.0)  # nothing to gain from a split
    assert way == 0
    # 100 tiles: splitting in 2 would need 2 waves; the ramp is paid once a wave, so it never pays off
    _, way = ref.matmul_flops(*ref.tile_candidates(hw, 100.0, 128, 128, 512), 0.0)
    assert way == 0


def test_k_ramp_slows_small_k_matmuls_most():
    hw = _hw(0)
    small = [ref.matmul_flops(*ref.tile_candidates(hw, 1.0, 1024, 1024, 64), k0)[0] for k0 in (0.0, 64.0)]
    large = [ref.matmul_flops(*ref.tile_candidates(hw, 1.0, 1024, 1024, 4096), k0)[0] for k0 in (0.0, 64.0)]
    assert small[1] / small[0] == pytest.approx(2.0) and large[1] / large[0] == pytest.approx(1 + 64 / 4096)


def test_bench_gpu_ops_json(shared_data):
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_gpu_ops.py"), "--json",
                          "--data", str(shared_data / "gpu_ops")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads(res.stdout.strip().splitlines()[-1])
    ops = [r for r in rows if not r["op"].startswith("bert_large")]
    assert {r["method"] for r in ops} == {"spec_roofline", "three_term", "autodistill"}
    assert {r["op"] for r in ops} == {"matmul", "bmm", "elementwise"}  # ln/softmax have < 500 rows a device
    assert all(set(r) == {"device", "op", "method", "n_test", "mape", "within_10pct", "noise"} for r in rows)
    assert all(r["n_test"] >= 250 and 0 <= r["within_10pct"] <= 1 and math.isfinite(r["mape"]) for r in ops)
    assert any(r["op"].startswith("bert_large") for r in rows)


# ------------------------------------------------------------------ the bounded shape residual
def _matmul_rows(n, seed, effect):
    """Matmul rows timed by a100_pcie_40gb's spec model, times exp(effect(M, N, K)) and 1% noise."""
    base = load_profile("a100_pcie_40gb")
    rng = np.random.default_rng(seed)
    samples = [OpSample("matmul", "fp32", 1.0, m=int(2 ** rng.uniform(6, 14)), n=int(2 ** rng.uniform(6, 14)),
                        k=int(2 ** rng.uniform(6, 14))) for _ in range(n)]
    t = predict(theta_of(base), op_matrix(samples, base), base_rates(base, "fp32"), "max")
    t = t * np.exp([effect(s.m, s.n, s.k) for s in samples]) * np.exp(rng.normal(0, 0.01, n))
    return base, [dataclasses.replace(s, latency_s=float(v)) for s, v in zip(samples, t)]


def test_residual_kept_where_shapes_matter_and_round_trips(tmp_path):
    base, rows = _matmul_rows(300, 5, lambda m, n, k: 0.06 * (math.log2(n) - 10))  # wide N slower, narrow faster
    with_res = fit_op_table(rows, base, roofline="max", seed=0)
    without = fit_op_table(rows, base, roofline="max", seed=0, residual=False)
    assert with_res.residuals["matmul"].startswith("kept")
    assert with_res.heldout["mape"] < 0.7 * without.heldout["mape"]
    from autodistill.hardware import save_profile
    path = save_profile(with_res.profile, tmp_path / "p.toml")
    again = load_profile(str(path))
    assert again.calibration.residuals == with_res.profile.calibration.residuals
    from autodistill import reference_arch
    from autodistill.costmodel import CostModel
    a = reference_arch("bert-base")
    assert CostModel(again, "fp32").latency_s(a, 2, 64) == pytest.approx(ref.latency_s(a, again, 2, 64, dtype="fp32"),
                                                                          rel=1e-9)


def test_residual_not_kept_on_noise_alone():
    base, rows = _matmul_rows(300, 6, lambda m, n, k: 0.0)
    fit = fit_op_table(rows, base, roofline="max", seed=0)
    assert fit.residuals["matmul"].startswith("not kept")
    assert "matmul" not in fit.profile.calibration.residuals


def test_bad_residual_in_a_profile_is_named(tmp_path):
    text = (REPO / "profiles" / "a100_pcie_40gb.toml").read_text()
    (tmp_path / "bad.toml").write_text(text + "\n[calibration]\nmatmul_residual = [0.1, 0.2]\n")
    from autodistill.errors import ProfileError
    with pytest.raises(ProfileError, match=r"bad.toml: \[calibration\] matmul_residual must be 21 finite numbers"):
        load_profile(str(tmp_path / "bad.toml"))
