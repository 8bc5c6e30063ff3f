"""Ask/tell bookkeeping shared by every searcher over a `CandidatePool` or `CandidateTable` (no torch).

A searcher keeps what it has been told (completed, failed, pending trials) and never proposes
an architecture that is observed, failed or pending. Proposal randomness comes from a seed
derived from (seed, how many trials of each kind it has seen, how many it is asked for), so the
same history gives the same proposals: a resumed search replays an uninterrupted one.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from autodistill.candidates import CandidateTable
from autodistill.errors import SearchError
from autodistill.search.types import Candidate, Suggestion, Trial
from autodistill.space import CandidatePool

logger = logging.getLogger(__name__)

__all__ = ["Observation", "Pool", "PoolSearcher"]

#: What a searcher searches: the feasible architectures of a space, or the rows of a candidate table.
Pool = CandidatePool | CandidateTable


@dataclass(frozen=True)
class Observation:
    """What a searcher keeps of one trial: pool row (-1 if outside the pool) and outcomes."""

    key: bytes
    pool_index: int
    features: np.ndarray
    accuracy: float | None
    measured_latency_s: float | None
    failed: bool


class PoolSearcher:
    """Base class: `suggest(n)` / `suggest_detailed(n)` / `observe(trial)` over a pool."""

    name = "base"

    def __init__(self, pool: Pool, seed: int = 0) -> None:
        if len(pool) == 0:
            raise SearchError("the candidate pool is empty")
        if pool.latency_s is None:
            raise SearchError("the candidate pool has no objective latency; build it with a profile")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise SearchError(f"seed={seed!r} must be an integer")
        self.pool = pool
        self.seed = seed
        self._obs: dict[int, Observation] = {}  # by trial id
        self._pending: dict[bytes, int] = {}  # arch key -> pool index (-1 outside)
        self._used = np.zeros(len(pool), dtype=bool)  # observed, failed or pending
        self._latency_s: np.ndarray = pool.latency_s
        self._log_latency = np.log(pool.latency_s)

    # ---------------------------------------------------------------- telling
    def observe(self, trial: Trial) -> None:
        """Record a trial. Completed (finite accuracy) trials become data; failed or NaN ones are
        excluded from future proposals; pending/running ones are treated as in flight.
        Observing the same ``trial_id`` again replaces the earlier record."""
        if not isinstance(trial, Trial):
            raise SearchError(f"observe() needs a Trial, got {type(trial).__name__}")
        key = trial.arch.features().tobytes()
        idx = self.pool.index_of(trial.arch)
        idx = -1 if idx is None else idx
        if not trial.finished:
            self._pending[key] = idx
            if idx >= 0:
                self._used[idx] = True
            return
        self._pending.pop(key, None)
        ok = trial.ok
        self._obs[trial.trial_id] = Observation(
            key=key, pool_index=idx, features=trial.arch.features(),
            accuracy=float(trial.accuracy) if ok and trial.accuracy is not None else None,
            measured_latency_s=(float(trial.measured_latency_s) if ok and trial.measured_latency_s is not None
                                and math.isfinite(trial.measured_latency_s) else None),
            failed=not ok,
        )
        if idx >= 0:
            self._used[idx] = True

    def add_pending(self, arch: Candidate) -> None:
        """Mark ``arch`` as being evaluated (it is then avoided and, for BO, conditioned on)."""
        idx = self.pool.index_of(arch)
        idx = -1 if idx is None else idx
        self._pending[arch.features().tobytes()] = idx
        if idx >= 0:
            self._used[idx] = True

    def forget_pending(self, arch: Candidate) -> None:
        """Drop a pending proposal that will never be evaluated (it may be proposed again)."""
        idx = self._pending.pop(arch.features().tobytes(), None)
        if idx is not None and idx >= 0 and not any(o.pool_index == idx for o in self._obs.values()):
            self._used[idx] = False

    # ---------------------------------------------------------------- state
    @property
    def n_completed(self) -> int:
        return sum(1 for o in self._obs.values() if not o.failed)

    @property
    def n_failed(self) -> int:
        return sum(1 for o in self._obs.values() if o.failed)

    @property
    def n_pending(self) -> int:
        return len(self._pending)

    def completed(self) -> list[Observation]:
        """Completed observations ordered by trial id (a stable order for model fitting)."""
        return [self._obs[k] for k in sorted(self._obs) if not self._obs[k].failed]

    def pending_indices(self) -> np.ndarray:
        return np.array([i for i in self._pending.values() if i >= 0], dtype=np.int64)

    def available(self) -> np.ndarray:
        """Pool indices that may still be proposed."""
        return np.flatnonzero(~self._used)

    def _rng(self, n: int, salt: int = 0) -> np.random.Generator:
        ss = np.random.SeedSequence([self.seed & 0xFFFFFFFF, self.n_completed, self.n_failed, self.n_pending, n, salt])
        return np.random.default_rng(ss)

    def _step_seed(self, n: int, salt: int = 0) -> int:
        return int(self._rng(n, salt).integers(0, 2 ** 31 - 1))

    # ---------------------------------------------------------------- asking
    def suggest(self, n: int = 1) -> list[Candidate]:
        """``n`` architectures to evaluate next (fewer if the pool runs out); they become pending."""
        return [s.arch for s in self.suggest_detailed(n)]

    def suggest_detailed(self, n: int = 1) -> list[Suggestion]:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise SearchError(f"suggest(n): n={n!r} must be a positive integer")
        n = min(n, int((~self._used).sum()))
        if n == 0:
            raise SearchError(f"the pool of {len(self.pool)} candidates is exhausted")
        idx, extra = self._propose(n)
        out = []
        for j, i in enumerate(idx):
            i = int(i)
            if self._used[i]:  # pragma: no cover - a searcher bug, not a user error
                raise SearchError(f"internal: {self.name} proposed candidate {i} twice")
            self._used[i] = True
            arch = self.pool.arch(i)
            self._pending[arch.features().tobytes()] = i
            info = extra[j] if extra else {}
            params = None if self.pool.num_parameters is None else int(self.pool.num_parameters[i])
            out.append(Suggestion(arch=arch, pool_index=i, latency_s=float(self._latency_s[i]),
                                  num_parameters=params, **info))
        return out

    def _propose(self, n: int) -> tuple[np.ndarray, list[dict] | None]:
        """Return ``n`` distinct available pool indices and optional per-index Suggestion fields."""
        raise NotImplementedError

    # ---------------------------------------------------------------- helpers
    def _random(self, n: int, rng: np.random.Generator, exclude: Iterable[int] = ()) -> np.ndarray:
        avail = ~self._used
        for i in exclude:
            avail[i] = False
        cand = np.flatnonzero(avail)
        return rng.choice(cand, size=min(n, len(cand)), replace=False)

    def _stratified(self, n: int, rng: np.random.Generator, exclude: Iterable[int] = ()) -> np.ndarray:
        """``n`` available candidates spread over equal-width bins of log latency (one random per bin)."""
        avail = ~self._used
        for i in exclude:
            avail[i] = False
        cand = np.flatnonzero(avail)
        if len(cand) <= n:
            return cand
        ll = self._log_latency[cand]
        edges = np.linspace(ll.min(), ll.max(), n + 1)
        b = np.clip(np.searchsorted(edges, ll, side="right") - 1, 0, n - 1)
        picks = []
        for k in range(n):
            members = cand[b == k]
            if len(members):
                picks.append(int(rng.choice(members)))
        if len(picks) < n:
            rest = np.setdiff1d(cand, picks)
            picks += [int(i) for i in rng.choice(rest, size=n - len(picks), replace=False)]
        return np.array(picks, dtype=np.int64)
