"""Records exchanged by the search engine, evaluators, store and runner (no torch)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from autodistill.arch import StudentArch
from autodistill.candidates import TableRow
from autodistill.errors import SearchError, choices_message

#: Life of a trial: proposed (pending) -> running -> completed | failed.
STATUSES = ("pending", "running", "completed", "failed")
FINISHED = ("completed", "failed")

#: What a trial evaluates: a `StudentArch` (a search over a space) or an `autodistill.candidates.TableRow`
#: (a search over a candidate table). Typed ``Any`` so that code reading the trials of a space search
#: keeps StudentArch's attributes without a cast; `Trial` checks it is one of the two.
Candidate: TypeAlias = Any
CANDIDATE_TYPES = (StudentArch, TableRow)


def _opt_float(name: str, v: Any, *, positive: bool = False) -> None:
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SearchError(f"{name}={v!r} must be a number or None")
    if positive and math.isfinite(v) and v <= 0:
        raise SearchError(f"{name}={v!r} must be > 0")


@dataclass(frozen=True)
class TrialResult:
    """What an evaluator returns for one architecture.

    ``accuracy`` may be NaN (a diverged run); the runner records such a trial as failed.
    ``measured_latency_s`` is an optional measurement on the target (the engine can learn the
    cost model's residual from it). ``metrics`` holds anything else worth keeping (losses, steps).
    """

    accuracy: float
    measured_latency_s: float | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.accuracy, bool) or not isinstance(self.accuracy, (int, float)):
            raise SearchError(f"accuracy={self.accuracy!r} must be a number (NaN marks a failed run)")
        _opt_float("measured_latency_s", self.measured_latency_s, positive=True)
        if not isinstance(self.metrics, Mapping):
            raise SearchError(f"metrics must be a mapping, got {type(self.metrics).__name__}")

    @property
    def ok(self) -> bool:
        return math.isfinite(self.accuracy) and (self.measured_latency_s is None
                                                 or math.isfinite(self.measured_latency_s))


@dataclass(frozen=True)
class Suggestion:
    """One proposal of a searcher, with what it knew when proposing it."""

    arch: Candidate
    source: str  # "initial" | "qlognehvi" | "qlognei" | "random" | "nsga2" | ...
    pool_index: int = -1
    latency_s: float | None = None  # cost model, objective workload
    num_parameters: int | None = None
    predicted_accuracy: float | None = None
    predicted_accuracy_sd: float | None = None
    acq_value: float | None = None


@dataclass(frozen=True)
class Trial:
    """One evaluation of one architecture (or table row: `Candidate`), as the store keeps it.

    ``latency_s`` is the cost-model latency of the objective workload (a known objective);
    ``measured_latency_s`` what the evaluator measured, if anything. Times are Unix seconds;
    ``suggest_s`` is the searcher's wall time for the batch this trial was proposed in.
    """

    trial_id: int
    arch: Candidate
    status: str
    accuracy: float | None = None
    latency_s: float | None = None
    measured_latency_s: float | None = None
    num_parameters: int | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    source: str = ""
    batch_id: int | None = None
    predicted_accuracy: float | None = None
    predicted_accuracy_sd: float | None = None
    acq_value: float | None = None
    proposed_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    suggest_s: float | None = None
    eval_s: float | None = None
    cost_model_version: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise SearchError(choices_message("trial status", self.status, STATUSES))
        if not isinstance(self.arch, CANDIDATE_TYPES):
            raise SearchError(f"trial {self.trial_id}: arch must be a StudentArch or a TableRow, got "
                              f"{type(self.arch).__name__}")
        _opt_float("accuracy", self.accuracy)
        _opt_float("latency_s", self.latency_s, positive=True)
        _opt_float("measured_latency_s", self.measured_latency_s, positive=True)

    @property
    def ok(self) -> bool:
        """Completed with a finite accuracy (usable as training data)."""
        return self.status == "completed" and self.accuracy is not None and math.isfinite(self.accuracy)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED
