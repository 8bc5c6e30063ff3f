"""On-device confirmation: measure chosen students, compare with the estimate, recalibrate when off.

The closed loop of AutoDistill's evaluation stage: every chosen student is
timed on the device with the measurement harness (`autodistill.measure`), its
cost-model estimate on the device's profile is recorded beside the
measurement, and when any relative error exceeds ``tolerance`` the profile is
refitted from the new measurements (`autodistill.calibration.recalibrate`)
and the students are re-estimated (and so re-ranked) with it.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

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

    @property
    def error(self) -> float:
        return self.est_latency_s / self.measured_latency_s - 1.0

    @property
    def final_latency_s(self) -> float:
        return self.recal_latency_s if self.recal_latency_s is not None else self.est_latency_s

    @property
    def final_error(self) -> float:
        return self.final_latency_s / self.measured_latency_s - 1.0


@dataclass(frozen=True)
class ConfirmationReport:
    device: str
    profile: str
    tolerance: float
    students: tuple[Confirmation, ...]
    recalibrated: HardwareProfile | None
    note: str = ""  # why a recalibration was rejected, if it was

    @property
    def max_abs_error(self) -> float:
        return max((abs(c.final_error) for c in self.students), default=0.0)

    def summary(self) -> dict[str, float]:
        errs = [abs(c.error) for c in self.students]
        fin = [abs(c.final_error) for c in self.students]
        if not errs:
            return {}
        return {"n": float(len(errs)), "mape_before": sum(errs) / len(errs), "mape_after": sum(fin) / len(fin),
                "within_10pct_after": sum(e <= 0.10 for e in fin) / len(fin),
                "recalibrated": float(self.recalibrated is not None)}


def measure_student(arch: StudentArch, batch: int, seq: int, *, device: str = "cpu", budget_s: float = 2.0,
                    seed: int = 0) -> dict[str, Any]:
    """Time one forward pass of ``arch`` (random weights, float32) on ``device`` in this process."""
    from autodistill import measure

    dev = measure.get_device(device)
    case = measure.Case(kind="student", name=f"confirm/{arch.short_name()}/b{batch}s{seq}",
                        params={"arch": arch.to_dict(), "b": int(batch), "s": int(seq)})
    opts = measure.RunOptions(budget_s=budget_s, xla_cost=False)
    return measure.measure_case(case, device=dev, opts=opts)


_CHILD = r"""
import json, sys
req = json.loads(sys.stdin.read())
from autodistill import measure
if req["device"] == "cpu" and req["cores"] > 0:
    measure.pin_cores(req["cores"])   # before JAX starts: XLA sizes its thread pool to these cores
from autodistill.arch import StudentArch
from autodistill.verify import measure_student
rows = [measure_student(StudentArch.from_dict(a), req["batch"], req["seq"], device=req["device"],
                        budget_s=req["budget_s"]) for a in req["archs"]]
print("@@ROWS@@" + json.dumps(rows, default=str))
"""


def measure_students(archs: Sequence[StudentArch], batch: int, seq: int, *, device: str = "cpu",
                     budget_s: float = 2.0, cores: int = 1, timeout_s: float = 1800.0) -> list[dict[str, Any]]:
    """Time ``archs`` in a fresh process, as `autodistill calibrate` does.

    On the CPU the child is pinned to ``cores`` of the least busy cores before JAX starts, so its
    times are comparable with a profile calibrated the same way (``cores=1`` for ``cpu_local``)
    and not disturbed by training threads of this process. Each row gains ``latency_s``: the
    load-corrected median on a pinned CPU, else the wall-clock median.
    """
    import json
    import subprocess
    import sys

    req = {"archs": [a.to_dict() for a in archs], "batch": int(batch), "seq": int(seq), "device": device,
           "budget_s": float(budget_s), "cores": int(cores)}
    proc = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps(req), capture_output=True, text=True,
                          timeout=timeout_s)
    if proc.returncode != 0 or "@@ROWS@@" not in proc.stdout:
        raise ConfigError(f"measuring on device {device!r} failed: {proc.stderr.strip()[-2000:]}")
    rows = json.loads(proc.stdout.rsplit("@@ROWS@@", 1)[1])
    pinned = device == "cpu" and cores > 0
    for r in rows:
        corrected = r.get("corrected_median_s")
        r["latency_s"] = float(corrected) if pinned and corrected not in (None, "nan") else float(r["median_s"])
    return rows


def confirm(students: Sequence[tuple[str, StudentArch]], profile: HardwareProfile, *, batch: int = 1,
            seq: int = 128, device: str = "cpu", tolerance: float = 0.10, budget_s: float = 2.0, cores: int = 1,
            measurements: Sequence[dict[str, Any]] | None = None) -> ConfirmationReport:
    """Measure ``students`` on ``device``; recalibrate ``profile`` when an error exceeds ``tolerance``.

    ``measurements`` (rows with ``latency_s``, same order) skips the timing, e.g. on resume.
    """
    from autodistill.costmodel import CostModel

    if not 0.0 < tolerance < 10.0:
        raise ConfigError(f"tolerance={tolerance} must be in (0, 10)")
    rows = list(measurements) if measurements is not None else measure_students(
        [a for _, a in students], batch, seq, device=device, budget_s=budget_s, cores=cores)
    if len(rows) != len(students):
        raise ConfigError(f"{len(rows)} measurements for {len(students)} students")
    dtype = "fp32" if "fp32" in profile.peak_flops_per_s else profile.default_dtype
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
        cand = recalibrate(profile, obs, dtype=dtype, name=f"{profile.name}_recalibrated")
        cm2 = CostModel(cand, dtype)
        cand_est = [cm2.latency_s(a, batch, seq) for _, a in students]
        before = sum(abs(e) for e in errors) / len(errors)
        after = sum(abs(r / m - 1) for r, m in zip(cand_est, meas)) / len(meas)
        if after < before:
            recal, recal_est = cand, cand_est
            logger.info("recalibrated %s: mean |error| %.1f%% -> %.1f%%", profile.name, 100 * before, 100 * after)
        else:
            rejected = f"recalibration did not help (mean |error| {100 * before:.1f}% -> {100 * after:.1f}%); kept"
            logger.warning("%s %s", rejected, profile.name)
    out = tuple(
        Confirmation(name, a, batch, seq, m, float(r.get("rel_spread", math.nan)), e, re)
        for (name, a), m, r, e, re in zip(students, meas, rows, est, recal_est))
    return ConfirmationReport(device, profile.name, tolerance, out, recal, rejected)


__all__ = ["Confirmation", "ConfirmationReport", "confirm", "measure_student", "measure_students"]
