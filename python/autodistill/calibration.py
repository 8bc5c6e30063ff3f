"""Calibrating a hardware profile's efficiency terms from measurements.

The cost model (``csrc/costmodel/model.h``) prices every op as::

    combine(padded_flops / (peak * ce[class]), vector_flops / (vector_peak * ce[vector]),
            weight_bytes / (bw_w * me[class]) + act_bytes / (bw_a * me[class])) + overhead[class]

plus one fixed overhead per inference, where ``combine`` is the profile's
``roofline``: ``max`` or ``sum``. This module fits ``ce``, ``me`` and
``overhead`` for each op class (matmul, attention, vector, gather) and the fixed
overhead to a table of measurements (`autodistill.measure`):

1. every measured case is turned into the cost-model ops it consists of
   (`case_ops`: the C++ model's own breakdown for layers and whole students,
   the same formulas for single-op micro-benchmarks);
2. `predict` prices those ops for a vector of terms, vectorized in NumPy, and
   agrees with `autodistill.costmodel.CostModel` to rounding (tested);
3. `fit_terms` runs ``scipy.optimize.least_squares`` on ``log(predicted /
   measured)`` with bounds (efficiencies in log space, overheads in
   microseconds), from several starts, first on the micro-benchmarks and then on
   micro-benchmarks plus the training split of whole students; `calibrate` fits
   both roofline modes and keeps the given one, or with ``roofline="auto"`` the
   one with the lower MAPE on the training students (never the held-out ones);
4. `calibrate` reports on the held-out students with the shipped model itself
   (``CostModel(profile.with_calibration(...))``): MAPE, share within +-10%,
   Spearman and Kendall rank correlation, against the spec-only profile and the
   measurement noise floor, and the same numbers for the roofline mode not kept.

`calibrate_device(plan, base, ...)` measures a device (`autodistill.measure.plan.MeasurePlan`),
saves the table and fits it; `calibrate_from_measurements(table, base, ...)` refits a saved table.
Both can extend an earlier table (``add_to``). `recalibrate(profile, measurements)` is the one call
for refitting a profile from new measurements (for instance on-device confirmations of a few students).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from autodistill.arch import StudentArch
from autodistill.errors import CalibrationError, choices_message
from autodistill.fileio import atomic_write_text
from autodistill.hardware import (
    CLASS_TERMS,
    INTERVAL_LEVEL,
    MAX_HALF_RATE_K,
    OP_CLASSES,
    RESIDUAL_CLASSES,
    ROOFLINES,
    Calibration,
    ClassTerms,
    ErrorBand,
    HardwareProfile,
)
from autodistill.measure.cases import BASE_KINDS, FIT_KINDS, case_kind  # the case kinds (imports numpy only)
from autodistill.measure.table import merge_measurements, row_params  # re-exported: tables of two calibrations as one
from autodistill.oprows import OpRow  # the fitting row (re-exported)

if TYPE_CHECKING:
    import pandas as pd

    from autodistill.measure.plan import MeasurePlan

logger = logging.getLogger(__name__)


#: The fitted vector: per class (ce, me, overhead, half_rate_k), then the fixed overhead.
PARAM_NAMES: tuple[str, ...] = tuple(f"{c}_{t}" for c in OP_CLASSES for t in CLASS_TERMS) + ("fixed_overhead_s",)
_N_CLS = len(OP_CLASSES)
_NT = len(CLASS_TERMS)  # terms per class in the fitted vector
_K_UNIT = 64.0  # half_rate_k is fitted in units of 64 elements of K
#: Terms that shape matmul compute (the K ramp of the two matmul classes); fitted where the profile has
#: parallel units.
SHAPE_TERMS: tuple[str, ...] = tuple(f"{c}_half_rate_k" for c in RESIDUAL_CLASSES)
_VEC = OP_CLASSES.index("vector")
_US = 1e-6  # overheads are fitted in microseconds
_EFF_BOUNDS = (1e-3, 10.0)
_OV_MAX_US = 1e5  # 0.1 s per op
_FIXED_MAX_US = 1e6

MICRO_KINDS = FIT_KINDS[:-1]
#: What `calibrate` accepts for ``roofline``: a mode of `autodistill.hardware.ROOFLINES`, or "auto".
ROOFLINE_CHOICES: tuple[str, ...] = ROOFLINES + ("auto",)


def free_terms(profile: HardwareProfile) -> tuple[str, ...]:
    """The `PARAM_NAMES` a fit of ``profile`` frees: all but the unused ``half_rate_k`` of non-matmul classes,
    and the shape terms only on a profile with ``parallel_units`` (the shape-aware accelerator model)."""
    shape = SHAPE_TERMS if profile.parallel_units > 0 else ()
    return tuple(n for n in PARAM_NAMES if not n.endswith("_half_rate_k") or n in shape)


# ============================================================================================ cases -> ops
def case_ops(kind: str, params: Mapping[str, Any], profile: HardwareProfile, dtype: str = "fp32") -> list[OpRow]:
    """The cost-model ops one measured case consists of: its case kind's own list (`autodistill.measure.cases`)."""
    return case_kind(kind).ops(params, profile, dtype)


# ============================================================================================ the predictor
@dataclass
class OpMatrix:
    """The ops of many samples, flattened for vectorized pricing."""

    sample: np.ndarray  # (n_ops,) int: which sample the op belongs to
    cls: np.ndarray  # (n_ops,) int index into OP_CLASSES
    count: np.ndarray
    padded_flops: np.ndarray
    vector_flops: np.ndarray
    weight_bytes: np.ndarray
    act_bytes: np.ndarray
    weights_onchip: np.ndarray  # bool
    acts_onchip: np.ndarray  # bool
    n_samples: int
    ramp_a: np.ndarray | None = None  # (n_ops, ways): way i costs ramp_a + ramp_b * half_rate_k FLOPs
    ramp_b: np.ndarray | None = None  # (other ops: one way, ramp_a = padded_flops, ramp_b = 0; missing ways inf)
    log_residual: np.ndarray | None = None  # (n_ops,) the profile's shape residual at each op

    @classmethod
    def from_ops(cls, per_sample: Sequence[Sequence[OpRow]]) -> OpMatrix:
        rows = [(i, r) for i, ops in enumerate(per_sample) for r in ops]
        if not rows:
            raise CalibrationError("no ops to fit: every sample is empty")

        def col(f: Any, dt: Any = np.float64) -> np.ndarray:
            return np.array([f(r) for _, r in rows], dtype=dt)

        return cls(np.array([i for i, _ in rows], dtype=np.int64),
                   col(lambda r: OP_CLASSES.index(r.op_class), np.int64), col(lambda r: r.count),
                   col(lambda r: r.padded_flops), col(lambda r: r.vector_flops),
                   col(lambda r: r.weight_bytes), col(lambda r: r.act_bytes), col(lambda r: r.weights_onchip, bool),
                   col(lambda r: r.acts_onchip, bool), len(per_sample), *_ways([r for _, r in rows]),
                   col(lambda r: r.log_residual))

    def subset(self, idx: npt.ArrayLike) -> OpMatrix:
        idx = np.asarray(idx, dtype=np.int64)
        remap = -np.ones(self.n_samples, dtype=np.int64)
        remap[idx] = np.arange(len(idx))
        keep = remap[self.sample] >= 0
        return OpMatrix(remap[self.sample[keep]], self.cls[keep], self.count[keep], self.padded_flops[keep],
                        self.vector_flops[keep], self.weight_bytes[keep], self.act_bytes[keep],
                        self.weights_onchip[keep], self.acts_onchip[keep], len(idx),
                        *(None if m is None else m[keep] for m in (self.ramp_a, self.ramp_b, self.log_residual)))

    def compute_flops(self, half_rate_k: np.ndarray) -> np.ndarray:
        """Matrix-unit FLOPs of every op under per-class K ramps ``half_rate_k`` (the cheapest way)."""
        if self.ramp_a is None:
            return self.padded_flops
        return np.min(self.ramp_a + self.ramp_b * half_rate_k[self.cls][:, None], axis=1)


def _ways(rows: Sequence[OpRow]) -> tuple[np.ndarray, np.ndarray]:
    n_ways = max([len(r.ramp_a) for r in rows] + [1])
    a = np.full((len(rows), n_ways), np.inf)
    b = np.zeros((len(rows), n_ways))
    for i, r in enumerate(rows):
        if r.ramp_a:
            a[i, :len(r.ramp_a)] = r.ramp_a
            b[i, :len(r.ramp_b)] = r.ramp_b
        else:
            a[i, 0] = r.padded_flops
    return a, b


def base_rates(profile: HardwareProfile, dtype: str = "fp32") -> dict[str, float]:
    """The profile's base rates the efficiency terms scale (peak, vector peak, bandwidths)."""
    hw = profile.resolve(dtype)
    return {"peak": hw["peak_flops_per_s"], "vector_peak": hw["vector_flops_per_s"], "hbm": hw["hbm_bytes_per_s"],
            "onchip": max(hw["onchip_bytes_per_s"], hw["hbm_bytes_per_s"])}


def theta_of(profile: HardwareProfile) -> np.ndarray:
    """The profile's current terms as a `PARAM_NAMES` vector (spec-only: efficiency 1, op_overhead_s)."""
    out = []
    for c in OP_CLASSES:
        t = profile.class_terms(c)
        out += [t.compute_efficiency, t.memory_efficiency, t.overhead_s, t.half_rate_k]
    return np.array(out + [profile.effective_fixed_overhead_s()], dtype=np.float64)


def calibration_of(theta: npt.ArrayLike, source: str = "fit", fitted: bool = True) -> Calibration:
    """A `Calibration` from a `PARAM_NAMES` vector."""
    th = [float(v) for v in np.asarray(theta, dtype=np.float64)]
    terms = {c: ClassTerms(*th[_NT * i:_NT * (i + 1)]) for i, c in enumerate(OP_CLASSES)}
    return Calibration(terms=terms, fitted=fitted, fixed_overhead_s=th[-1], source=source)


def _check_roofline(roofline: str, choices: Sequence[str] = ROOFLINES) -> None:
    if not isinstance(roofline, str) or roofline not in choices:
        raise CalibrationError(choices_message("roofline", roofline, choices))


def predict(theta: npt.ArrayLike, mat: OpMatrix, rates: Mapping[str, float], roofline: str = "max") -> np.ndarray:
    """Latency (s) of every sample of ``mat`` under terms ``theta`` (`PARAM_NAMES` order).

    ``roofline`` ("max" or "sum") combines each op's compute, vector and memory times, as the profile
    field of that name does in the shipped model.
    """
    _check_roofline(roofline)
    th = np.asarray(theta, dtype=np.float64)
    ce, me, ov, k0 = (th[j:_NT * _N_CLS:_NT] for j in range(_NT))
    c = mat.cls
    compute = mat.compute_flops(k0) / (rates["peak"] * ce[c])
    vector = mat.vector_flops / (rates["vector_peak"] * ce[_VEC])
    bw_w = np.where(mat.weights_onchip, rates["onchip"], rates["hbm"])
    bw_a = np.where(mat.acts_onchip, rates["onchip"], rates["hbm"])
    memory = (mat.weight_bytes / bw_w + mat.act_bytes / bw_a) / me[c]
    if roofline == "sum":
        per_op = compute + vector + memory + mat.count * ov[c]
    else:
        per_op = np.maximum(np.maximum(compute, vector), memory) + mat.count * ov[c]
    if mat.log_residual is not None:
        per_op = per_op * np.exp(mat.log_residual)
    return np.bincount(mat.sample, weights=per_op, minlength=mat.n_samples) + th[-1]


# =================================================================================================== fitting
def _to_x(theta: np.ndarray) -> np.ndarray:
    x = np.empty_like(theta)
    for i in range(_N_CLS):
        j = _NT * i
        x[j] = math.log(theta[j])
        x[j + 1] = math.log(theta[j + 1])
        x[j + 2] = theta[j + 2] / _US
        x[j + 3] = theta[j + 3] / _K_UNIT
    x[-1] = theta[-1] / _US
    return x


def _to_theta(x: np.ndarray) -> np.ndarray:
    th = np.empty_like(x)
    for i in range(_N_CLS):
        j = _NT * i
        th[j] = math.exp(x[j])
        th[j + 1] = math.exp(x[j + 1])
        th[j + 2] = x[j + 2] * _US
        th[j + 3] = x[j + 3] * _K_UNIT
    th[-1] = x[-1] * _US
    return th


def _bounds() -> tuple[np.ndarray, np.ndarray]:
    lo, hi = [], []
    for _ in OP_CLASSES:
        lo += [math.log(_EFF_BOUNDS[0]), math.log(_EFF_BOUNDS[0]), 0.0, 0.0]
        hi += [math.log(_EFF_BOUNDS[1]), math.log(_EFF_BOUNDS[1]), _OV_MAX_US, MAX_HALF_RATE_K / _K_UNIT]
    return np.array(lo + [0.0]), np.array(hi + [_FIXED_MAX_US])


def _clip_x(x: np.ndarray) -> np.ndarray:
    lo, hi = _bounds()
    span = hi - lo
    return np.clip(x, lo + 1e-9 * span, hi - 1e-9 * span)


@dataclass
class FitResult:
    theta: np.ndarray
    cost: float
    rms_log_error: float
    n_samples: int
    starts: int
    success: bool
    message: str

    def calibration(self, source: str) -> Calibration:
        return calibration_of(self.theta, source=source)


def fit_terms(mat: OpMatrix, measured: np.ndarray, rates: Mapping[str, float], *,
              theta0: npt.ArrayLike | None = None, weights: np.ndarray | None = None,
              prior: npt.ArrayLike | None = None, prior_weight: float = 1e-6, starts: int = 6,
              seed: int = 0, free: Sequence[str] | None = None, roofline: str = "max") -> FitResult:
    """Least-squares fit of the terms to ``measured`` seconds, ops combined by ``roofline`` ("max" or "sum").

    Minimizes ``sum w_i^2 log(pred_i / measured_i)^2`` plus a weak ridge pulling
    each fitted coordinate (log efficiencies, overheads in microseconds, scaled)
    toward ``prior`` (default ``theta0``), which keeps terms that no sample
    constrains where they were. ``free`` names the `PARAM_NAMES` to fit (others
    stay at ``theta0``). The best of ``starts`` runs (``theta0`` plus seeded
    random starts) is returned.
    """
    from scipy.optimize import least_squares

    _check_roofline(roofline)
    measured = np.asarray(measured, dtype=np.float64)
    if measured.shape != (mat.n_samples,):
        raise CalibrationError(f"{mat.n_samples} samples but {measured.shape} measurements")
    if not np.all(np.isfinite(measured) & (measured > 0)):
        raise CalibrationError("measured times must be finite and > 0")
    w = np.ones(mat.n_samples) if weights is None else np.asarray(weights, dtype=np.float64)
    th0 = np.asarray(theta0 if theta0 is not None else [1.0, 1.0, 0.0, 0.0] * _N_CLS + [0.0], dtype=np.float64)
    free_names = tuple(PARAM_NAMES) if free is None else tuple(free)
    unknown = set(free_names) - set(PARAM_NAMES)
    if unknown:
        raise CalibrationError(f"unknown term(s) {sorted(unknown)}; valid: {list(PARAM_NAMES)}")
    fi = np.array([PARAM_NAMES.index(n) for n in free_names], dtype=np.int64)
    xt = _to_x(th0)
    xt[fi] = _clip_x(xt)[fi]  # the solver starts strictly inside the bounds; fixed terms stay as given
    th0 = _to_theta(xt)
    x_prior = _to_x(np.asarray(prior, dtype=np.float64)) if prior is not None else _to_x(th0)
    lo, hi = _bounds()
    # ridge scale per coordinate: log-efficiency units; overheads per 10 us
    scale = np.array([1.0, 1.0, 0.1, 0.1] * _N_CLS + [0.1])
    log_meas = np.log(measured)
    sqrt_pw = math.sqrt(prior_weight) * math.sqrt(max(1.0, float(np.sum(w ** 2))))

    def full_x(xf: np.ndarray, base: np.ndarray) -> np.ndarray:
        x = base.copy()
        x[fi] = xf
        return x

    def resid(xf: np.ndarray, base: np.ndarray) -> np.ndarray:
        x = full_x(xf, base)
        pred = predict(_to_theta(x), mat, rates, roofline)
        r = w * (np.log(np.maximum(pred, 1e-30)) - log_meas)
        return np.concatenate([r, sqrt_pw * scale[fi] * (xf - x_prior[fi])])

    x0 = _to_x(th0)
    rng = np.random.default_rng(seed)
    inits = [x0[fi]]
    for _ in range(max(0, starts - 1)):
        xr = x0.copy()
        for i in range(_N_CLS):
            xr[_NT * i] += rng.normal(0, 1.0)
            xr[_NT * i + 1] += rng.normal(0, 1.0)
            xr[_NT * i + 2] = rng.uniform(0, 50)
            xr[_NT * i + 3] = rng.uniform(0, 4)
        xr[-1] = rng.uniform(0, 200)
        inits.append(_clip_x(xr)[fi])
    best = None
    for xi in inits:
        r = least_squares(resid, xi, args=(x0,), bounds=(lo[fi], hi[fi]), method="trf", x_scale="jac",
                          diff_step=1e-6, max_nfev=4000)
        if best is None or r.cost < best.cost:
            best = r
    assert best is not None
    theta = _to_theta(full_x(best.x, x0))
    pred = predict(theta, mat, rates, roofline)
    rms = float(np.sqrt(np.mean((np.log(pred) - log_meas) ** 2)))
    return FitResult(theta, float(best.cost), rms, mat.n_samples, len(inits), bool(best.success), str(best.message))


# ================================================================================================ reporting
def accuracy(pred: npt.ArrayLike, measured: npt.ArrayLike) -> dict[str, float]:
    """MAPE, share within +-10%, worst error, Spearman and Kendall rank correlation of ``pred`` vs ``measured``."""
    from scipy import stats

    p = np.asarray(pred, dtype=np.float64)
    m = np.asarray(measured, dtype=np.float64)
    if p.shape != m.shape or p.size == 0:
        raise CalibrationError(f"need equal, non-empty prediction and measurement arrays; got {p.shape}, {m.shape}")
    ape = np.abs(p - m) / m
    out = {"n": int(p.size), "mape": float(np.mean(ape)), "median_ape": float(np.median(ape)),
           "max_ape": float(np.max(ape)), "within_10pct": float(np.mean(ape <= 0.10)),
           "mean_ratio": float(np.exp(np.mean(np.log(p / m))))}
    if p.size >= 3 and np.ptp(p) > 0 and np.ptp(m) > 0:
        out["spearman"] = float(stats.spearmanr(p, m).statistic)
        out["kendall"] = float(stats.kendalltau(p, m).statistic)
    else:
        out["spearman"] = out["kendall"] = float("nan")
    return out


def noise_floor(df: pd.DataFrame, time_col: str = "median_s") -> dict[str, float]:
    """Spread of repeated measurements of the same case (rows sharing a ``name`` across ``repeat``s).

    ``mape_vs_mean``: mean |x - mean| / mean over every repeated measurement, the
    error a perfect model would still show; ``max_spread``: worst (max - min) / mean;
    ``within_sample_rel_iqr``: median IQR/median of the samples inside one measurement.
    """
    out: dict[str, float] = {}
    spread_col = "corrected_rel_spread" if time_col.startswith("corrected") else "rel_spread"
    if spread_col in df.columns and len(df) and np.isfinite(df[spread_col].to_numpy(dtype=float)).any():
        out["within_sample_rel_iqr"] = float(np.nanmedian(df[spread_col].to_numpy(dtype=float)))
    if "repeat" not in df.columns:
        return out
    groups = [g[time_col].to_numpy(dtype=float) for _, g in df.groupby("name") if len(g) > 1]
    if not groups:
        return out
    devs = np.concatenate([np.abs(g - g.mean()) / g.mean() for g in groups])
    out.update(n_cases=len(groups), n_measurements=int(sum(len(g) for g in groups)),
               mape_vs_mean=float(devs.mean()), max_spread=float(max(np.ptp(g) / g.mean() for g in groups)),
               cv=float(np.mean([g.std(ddof=1) / g.mean() for g in groups])))
    return out


# ============================================================================================= measurements
def _check_dtype(base: HardwareProfile, dtype: str) -> None:
    if dtype not in base.peak_flops_per_s:
        raise CalibrationError(f"dtype {dtype!r} has no peak in profile {base.name!r}; valid: {', '.join(base.dtypes)}")


def measured_base_profile(base: HardwareProfile, df: pd.DataFrame, name: str | None = None,
                          description: str | None = None, time_col: str = "min_s",
                          dtype: str | None = None) -> tuple[HardwareProfile, dict[str, float]]:
    """``base`` with peak FLOP/s, vector FLOP/s and DRAM / cache bandwidth replaced by the suite's measurements.

    The measured peak is ``dtype``'s (default: the base's default dtype); a calibrated
    profile describes that one dtype, so the other dtypes' spec peaks are dropped.

    Uses the fastest sample (``time_col``: ``min_s``, or ``corrected_min_s`` for
    CPU-time-corrected tables; ``median_s`` when absent) of the ``peak`` (largest matmul), ``stream``
    (a sum over fp32 arrays: the largest sets DRAM read bandwidth, the smallest
    cache bandwidth) and ``vector_peak`` rows; fields without a row keep ``base``'s value.
    """
    got: dict[str, float] = {}
    if "kind" in df.columns:
        for kind in BASE_KINDS:
            rows = df[(df["kind"] == kind) & (df.get("repeat", 0) == 0)]
            if rows.empty:
                continue
            vals = []
            for _, r in rows.iterrows():
                p = row_params(r)
                t = float(r[time_col]) if time_col in r and math.isfinite(float(r[time_col])) else float(r["median_s"])
                if kind == "peak":
                    vals.append((0, 2.0 * p["m"] * p["k"] * p["n"] / t))
                elif kind == "stream":
                    vals.append((p["n"], 4.0 * p["n"] / t))  # fp32 bytes read
                else:
                    vals.append((0, 2.0 * p["depth"] * p["n"] / t))
            if kind == "peak":
                got["peak_flops_per_s"] = max(v for _, v in vals)
            elif kind == "vector_peak":
                got["vector_flops_per_s"] = max(v for _, v in vals)
            else:
                vals.sort()
                got["hbm_bytes_per_s"] = vals[-1][1]
                if len(vals) > 1:
                    got["onchip_bytes_per_s"] = max(vals[0][1], got["hbm_bytes_per_s"])
    kw: dict[str, Any] = {}
    dt = dtype or base.default_dtype
    _check_dtype(base, dt)
    peak = got.get("peak_flops_per_s", base.peak_flops_per_s[dt])
    kw["peak_flops_per_s"] = {dt: float(f"{peak:.4g}")}
    for k in ("vector_flops_per_s", "hbm_bytes_per_s", "onchip_bytes_per_s"):
        if k in got:
            kw[k] = float(f"{got[k]:.4g}")
    if name:
        kw["name"] = name
    if description is not None:
        kw["description"] = description
    return dataclasses.replace(base, calibration=None, path=None, **kw), got


def table_ops(df: pd.DataFrame, profile: HardwareProfile, dtype: str = "fp32") -> list[list[OpRow]]:
    """`case_ops` of every row of a measurement table."""
    return [case_ops(str(r["kind"]), row_params(r), profile, dtype) for _, r in df.iterrows()]


def collapse_passes(df: pd.DataFrame, time_col: str = "median_s") -> tuple[pd.DataFrame, dict[str, float]]:
    """One row per measured case (``case_id``, else name + repeat): the pass with the smallest ``time_col``.

    Interference from other processes only ever slows a call down, so of
    several passes over a case taken minutes apart the fastest is the best
    estimate of its idle-machine time. Also returns the spread between passes
    (mean and max of (slowest - fastest) / fastest over cases measured more than once).
    """
    if "pass" not in df.columns or df["pass"].nunique() <= 1:
        return df, {}
    key = df["case_id"] if "case_id" in df.columns else df["name"].astype(str) + "#" + df["repeat"].astype(str)
    df = df.assign(_key=key.to_numpy())
    keep = df.groupby("_key", sort=False)[time_col].idxmin()
    g = df.groupby("_key")[time_col].agg(["min", "max", "count"])
    g = g[g["count"] > 1]
    spread = ((g["max"] - g["min"]) / g["min"]).to_numpy()
    info = {"n_cases": int(len(g)), "mean_pass_spread": float(spread.mean()), "max_pass_spread": float(spread.max()),
            "median_pass_spread": float(np.median(spread))} if len(g) else {}
    return df.loc[sorted(keep.to_numpy())].drop(columns="_key").reset_index(drop=True), info


def assign_splits(df: pd.DataFrame, test_fraction: float = 0.4, seed: int = 0) -> pd.DataFrame:
    """Give students without a split a seeded train/test one (by case name, so repeats stay together)."""
    df = df.copy()
    if "split" not in df.columns:
        df["split"] = ""
    df["split"] = df["split"].fillna("").astype(str)
    stud = df["kind"] == "student"
    names = sorted(set(df.loc[stud & (df["split"] == ""), "name"]))
    if names:
        rng = np.random.default_rng(seed)
        test = set(np.array(names)[rng.permutation(len(names))[:int(round(test_fraction * len(names)))]])
        for n in names:
            df.loc[stud & (df["name"] == n), "split"] = "test" if n in test else "train"
    return df


# ============================================================================================ calibration
@dataclass
class CalibrationReport:
    """What `calibrate` found: the fitted profile and its accuracy on held-out whole students.

    ``rooflines`` holds, for every roofline mode fitted (the kept one, ``profile.roofline``, and the
    other one for comparison), that fit's accuracy: ``{"max": {"train": ..., "heldout": ..., "micro": ...},
    "sum": {...}}``.
    """

    profile: HardwareProfile
    heldout: dict[str, float]  # calibrated profile on held-out students
    heldout_spec: dict[str, float]  # the spec-only reference profile on the same students
    heldout_base: dict[str, float]  # measured base rates, no calibration
    train: dict[str, float]
    micro: dict[str, float]
    noise: dict[str, dict[str, float]]  # per time column: the fitted one, and wall-clock medians
    flops_check: dict[str, float]
    base_measured: dict[str, float]
    fit: dict[str, Any]
    predictions: pd.DataFrame = field(repr=False)
    rooflines: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"profile": self.profile.name, "roofline": self.profile.roofline, "heldout": self.heldout,
                "heldout_spec_only": self.heldout_spec,
                "heldout_measured_base_uncalibrated": self.heldout_base, "train": self.train, "micro": self.micro,
                "noise_floor": self.noise, "flops_check": self.flops_check, "base_measured": self.base_measured,
                "fit": self.fit, "rooflines": self.rooflines,
                "terms": {n: float(v) for n, v in zip(PARAM_NAMES, theta_of(self.profile))}}

    def format(self) -> str:
        def line(label: str, d: Mapping[str, float]) -> str:
            if not d:
                return f"{label:<34} (no samples)"
            return (f"{label:<34} n={d['n']:<3d} MAPE={100 * d['mape']:6.2f}%  "
                    f"within10={100 * d['within_10pct']:5.1f}%  spearman={d['spearman']:.4f}  "
                    f"kendall={d['kendall']:.4f}  max={100 * d['max_ape']:.1f}%  "
                    f"bias={d['mean_ratio']:.3f}x")

        kept = self.profile.roofline
        source = self.profile.calibration.source if self.profile.calibration else ""
        out = [f"calibrated profile {self.profile.name}: {source}",
               f"roofline: {kept} ({self.fit.get('roofline_choice', 'given')})",
               line("held-out students, calibrated", self.heldout),
               line("held-out students, spec-only", self.heldout_spec),
               line("held-out, measured base, uncalib.", self.heldout_base),
               line("training students, calibrated", self.train),
               line("micro-benchmarks, calibrated", self.micro)]
        for mode, acc in self.rooflines.items():
            if mode != kept:
                out += [line(f"held-out, {mode} roofline (not kept)", acc.get("heldout", {})),
                        line(f"training, {mode} roofline (not kept)", acc.get("train", {}))]
        for col, nf in self.noise.items():
            if nf:
                out.append(f"noise floor ({col}): " + ", ".join(f"{k}={v:.4g}" for k, v in nf.items()))
        if self.fit.get("passes"):
            out.append("between passes (fastest kept): " + ", ".join(
                f"{k}={v:.4g}" for k, v in self.fit["passes"].items()))
        if self.flops_check:
            out.append("FLOPs check (model / XLA): " + ", ".join(f"{k}={v:.4g}" for k, v in self.flops_check.items()))
        out.append("terms: " + ", ".join(f"{n}={v:.4g}" for n, v in zip(PARAM_NAMES, theta_of(self.profile))))
        return "\n".join(out)


def _student_weights(kinds: np.ndarray, student_share: float) -> np.ndarray:
    """Per-sample weights giving whole students ``student_share`` of the total squared weight."""
    stud = kinds == "student"
    n_s, n_m = int(stud.sum()), int((~stud).sum())
    w = np.ones(len(kinds))
    if n_s and n_m:
        w2_s = student_share / n_s
        w2_m = (1 - student_share) / n_m
        w = np.where(stud, math.sqrt(w2_s), math.sqrt(w2_m)) * math.sqrt(len(kinds))
    return w


def calibrate(df: pd.DataFrame, base: HardwareProfile, *, name: str, dtype: str = "fp32",
              spec_profile: HardwareProfile | None = None, measure_base: bool = True, seed: int = 0,
              test_fraction: float = 0.4, student_share: float = 0.7, time_col: str = "median_s",
              starts: int = 6, description: str | None = None, roofline: str = "auto") -> CalibrationReport:
    """Fit ``base``'s terms to a measurement table and report on its held-out students.

    Stage 1 fits the micro-benchmarks (single ops and encoder layers); stage 2
    starts there and fits micro-benchmarks plus the training students, the
    students weighted to ``student_share`` of the objective. Held-out students
    (``split == "test"``) are never seen by the fit. Accuracy is computed with
    `autodistill.costmodel.CostModel` on the returned profile.

    Both roofline modes ("max": an op takes its slowest of compute, vector and
    memory time; "sum": their sum) are fitted the same way. ``roofline`` picks
    the one kept in the returned profile; ``"auto"`` keeps the one with the
    lower MAPE on the training students (on the micro-benchmarks when there are
    none), never looking at the held-out ones. The other mode's accuracy is
    reported beside it (`CalibrationReport.rooflines`).
    """
    from autodistill.costmodel import CostModel

    _check_roofline(roofline, ROOFLINE_CHOICES)
    _check_dtype(base, dtype)
    if df.empty:
        raise CalibrationError("no measurements to calibrate from")
    if time_col not in df.columns:
        raise CalibrationError(f"the measurement table has no {time_col!r} column")
    df, pass_info = collapse_passes(df, time_col)
    df = assign_splits(df, test_fraction, seed)
    if measure_base:
        prof0, got = measured_base_profile(base, df, name=name, description=description, dtype=dtype,
                                           time_col="corrected_min_s" if time_col.startswith("corrected") else "min_s")
    else:
        prof0, got = dataclasses.replace(base, calibration=None, path=None, name=name,
                                         peak_flops_per_s={dtype: base.peak_flops_per_s[dtype]},
                                         description=description if description is not None else base.description), {}
    rates = base_rates(prof0, dtype)
    fit_df = df[df["kind"].isin(FIT_KINDS)].reset_index(drop=True)
    if fit_df.empty:
        raise CalibrationError(f"no rows of a fitted kind ({', '.join(FIT_KINDS)}) in the measurements")
    first = fit_df[fit_df.get("repeat", 0) == 0] if "repeat" in fit_df.columns else fit_df
    ops = table_ops(fit_df, prof0, dtype)  # op shapes do not depend on the roofline mode
    mat = OpMatrix.from_ops(ops)
    meas = fit_df[time_col].to_numpy(dtype=float)
    kinds = fit_df["kind"].to_numpy(dtype=object)
    first_mask = np.zeros(len(fit_df), bool)
    first_mask[first.index.to_numpy()] = True
    micro_idx = np.flatnonzero(first_mask & (kinds != "student"))
    train_idx = np.flatnonzero(first_mask & (kinds == "student") & (fit_df["split"].to_numpy() == "train"))
    test_idx = np.flatnonzero(first_mask & (kinds == "student") & (fit_df["split"].to_numpy() == "test"))
    if not len(micro_idx) and not len(train_idx):
        raise CalibrationError("nothing to fit: no micro-benchmarks and no training students")
    fit_info: dict[str, Any] = {"n_micro": int(len(micro_idx)), "n_train_students": int(len(train_idx)),
                                "n_test_students": int(len(test_idx)), "seed": seed, "student_share": student_share,
                                "time_col": time_col, "passes": pass_info, "timing": timing_of(fit_df)}

    def fit_mode(mode: str) -> tuple[np.ndarray, dict[str, float]]:
        theta0, info = theta_of(prof0), {}
        if len(micro_idx):
            r1 = fit_terms(mat.subset(micro_idx), meas[micro_idx], rates, theta0=theta0, starts=starts, seed=seed,
                           roofline=mode, free=free_terms(prof0))
            theta0 = r1.theta
            info["stage1_rms_log"] = r1.rms_log_error
        if not len(train_idx):
            return theta0, info
        stage2 = np.concatenate([micro_idx, train_idx])
        w = _student_weights(kinds[stage2], student_share)
        r2 = fit_terms(mat.subset(stage2), meas[stage2], rates, theta0=theta0, weights=w, starts=starts,
                       seed=seed + 1, roofline=mode, free=free_terms(prof0))
        info["stage2_rms_log"] = r2.rms_log_error
        return r2.theta, info

    thetas: dict[str, np.ndarray] = {}
    mode_info: dict[str, dict[str, float]] = {}
    for mode in ROOFLINES:
        thetas[mode], mode_info[mode] = fit_mode(mode)
    # The choice sees only what the fit saw: training students (else micro-benchmarks), never held-out ones.
    select_idx, select_on = (train_idx, "training students") if len(train_idx) else (micro_idx, "micro-benchmarks")
    select_mape = {m: accuracy(predict(thetas[m], mat.subset(select_idx), rates, m), meas[select_idx])["mape"]
                   for m in ROOFLINES}
    if roofline == "auto":
        kept = min(ROOFLINES, key=lambda m: (select_mape[m], ROOFLINES.index(m)))
        others = ", ".join(f"{100 * select_mape[m]:.2f}% for {m}" for m in ROOFLINES if m != kept)
        choice = (f"auto: lower MAPE on the {len(select_idx)} {select_on}, {100 * select_mape[kept]:.2f}% vs "
                  f"{others}")
    else:
        kept, choice = roofline, "given"
    fit_info.update(mode_info[kept])  # stage1/stage2 rms of the kept fit, as before
    fit_info.update(roofline=kept, roofline_choice=choice, by_roofline=mode_info,
                    roofline_selection_mape={m: float(v) for m, v in select_mape.items()})
    source = (f"autodistill calibrate on {_first(df, 'device_kind')} ({_first(df, 'cpu')}) host {_first(df, 'host')} "
              f"{_first(df, 'date')}; jax {_first(df, 'jax_version')}; {len(micro_idx)} micro-benchmarks + "
              f"{len(train_idx)} training students, {len(test_idx)} held out (seed {seed}); roofline {kept}"
              + (" (auto, by training error)" if roofline == "auto" else ""))
    profs = {m: dataclasses.replace(prof0, roofline=m).with_calibration(calibration_of(thetas[m], source=source),
                                                                       name=name)
             for m in ROOFLINES}
    prof = profs[kept]

    # Everything below is priced by the shipped model (C++), not the fitting copy.
    cms = {m: CostModel(p, dtype) for m, p in profs.items()}
    spec = spec_profile if spec_profile is not None else base
    cm_spec = CostModel(spec, dtype)
    cm_base = CostModel(prof0, dtype)
    stud = fit_df[fit_df["kind"] == "student"]
    rows = []
    for i, r in stud.iterrows():
        p = row_params(r)
        arch, b, s = StudentArch.from_dict(p["arch"]), int(p["b"]), int(p["s"])
        row = {"name": r["name"], "split": r["split"], "repeat": int(r.get("repeat", 0)), "batch": b, "seq": s,
               "measured_s": float(r[time_col]), "predicted_s": cms[kept].latency_s(arch, b, s),
               "spec_s": cm_spec.latency_s(arch, b, s), "base_s": cm_base.latency_s(arch, b, s)}
        for m in ROOFLINES:
            row[f"predicted_{m}_s"] = cms[m].latency_s(arch, b, s)
            row[f"fit_copy_{m}_s"] = float(predict(thetas[m], mat.subset([i]), rates, m)[0])
        rows.append(row)
    import pandas as pd

    pred_df = pd.DataFrame(rows)
    if len(pred_df):
        for m in ROOFLINES:
            gap = np.max(np.abs(pred_df[f"fit_copy_{m}_s"] / pred_df[f"predicted_{m}_s"] - 1))
            if gap > 1e-6:
                raise CalibrationError(f"fitting copy of the model ({m} roofline) disagrees with CostModel by "
                                       f"{gap:.2e} (relative)")

    def acc(mask: Any, col: str) -> dict[str, float]:
        sub = pred_df[mask] if len(pred_df) else pred_df
        return accuracy(sub[col], sub["measured_s"]) if len(sub) else {}

    first_p = pred_df["repeat"] == 0 if len(pred_df) else []
    test_m = (pred_df["split"] == "test") & first_p if len(pred_df) else []
    train_m = (pred_df["split"] == "train") & first_p if len(pred_df) else []
    micro = {m: accuracy(predict(thetas[m], mat.subset(micro_idx), rates, m), meas[micro_idx]) if len(micro_idx)
             else {} for m in ROOFLINES}
    by_mode = {m: {"heldout": acc(test_m, f"predicted_{m}_s"), "train": acc(train_m, f"predicted_{m}_s"),
                   "micro": micro[m]} for m in ROOFLINES}
    flops = _flops_check(stud[stud.get("repeat", 0) == 0] if "repeat" in stud.columns else stud, prof, dtype)
    if len(pred_df) and int(np.sum(test_m)) >= 5:  # the interval the profile's estimates carry
        sub = pred_df[test_m]
        band = error_band(sub["measured_s"].to_numpy() / sub["predicted_s"].to_numpy(), "held-out students")
        prof = prof.with_interval(band, name=name)
    return CalibrationReport(prof, acc(test_m, "predicted_s"), acc(test_m, "spec_s"), acc(test_m, "base_s"),
                             acc(train_m, "predicted_s"), micro[kept],
                             {c: noise_floor(stud, c) for c in dict.fromkeys((time_col, "median_s")) if c in stud},
                             flops, got, fit_info, pred_df, by_mode)


def timing_of(df: pd.DataFrame) -> str:
    """What the table's times are: device time (back-to-back calls) or end-to-end calls."""
    k = df["calls_per_sample"].to_numpy(dtype=float) if "calls_per_sample" in df.columns else np.array([])
    k = k[np.isfinite(k)]
    if len(k) and np.median(k) > 1:
        return (f"device time: back-to-back calls, one sync per sample (median {np.median(k):.0f} calls per sample); "
                "end-to-end call latency in the table's e2e_min_s / e2e_median_s")
    return "end to end: one synchronised call per sample (host dispatch included)"


def error_band(ratios: npt.ArrayLike, what: str, level: float = INTERVAL_LEVEL) -> ErrorBand:
    """The central ``level`` share of held-out ``measured / estimated`` ratios as an `ErrorBand`."""
    r = np.asarray(ratios, dtype=np.float64)
    r = r[np.isfinite(r) & (r > 0)]
    if not len(r):
        raise CalibrationError(f"no held-out {what} to take an interval from")
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(r, [tail, 1.0 - tail])
    return ErrorBand(float(round(lo, 4)), float(round(hi, 4)), level, int(len(r)), f"{what} (n={len(r)})")


def describe_measurements(df: pd.DataFrame, device: str) -> str:
    """The calibrated profile's description: the machine, JAX version and XLA flags the table was measured with."""
    def first(col: str) -> str:
        return str(df[col].iloc[0]) if col in df.columns and len(df) else "?"

    aff = first("cpu_affinity")
    n = len([c for c in aff.split(",") if c.strip()]) if aff not in ("?", "", "nan") else 0
    where = f"{first('cpu')}" + (f", {n} core(s) [{aff}]" if device == "cpu" and n else "")
    flags = first("xla_flags")
    if device != "cpu" and first("device_kind") not in ("?", "", "nan"):
        where = f"{first('device_kind')}; host {where}"
    return (f"this machine's {device.upper()} ({where}), JAX {first('jax_version')}"
            + (f", XLA_FLAGS={flags}" if flags not in ("", "?", "nan") else "")
            + "; calibrated by `autodistill calibrate`")


def write_profile(rep: CalibrationReport, out: str | os.PathLike[str]) -> Path:
    """Save the calibrated profile with the report as header comments (atomic; round-trip checked)."""
    import tomllib

    from autodistill.hardware import profile_from_dict, save_profile
    from autodistill.measure import TIME_DESCRIPTIONS

    out = Path(out)
    save_profile(rep.profile, out)  # validates and writes atomically
    h, s = rep.heldout, rep.heldout_spec
    col = rep.fit.get("time_col", "median_s")
    what = TIME_DESCRIPTIONS.get(col, "per case")
    source = rep.profile.calibration.source if rep.profile.calibration else "spec"
    lines = [f"# Calibrated: {source}.",
             f"# Fitted times: {col} ({what}" + (", fastest of several passes" if rep.fit.get("passes") else "") + ")."]
    if rep.fit.get("timing"):
        lines.append(f"# Timing: {rep.fit['timing']}.")
    if rep.base_measured:
        lines.append("# Base rates measured on this device: " + ", ".join(
            f"{k}={v:.4g}" for k, v in rep.base_measured.items()) + "; other base fields from the base profile.")
    kept = rep.profile.roofline
    lines.append(f"# Roofline: {kept} ({rep.fit.get('roofline_choice', 'given')}).")
    if h:
        lines.append(f"# Held-out students (n={h['n']}), {kept} roofline: MAPE {100 * h['mape']:.2f}%, within +-10% "
                     f"{100 * h['within_10pct']:.1f}%, Spearman {h['spearman']:.4f}, Kendall {h['kendall']:.4f}.")
    for mode, acc in rep.rooflines.items():
        o = acc.get("heldout") if mode != kept else None
        if o:
            lines.append(f"# Same fit with the {mode} roofline (not kept; for comparison): held-out MAPE "
                         f"{100 * o['mape']:.2f}%, within +-10% {100 * o['within_10pct']:.1f}%, Spearman "
                         f"{o['spearman']:.4f}, Kendall {o['kendall']:.4f}.")
    if s:
        lines.append(f"# Spec-only base profile on the same students: MAPE {100 * s['mape']:.1f}%, within +-10% "
                     f"{100 * s['within_10pct']:.1f}%, Spearman {s['spearman']:.4f}.")
    for col, nf in rep.noise.items():
        if nf:
            lines.append(f"# Noise floor ({col}): " + ", ".join(f"{k}={v:.4g}" for k, v in nf.items()) + ".")
    text = "\n".join(lines) + "\n" + out.read_text(encoding="utf-8")
    profile_from_dict(tomllib.loads(text), source=str(out))
    return atomic_write_text(out, text)


def _first(df: pd.DataFrame, col: str) -> str:
    if col in df.columns and len(df):
        return str(df[col].iloc[0])
    return "?"


def _flops_check(stud: pd.DataFrame, profile: HardwareProfile, dtype: str) -> dict[str, float]:
    """Cost-model matmul FLOPs vs XLA's for every student that has XLA numbers."""
    from autodistill.costmodel import CostModel

    cm = CostModel(profile, dtype)
    dot, tot = [], []
    for _, r in stud.iterrows():
        p = row_params(r)
        e = cm.estimate(StudentArch.from_dict(p["arch"]), int(p["b"]), int(p["s"]))
        model_flops = e.flops
        xd = float(r.get("xla_dot_flops", float("nan")))
        xt = float(r.get("xla_flops", float("nan")))
        if math.isfinite(xd) and xd > 0:
            dot.append(model_flops / xd)
        if math.isfinite(xt) and xt > 0:
            tot.append(model_flops / xt)
    out: dict[str, float] = {}
    if dot:
        out.update(n_dot=len(dot), dot_ratio_min=min(dot), dot_ratio_max=max(dot))
    if tot:
        out.update(n_total=len(tot), total_ratio_min=min(tot), total_ratio_max=max(tot))
    return out


# ======================================================================================= calibrating a device
def calibrate_device(plan: MeasurePlan, base: HardwareProfile, *, name: str,
                     measurements: str | os.PathLike[str], add_to: str | os.PathLike[str] | None = None,
                     time: str | None = None, measure_base: bool = True, roofline: str = "auto",
                     progress: bool = True) -> CalibrationReport:
    """Measure ``plan`` on its device, save the table to ``measurements`` and fit ``base``'s terms to it.

    With ``add_to`` (an earlier measurement table, e.g. the profile's own), its rows are fitted too and
    the table saved (and checkpointed while measuring) holds both, the earlier rows first with their
    train/test split (`merge_measurements`). The table is saved before the fit, so a failed fit keeps it;
    a line on stderr says where. The fit is `calibrate` with the plan's dtype, seed and test fraction,
    ``time`` (a key of `autodistill.measure.table.TIME_CHOICES`, the ``--time`` choice; None: the device's
    `TIME_COLUMN`), ``measure_base`` and ``roofline``; the profile is named ``name``. ``progress``: a line
    on stderr every 20 cases measured."""
    from autodistill.measure.plan import measure_device
    from autodistill.measure.table import load_measurements, save_measurements

    _check_dtype(base, plan.dtype)
    earlier = load_measurements(add_to) if add_to is not None else None
    path = Path(measurements)
    df = measure_device(plan, checkpoint=path, earlier=earlier, progress=progress)
    save_measurements(df, path)
    print(f"wrote {len(df)} measurements to {path}"
          + (f" ({len(earlier)} of them from {add_to})" if earlier is not None else ""), file=sys.stderr)
    return _fit_table(df, base, name=name, device=plan.device, dtype=plan.dtype, seed=plan.seed,
                      test_fraction=plan.test_fraction, time=time, measure_base=measure_base, roofline=roofline)


def calibrate_from_measurements(table: str | os.PathLike[str], base: HardwareProfile, *, name: str, device: str,
                                dtype: str = "fp32", seed: int = 0, test_fraction: float = 0.4,
                                add_to: str | os.PathLike[str] | None = None, time: str | None = None,
                                measure_base: bool = True, roofline: str = "auto") -> CalibrationReport:
    """Fit ``base``'s terms to a saved measurement table of ``device`` (no measuring), as `calibrate_device`
    fits a table it measured: ``add_to``'s rows first (`merge_measurements`), then `calibrate`."""
    from autodistill.measure.table import load_measurements

    _check_dtype(base, dtype)
    earlier = load_measurements(add_to) if add_to is not None else None
    df = load_measurements(table)
    if earlier is not None:
        df = merge_measurements(earlier, df)
    return _fit_table(df, base, name=name, device=device, dtype=dtype, seed=seed, test_fraction=test_fraction,
                      time=time, measure_base=measure_base, roofline=roofline)


def _fit_table(df: pd.DataFrame, base: HardwareProfile, *, name: str, device: str, dtype: str, seed: int,
               test_fraction: float, time: str | None, measure_base: bool, roofline: str) -> CalibrationReport:
    """`calibrate` on the time column ``time`` names (None: the one ``device`` fits), described as measured
    on ``device``."""
    from autodistill.measure.cases import PLATFORMS
    from autodistill.measure.table import TIME_CHOICES, TIME_COLUMN

    if device not in PLATFORMS:
        raise CalibrationError(choices_message("device", device, PLATFORMS))
    if time is not None and time not in TIME_CHOICES:
        raise CalibrationError(choices_message("time", time, TIME_CHOICES))
    time_col = TIME_CHOICES[time] if time else TIME_COLUMN[device]
    if time_col not in df.columns:
        raise CalibrationError(f"the measurement table has no {time_col!r} column; use --time wall")
    return calibrate(df, base, name=name, dtype=dtype, seed=seed, test_fraction=test_fraction, time_col=time_col,
                     measure_base=measure_base, roofline=roofline, description=describe_measurements(df, device))


# ============================================================================================ recalibration
def measurements_path(profile_path: str | os.PathLike[str]) -> Path:
    """Where `autodistill calibrate` writes a profile's measurement table: ``<stem>_measurements.csv`` beside it."""
    p = Path(profile_path)
    return p.with_name(f"{p.stem}_measurements.csv")


def _measurement_frame(measurements: Any) -> pd.DataFrame:
    import pandas as pd

    from autodistill.measure import load_measurements

    if isinstance(measurements, pd.DataFrame):
        return measurements
    if isinstance(measurements, (str, bytes)) or hasattr(measurements, "__fspath__"):
        return load_measurements(measurements)
    rows = []
    for item in measurements:
        if isinstance(item, Mapping):
            arch, b, s, t = item["arch"], item["batch"], item["seq"], item["latency_s"]
        else:
            arch, b, s, t = item
        arch = arch if isinstance(arch, StudentArch) else StudentArch.from_dict(arch)
        rows.append({"kind": "student", "name": f"{arch.short_name()}-b{b}-s{s}",
                     "params": json.dumps({"arch": arch.to_dict(), "b": int(b), "s": int(s)}), "median_s": float(t),
                     "split": "train", "repeat": 0})
    if not rows:
        raise CalibrationError("no measurements given to recalibrate from")
    return pd.DataFrame(rows)


def recalibrate(profile: HardwareProfile, measurements: Any, *, dtype: str | None = None,
                prior_weight: float = 0.05, student_share: float = 0.7, time_col: str = "median_s",
                name: str | None = None, seed: int = 0) -> HardwareProfile:
    """Refit ``profile``'s terms to new measurements; returns the recalibrated profile.

    ``measurements`` is a measurement table (DataFrame or CSV/parquet path from
    `autodistill.measure`), or an iterable of ``(StudentArch, batch, seq,
    latency_s)`` tuples / ``{"arch", "batch", "seq", "latency_s"}`` dicts (e.g.
    on-device confirmations). The fit starts from the profile's current terms
    and is pulled toward them by ``prior_weight``, so a handful of measurements
    adjusts the terms they inform and leaves the others alone. Base rates and
    the roofline mode are kept. Every fitted row is used (no held-out split).
    """
    df = _measurement_frame(measurements)
    dtype = dtype or profile.default_dtype
    fit_df = df[df["kind"].isin(FIT_KINDS)].reset_index(drop=True)
    if fit_df.empty:
        raise CalibrationError(f"no rows of a fitted kind ({', '.join(FIT_KINDS)}) to recalibrate from")
    mat = OpMatrix.from_ops(table_ops(fit_df, profile, dtype))
    meas = fit_df[time_col].to_numpy(dtype=float)
    th0 = theta_of(profile)
    w = _student_weights(fit_df["kind"].to_numpy(dtype=object), student_share)
    r = fit_terms(mat, meas, base_rates(profile, dtype), theta0=th0, prior=th0, prior_weight=prior_weight,
                  weights=w, starts=1, seed=seed, roofline=profile.roofline, free=free_terms(profile))
    old = profile.calibration.source if profile.calibration is not None else "spec"
    src = f"recalibrated from {len(fit_df)} measurements (rms log error {r.rms_log_error:.3f}); previously: {old}"
    cal = calibration_of(r.theta, source=src[:500])
    if profile.calibration is not None:
        # The ops were priced with the profile's shape residuals, so the refit terms assume them.
        cal = dataclasses.replace(cal, residuals=profile.calibration.residuals, interval=profile.calibration.interval)
    return profile.with_calibration(cal, name=name or profile.name)


__all__ = ["CalibrationReport", "FitResult", "OpMatrix", "OpRow", "PARAM_NAMES", "ROOFLINE_CHOICES", "accuracy",
           "assign_splits", "collapse_passes", "base_rates", "calibrate", "calibrate_device",
           "calibrate_from_measurements", "calibration_of", "case_ops", "fit_terms", "measured_base_profile",
           "measurements_path", "merge_measurements", "noise_floor", "predict", "recalibrate", "table_ops", "theta_of"]
