"""One record type per file the run's stages write: typed, versioned, and the only code that knows
their JSON layout.

* `StudentRecord`: ``students/<name>/result.json``, written by the distill stage and updated by
  export and GLUE; `StudentRecord.ready` is the one definition of a student the later stages use.
* `ConfirmRecord`: ``confirm.json``, the on-device confirmation (the layout of
  `autodistill.verify.ConfirmationReport.to_dict`, plus the path of a refitted profile).
* `StageRecord` / `RunState`: ``state.json``, which stages finished and how long they took.

Files written before the schema version was recorded (``schema`` absent) load as version 1; a file
of a newer version than this code knows is refused with a message naming it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from autodistill.arch import StudentArch
from autodistill.errors import ArchError, ConfigError

if TYPE_CHECKING:
    from autodistill.verify import ConfirmationReport, DriftCheck

__all__ = ["SCHEMA_VERSION", "ConfirmRecord", "ConfirmedStudent", "RecordError", "RunState", "StageRecord",
           "StudentRecord"]

#: Version of the layouts below; bump it when a field changes meaning, and keep `from_dict` reading older ones.
SCHEMA_VERSION = 1


class RecordError(ConfigError):
    """A run-folder file is damaged, of another program, or of a newer autodistill."""


def _schema(d: Mapping[str, Any], what: str) -> None:
    v = d.get("schema", 1)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise RecordError(f"{what}: schema = {v!r} is not a schema version")
    if v > SCHEMA_VERSION:
        raise RecordError(f"{what} has schema version {v}; this autodistill reads up to {SCHEMA_VERSION} "
                          "(upgrade autodistill to read it)")


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _fields(d: Any, what: str, *names: str) -> None:
    if not isinstance(d, Mapping):
        raise RecordError(f"{what} must hold a JSON object, not {type(d).__name__}")
    missing = [n for n in names if n not in d]
    if missing:
        raise RecordError(f"{what} lacks {', '.join(missing)} (not written by autodistill?)")


def _arch(d: Any, what: str) -> StudentArch:
    try:
        return StudentArch.from_dict(d)
    except (ArchError, TypeError, AttributeError) as e:
        raise RecordError(f"{what}: its arch is not a valid StudentArch: {e}") from None


# ---------------------------------------------------------------------------------------------- students
@dataclass(frozen=True)
class StudentRecord:
    """One distilled student (``students/<name>/result.json``).

    ``trial_id``, ``flash_accuracy`` and ``est_latency_s`` come from the search trial it was chosen
    from (None for the baseline); the rest from its full distillation, export and GLUE fine-tuning.
    """

    name: str
    arch: StudentArch
    status: str
    finished: bool
    mlm_accuracy: float = math.nan
    steps: int = 0
    wall_time_s: float = 0.0
    train_tokens_per_s: float = 0.0
    message: str = ""
    trial_id: int | None = None
    flash_accuracy: float | None = None
    est_latency_s: float | None = None
    baseline: bool = False
    exported: str | None = None  # the transformers folder, once exported
    glue: Mapping[str, float] = field(default_factory=dict)  # "<task>/<metric>" -> dev-set value
    mlm_predictions: int = 0  # held-out masked tokens behind mlm_accuracy (0: not recorded)

    @property
    def ready(self) -> bool:
        """Fully distilled, to the end of its budget, without failure: what export, GLUE, confirmation,
        the report's accuracy column and ``verify --run`` take."""
        return self.finished and self.status == "ok"

    def with_export(self, folder: str) -> StudentRecord:
        return replace(self, exported=str(folder))

    def with_glue(self, metrics: Mapping[str, float]) -> StudentRecord:
        return replace(self, glue={**self.glue, **metrics})

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schema": SCHEMA_VERSION, "name": self.name, "arch": self.arch.to_dict()}
        if self.baseline:
            d["baseline"] = True
        else:
            d.update(trial_id=self.trial_id, flash_accuracy=self.flash_accuracy, est_latency_s=self.est_latency_s)
        d.update(status=self.status, finished=self.finished, mlm_accuracy=self.mlm_accuracy, steps=self.steps,
                 wall_time_s=self.wall_time_s, train_tokens_per_s=self.train_tokens_per_s, message=self.message)
        if self.mlm_predictions:
            d["mlm_predictions"] = self.mlm_predictions
        if self.exported is not None:
            d["exported"] = self.exported
        if self.glue:
            d["glue"] = dict(self.glue)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], what: str = "result.json") -> StudentRecord:
        _fields(d, what, "name", "arch", "status", "finished")
        _schema(d, what)
        mlm = d.get("mlm_accuracy")
        return cls(name=str(d["name"]), arch=_arch(d["arch"], what), status=str(d["status"]),
                   finished=bool(d["finished"]), mlm_accuracy=math.nan if mlm is None else float(mlm),
                   steps=int(d.get("steps", 0)), wall_time_s=float(d.get("wall_time_s", 0.0)),
                   train_tokens_per_s=float(d.get("train_tokens_per_s", 0.0)), message=str(d.get("message", "")),
                   trial_id=None if d.get("trial_id") is None else int(d["trial_id"]),
                   flash_accuracy=_opt_float(d.get("flash_accuracy")), est_latency_s=_opt_float(d.get("est_latency_s")),
                   baseline=bool(d.get("baseline", False)), exported=d.get("exported"),
                   glue={str(k): float(v) for k, v in (d.get("glue") or {}).items()},
                   mlm_predictions=int(d.get("mlm_predictions") or 0))


# ---------------------------------------------------------------------------------------------- confirm
@dataclass(frozen=True)
class ConfirmedStudent:
    """One student's on-device measurement against its estimates."""

    name: str
    arch: StudentArch
    measured_latency_s: float
    measured_spread: float
    est_latency_s: float
    recal_latency_s: float | None = None
    drift_latency_s: float | None = None
    stablehlo_latency_s: float | None = None  # the reloaded StableHLO program (MLM head included), same shape


#: Files written before confirm.json recorded its statistic compared load-corrected medians.
LEGACY_TIME_COLUMN = "corrected_median_s"


@dataclass(frozen=True)
class ConfirmRecord:
    """``confirm.json``: the students measured at one shape on one device, against one profile."""

    device: str
    profile: str
    batch: int
    seq: int
    time_column: str
    tolerance: float
    students: tuple[ConfirmedStudent, ...]
    summary: Mapping[str, float] = field(default_factory=dict)
    note: str = ""
    drift: Mapping[str, Any] | None = None  # `autodistill.verify.DriftCheck.to_dict`
    recalibrated_profile: str | None = None

    def drift_check(self) -> DriftCheck | None:
        from autodistill.verify import DriftCheck

        return DriftCheck.from_dict(self.drift) if self.drift else None

    def by_name(self) -> dict[str, ConfirmedStudent]:
        return {s.name: s for s in self.students}

    def reusable_for(self, names: list[str], batch: int, seq: int, time_column: str) -> bool:
        """Its measurements stand for a confirmation of ``names`` (same students, in order) at ``batch`` x
        ``seq``, timed with the statistic compared now."""
        return ([s.name for s in self.students] == list(names) and self.batch == batch and self.seq == seq
                and self.time_column == time_column)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema": SCHEMA_VERSION, "device": self.device, "profile": self.profile, "batch": self.batch,
            "seq": self.seq, "time_column": self.time_column, "tolerance": self.tolerance,
            "summary": dict(self.summary), "note": self.note, "drift": dict(self.drift) if self.drift else None,
            "students": [{"name": s.name, "arch": s.arch.to_dict(), "measured_latency_s": s.measured_latency_s,
                          "measured_spread": s.measured_spread, "est_latency_s": s.est_latency_s,
                          "recal_latency_s": s.recal_latency_s, "drift_latency_s": s.drift_latency_s,
                          **({"stablehlo_latency_s": s.stablehlo_latency_s} if s.stablehlo_latency_s is not None
                             else {})}
                         for s in self.students]}
        if self.recalibrated_profile is not None:
            d["recalibrated_profile"] = self.recalibrated_profile
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], what: str = "confirm.json") -> ConfirmRecord:
        _fields(d, what, "device", "profile", "batch", "seq", "students")
        _schema(d, what)
        studs = []
        for i, s in enumerate(d["students"]):
            _fields(s, f"{what} student {i}", "name", "arch", "measured_latency_s", "est_latency_s")
            studs.append(ConfirmedStudent(str(s["name"]), _arch(s["arch"], what), float(s["measured_latency_s"]),
                                          float(s.get("measured_spread") or 0.0), float(s["est_latency_s"]),
                                          _opt_float(s.get("recal_latency_s")), _opt_float(s.get("drift_latency_s")),
                                          _opt_float(s.get("stablehlo_latency_s"))))
        return cls(device=str(d["device"]), profile=str(d["profile"]), batch=int(d["batch"]), seq=int(d["seq"]),
                   time_column=str(d.get("time_column", LEGACY_TIME_COLUMN)),
                   tolerance=float(d.get("tolerance", 0.1)), students=tuple(studs),
                   summary={str(k): float(v) for k, v in (d.get("summary") or {}).items()},
                   note=str(d.get("note") or ""), drift=d.get("drift") or None,
                   recalibrated_profile=d.get("recalibrated_profile"))

    @classmethod
    def of_report(cls, report: ConfirmationReport, batch: int, seq: int,
                  recalibrated_profile: str | None = None) -> ConfirmRecord:
        return replace(cls.from_dict(report.to_dict(batch, seq)), recalibrated_profile=recalibrated_profile)


# ---------------------------------------------------------------------------------------------- state
@dataclass(frozen=True)
class StageRecord:
    """One finished stage: when, how long, and what it reports about itself."""

    finished_at: float
    wall_s: float | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {"finished_at": self.finished_at, **self.info}
        if self.wall_s is not None:
            d["wall_s"] = self.wall_s
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StageRecord:
        rest = {k: v for k, v in d.items() if k not in ("finished_at", "wall_s")}
        return cls(float(d.get("finished_at", 0.0)), _opt_float(d.get("wall_s")), rest)


@dataclass(frozen=True)
class RunState:
    """``state.json``: the stages that finished, in order (for people; every stage skips finished work itself)."""

    stages: Mapping[str, StageRecord] = field(default_factory=dict)

    def done(self, stage: str) -> bool:
        return stage in self.stages

    def with_stage(self, stage: str, record: StageRecord) -> RunState:
        return RunState({**self.stages, stage: record})

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, "stages": {k: v.to_dict() for k, v in self.stages.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], what: str = "state.json") -> RunState:
        _fields(d, what, "stages")
        _schema(d, what)
        if not isinstance(d["stages"], Mapping):
            raise RecordError(f"{what}: stages must be an object")
        return cls({str(k): StageRecord.from_dict(v) for k, v in d["stages"].items()})
