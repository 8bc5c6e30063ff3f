"""The `Evaluator` protocol and a synthetic evaluator with a known accuracy landscape.

An evaluator turns an architecture into a `TrialResult` (or raises `TrialFailed`). Distillation,
a remote worker or `SyntheticEvaluator` all fit::

    class Evaluator(Protocol):
        def evaluate(self, arch: StudentArch, trial_id: int) -> TrialResult: ...

`synthetic_accuracy` is a smooth-but-not-trivial function of the architecture (saturating in
depth, attention width and FFN capacity, with penalties for badly shaped heads and bottlenecks and
a small ripple), so that its Pareto front against the real cost model is known exactly by
enumerating the pool. `SyntheticEvaluator` adds seeded Gaussian noise and optional failures, both
a deterministic function of (seed, architecture) so that reruns and resumed runs agree.
`TableEvaluator` scores the rows of a candidate table from its own objective column (a benchmark).
`load_evaluator` reads an evaluator spec: ``"synthetic"``, ``"table"`` or ``package.module:factory``.
"""
from __future__ import annotations

import hashlib
import importlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from autodistill.arch import FAMILIES, FEATURE_NAMES, StudentArch
from autodistill.candidates import CandidateTable, TableRow
from autodistill.errors import ConfigError, TrialFailed
from autodistill.search.types import TrialResult

logger = logging.getLogger(__name__)

__all__ = ["Evaluator", "RowEvaluator", "SyntheticEvaluator", "TableEvaluator", "describe_evaluator",
           "load_evaluator", "synthetic_accuracy"]

_COL = {n: i for i, n in enumerate(FEATURE_NAMES)}


@runtime_checkable
class Evaluator(Protocol):
    """Anything that scores an architecture: distillation, a synthetic function, a remote worker.

    ``evaluate`` returns a `TrialResult` (NaN accuracy counts as a failed trial) or raises
    `autodistill.errors.TrialFailed`; any other exception is also recorded as a failure.
    It may be called from worker threads when the runner runs several at once.
    """

    def evaluate(self, arch: StudentArch, trial_id: int) -> TrialResult: ...


@runtime_checkable
class RowEvaluator(Protocol):
    """What scores the rows of a candidate table (`autodistill.candidates`): ``evaluate`` receives the
    `TableRow` (row number and input values) and answers as an `Evaluator` does."""

    def evaluate(self, arch: TableRow, trial_id: int) -> TrialResult: ...


@dataclass(frozen=True, eq=False)
class TableEvaluator:
    """Scores a table's rows from its own black-box objective column (a benchmark): a trial reads a row's
    value only when it evaluates the row. An empty or NaN cell is a failed trial (as a diverged run)."""

    table: CandidateTable

    def __post_init__(self) -> None:
        if self.table.objective_values is None:
            raise ConfigError(f"candidate table {self.table.space.source}: the table evaluator needs the "
                              "objective column (--objective COL), or give --evaluator package.module:factory")

    def evaluate(self, arch: TableRow, trial_id: int) -> TrialResult:
        pos = self.table.index_of(arch)
        if pos is None or self.table.objective_values is None:
            raise TrialFailed(f"trial {trial_id}: {arch!r} is not a row of {self.table.space.source}")
        return TrialResult(accuracy=float(self.table.objective_values[pos]), metrics={"row": arch.row})


def synthetic_accuracy(features: np.ndarray) -> np.ndarray:
    """Noise-free synthetic accuracy of ``n x F`` feature rows, ``n`` values in about [0.45, 0.91].

    ``acc = 0.92 - 0.40 * exp(-0.8 capacity) - shape penalties + ripple`` where capacity grows with
    log depth (most), log attention width and log FFN capacity (stacked FFNs count fully), and the
    penalties prefer head sizes near 64, bottleneck ratios ``hidden / true_hidden`` up to 4, and
    GELU-family activations slightly over ReLU.
    """
    f = np.asarray(features, dtype=np.float64)
    col = lambda n: f[:, _COL[n]]  # noqa: E731
    L = col("num_hidden_layers")
    h = col("hidden_size")
    use_b = col("use_bottleneck") > 0
    t = np.where(use_b, col("intra_bottleneck_size"), h)
    heads = col("num_attention_heads")
    ffn = col("intermediate_size") * col("num_feedforward_networks")
    capacity = (0.9 * np.log(L) + 0.25 * np.log(t / 64.0) + 0.18 * np.log(ffn / 512.0 + 0.5)
                + 0.10 * np.log(h / 256.0 + 0.5))
    acc = 0.92 - 0.40 * np.exp(-0.8 * capacity)
    head = t / heads
    acc -= 0.012 * np.log2(head / 64.0) ** 2
    ratio = h / t
    acc -= 0.010 * np.maximum(np.log2(ratio) - 2.0, 0.0) ** 2
    acc -= 0.006 * (col("num_feedforward_networks") > 3)  # stacking four FFNs trains worse
    acc -= 0.004 * (col("hidden_act") == 0)  # relu
    acc += 0.003 * np.sin(1.3 * L + t / 37.0) * (col("family") == FAMILIES.index("mobilebert"))
    return acc


def _unit_draws(seed: int, arch: StudentArch, n: int) -> np.ndarray:
    """``n`` uniform draws that depend only on (seed, arch): stable across processes and orderings."""
    h = hashlib.blake2b(arch.features().tobytes() + int(seed).to_bytes(8, "little", signed=True), digest_size=16)
    return np.random.default_rng(int.from_bytes(h.digest(), "little")).random(n)


@dataclass(frozen=True)
class SyntheticEvaluator:
    """`synthetic_accuracy` plus Gaussian noise; optional failures and NaNs for robustness tests.

    Args:
        noise_sd: standard deviation of the observation noise (accuracy units).
        seed: noise and failures are a function of (seed, architecture).
        failure_rate: probability that a trial raises `TrialFailed`.
        nan_rate: probability that a trial returns NaN accuracy (a diverged run).
        delay_s: sleep per evaluation (to exercise kill/resume).
        latency_bias: if set, report ``measured_latency_s = cost-model latency * latency_bias`` using
            ``latency_fn`` (exercises the residual GP).
    """

    noise_sd: float = 0.003
    seed: int = 0
    failure_rate: float = 0.0
    nan_rate: float = 0.0
    delay_s: float = 0.0
    latency_bias: float | None = None
    latency_fn: object = None  # callable(arch) -> seconds, used with latency_bias

    def __post_init__(self) -> None:
        for name in ("noise_sd", "delay_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"{name}={v!r} must be a non-negative number")
        for name in ("failure_rate", "nan_rate"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise ConfigError(f"{name}={v!r} must be in [0, 1]")
        if self.latency_bias is not None and (self.latency_fn is None or not self.latency_bias > 0):
            raise ConfigError("latency_bias needs a positive value and a latency_fn(arch) -> seconds")

    def true_accuracy(self, arch: StudentArch) -> float:
        return float(synthetic_accuracy(arch.features()[None, :])[0])

    def evaluate(self, arch: StudentArch, trial_id: int) -> TrialResult:
        if self.delay_s:
            time.sleep(self.delay_s)
        u = _unit_draws(self.seed, arch, 3)
        if u[0] < self.failure_rate:
            raise TrialFailed(f"synthetic failure of {arch.short_name()} (trial {trial_id})")
        if u[1] < self.nan_rate:
            return TrialResult(accuracy=float("nan"), metrics={"diverged": True})
        angle = 2 * math.pi * _unit_draws(self.seed + 1, arch, 1)[0]
        z = math.sqrt(-2.0 * math.log(max(u[2], 1e-300))) * math.cos(angle)
        acc = self.true_accuracy(arch) + self.noise_sd * z
        measured = None
        if self.latency_bias is not None:
            measured = float(self.latency_fn(arch)) * float(self.latency_bias)  # type: ignore[operator]
        return TrialResult(accuracy=acc, measured_latency_s=measured,
                           metrics={"true_accuracy": self.true_accuracy(arch)})


def describe_evaluator(evaluator: object, spec: str | None = None) -> dict[str, object] | None:
    """The settings that decide an evaluator's answers, for a search store to pin: a `SyntheticEvaluator`'s
    landscape (noise sd, seed, latency bias; not its failure rates or delay, which a fixed rerun may
    change), else ``{"spec": spec}`` for an evaluator loaded from ``spec``, else None (nothing known)."""
    if isinstance(evaluator, SyntheticEvaluator):
        return {"spec": "synthetic", "noise_sd": float(evaluator.noise_sd), "seed": int(evaluator.seed),
                "latency_bias": evaluator.latency_bias}
    if isinstance(evaluator, TableEvaluator):
        return {"spec": "table", "objective": evaluator.table.space.objective}
    return None if spec is None else {"spec": spec}


def load_evaluator(spec: str, *, noise_sd: float = 0.003, seed: int = 0, what: str = "evaluator",
                   table: CandidateTable | None = None) -> Evaluator | RowEvaluator:
    """The evaluator ``spec`` names: ``"synthetic"`` (a `SyntheticEvaluator` with ``noise_sd`` and ``seed``),
    ``"table"`` (a `TableEvaluator` of ``table``) or ``package.module:factory``, a callable taking no
    arguments and returning an `Evaluator` (a `RowEvaluator` for a ``table``).

    A malformed spec, a module or name that cannot be loaded, or a factory returning something without
    ``evaluate(arch, trial_id)`` raises `ConfigError` naming ``spec``; ``what`` names it in the message
    (the CLI passes its flag, ``--evaluator``)."""
    if spec == "synthetic":
        if table is not None:
            raise ConfigError(f"{what} synthetic scores architectures, not the rows of a candidate table; valid "
                              "choices with --candidates: table (its objective column) or package.module:factory")
        return SyntheticEvaluator(noise_sd=noise_sd, seed=seed)
    if spec == "table":
        if table is None:
            raise ConfigError(f"{what} table scores the rows of a candidate table (--candidates FILE.csv); for a "
                              "space, valid choices: synthetic or package.module:factory")
        return TableEvaluator(table)
    mod, sep, name = spec.partition(":")
    if not sep or not mod or not name:
        raise ConfigError(f"{what} {spec!r}: expected 'synthetic' or package.module:factory ('table' for a "
                          "candidate table)")
    try:
        factory = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{what} {spec!r}: cannot load it ({e})") from None
    try:
        ev = factory()
    except Exception as e:  # the user's code: name it and what it raised; the traceback at -vv
        logger.debug("%s %s raised", what, spec, exc_info=True)
        raise ConfigError(f"{what} {spec!r}: calling {name}() failed: {type(e).__name__}: {e}") from None
    if not isinstance(ev, Evaluator):
        raise ConfigError(f"{what} {spec!r} returned {type(ev).__name__}, which has no "
                          f"evaluate(arch, trial_id) method")
    return ev
