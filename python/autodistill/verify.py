"""On-device confirmation: measure chosen students, compare with the estimate, recalibrate when off.

The closed loop of AutoDistill's evaluation stage: every chosen student is
timed on the device with the measurement harness (`autodistill.measure`), its
cost-model estimate on the device's profile is recorded beside the
measurement, and when any relative error exceeds ``tolerance`` the profile is
refitted from the new measurements (`autodistill.calibration.recalibrate`)
and the students are re-estimated (and so re-ranked) with it.

A drift check runs beside the students: a few whole students of the profile's
own calibration table (``<profile>_measurements.csv`` next to the profile
file) are timed again in the same process, and the median of now / then says
how much faster or slower the device runs than when it was calibrated (shared
and virtual machines drift by 10% and more between hours). The re-timed
anchors also join the recalibration, so a refit sees more than one shape.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autodistill.arch import StudentArch
from autodistill.errors import ConfigError
from autodistill.hardware import HardwareProfile

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Confirmation:
    """One student on the device: estimate before and after recalibration, and the measurement."""

    name: str
    arch: StudentArch
    batch: int
    seq: int
    measured_latency_s: float
    measured_spread: float          # relative interquartile spread of the timing samples
    est_latency_s: float            # with the profile as given
    recal_latency_s: float | None   # with the recalibrated profile (None when not recalibrated)
    drift_latency_s: float | None = None  # est_latency_s x the drift check's ratio (None without a check)

    @property
    def error(self) -> float:
        return self.est_latency_s / self.measured_latency_s - 1.0

    @property
    def drift_error(self) -> float | None:
        """Error of the drift-corrected estimate: the profile's, scaled by how fast the device runs now
        compared with calibration time, measured on other students (so out-of-sample for this one)."""
        return None if self.drift_latency_s is None else self.drift_latency_s / self.measured_latency_s - 1.0

    @property
    def final_latency_s(self) -> float:
        return self.recal_latency_s if self.recal_latency_s is not None else self.est_latency_s

    @property
    def final_error(self) -> float:
        return self.final_latency_s / self.measured_latency_s - 1.0


@dataclass(frozen=True)
class Anchor:
    """A student of the profile's calibration table, timed again now (``then_s`` from the table)."""

    name: str
    arch: StudentArch
    batch: int
    seq: int
    then_s: float
    now_s: float | None = None


@dataclass(frozen=True)
class DriftCheck:
    """The device's speed now against calibration time, from re-timed anchors.

    ``ratio`` is the median over anchors of ``now_s / then_s``: 1.0 unchanged, 1.1 the device runs
    10% slower than when the profile was calibrated (estimates then read about 9% low).
    """

    anchors: tuple[Anchor, ...]

    @property
    def ratios(self) -> list[float]:
        return [a.now_s / a.then_s for a in self.anchors if a.now_s is not None and a.then_s > 0]

    @property
    def ratio(self) -> float:
        r = sorted(self.ratios)
        if not r:
            return math.nan
        mid = len(r) // 2
        return r[mid] if len(r) % 2 else 0.5 * (r[mid - 1] + r[mid])

    def to_dict(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "n": len(self.ratios),
                "anchors": [{"name": a.name, "arch": a.arch.to_dict(), "batch": a.batch, "seq": a.seq,
                             "then_s": a.then_s, "now_s": a.now_s} for a in self.anchors]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftCheck:
        return cls(tuple(Anchor(a["name"], StudentArch.from_dict(a["arch"]), int(a["batch"]), int(a["seq"]),
                                float(a["then_s"]), None if a.get("now_s") is None else float(a["now_s"]))
                         for a in d.get("anchors", ())))


@dataclass(frozen=True)
class ConfirmationReport:
    device: str
    profile: str
    tolerance: float
    students: tuple[Confirmation, ...]
    recalibrated: HardwareProfile | None
    note: str = ""  # why a recalibration was rejected, if it was
    drift: DriftCheck | None = None  # None when the profile has no measurement table beside it

    def to_dict(self, batch: int, seq: int) -> dict[str, Any]:
        """The JSON layout of a run's ``confirm.json`` and of ``autodistill verify --out`` (one shape)."""
        return {"device": self.device, "profile": self.profile, "batch": int(batch), "seq": int(seq),
                "time_column": item_time_column(self.device), "tolerance": self.tolerance,
                "summary": self.summary(), "note": self.note,
                "drift": self.drift.to_dict() if self.drift is not None else None,
                "students": [{"name": c.name, "arch": c.arch.to_dict(), "measured_latency_s": c.measured_latency_s,
                              "measured_spread": c.measured_spread, "est_latency_s": c.est_latency_s,
                              "recal_latency_s": c.recal_latency_s, "drift_latency_s": c.drift_latency_s}
                             for c in self.students]}

    @property
    def max_abs_error(self) -> float:
        return max((abs(c.final_error) for c in self.students), default=0.0)

    def summary(self) -> dict[str, float]:
        errs = [abs(c.error) for c in self.students]
        fin = [abs(c.final_error) for c in self.students]
        if not errs:
            return {}
        out = {"n": float(len(errs)), "mape_before": sum(errs) / len(errs), "mape_after": sum(fin) / len(fin),
               "within_10pct_before": sum(e <= 0.10 for e in errs) / len(errs),
               "within_10pct_after": sum(e <= 0.10 for e in fin) / len(fin),
               "recalibrated": float(self.recalibrated is not None)}
        if self.drift is not None and self.drift.ratios:
            out.update(drift_ratio=self.drift.ratio, drift_anchors=float(len(self.drift.ratios)))
        derr = [abs(c.drift_error) for c in self.students if c.drift_error is not None]
        if derr and len(derr) == len(errs):
            out.update(mape_drift_corrected=sum(derr) / len(derr),
                       within_10pct_drift_corrected=sum(e <= 0.10 for e in derr) / len(derr))
        return out


def measure_student(arch: StudentArch, batch: int, seq: int, *, device: str = "cpu", budget_s: float = 2.0,
                    seed: int = 0, dtype: str = "fp32") -> dict[str, Any]:
    """Time one forward pass of ``arch`` (random weights in profile dtype ``dtype``) on ``device`` here."""
    from autodistill import measure

    dev = measure.get_device(device)
    jdt = measure.jax_dtype(dtype, device)
    case = measure.Case(kind="student", name=f"confirm/{arch.short_name()}/b{batch}s{seq}",
                        params={"arch": arch.to_dict(), "b": int(batch), "s": int(seq)})
    opts = measure.RunOptions.for_device(device, budget_s=budget_s, xla_cost=False)  # as `autodistill calibrate`
    return measure.measure_case(case, device=dev, opts=opts, dtype=jdt)


_CHILD = r"""
import json, sys
req = json.loads(sys.stdin.read())
from autodistill import measure
if req["device"] == "cpu" and req["cores"] > 0:
    measure.pin_cores(req["cores"])   # before JAX starts: XLA sizes its thread pool to these cores
from autodistill.arch import StudentArch
from autodistill.verify import item_time_column, measure_student
best = [None] * len(req["items"])
key = item_time_column(req["device"])
for _ in range(req["passes"]):  # like calibrate: every pass over all items, the fastest pass per item kept
    for i, it in enumerate(req["items"]):
        r = measure_student(StudentArch.from_dict(it["arch"]), it["batch"], it["seq"], device=req["device"],
                            budget_s=req["budget_s"], dtype=req["dtype"])
        if best[i] is None or float(r[key]) < float(best[i][key]):
            best[i] = r
print(measure.RESULT_MARK + json.dumps(best, default=str))
"""


def item_time_column(device: str) -> str:
    """The measurement column a confirmation compares, as `autodistill calibrate` fits it on ``device``
    (`autodistill.measure.TIME_COLUMN`: the fastest call)."""
    from autodistill.measure import TIME_COLUMN

    return TIME_COLUMN.get(device, "min_s")


def measure_items(items: Sequence[tuple[StudentArch, int, int]], *, device: str = "cpu", budget_s: float = 1.0,
                  cores: int = 1, passes: int = 2, timeout_s: float = 1800.0,
                  dtype: str = "fp32") -> list[dict[str, Any]]:
    """Time ``(arch, batch, seq)`` items in a fresh process, as `autodistill calibrate` does.

    On the CPU the child is pinned to ``cores`` of the least busy cores before JAX starts, so its
    times are comparable with a profile calibrated the same way (``cores=1`` for ``cpu_local``)
    and not disturbed by training threads of this process. Every item is timed in each of
    ``passes`` passes over the list and its fastest pass kept (interference only ever slows a
    call down). Each row gains ``latency_s``: the column `item_time_column` names. ``dtype`` is
    the profile dtype measured (`autodistill.measure.JAX_DTYPES`).
    """
    if passes < 1:
        raise ConfigError(f"passes={passes} must be >= 1")
    from autodistill.measure.runner import run_child

    req = {"items": [{"arch": a.to_dict(), "batch": int(b), "seq": int(s)} for a, b, s in items],
           "device": device, "budget_s": float(budget_s), "cores": int(cores), "passes": int(passes),
           "dtype": str(dtype)}
    if not req["items"]:
        return []
    rows = run_child(_CHILD, req, timeout_s=timeout_s, what=f"measuring on device {device!r}", error=ConfigError)
    key = item_time_column(device)
    for r in rows:
        v = r.get(key)
        r["latency_s"] = float(v) if v not in (None, "nan") and math.isfinite(float(v)) else float(r["median_s"])
    return rows


def measure_students(archs: Sequence[StudentArch], batch: int, seq: int, *, device: str = "cpu",
                     budget_s: float = 1.0, cores: int = 1, passes: int = 2,
                     timeout_s: float = 1800.0, dtype: str = "fp32") -> list[dict[str, Any]]:
    """Time ``archs`` at one ``batch`` x ``seq`` in a fresh process (see `measure_items`)."""
    return measure_items([(a, batch, seq) for a in archs], device=device, budget_s=budget_s, cores=cores,
                         passes=passes, timeout_s=timeout_s, dtype=dtype)


def profile_dtype(profile: HardwareProfile) -> str:
    """The dtype a confirmation measures and estimates in: fp32 where the profile has it (CPU profiles),
    else its default (a calibrated accelerator profile holds just the dtype it was calibrated for)."""
    return "fp32" if "fp32" in profile.peak_flops_per_s else profile.default_dtype


def measurement_table_of(profile: HardwareProfile) -> Path | None:
    """The calibration table `autodistill calibrate` wrote beside ``profile``'s file, if any
    (`autodistill.calibration.measurements_path`, or the same name as parquet)."""
    if profile.path is None:
        return None
    from autodistill.calibration import measurements_path

    csv = measurements_path(profile.path)
    return next((c for c in (csv, csv.with_suffix(".parquet")) if c.is_file()), None)


def anchor_students(profile: HardwareProfile, n: int = 6, *, time_col: str = "min_s",
                    max_s: float = 0.05) -> list[Anchor]:
    """``n`` whole students of ``profile``'s calibration table, spread evenly over its latencies.

    Each keeps the time the table recorded (fastest pass, first repeat). Students slower than
    ``max_s`` are skipped (the check should cost seconds, not minutes). Empty when the profile has
    no table beside it or the table has no students.
    """
    if n <= 0:
        return []
    path = measurement_table_of(profile)
    if path is None:
        return []
    try:
        from autodistill.calibration import collapse_passes
        from autodistill.measure import load_measurements

        df = load_measurements(path)
    except ImportError as e:  # pandas is part of the measuring extras
        logger.warning("no drift check: cannot read %s (%s)", path, e)
        return []
    if time_col not in df.columns:
        time_col = "median_s"
    df, _ = collapse_passes(df, time_col)  # each case's fastest pass, as the fit used
    df = df[(df["kind"] == "student") & (df.get("repeat", 0) == 0) & (df[time_col].astype(float) <= max_s)]
    if df.empty:
        return []
    best = df.sort_values(time_col).reset_index(drop=True)
    k = min(n, len(best))
    idx = sorted({int(round(i * (len(best) - 1) / max(1, k - 1))) for i in range(k)})
    out = []
    for i in idx:
        r = best.iloc[i]
        p = json.loads(r["params"])
        out.append(Anchor(str(r["name"]), StudentArch.from_dict(p["arch"]), int(p["b"]), int(p["s"]),
                          float(r[time_col])))
    return out


def confirm(students: Sequence[tuple[str, StudentArch]], profile: HardwareProfile, *, batch: int = 1,
            seq: int = 128, device: str = "cpu", tolerance: float = 0.10, budget_s: float = 1.0, cores: int = 1,
            passes: int = 2, measurements: Sequence[dict[str, Any]] | None = None, anchors: int = 6,
            drift: DriftCheck | None = None) -> ConfirmationReport:
    """Measure ``students`` on ``device``; recalibrate ``profile`` when an error exceeds ``tolerance``.

    Students are timed as `measure_items` does (``passes`` passes, the fastest kept). ``anchors``
    students of the profile's calibration table are re-timed in the same process (a `DriftCheck`;
    0 skips it). ``measurements`` (rows with ``latency_s``, same order) and ``drift``
    (a finished check) skip the timing, e.g. on resume.
    """
    from autodistill.costmodel import CostModel

    if not 0.0 < tolerance < 10.0:
        raise ConfigError(f"tolerance={tolerance} must be in (0, 10)")
    if anchors < 0:
        raise ConfigError(f"anchors={anchors} must be >= 0")
    dtype = profile_dtype(profile)
    todo_anchors = anchor_students(profile, anchors, time_col=item_time_column(device)) if drift is None else []
    if measurements is None or todo_anchors:
        items = [(a, batch, seq) for _, a in students] if measurements is None else []
        items += [(x.arch, x.batch, x.seq) for x in todo_anchors]
        got = measure_items(items, device=device, budget_s=budget_s, cores=cores, passes=passes, dtype=dtype)
        if measurements is None:
            measurements, got = got[:len(students)], got[len(students):]
        if todo_anchors:
            drift = DriftCheck(tuple(dataclasses.replace(x, now_s=float(r["latency_s"]))
                                     for x, r in zip(todo_anchors, got)))
            logger.info("drift check on %d anchors: the device runs %.3fx the time it did at calibration",
                        len(drift.ratios), drift.ratio)
    rows = list(measurements)
    if len(rows) != len(students):
        raise ConfigError(f"{len(rows)} measurements for {len(students)} students")
    cm = CostModel(profile, dtype)
    est = [cm.latency_s(a, batch, seq) for _, a in students]
    meas = [float(r["latency_s"]) for r in rows]
    errors = [e / m - 1.0 for e, m in zip(est, meas)]
    recal = None
    rejected = ""
    recal_est: list[float | None] = [None] * len(students)
    if any(abs(e) > tolerance for e in errors):
        from autodistill.calibration import recalibrate

        obs = [{"arch": a, "batch": batch, "seq": seq, "latency_s": m} for (_, a), m in zip(students, meas)]
        if drift is not None:  # the re-timed anchors: more shapes for the refit to agree with
            obs += [{"arch": x.arch, "batch": x.batch, "seq": x.seq, "latency_s": x.now_s} for x in drift.anchors
                    if x.now_s is not None]
        cand = recalibrate(profile, obs, dtype=dtype, name=f"{profile.name}_recalibrated")
        cm2 = CostModel(cand, dtype)
        cand_est = [cm2.latency_s(a, batch, seq) for _, a in students]
        before = sum(abs(e) for e in errors) / len(errors)
        after = sum(abs(r / m - 1) for r, m in zip(cand_est, meas)) / len(meas)
        if after < before:
            recal, recal_est = cand, list(cand_est)
            logger.info("recalibrated %s: mean |error| %.1f%% -> %.1f%%", profile.name, 100 * before, 100 * after)
        else:
            rejected = f"recalibration did not help (mean |error| {100 * before:.1f}% -> {100 * after:.1f}%); kept"
            logger.warning("%s %s", rejected, profile.name)
    ratio = drift.ratio if drift is not None and drift.ratios else None
    out = tuple(
        Confirmation(name, a, batch, seq, m, float(r.get("rel_spread", math.nan)), e, re,
                     None if ratio is None else e * ratio)
        for (name, a), m, r, e, re in zip(students, meas, rows, est, recal_est))
    return ConfirmationReport(device, profile.name, tolerance, out, recal, rejected, drift)


def match_reused(shape_record: Mapping[str, Any], students: Sequence[tuple[str, StudentArch]], *,
                 source: str = "the earlier measurements") -> list[dict[str, float]]:
    """The measurements of ``students`` in one shape of an earlier confirmation, as `confirm` takes them.

    ``shape_record`` is one shape's `ConfirmationReport.to_dict` (an entry of ``verify --out``'s
    ``shapes`` or a run's ``confirm.json``). A student is matched by its architecture's fields, never by
    its name: a name (a file name, say) says nothing about the model. Returns one row (``latency_s``,
    ``rel_spread``) per student, in their order; a student whose architecture the record lacks raises
    `ConfigError` naming every such student, with ``source`` saying where the record came from.
    """
    batch, seq = shape_record.get("batch"), shape_record.get("seq")
    got: dict[str, dict[str, float]] = {}
    for i, rec in enumerate(shape_record.get("students") or ()):
        if not isinstance(rec, Mapping) or "arch" not in rec:
            continue
        try:
            spread = rec.get("measured_spread")  # JSON null where NaN was written
            got[_arch_key(StudentArch.from_dict(rec["arch"]))] = {
                "latency_s": float(rec["measured_latency_s"]),
                "rel_spread": math.nan if spread is None else float(spread)}
        except (ConfigError, KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{source}: student {i} of the b{batch}xs{seq} measurements is not a valid "
                              f"record ({e})") from None
    keys = [_arch_key(a) for _, a in students]
    missing = [n for (n, _), k in zip(students, keys) if k not in got]
    if missing:
        raise ConfigError(f"{source} has no b{batch}xs{seq} measurement of the architecture of {', '.join(missing)}")
    return [dict(got[k]) for k in keys]


def _arch_key(arch: StudentArch) -> str:
    """The architecture's fields as one string: equal exactly when the fields are."""
    return json.dumps(arch.to_dict(), sort_keys=True)


__all__ = ["Anchor", "Confirmation", "ConfirmationReport", "DriftCheck", "anchor_students", "confirm", "match_reused",
           "measure_items", "measure_student", "measure_students", "measurement_table_of", "profile_dtype",
           "item_time_column"]
