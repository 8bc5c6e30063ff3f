"""Which searched students go on to full distillation: Pareto layers, spread over latency.

With a latency budget (`LatencyFeasibility`), only students that meet it with the required probability
(``P(latency <= budget) >= level`` under the profile's error band) are chosen.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from autodistill.search.feasibility import LatencyFeasibility, feasible_trials
from autodistill.search.pareto import nondominated_ranks, objective_matrix
from autodistill.search.types import Trial

__all__ = ["pareto_layers", "select_students", "spread_over_latency"]

T = TypeVar("T", bound=Trial)


def pareto_layers(trials: Sequence[T], k: int) -> list[T]:
    """Successive Pareto fronts of ``trials`` (accuracy up, latency down) until ``k`` are taken, fastest first.

    Only completed trials with a latency count. The first front is always taken whole; later fronts
    fill the remaining places in order of accuracy.
    """
    rest = [t for t in trials if t.ok and t.latency_s]  # so accuracy and latency_s are set (the "or 0.0" never applies)
    if not rest or k <= 0:
        return []
    ranks = nondominated_ranks(objective_matrix([t.accuracy or 0.0 for t in rest], [t.latency_s or 0.0 for t in rest]))
    out: list[T] = []
    for r in range(int(ranks.max()) + 1):
        if len(out) >= k:
            break
        layer = [t for t, rk in zip(rest, ranks) if rk == r]
        if out:
            layer = sorted(layer, key=lambda t: -(t.accuracy or 0.0))[: k - len(out)]
        out.extend(layer)
    return sorted(out, key=lambda t: (t.latency_s, -(t.accuracy or 0.0)))


def spread_over_latency(front: Sequence[T], k: int) -> list[T]:
    """``k`` of ``front`` (sorted by latency) spread evenly from the fastest to the slowest; with ``k = 1``
    the most accurate one."""
    if len(front) <= k:
        return list(front)
    if k <= 0:
        return []
    if k == 1:
        return [max(front, key=lambda t: t.accuracy or 0.0)]
    idx = sorted({round(i * (len(front) - 1) / (k - 1)) for i in range(k)})
    return [front[i] for i in idx]


def select_students(front: Sequence[T], completed: Sequence[T], k: int,
                    feasibility: LatencyFeasibility | None = None) -> list[T]:
    """The ``k`` students to distill fully: the Pareto ``front`` (fastest first) spread over latency, or,
    when it has fewer than ``k``, the front plus the best of the next non-dominated layers of ``completed``.

    With ``feasibility``, only the trials meeting the latency budget with its probability count: the
    front is then recomputed from the feasible ``completed`` trials (a feasible trial dominated only by
    infeasible ones is on it), and fewer than ``k`` (or none) come back when fewer are feasible.
    """
    if feasibility is not None:
        completed = feasible_trials(completed, feasibility)
        front = pareto_layers(completed, 1)  # the first front, whole
    chosen = list(front) if len(front) >= k else pareto_layers(completed, k)
    return spread_over_latency(chosen, k)
