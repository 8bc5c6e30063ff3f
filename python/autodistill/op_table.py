"""Per-op latency tables: read, check, price with the cost model's op forms, and fit a profile's terms.

A per-op table is what a profiler export gives: one kernel a row, its shape and its time. The CSV
columns (`COLUMNS`; extra columns are ignored):

    op          matmul | bmm | layernorm | softmax | elementwise
    batch       matmul: rows are batch * m (usually 1); bmm: independent matmuls; others: unused (1)
    m, n, k     matmul and bmm: (m, k) @ (k, n)
    rows, width layernorm, softmax, elementwise: rows x width elements
    dtype       one of autodistill.hardware.DTYPES
    latency_s   measured seconds (> 0)
    inputs      elementwise only, optional: tensors read (default 1)
    flops_per_element  elementwise only, optional (default 1)

Each row becomes the cost model's op of that shape (`costmodel_reference.dense_op` and
`tile_candidates`, so waves, split-K and the K ramp apply as in a student): ``matmul`` is the
``matmul`` class, ``bmm`` the ``attention`` class (attention's batched matmuls), and the row ops
the ``vector`` class. `fit_op_table` fits the class terms to the rows with the same predictor
`autodistill.calibration` fits students with, and reports held-out error on a seeded split.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from autodistill.calibration import (
    PARAM_NAMES,
    OpMatrix,
    accuracy,
    base_rates,
    calibration_of,
    error_band,
    fit_terms,
    free_terms,
    predict,
    theta_of,
)
from autodistill.costmodel_reference import (
    LAYER_NORM_FLOPS,
    SOFTMAX_FLOPS,
    OpShape,
    dense_op,
    residual_basis,
    tile_candidates,
)
from autodistill.errors import CalibrationError, choices_message
from autodistill.hardware import (
    DTYPES,
    RESIDUAL_CLASSES,
    RESIDUAL_MAX_LOG,
    RESIDUAL_MAX_VALUE,
    ROOFLINES,
    HardwareProfile,
)
from autodistill.oprows import OpRow, op_row

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

OP_KINDS = ("matmul", "bmm", "layernorm", "softmax", "elementwise")
#: The cost-model op class each table op kind is priced and fitted as.
KIND_CLASS = {"matmul": "matmul", "bmm": "attention", "layernorm": "vector", "softmax": "vector",
              "elementwise": "vector"}
COLUMNS = ("op", "batch", "m", "n", "k", "rows", "width", "dtype", "latency_s")
_SHAPE_COLS = {"matmul": ("batch", "m", "n", "k"), "bmm": ("batch", "m", "n", "k"),
               "layernorm": ("rows", "width"), "softmax": ("rows", "width"), "elementwise": ("rows", "width")}
_MAX_DIM = 2 ** 31


@dataclass(frozen=True)
class OpSample:
    """One checked row of a per-op table."""

    op: str
    dtype: str
    latency_s: float
    batch: int = 1
    m: int = 0
    n: int = 0
    k: int = 0
    rows: int = 0
    width: int = 0
    inputs: int = 1
    flops_per_element: float = 1.0


def read_op_table(source: str | pd.DataFrame, *, name: str | None = None) -> list[OpSample]:
    """Check a per-op table (a CSV path or a DataFrame) and return its rows.

    Raises `CalibrationError` naming the file, the row (1-based, as a spreadsheet counts data
    rows) and the column of the first bad value: a missing column, an unknown op kind or dtype, a
    shape that is not a positive integer, a time that is NaN or not > 0."""
    import pandas as pd

    where = name or (str(source) if isinstance(source, str) else "per-op table")
    if isinstance(source, str):
        try:
            df = pd.read_csv(source)
        except FileNotFoundError:
            raise CalibrationError(f"per-op table {where!r} does not exist") from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise CalibrationError(f"{where}: not a readable CSV table: {e}") from None
    else:
        df = source
    if df.empty:
        raise CalibrationError(f"{where}: no rows")
    missing = [c for c in ("op", "dtype", "latency_s") if c not in df.columns]
    if missing:
        raise CalibrationError(f"{where}: missing column(s) {missing}; a per-op table has {list(COLUMNS)}")
    kinds = set(df["op"].astype(str))
    for kind in OP_KINDS:
        need = [c for c in _SHAPE_COLS[kind] if c != "batch" and c not in df.columns]
        if kind in kinds and need:
            raise CalibrationError(f"{where}: rows of op {kind!r} need column(s) {need}")
    out = []
    for i, rec in enumerate(df.to_dict("records"), start=1):
        out.append(_sample(rec, i, where))
    return out


def _sample(rec: Mapping[str, Any], i: int, where: str) -> OpSample:
    def bad(col: str, msg: str) -> CalibrationError:
        return CalibrationError(f"{where}: row {i}, column {col!r}: {msg}")

    op = str(rec["op"])
    if op not in OP_KINDS:
        raise bad("op", choices_message("op kind", op, OP_KINDS))
    dtype = str(rec["dtype"])
    if dtype not in DTYPES:
        raise bad("dtype", choices_message("dtype", dtype, DTYPES))
    t = rec["latency_s"]
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        raise bad("latency_s", f"{t!r} is not a finite time > 0 (seconds)")

    def dim(col: str, default: int | None = None) -> int:
        v = rec.get(col, default)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            if default is None:
                raise bad(col, "is empty; it is needed for op " + repr(op))
            v = default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v != int(v) \
                or not 1 <= v <= _MAX_DIM:
            raise bad(col, f"{v!r} is not an integer in 1..{_MAX_DIM}")
        return int(v)

    kw: dict[str, Any] = {}
    for col in _SHAPE_COLS[op]:
        kw[col] = dim(col, 1 if col == "batch" else None)
    if op == "elementwise":
        kw["inputs"] = dim("inputs", 1)
        f = rec.get("flops_per_element", 1.0)
        if f is None or (isinstance(f, float) and math.isnan(f)):
            f = 1.0
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or f < 0:
            raise bad("flops_per_element", f"{f!r} is not a finite number >= 0")
        kw["flops_per_element"] = float(f)
    return OpSample(op=op, dtype=dtype, latency_s=float(t), **kw)


def sample_op(s: OpSample, hw: Mapping[str, Any]) -> OpRow:
    """The cost-model op a table row measures (``hw`` is `HardwareProfile.resolve` for its dtype)."""
    db = hw["dtype_bytes"]
    if s.op == "matmul":
        return op_row(dense_op(hw, s.batch * s.m, s.k, s.n, 0.0, False, False, bias=False, name="matmul"), hw)
    if s.op == "bmm":
        B, M, N, K = float(s.batch), float(s.m), float(s.n), float(s.k)
        a, b = tile_candidates(hw, B, s.m, s.n, s.k)
        return op_row(OpShape("bmm", "attention", 1.0, flops=2.0 * B * M * N * K, padded_flops=a[0],
                              act_bytes=B * (M * K + K * N + M * N) * db, ramp_a=a, ramp_b=b, dims=(s.m, s.n, s.k)), hw)
    elems = float(s.rows) * float(s.width)
    if s.op == "layernorm":
        flops, ab, wb = LAYER_NORM_FLOPS * elems, 2.0 * elems * db, 2.0 * s.width * db
    elif s.op == "softmax":
        flops, ab, wb = SOFTMAX_FLOPS * elems, 2.0 * elems * db, 0.0
    else:
        flops, ab, wb = s.flops_per_element * elems, (s.inputs + 1.0) * elems * db, 0.0
    return op_row(OpShape(s.op, "vector", 1.0, vector_flops=flops, weight_bytes=wb, act_bytes=ab), hw)


def op_matrix(samples: Sequence[OpSample], profile: HardwareProfile) -> OpMatrix:
    """The samples as cost-model ops, one sample each, priced at each row's dtype."""
    resolved: dict[str, dict[str, Any]] = {}
    per = []
    for s in samples:
        if s.dtype not in resolved:
            resolved[s.dtype] = profile.resolve(s.dtype)
        per.append([sample_op(s, resolved[s.dtype])])
    return OpMatrix.from_ops(per)


def class_free_terms(classes: Sequence[str], profile: HardwareProfile) -> tuple[str, ...]:
    """The terms a per-op fit of ``classes`` frees (never the per-inference fixed overhead)."""
    return tuple(n for n in free_terms(profile) if any(n.startswith(f"{c}_") for c in classes))


@dataclass(frozen=True)
class OpFit:
    """A profile fitted to per-op rows, and its error on the rows it did not see."""

    profile: HardwareProfile
    roofline: str
    train: Mapping[str, float]
    heldout: Mapping[str, float]
    by_kind: Mapping[str, Mapping[str, float]]  # held-out accuracy per op kind
    n_train: int
    n_test: int
    residuals: Mapping[str, str] = dataclasses.field(default_factory=dict)  # class -> kept or not, and why


#: Ridge weight of the shape residual's fit (per value, in log-time units).
RESIDUAL_RIDGE = 1.0
#: Share of the training rows the residual is fitted on before it is checked on the rest.
RESIDUAL_FIT_SHARE = 0.7


def _dims(s: OpSample) -> tuple[int, int, int]:
    return (s.batch * s.m, s.n, s.k) if s.op == "matmul" else (s.m, s.n, s.k)


def _ridge(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.solve(X.T @ X + RESIDUAL_RIDGE * np.eye(X.shape[1]), X.T @ y)


def fit_residuals(samples: Sequence[OpSample], pred: np.ndarray, train: np.ndarray, seed: int
                  ) -> tuple[dict[str, tuple[float, ...]], dict[str, str]]:
    """Per matmul class, the bounded shape residual of the training rows' log(measured / predicted), kept
    only where, fitted on `RESIDUAL_FIT_SHARE` of them, it lowers the MAPE of the others."""
    kept: dict[str, tuple[float, ...]] = {}
    notes: dict[str, str] = {}
    meas = np.array([s.latency_s for s in samples])
    for cls in RESIDUAL_CLASSES:
        idx = np.array([i for i in train if KIND_CLASS[samples[i].op] == cls], dtype=np.int64)
        if len(idx) < 20:
            if len(idx):
                notes[cls] = f"not fitted: {len(idx)} training rows (20 needed)"
            continue
        X = np.array([residual_basis(_dims(samples[i])) for i in idx])
        r = np.log(meas[idx] / pred[idx])
        perm = np.random.default_rng(seed + 7).permutation(len(idx))
        cut = int(RESIDUAL_FIT_SHARE * len(idx))
        a, b = perm[:cut], perm[cut:]
        w = _ridge(X[a], r[a])
        corr = np.clip(X[b] @ w, -RESIDUAL_MAX_LOG, RESIDUAL_MAX_LOG)
        before = float(np.mean(np.abs(pred[idx][b] / meas[idx][b] - 1)))
        after = float(np.mean(np.abs(pred[idx][b] * np.exp(corr) / meas[idx][b] - 1)))
        if after < before:
            w = np.clip(_ridge(X, r), -RESIDUAL_MAX_VALUE, RESIDUAL_MAX_VALUE)
            kept[cls] = tuple(float(v) for v in w)
            notes[cls] = f"kept: validation MAPE {100 * before:.2f}% -> {100 * after:.2f}% on {len(b)} rows"
        else:
            notes[cls] = f"not kept: validation MAPE {100 * before:.2f}% -> {100 * after:.2f}% on {len(b)} rows"
    return kept, notes


def split_rows(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``n`` rows: (train indices, test indices)."""
    if not 0.0 <= test_fraction < 1.0:
        raise CalibrationError(f"test_fraction={test_fraction!r} must be in [0, 1)")
    idx = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(idx[n_test:]), np.sort(idx[:n_test])


def fit_op_table(samples: Sequence[OpSample], base: HardwareProfile, *, name: str | None = None,
                 test_fraction: float = 0.5, seed: int = 0, roofline: str = "auto", starts: int = 4,
                 source: str = "per-op table", residual: bool = True) -> OpFit:
    """Fit ``base``'s terms of the classes the rows cover, holding out ``test_fraction`` of the rows.

    Roofline ``"auto"`` keeps the mode ("max" or "sum") with the lower training MAPE. Terms of
    classes with no row, and the per-inference fixed overhead, keep ``base``'s values. With
    ``residual``, each matmul class then gets a bounded shape residual (`fit_residuals`) where it
    lowers the error of training rows it was not fitted on; the held-out rows never take part."""
    if not samples:
        raise CalibrationError("no per-op rows to fit")
    if roofline not in ROOFLINES + ("auto",):
        raise CalibrationError(choices_message("roofline", roofline, ROOFLINES + ("auto",)))
    dtypes = sorted({s.dtype for s in samples})
    for dt in dtypes:
        if dt not in base.peak_flops_per_s:
            raise CalibrationError(f"profile {base.name!r} has no peak for dtype {dt!r} used by the table; "
                                   f"valid choices: {', '.join(base.dtypes)}")
    if len(dtypes) > 1:
        raise CalibrationError(f"one dtype per fitted profile; the table has {dtypes}")
    dtype = dtypes[0]
    if base.calibration is not None and base.calibration.residuals:  # refitted below
        base = base.with_calibration(dataclasses.replace(base.calibration, residuals={}))
    mat = op_matrix(samples, base)
    meas = np.array([s.latency_s for s in samples])
    tr, te = split_rows(len(samples), test_fraction, seed)
    if not len(tr):
        raise CalibrationError("no training rows after the split")
    classes = sorted({KIND_CLASS[s.op] for s in samples})
    free = class_free_terms(classes, base)
    rates = base_rates(base, dtype)
    theta0 = theta_of(base)
    fixed = PARAM_NAMES.index("fixed_overhead_s")
    theta0[fixed] = 0.0  # one kernel a row: no per-inference overhead
    fits = {}
    for mode in ROOFLINES:
        fits[mode] = fit_terms(mat.subset(tr), meas[tr], rates, theta0=theta0, free=free, roofline=mode,
                               starts=starts, seed=seed)
    train_mape = {m: accuracy(predict(f.theta, mat.subset(tr), rates, m), meas[tr])["mape"] for m, f in fits.items()}
    kept = min(ROOFLINES, key=lambda m: (train_mape[m], ROOFLINES.index(m))) if roofline == "auto" else roofline
    theta = fits[kept].theta.copy()
    theta[fixed] = base.effective_fixed_overhead_s()
    pred = predict(fits[kept].theta, mat, rates, kept)
    residuals, notes = fit_residuals(samples, pred, tr, seed) if residual else ({}, {})
    kept_txt = "; ".join(f"{c} residual {n}" for c, n in notes.items())
    cal = calibration_of(theta, source=f"{source}: {len(tr)} op rows fitted ({', '.join(classes)}), "
                                        f"{len(te)} held out (seed {seed}); roofline {kept}"
                                        + (f"; {kept_txt}" if kept_txt else ""))
    cal = dataclasses.replace(cal, residuals=residuals)
    prof = dataclasses.replace(base, roofline=kept).with_calibration(cal, name=name or base.name)
    th_pred = fits[kept].theta
    pred = predict(th_pred, op_matrix(samples, prof), rates, kept)  # with the residuals kept
    kinds = np.array([s.op for s in samples])
    by_kind = {k: accuracy(pred[te][kinds[te] == k], meas[te][kinds[te] == k])
               for k in OP_KINDS if np.any(kinds[te] == k)}
    if len(te) >= 5:  # the interval the profile's estimates carry, from the held-out op rows
        band = error_band(meas[te] / pred[te], "held-out op rows")
        prof = prof.with_interval(band)
    return OpFit(prof, kept, accuracy(pred[tr], meas[tr]),
                 accuracy(pred[te], meas[te]) if len(te) else {}, by_kind, int(len(tr)), int(len(te)), notes)


__all__ = ["COLUMNS", "KIND_CLASS", "OP_KINDS", "OpFit", "OpSample", "class_free_terms", "fit_op_table",
           "fit_residuals", "op_matrix", "read_op_table", "sample_op", "split_rows"]
