"""`SearchEngine`: ask/tell multi-objective Bayesian optimization over a candidate pool.

Accuracy is the black box: a GP (BoTorch ``SingleTaskGP``, standardized outcome) on the pool's
encoded features (`CandidatePool.encoded`: log-scaled searched fields, derived shape features --
log head size, total FFN width and bottleneck ratio -- log parameters and log cost-model latency,
all in [0, 1]). Latency is a *known* deterministic objective: the cost
model's ``ln latency_s`` is read from the candidate's own encoding, so it enters the acquisition
without a model. When evaluators report a measured latency, a second GP learns the residual
``ln(measured / cost model)`` and the latency objective becomes ``ln latency_s + residual``.

Modes:

* ``"pareto"`` (default): qLogNEHVI on ``[accuracy, -ln latency]`` with the reference point
  ``(ref_accuracy, ref_latency_s)`` (given, or inferred: the observed front's accuracy nadir
  minus 10% of its range, and the pool's slowest latency plus 10% of its log range; with a
  learned residual, the space's latency budget on the objective workload when it has one), and
  an optional outcome constraint ``accuracy >= min_accuracy``.
* ``"scalarized"``: the single objective ``accuracy * (latency_s / target_latency_s) ** w``
  (the MnasNet-style soft latency target, w = -0.07 by default; the target defaults to the
  space's latency budget on the objective workload, else the pool's median latency) with qLogNEI.

Known constraints (parameters, memory, latency budgets) are already applied by the pool, on the
cost model's estimate. With ``feasibility_level`` set, the latency budget (``target_latency_s``, else
the space's budget on the objective workload) becomes a chance constraint: the acquisition only
considers candidates with ``P(latency <= budget) >= feasibility_level`` under the cost model's
prediction interval (``latency_band``, else the pool profile's `error_band()`: the calibrated
held-out band or the wide spec-only one), the band modelled as a lognormal on measured/estimated
(`autodistill.search.feasibility`). The probability is known for every candidate (it depends on
the cost-model estimate only), so the constraint is exact: infeasible candidates are left out of
the prefilter and the acquisition. When no available candidate is feasible, the step falls back to
all of them (logged). The seeded initial design is not filtered.

Scaling: the acquisition is evaluated on at most ``acq_candidates`` pool members per step. When
more are available, a cheap prefilter picks ``prefilter_fraction`` of them by the GP's upper
confidence bound ``mean + ucb_beta * sd`` -- the top ones in each of 64 equal-width bins of
``ln latency_s`` (pareto) or overall (scalarized) -- and the rest uniformly at random. The GP
posterior over the whole pool (diagonal only) is cheap; the joint MC acquisition is not.

The first ``n_initial`` proposals are a seeded design: one random candidate in each of
``n_initial`` equal-width bins of ``ln latency_s``, so the initial data spans the latency range.

Threads: each BO step runs torch on ``torch_threads`` threads (1 by default; the matrices are
small, and one thread is faster and steadier than two on a shared 2-core machine), restoring
the caller's setting afterwards.

Reproducibility: every step seeds torch and the QMC sampler from (seed, numbers of completed,
failed and pending trials, batch size), and the GP is always fitted from its default
initialization, so the same history gives the same proposals (a resumed run replays an
uninterrupted one). A batch of ``q`` proposals comes from sequential greedy selection over the
discrete candidates (as BoTorch's ``optimize_acqf_discrete``), conditioning on pending points;
picks after the first rescore only the ``greedy_candidates`` best of the first pass.
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
from botorch.acquisition.multi_objective.objective import GenericMCMultiOutputObjective
from botorch.acquisition.objective import GenericMCObjective
from botorch.exceptions.errors import ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.models import ModelListGP, SingleTaskGP
from botorch.sampling.normal import SobolQMCNormalSampler
from gpytorch.mlls import ExactMarginalLogLikelihood

from autodistill.candidates import CandidateTable
from autodistill.errors import SearchError, choices_message
from autodistill.search.base import Pool, PoolSearcher
from autodistill.search.feasibility import (
    LatencyFeasibility,
    band_lognormal,
    check_level,
    objective_budget_s,
    pool_feasibility,
)
from autodistill.search.kernel import ensure_fused_kernel
from autodistill.search.pareto import objective_matrix, pareto_mask
from autodistill.space import num_parameters_batch

if TYPE_CHECKING:
    from autodistill.costmodel import CostModel

logger = logging.getLogger(__name__)

__all__ = ["EngineConfig", "MODES", "SearchEngine"]

MODES = ("pareto", "scalarized")
_DTYPE = torch.float64


@dataclass(frozen=True)
class EngineConfig:
    """Settings of `SearchEngine` (see the module docstring for what each does)."""

    mode: str = "pareto"
    seed: int = 0
    n_initial: int = 6
    mc_samples: int = 64
    acq_candidates: int = 1536
    prefilter_fraction: float = 0.75
    ucb_beta: float = 2.0
    ref_accuracy: float | None = None
    ref_latency_s: float | None = None
    min_accuracy: float | None = None
    latency_residual: bool = True
    min_residual_observations: int = 3
    target_latency_s: float | None = None
    latency_weight: float = -0.07
    max_batch_size: int = 512
    greedy_candidates: int = 384
    torch_threads: int = 1
    fit_maxiter: int = 100
    #: P(latency <= budget) a candidate needs to be proposed by a BO step; None: the budget is applied
    #: to the estimate only (by the pool).
    feasibility_level: float | None = None
    #: (low, high, level) of measured/estimated latency; None: the pool profile's `error_band()`.
    latency_band: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SearchError(choices_message("engine mode", self.mode, MODES))
        for name, lo in (("seed", None), ("n_initial", 1), ("mc_samples", 8), ("acq_candidates", 16),
                         ("min_residual_observations", 2), ("max_batch_size", 1), ("greedy_candidates", 1),
                         ("torch_threads", 0), ("fit_maxiter", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo):
                raise SearchError(f"{name}={v!r} must be an integer" + (f" >= {lo}" if lo is not None else ""))
        if not (isinstance(self.prefilter_fraction, (int, float)) and 0.0 <= self.prefilter_fraction <= 1.0):
            raise SearchError(f"prefilter_fraction={self.prefilter_fraction!r} must be in [0, 1]")
        for name in ("ucb_beta", "latency_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SearchError(f"{name}={v!r} must be a finite number")
        for name in ("ref_accuracy", "min_accuracy"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise SearchError(f"{name}={v!r} must be a finite number or None")
        if self.feasibility_level is not None:
            check_level("feasibility_level", self.feasibility_level)
        if self.latency_band is not None:
            b = self.latency_band
            if not (isinstance(b, (tuple, list)) and len(b) == 3
                    and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in b)):
                raise SearchError(f"latency_band={b!r} must be (low, high, level)")
            band_lognormal(float(b[0]), float(b[1]), float(b[2]))
        for name in ("ref_latency_s", "target_latency_s"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0
                                  or not math.isfinite(v)):
                raise SearchError(f"{name}={v!r} must be a positive number or None")

    def to_dict(self) -> dict[str, Any]:
        import dataclasses
        return dataclasses.asdict(self)


@dataclass
class StepTimings:
    """Wall seconds of the last BO step, by phase."""

    fit_s: float = 0.0
    prefilter_s: float = 0.0
    acquisition_s: float = 0.0
    total_s: float = 0.0
    n_candidates: int = 0
    n_train: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class SearchEngine(PoolSearcher):
    """GP + qLogNEHVI (or scalarized qLogNEI) ask/tell engine over a `CandidatePool` (or the rows of a
    `CandidateTable`: its known objective plays the cost-model latency).

    The engine knows nothing of storage: tell it every trial with `observe` (completed, failed,
    or still running) and ask with `suggest(n)` / `suggest_detailed(n)`.
    """

    name = "qlognehvi"

    def __init__(self, pool: Pool, config: EngineConfig | None = None) -> None:
        config = config or EngineConfig()
        if not isinstance(config, EngineConfig):
            raise SearchError(f"config must be an EngineConfig, got {type(config).__name__}")
        super().__init__(pool, config.seed)
        self.config = config
        self.name = "qlognehvi" if config.mode == "pareto" else "qlognei"
        self._enc = pool.encoded
        self._design = self._stratified(config.n_initial, np.random.default_rng([config.seed & 0xFFFFFFFF, 17]))
        self.last_timings = StepTimings()
        self._cost_model: CostModel | None = None
        self._ll_lo, self._ll_hi = pool.log_latency_bounds
        self.feasibility = self._make_feasibility()
        #: Pool rows that meet the chance constraint (None: no constraint).
        self._feasible: np.ndarray | None = None
        self.last_feasible: int | None = None  # feasible candidates available at the last BO step
        if self.feasibility is not None:
            self._feasible = self.feasibility.feasible(self._latency_s)

    def _make_feasibility(self) -> LatencyFeasibility | None:
        """The chance constraint on latency (None without ``feasibility_level`` or without a budget)."""
        cfg = self.config
        if cfg.feasibility_level is None:
            return None
        budget = cfg.target_latency_s if cfg.target_latency_s is not None else self._objective_budget_s()
        if budget is None:
            return None
        if cfg.latency_band is not None:
            lo, hi, lv = (float(x) for x in cfg.latency_band)
            return LatencyFeasibility(float(budget), lo, hi, lv, float(cfg.feasibility_level), "engine config")
        if self.pool.profile is None:  # a table's known objective: exact
            return LatencyFeasibility(float(budget), 1.0, 1.0, 0.9, float(cfg.feasibility_level), "exact")
        return pool_feasibility(self.pool, float(cfg.feasibility_level), float(budget))

    # ---------------------------------------------------------------- proposals
    def _propose(self, n: int) -> tuple[np.ndarray, list[dict]]:
        cfg = self.config
        seen = self.n_completed + self.n_failed + self.n_pending
        k_init = min(n, max(0, cfg.n_initial - seen))
        picks = [int(i) for i in self._design if not self._used[i]][:k_init]
        if len(picks) < k_init:
            picks += [int(i) for i in self._stratified(k_init - len(picks), self._rng(n, 1), exclude=picks)]
        info: list[dict] = [{"source": "initial"} for _ in picks]
        rest = n - len(picks)
        if rest > 0:
            if self.n_completed >= 3:
                idx, more = self._bo_step(rest, exclude=picks)
            else:
                idx = self._stratified(rest, self._rng(n, 2), exclude=picks)
                more = [{"source": "random"} for _ in idx]
            picks += [int(i) for i in idx]
            info += more
        return np.array(picks, dtype=np.int64), info

    # ---------------------------------------------------------------- data
    def _encode_obs(self, obs: list) -> tuple[np.ndarray, np.ndarray]:
        """GP inputs (``n x d``) and cost-model ln latency (``n``) of observations."""
        X = np.empty((len(obs), self._enc.shape[1]))
        ll = np.empty(len(obs))
        off = [j for j, o in enumerate(obs) if o.pool_index < 0]
        for j, o in enumerate(obs):
            if o.pool_index >= 0:
                X[j] = self._enc[o.pool_index]
                ll[j] = self._log_latency[o.pool_index]
        if off:
            if isinstance(self.pool, CandidateTable):  # a table's inputs are known for its own rows only
                raise SearchError(f"{len(off)} observed trial(s) are not rows of the candidate table "
                                  f"{self.pool.space.source}; a table search observes its own rows")
            feats = np.stack([obs[j].features for j in off])
            params = num_parameters_batch(feats, self.pool.space.base_kwargs())
            lat = self._cost_model_latency(feats)
            X[off] = self.pool.encode(feats, params, lat)
            ll[off] = np.log(lat)
        return X, ll

    def _cost_model_latency(self, feats: np.ndarray) -> np.ndarray:
        if self._cost_model is None:
            from autodistill.costmodel import CostModel
            from autodistill.hardware import load_profile
            if self.pool.profile is None:
                raise SearchError("the candidate pool has no latency profile; build it with one")
            self._cost_model = CostModel(load_profile(self.pool.profile), self.pool.dtype)
        return self._cost_model.estimate_batch(feats, self.pool.batch, self.pool.seq)

    def _fit_gp(self, X: torch.Tensor, Y: torch.Tensor) -> SingleTaskGP:
        """``SingleTaskGP`` (RBF with BoTorch's dimension-scaled priors, standardized outcome) fitted by
        L-BFGS-B from its default initialization (at most ``fit_maxiter`` iterations, ftol 1e-6)."""
        model = SingleTaskGP(X, Y)
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        try:
            fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": self.config.fit_maxiter, "ftol": 1e-6}})
        except ModelFittingError as e:  # keep the prior-mode hyperparameters; the search goes on
            logger.warning("GP fit failed (%s); using default hyperparameters", e)
        model.eval()
        return model

    def _objective_budget_s(self) -> float | None:
        """The space's latency budget on the objective's own profile and workload, if any."""
        return objective_budget_s(self.pool)

    def _ref_point(self, acc: np.ndarray, ll: np.ndarray, use_resid: bool = False) -> tuple[float, float]:
        """(accuracy, -ln latency) reference point of the acquisition.

        With a learned latency residual and a latency budget on the objective workload, the
        reference latency is the budget: samples predicted over it add no hypervolume (the
        pool only enforces the budget on the cost model's own estimate).
        """
        cfg = self.config
        if cfg.ref_accuracy is not None:
            ra = cfg.ref_accuracy
        else:
            Y = objective_matrix(acc, np.exp(ll))
            F = Y[pareto_mask(Y)]
            lo, hi = F[:, 0].min(), F[:, 0].max()
            ra = float(lo - 0.1 * (hi - lo if hi > lo else max(abs(lo), 1e-3)))
        budget = self._objective_budget_s()
        if cfg.ref_latency_s is not None:
            rl = math.log(cfg.ref_latency_s)
        elif use_resid and budget is not None:
            rl = math.log(budget)
        else:
            rl = float(self._log_latency.max() + 0.1 * (self._ll_hi - self._ll_lo))
        return ra, -rl

    def _target_log_latency(self) -> float:
        if self.config.target_latency_s is not None:
            return math.log(self.config.target_latency_s)
        budget = self._objective_budget_s()
        return math.log(budget) if budget is not None else float(np.median(self._log_latency))

    # ---------------------------------------------------------------- BO step
    def _bo_step(self, n: int, exclude: list[int]) -> tuple[np.ndarray, list[dict]]:
        t_start = time.perf_counter()
        cfg = self.config
        step_seed = self._step_seed(n, 3)
        tm = StepTimings()
        threads = torch.get_num_threads()
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        try:
            return self._bo_step_inner(n, exclude, step_seed, tm, t_start)
        finally:
            torch.set_num_threads(threads)

    def _bo_step_inner(self, n: int, exclude: list[int], step_seed: int, tm: StepTimings,
                       t_start: float) -> tuple[np.ndarray, list[dict]]:
        cfg = self.config
        with warnings.catch_warnings(record=True) as caught, torch.random.fork_rng():
            warnings.simplefilter("always")
            torch.manual_seed(step_seed)
            obs = self.completed()
            Xn, ll_obs = self._encode_obs(obs)
            acc = np.array([o.accuracy for o in obs])
            X = torch.tensor(Xn, dtype=_DTYPE)
            Y = torch.tensor(acc, dtype=_DTYPE).unsqueeze(-1)
            t0 = time.perf_counter()
            acc_model = self._fit_gp(X, Y)
            resid = [(j, o.measured_latency_s) for j, o in enumerate(obs) if o.measured_latency_s is not None]
            model: Any = acc_model
            use_resid = cfg.latency_residual and len(resid) >= cfg.min_residual_observations
            if use_resid:
                jr = [j for j, _ in resid]
                Yr = torch.tensor([math.log(m) - ll_obs[j] for j, m in resid],
                                  dtype=_DTYPE).unsqueeze(-1)
                res_model = self._fit_gp(X[jr], Yr)
                model = ModelListGP(acc_model, res_model)
            tm.fit_s = time.perf_counter() - t0

            t0 = time.perf_counter()
            cand, mean, sd = self._candidates(acc_model, n, exclude)
            tm.prefilter_s = time.perf_counter() - t0
            tm.n_candidates, tm.n_train = len(cand), len(obs)

            t0 = time.perf_counter()
            pend = np.concatenate([self.pending_indices(), np.array(exclude, dtype=np.int64)])
            X_pending = torch.tensor(self._enc[pend], dtype=_DTYPE) if len(pend) else None
            lo, span = self._ll_lo, self._ll_hi - self._ll_lo

            def log_latency(samples: torch.Tensor, Xq: torch.Tensor) -> torch.Tensor:
                ll = (lo + Xq[..., -1] * span).expand(samples.shape[:-1])
                return ll + samples[..., 1] if use_resid else ll

            sampler = SobolQMCNormalSampler(torch.Size([cfg.mc_samples]), seed=step_seed)
            constraints = None
            if cfg.min_accuracy is not None:
                floor = float(cfg.min_accuracy)
                constraints = [lambda Z: floor - Z[..., 0]]
            if cfg.mode == "pareto":
                ensure_fused_kernel()  # built under autodistill's own lock, never on a stale one
                ra, rl = self._ref_point(acc, ll_obs, use_resid)
                tm.extra["ref_point"] = (ra, rl)
                objective = GenericMCMultiOutputObjective(
                    lambda samples, X=None: torch.stack([samples[..., 0], -log_latency(samples, X)], dim=-1))
                acqf = qLogNoisyExpectedHypervolumeImprovement(
                    model=model, ref_point=[ra, rl], X_baseline=X, sampler=sampler, objective=objective,
                    constraints=constraints, X_pending=X_pending, prune_baseline=True)
            else:
                t_ll, w = self._target_log_latency(), float(cfg.latency_weight)
                objective = GenericMCObjective(
                    lambda samples, X=None: samples[..., 0] * torch.exp(w * (log_latency(samples, X) - t_ll)))
                acqf = qLogNoisyExpectedImprovement(
                    model=model, X_baseline=X, sampler=sampler, objective=objective, constraints=constraints,
                    X_pending=X_pending, prune_baseline=True)
            choices = torch.tensor(self._enc[cand], dtype=_DTYPE)
            picked, acq_vals = self._greedy(acqf, choices, min(n, len(cand)))
            tm.acquisition_s = time.perf_counter() - t0
        for w_ in caught:
            logger.debug("suppressed warning in BO step: %s: %s", w_.category.__name__, w_.message)

        out_idx, info = [], []
        for j, v in zip(picked, acq_vals):
            out_idx.append(int(cand[j]))
            info.append({"source": self.name, "predicted_accuracy": float(mean[j]),
                         "predicted_accuracy_sd": float(sd[j]), "acq_value": float(v)})
        tm.total_s = time.perf_counter() - t_start
        self.last_timings = tm
        logger.debug("BO step: %d train, %d candidates, fit %.2fs prefilter %.2fs acq %.2fs", tm.n_train,
                     tm.n_candidates, tm.fit_s, tm.prefilter_s, tm.acquisition_s)
        return np.array(out_idx, dtype=np.int64), info

    def _greedy(self, acqf: Any, choices: torch.Tensor, q: int) -> tuple[list[int], list[float]]:
        """Sequential greedy batch selection over ``choices`` (``c x d``), as ``optimize_acqf_discrete``.

        The first pick scores every choice; each later pick conditions on the earlier ones (as
        pending points) and rescores only the ``greedy_candidates`` best choices of the first pass,
        which keeps a q = 4 step about twice as cheap at a small cost in batch diversity.
        Returns positions in ``choices`` and their acquisition values.
        """
        bs = self.config.max_batch_size

        def score(X: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return torch.cat([acqf(Xb.unsqueeze(-2)) for Xb in X.split(bs)])

        values = score(choices)
        best = int(torch.argmax(values))
        picked, vals = [best], [float(values[best])]
        if q > 1:
            base_pending = acqf.X_pending
            order = torch.argsort(values, descending=True).tolist()
            short = [j for j in order if j != best][: max(self.config.greedy_candidates, q)]
            for _ in range(q - 1):
                pend = choices[picked]
                acqf.set_X_pending(pend if base_pending is None else torch.cat([base_pending, pend], dim=-2))
                rest = [j for j in short if j not in picked]
                v = score(choices[rest])
                k = int(torch.argmax(v))
                picked.append(rest[k])
                vals.append(float(v[k]))
            acqf.set_X_pending(base_pending)
        return picked, vals

    def _posterior(self, model: SingleTaskGP, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd of accuracy at pool rows ``idx`` (diagonal only, in chunks).

        Computed directly from the fitted kernel, mean, noise and outcome transform (a Cholesky
        of the ``n x n`` training covariance and one ``c x n`` cross-covariance per chunk): the
        generic GPyTorch posterior would build lazy ``c x c`` covariances it does not need.
        """
        with torch.no_grad():
            Xtr = model.train_inputs[0]
            ytr = model.train_targets  # in the standardized space
            noise = model.likelihood.noise.reshape(-1)
            K = model.covar_module(Xtr).to_dense() + torch.diag(noise.expand(Xtr.shape[0]))
            m_tr = model.mean_module(Xtr)
            L, jitter = None, 0.0
            for jitter in (0.0, 1e-8, 1e-6, 1e-4):
                L, info = torch.linalg.cholesky_ex(K + jitter * torch.eye(K.shape[0], dtype=K.dtype))
                if int(info) == 0:
                    break
            alpha = torch.cholesky_solve((ytr - m_tr).unsqueeze(-1), L)
            tf = getattr(model, "outcome_transform", None)
            mu_y = tf.means.reshape(-1)[0] if tf is not None else torch.tensor(0.0, dtype=_DTYPE)
            sd_y = tf.stdvs.reshape(-1)[0] if tf is not None else torch.tensor(1.0, dtype=_DTYPE)
            means, sds = [], []
            for s in range(0, len(idx), 16384):
                Xc = torch.tensor(self._enc[idx[s:s + 16384]], dtype=_DTYPE)
                Ks = model.covar_module(Xc, Xtr).to_dense()
                mu = model.mean_module(Xc) + (Ks @ alpha).reshape(-1)
                v = torch.linalg.solve_triangular(L, Ks.T, upper=False)
                var = model.covar_module(Xc, diag=True).reshape(-1) - (v * v).sum(0)
                means.append((mu * sd_y + mu_y).numpy())
                sds.append((var.clamp_min(1e-12).sqrt() * sd_y).numpy())
        return np.concatenate(means), np.concatenate(sds)

    def _candidates(self, model: SingleTaskGP, n: int, exclude: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pool rows the acquisition is evaluated on, with their posterior mean and sd."""
        cfg = self.config
        avail = ~self._used
        avail[exclude] = False
        if self._feasible is not None:
            ok = avail & self._feasible
            self.last_feasible = int(ok.sum())
            if ok.any():
                avail = ok
            elif avail.any():
                logger.warning("no available candidate meets %s; the BO step considers all %d",
                               self.feasibility.describe() if self.feasibility else "the latency budget",
                               int(avail.sum()))
        idx = np.flatnonzero(avail)
        if len(idx) == 0:
            raise SearchError(f"the pool of {len(self.pool)} candidates is exhausted")
        mean, sd = self._posterior(model, idx)
        if len(idx) <= cfg.acq_candidates:
            return idx, mean, sd
        rng = self._rng(n, 4)
        n_top = int(round(cfg.acq_candidates * cfg.prefilter_fraction))
        ucb = mean + cfg.ucb_beta * sd
        ll = self._log_latency[idx]
        if cfg.mode == "pareto":
            bins = 64
            edges = np.linspace(ll.min(), ll.max(), bins + 1)
            b = np.clip(np.searchsorted(edges, ll, side="right") - 1, 0, bins - 1)
            order = np.lexsort((-ucb, b))
            sb = b[order]
            first = np.r_[0, np.flatnonzero(sb[1:] != sb[:-1]) + 1]
            rank = np.arange(len(order)) - np.repeat(first, np.diff(np.r_[first, len(order)]))
            per_bin = max(1, math.ceil(n_top / max(1, len(first))))
            top = order[rank < per_bin]
            if len(top) > n_top:  # trim the overshoot, keeping the best UCB
                top = top[np.argsort(-ucb[top], kind="stable")[:n_top]]
        else:
            score = ucb * np.exp(cfg.latency_weight * (ll - self._target_log_latency()))
            top = np.argsort(-score, kind="stable")[:n_top]
        rest = np.setdiff1d(np.arange(len(idx)), top)
        extra = rng.choice(rest, size=min(len(rest), cfg.acq_candidates - len(top)), replace=False)
        sel = np.sort(np.concatenate([top, extra]))
        return idx[sel], mean[sel], sd[sel]
