"""Pareto sets and exact 2-D hypervolume of (accuracy, latency) trade-offs (numpy only).

Objective convention: both columns are maximized, as ``Y = [accuracy, -ln(latency_s)]``
(`objective_matrix`). Latency enters on a log scale because students span orders of
magnitude; the reference point is given in natural units as ``(ref_accuracy, ref_latency_s)``
and maps to ``[ref_accuracy, -ln(ref_latency_s)]``. Only points strictly better than the
reference in both objectives contribute.

`reference_point` is the documented default: the nadir of the given front moved out by
``margin`` (10%) of the front's range in each objective (BoTorch's ``infer_reference_point``
convention), with the latency margin taken on the log scale.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from autodistill.errors import SearchError

__all__ = ["hypervolume", "hypervolume_2d", "hypervolume_curve", "nondominated_ranks", "objective_matrix",
           "pareto_mask", "reference_point"]


def objective_matrix(accuracy: Sequence[float] | np.ndarray, latency_s: Sequence[float] | np.ndarray) -> np.ndarray:
    """``n x 2`` maximization objectives ``[accuracy, -ln latency_s]``."""
    acc = np.asarray(accuracy, dtype=np.float64).reshape(-1)
    lat = np.asarray(latency_s, dtype=np.float64).reshape(-1)
    if acc.shape != lat.shape:
        raise SearchError(f"accuracy has {acc.shape[0]} values but latency_s has {lat.shape[0]}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.stack([acc, -np.log(lat)], axis=1)


def pareto_mask(Y: np.ndarray) -> np.ndarray:
    """Non-dominated rows of ``Y`` (``n x m``, every column maximized); rows with NaN are dominated.

    Exact duplicates of a non-dominated row are all kept. 2-D uses an ``O(n log n)`` sweep
    (fine for pools of millions); more objectives use an ``O(n^2)`` chunked comparison.
    """
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2:
        raise SearchError(f"Y must be n x m, got shape {Y.shape}")
    n = Y.shape[0]
    finite = np.all(np.isfinite(Y), axis=1)
    out = np.zeros(n, dtype=bool)
    if n == 0 or not finite.any():
        return out
    idx = np.flatnonzero(finite)
    Z = Y[idx]
    if Y.shape[1] == 2:
        order = np.lexsort((-Z[:, 1], -Z[:, 0]))  # y0 descending, then y1 descending
        y0, y1 = Z[order, 0], Z[order, 1]
        starts = np.flatnonzero(np.r_[True, y0[1:] != y0[:-1]])
        gid = np.cumsum(np.r_[True, y0[1:] != y0[:-1]]) - 1
        gmax = y1[starts]
        prev_best = np.r_[-np.inf, np.maximum.accumulate(gmax)[:-1]]
        nd = (y1 == gmax[gid]) & (y1 > prev_best[gid])
        out[idx[order[nd]]] = True
        return out
    keep = np.ones(len(Z), dtype=bool)
    for s in range(0, len(Z), 1024):
        blk = Z[s:s + 1024]
        ge = np.all(Z[None, :, :] >= blk[:, None, :], axis=2)
        gt = np.any(Z[None, :, :] > blk[:, None, :], axis=2)
        keep[s:s + 1024] = ~np.any(ge & gt, axis=1)
    out[idx[keep]] = True
    return out


def nondominated_ranks(Y: np.ndarray) -> np.ndarray:
    """NSGA-II front number (0 = non-dominated) of each row of ``Y`` (``n x m``, maximized)."""
    n = len(Y)
    ranks = np.full(n, -1, dtype=np.int64)
    ge = np.all(Y[:, None, :] >= Y[None, :, :], axis=2)
    gt = np.any(Y[:, None, :] > Y[None, :, :], axis=2)
    dom = ge & gt  # dom[i, j]: i dominates j
    count = dom.sum(axis=0)  # how many dominate j
    r = 0
    current = np.flatnonzero(count == 0)
    while len(current):
        ranks[current] = r
        count = count - dom[current].sum(axis=0)
        count[ranks >= 0] = -1
        current = np.flatnonzero(count == 0)
        r += 1
    return ranks


def hypervolume_2d(Y: np.ndarray, ref: Sequence[float]) -> float:
    """Exact hypervolume dominated by ``Y`` (``n x 2``, maximized) above ``ref`` (2,)."""
    Y = np.asarray(Y, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    if Y.ndim != 2 or Y.shape[1] != 2 or r.shape != (2,):
        raise SearchError(f"hypervolume_2d needs Y of shape n x 2 and ref of shape (2,); got {Y.shape}, {r.shape}")
    Y = Y[np.all(np.isfinite(Y), axis=1) & np.all(Y > r, axis=1)]
    if len(Y) == 0:
        return 0.0
    F = Y[pareto_mask(Y)]
    F = F[np.lexsort((F[:, 1], -F[:, 0]))]  # y0 descending -> y1 ascending along the front
    y1_prev = np.r_[r[1], F[:-1, 1]]
    return float(np.sum((F[:, 0] - r[0]) * np.maximum(F[:, 1] - y1_prev, 0.0)))


def hypervolume(accuracy: Sequence[float] | np.ndarray, latency_s: Sequence[float] | np.ndarray,
                ref_accuracy: float, ref_latency_s: float) -> float:
    """Hypervolume of (accuracy, latency_s) points in the ``[accuracy, -ln latency_s]`` plane."""
    _check_ref(ref_accuracy, ref_latency_s)
    return hypervolume_2d(objective_matrix(accuracy, latency_s), [ref_accuracy, -math.log(ref_latency_s)])


def hypervolume_curve(accuracy: Sequence[float] | np.ndarray, latency_s: Sequence[float] | np.ndarray,
                      ref_accuracy: float, ref_latency_s: float) -> np.ndarray:
    """Hypervolume of the first ``k`` points for ``k = 1..n`` (``n`` values; NaN points add nothing)."""
    _check_ref(ref_accuracy, ref_latency_s)
    Y = objective_matrix(accuracy, latency_s)
    r = [ref_accuracy, -math.log(ref_latency_s)]
    out = np.zeros(len(Y))
    front = np.zeros((0, 2))
    for k in range(len(Y)):
        if np.all(np.isfinite(Y[k])):
            front = np.vstack([front, Y[k:k + 1]])
            front = front[pareto_mask(front)]
        out[k] = hypervolume_2d(front, r) if len(front) else 0.0
    return out


def reference_point(accuracy: Sequence[float] | np.ndarray, latency_s: Sequence[float] | np.ndarray,
                    margin: float = 0.1, *, front_only: bool = True) -> tuple[float, float]:
    """Default ``(ref_accuracy, ref_latency_s)``: the front's nadir pushed out by ``margin`` of its range.

    ``front_only=False`` takes the nadir and range of every point instead (a fixed reference for a
    hypervolume curve over trials, which stays positive when the front is a single point).
    """
    Y = objective_matrix(accuracy, latency_s)
    Y = Y[np.all(np.isfinite(Y), axis=1)]
    if len(Y) == 0:
        raise SearchError("reference_point needs at least one finite (accuracy, latency_s) point")
    F = Y[pareto_mask(Y)] if front_only else Y
    lo, hi = F.min(axis=0), F.max(axis=0)
    span = np.where(hi > lo, hi - lo, np.maximum(np.abs(lo), 1.0) * 0.1)
    ref = lo - margin * span
    return float(ref[0]), float(math.exp(-ref[1]))


def _check_ref(ref_accuracy: float, ref_latency_s: float) -> None:
    if not (isinstance(ref_accuracy, (int, float)) and math.isfinite(ref_accuracy)):
        raise SearchError(f"ref_accuracy={ref_accuracy!r} must be a finite number")
    if not (isinstance(ref_latency_s, (int, float)) and math.isfinite(ref_latency_s) and ref_latency_s > 0):
        raise SearchError(f"ref_latency_s={ref_latency_s!r} must be a positive number")
