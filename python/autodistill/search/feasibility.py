"""A latency budget as a probability of feasibility: ``P(latency <= budget) >= level``.

The cost model's estimate carries a prediction interval: a profile's `error_band()` (the calibrated
held-out band, or the wide spec-only `SPEC_ONLY_ERROR_BAND`) says ``low <= measured / estimated <=
high`` for ``band.level`` of the cases. The ratio is modelled as a lognormal whose *central*
``band.level`` interval is ``[low, high]``::

    ln(measured / estimated) ~ Normal(mu, sigma),  mu = (ln low + ln high) / 2,
    sigma = (ln high - ln low) / (2 z),  z = Phi^-1((1 + band.level) / 2)

so the band's median ratio is ``sqrt(low * high)``, and

    P(latency <= budget) = Phi((ln(budget / estimate) - mu) / sigma)

which is 0.5 when ``budget = estimate * sqrt(low * high)``, ``(1 + band.level) / 2`` at the band's upper
edge (``budget = estimate * high``) and ``(1 - band.level) / 2`` at its lower edge: the band holds
``band.level`` of the mass. A zero-width band (``low == high``) is a step at ``estimate * low``.

A candidate is feasible when that probability is at least the feasibility ``level`` (0.9 by default,
``[search] feasibility_level`` in a run config). With the spec-only band (0.9, 3.0) a 0.9 level asks
for an estimate about 2.6x under the budget; with a tight calibrated band, about its upper edge.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from scipy.special import ndtr

from autodistill.errors import SearchError

if TYPE_CHECKING:
    from autodistill.hardware import ErrorBand
    from autodistill.search.types import Trial

__all__ = ["DEFAULT_FEASIBILITY_LEVEL", "LatencyFeasibility", "band_lognormal", "feasible_trials",
           "objective_budget_s", "p_within_budget", "pool_feasibility"]

#: The default feasibility level: a candidate must meet its latency budget with this probability.
DEFAULT_FEASIBILITY_LEVEL = 0.9

T = TypeVar("T", bound="Trial")


def check_level(name: str, v: Any) -> float:
    """``v`` as a float in (0, 1), or a `SearchError` naming ``name``."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 < v < 1.0):
        raise SearchError(f"{name}={v!r} must be a probability in (0, 1)")
    return float(v)


def band_lognormal(low: float, high: float, level: float) -> tuple[float, float]:
    """``(mu, sigma)`` of the lognormal on measured/estimated whose central ``level`` interval is ``[low, high]``."""
    if not (0 < low <= high) or not math.isfinite(high):
        raise SearchError(f"an error band needs 0 < low <= high, got [{low!r}, {high!r}]")
    z = NormalDist().inv_cdf((1.0 + check_level("band level", level)) / 2.0)
    return (math.log(low) + math.log(high)) / 2.0, (math.log(high) - math.log(low)) / (2.0 * z)


def p_within_budget(est_s: Any, budget_s: Any, band: ErrorBand | tuple[float, float, float]) -> Any:
    """``P(measured latency <= budget_s)`` of estimates ``est_s`` under ``band`` (an `ErrorBand` or
    ``(low, high, level)``); estimates and budgets are floats or arrays (broadcast). See the module
    docstring for the model. A non-finite or non-positive estimate gives NaN."""
    low, high, level = (band.low, band.high, band.level) if not isinstance(band, tuple) else band
    mu, sigma = band_lognormal(float(low), float(high), float(level))
    est = np.asarray(est_s, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log(np.asarray(budget_s, dtype=np.float64) / est) - mu
    p = (x >= 0).astype(np.float64) if sigma == 0.0 else ndtr(x / sigma)
    p = np.where(np.isfinite(est) & (est > 0), p, np.nan)
    return float(p) if np.ndim(p) == 0 else p


@dataclass(frozen=True)
class LatencyFeasibility:
    """A latency budget on the cost-model estimate, its error band, and the probability it must be met with."""

    budget_s: float
    band_low: float
    band_high: float
    band_level: float
    level: float = DEFAULT_FEASIBILITY_LEVEL
    source: str = ""  # where the band came from (the profile's interval source)

    def __post_init__(self) -> None:
        if isinstance(self.budget_s, bool) or not (isinstance(self.budget_s, (int, float))
                                                   and math.isfinite(self.budget_s) and self.budget_s > 0):
            raise SearchError(f"latency budget {self.budget_s!r} must be a positive number")
        band_lognormal(self.band_low, self.band_high, self.band_level)
        check_level("feasibility level", self.level)

    @classmethod
    def of_band(cls, budget_s: float, band: ErrorBand, level: float = DEFAULT_FEASIBILITY_LEVEL) -> LatencyFeasibility:
        return cls(float(budget_s), float(band.low), float(band.high), float(band.level), float(level), band.source)

    @property
    def band(self) -> tuple[float, float, float]:
        return self.band_low, self.band_high, self.band_level

    def probability(self, est_s: Any) -> Any:
        """``P(latency <= budget)`` of estimates ``est_s``."""
        return p_within_budget(est_s, self.budget_s, self.band)

    def feasible(self, est_s: Any) -> Any:
        """Whether each estimate meets the budget with probability >= `level` (NaN estimates do not)."""
        p = np.asarray(self.probability(est_s))
        return np.nan_to_num(p, nan=-1.0) >= self.level

    def max_estimate_s(self) -> float:
        """The largest feasible estimate: ``budget / q``, ``q`` the band's `level` quantile of measured/estimated."""
        mu, sigma = band_lognormal(*self.band)
        return self.budget_s / math.exp(mu + sigma * NormalDist().inv_cdf(self.level))

    def describe(self) -> str:
        return (f"P(latency <= {self.budget_s * 1e3:.4g} ms) >= {self.level:g}, measured/estimated in "
                f"[{self.band_low:.3g}, {self.band_high:.3g}] for {self.band_level:g} of cases"
                + (f" ({self.source})" if self.source else ""))


def objective_budget_s(pool: Any) -> float | None:
    """The pool's space's latency budget on the objective's own profile and workload, if any."""
    constraints = getattr(pool.space, "constraints", None)
    for lc in getattr(constraints, "latency", ()):
        if (lc.profile, lc.batch, lc.seq) == (pool.profile, pool.batch, pool.seq):
            return float(lc.max_latency_s)
    return None


def pool_feasibility(pool: Any, level: float = DEFAULT_FEASIBILITY_LEVEL,
                     budget_s: float | None = None) -> LatencyFeasibility | None:
    """The chance constraint of a pool: ``budget_s`` (else its objective budget) under its profile's
    `error_band()`; None without a budget or a profile."""
    budget = budget_s if budget_s is not None else objective_budget_s(pool)
    if budget is None or pool.profile is None:
        return None
    from autodistill.hardware import load_profile

    return LatencyFeasibility.of_band(budget, load_profile(pool.profile).error_band(), level)


def feasible_trials(trials: Sequence[T], feasibility: LatencyFeasibility | None) -> list[T]:
    """The ``trials`` whose estimated latency meets ``feasibility`` (all of them when it is None)."""
    if feasibility is None:
        return list(trials)
    return [t for t in trials if t.latency_s and bool(feasibility.feasible(t.latency_s))]
