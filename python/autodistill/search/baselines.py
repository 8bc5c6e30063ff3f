"""Baseline searchers with the engine's ask/tell interface: random search and NSGA-II.

Both work on the same feasible `CandidatePool` as `SearchEngine`, use the same objectives
(maximize accuracy, minimize cost-model latency) and never repeat an architecture.

NSGA-II (Deb et al. 2002) here is the elitist (mu + lambda) form run as ask/tell: the parent
population is the NSGA-II survivor set (non-dominated rank, then crowding distance) of *all*
completed trials; offspring come from binary tournaments, uniform crossover (p = 0.9) and
per-field mutation (p = 1/k; a step to a neighbouring value or, one time in four, any value) on
the searched fields' value indices. An offspring that is infeasible (not in the pool) or already
used is redrawn (up to 100 times), then replaced by a random available candidate. Until a full
population has completed, proposals are uniform random.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from autodistill.errors import SearchError
from autodistill.search.base import Pool, PoolSearcher
from autodistill.search.pareto import nondominated_ranks

logger = logging.getLogger(__name__)

__all__ = ["NSGA2", "RandomSearch", "crowding_distance", "nondominated_ranks"]


class RandomSearch(PoolSearcher):
    """Uniform sampling without replacement from the feasible pool."""

    name = "random"

    def _propose(self, n: int) -> tuple[np.ndarray, list[dict]]:
        idx = self._random(n, self._rng(n))
        return idx, [{"source": "random"}] * len(idx)


def crowding_distance(Y: np.ndarray) -> np.ndarray:
    """Crowding distance of each row of one front ``Y`` (``n x m``); boundary points get inf."""
    n, m = Y.shape
    d = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(m):
        o = np.argsort(Y[:, k], kind="stable")
        span = Y[o[-1], k] - Y[o[0], k]
        d[o[0]] = d[o[-1]] = np.inf
        if span > 0:
            d[o[1:-1]] += (Y[o[2:], k] - Y[o[:-2], k]) / span
    return d


class NSGA2(PoolSearcher):
    """Steady (mu + lambda) NSGA-II over the pool; see the module docstring.

    Args:
        population: parent population size (and the size of the random initial population).
    """

    name = "nsga2"

    def __init__(self, pool: Pool, seed: int = 0, population: int = 10) -> None:
        super().__init__(pool, seed)
        if isinstance(population, bool) or not isinstance(population, int) or population < 2:
            raise SearchError(f"population={population!r} must be an integer >= 2")
        self.population = population
        if math.prod(pool.space.dims) >= 2 ** 62:
            raise SearchError(f"nsga2: the inputs have {' x '.join(map(str, pool.space.dims))} combinations of "
                              "values, too many to index its genes; use --searcher engine or random, or fewer "
                              "distinct values")
        self._dims = np.array(pool.space.dims, dtype=np.int64)

    def _parents(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        obs = [o for o in self.completed() if o.pool_index >= 0]
        idx = np.array([o.pool_index for o in obs], dtype=np.int64)
        Y = np.stack([np.array([o.accuracy for o in obs]), -self._log_latency[idx]], axis=1)
        ranks = nondominated_ranks(Y)
        crowd = np.zeros(len(Y))
        for r in np.unique(ranks):
            m = ranks == r
            crowd[m] = crowding_distance(Y[m])
        order = np.lexsort((-crowd, ranks))[: self.population]
        return idx[order], ranks[order], crowd[order]

    def _propose(self, n: int) -> tuple[np.ndarray, list[dict]]:
        rng = self._rng(n)
        if sum(1 for o in self.completed() if o.pool_index >= 0) < self.population:
            idx = self._random(n, rng)
            return idx, [{"source": "random"}] * len(idx)
        parents, ranks, crowd = self._parents()
        genes = self.pool.value_index[parents].astype(np.int64)
        k = genes.shape[1]
        taken: set[int] = set()
        out: list[int] = []
        src: list[dict] = []

        def tournament() -> int:
            a, b = rng.integers(0, len(parents), size=2)
            if ranks[a] != ranks[b]:
                return int(a if ranks[a] < ranks[b] else b)
            return int(a if crowd[a] >= crowd[b] else b)

        for _ in range(n):
            child_idx = -1
            for _try in range(100):
                g1, g2 = genes[tournament()], genes[tournament()]
                child = np.where(rng.random(k) < 0.5, g1, g2) if rng.random() < 0.9 else g1.copy()
                for j in range(k):
                    if rng.random() < 1.0 / k:
                        if rng.random() < 0.75:
                            child[j] = np.clip(child[j] + rng.choice([-1, 1]), 0, self._dims[j] - 1)
                        else:
                            child[j] = rng.integers(0, self._dims[j])
                code = int(np.ravel_multi_index(tuple(child), tuple(self._dims)))
                pos = int(np.searchsorted(self.pool.codes, code))
                if pos < len(self.pool.codes) and self.pool.codes[pos] == code and not self._used[pos] \
                        and pos not in taken:
                    child_idx = pos
                    break
            if child_idx < 0:
                r = self._random(1, rng, exclude=taken)
                if len(r) == 0:
                    break
                child_idx = int(r[0])
                src.append({"source": "nsga2-random"})
            else:
                src.append({"source": "nsga2"})
            taken.add(child_idx)
            out.append(child_idx)
        return np.array(out, dtype=np.int64), src
