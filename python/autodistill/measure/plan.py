"""The calibration measuring procedure: which cases, in which order, timed how (`measure_device`).

`MeasurePlan` holds every choice `autodistill calibrate` makes about measuring, typed and checked,
with its defaults written once (the CLI takes its defaults from it). `measure_device` pins the
process (CPU), builds the micro suite and the students, orders them (base rates first, the rest
shuffled, noise repeats at evenly spaced points, further passes reshuffled) and times them,
checkpointing the table so an interrupted calibration keeps what it measured.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autodistill.errors import CalibrationError, choices_message
from autodistill.measure.cases import (
    BASE_KINDS,
    PLATFORMS,
    SPREADS,
    SUITE_SIZES,
    micro_suite,
    models_available,
    student_suite,
)
from autodistill.measure.host import JAX_DTYPES, get_device, jax_dtype, pin_cores
from autodistill.measure.runner import RunOptions, run_cases
from autodistill.measure.table import measurement_table, merge_measurements, save_measurements

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

#: Default largest student forward pass (GFLOP) by device: the accelerators run BERT-large at 128 tokens
#: (78 GFLOP) in about 2 ms, and a fit on small students alone over-estimated it by 63% on an H200.
MAX_STUDENT_GFLOPS = {"cpu": 12.0, "gpu": 200.0, "tpu": 200.0}
#: Batch sizes and sequence lengths students are timed at, by device: on accelerators larger ones, so
#: that the students reach the GFLOP limit (spread evenly over log FLOPs: about 15 students per decade
#: from 0.01 to 100 GFLOP, where the CPU's shapes stop near 10).
STUDENT_SHAPES = {"cpu": ((1, 2, 4, 8), (16, 32, 64, 128)),
                  "gpu": ((1, 2, 4, 8, 16, 32), (32, 64, 128, 256)),
                  "tpu": ((1, 2, 4, 8, 16, 32), (32, 64, 128, 256))}
#: While measuring, the table so far is saved to the checkpoint at most this often (seconds).
CHECKPOINT_EVERY_S = 15.0


@dataclass(frozen=True)
class MeasurePlan:
    """What a calibration measures on ``device`` and how (see the ``autodistill calibrate`` flags)."""

    device: str = "cpu"
    suite: str = "full"
    students: int | None = None  # whole students; None: 64 for the full suite, 12 otherwise
    seed: int = 0
    test_fraction: float = 0.4
    student_sources: tuple[str, ...] = ("mobilebert", "broad", "small")
    student_spread: str = "log_flops"
    max_student_gflops: float | None = None  # None: MAX_STUDENT_GFLOPS of the device
    noise_students: int = 4
    noise_repeats: int = 3
    budget_s: float = 0.5
    passes: int = 2
    quiet_threshold: float | None = None  # None: 0.5, or never wait with cores == 1 on a CPU
    max_wait_s: float = 20.0
    retries: int = 2
    cores: int = 1  # cpu: pin to this many cores before JAX starts (0: all)
    dtype: str = "fp32"
    max_measure_s: float | None = None

    def __post_init__(self) -> None:
        if self.device not in PLATFORMS:
            raise CalibrationError(choices_message("device", self.device, PLATFORMS))
        if self.suite not in SUITE_SIZES:
            raise CalibrationError(choices_message("suite", self.suite, SUITE_SIZES))
        if self.student_spread not in SPREADS:
            raise CalibrationError(choices_message("student spread", self.student_spread, SPREADS))
        if self.dtype not in JAX_DTYPES:
            raise CalibrationError(f"dtype {self.dtype!r} cannot be measured; valid: {', '.join(JAX_DTYPES)}")
        if not 0.0 < self.test_fraction < 1.0:
            raise CalibrationError(f"test_fraction {self.test_fraction} must be in (0, 1)")
        for name in ("noise_students", "noise_repeats", "cores", "retries"):
            if getattr(self, name) < 0:
                raise CalibrationError(f"{name} {getattr(self, name)} must be >= 0")
        if self.students is not None and self.students < 0:
            raise CalibrationError(f"students {self.students} must be >= 0")
        if self.passes < 1:
            raise CalibrationError(f"passes {self.passes} must be >= 1")
        if not self.budget_s > 0:
            raise CalibrationError(f"budget_s {self.budget_s} must be > 0")
        if not self.max_wait_s >= 0:
            raise CalibrationError(f"max_wait_s {self.max_wait_s} must be >= 0")
        for name in ("max_student_gflops", "max_measure_s"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise CalibrationError(f"{name} {v} must be > 0")

    @property
    def n_students(self) -> int:
        return self.students if self.students is not None else (64 if self.suite == "full" else 12)


def plan_order(plan: MeasurePlan) -> list[Any]:
    """The cases of ``plan`` in measuring order (see the module docstring)."""
    n_students = plan.n_students
    if n_students and not models_available():
        raise CalibrationError("measuring whole students needs autodistill.models (the Flax student); "
                               "pass --students 0 to calibrate on micro-benchmarks only")
    cases = micro_suite(plan.suite, seed=plan.seed, platform=plan.device)
    gflops = plan.max_student_gflops or MAX_STUDENT_GFLOPS[plan.device]
    batches, seqs = STUDENT_SHAPES[plan.device]
    students = (student_suite(n_students, seed=plan.seed, test_fraction=plan.test_fraction,
                              sources=list(plan.student_sources), max_gflops=gflops, spread=plan.student_spread,
                              batches=batches, seqs=seqs)
                if n_students else [])
    rng = np.random.default_rng(plan.seed)
    rest = [c for c in cases if c.kind not in BASE_KINDS] + students
    order = [c for c in cases if c.kind in BASE_KINDS] + [rest[i] for i in rng.permutation(len(rest))]
    held = [c for c in students if c.split == "test"][:plan.noise_students]
    n0 = len(order)
    for k in range(plan.noise_repeats, 0, -1):  # re-measure at evenly spaced points: drift counts as noise
        at = n0 * k // plan.noise_repeats
        order[at:at] = [dataclasses.replace(c, repeat=k) for c in held]
    n_base = sum(c.kind in BASE_KINDS for c in cases)
    first = order[n_base:]
    for p in range(1, plan.passes):  # further passes over everything but the base rates, reshuffled
        order += [dataclasses.replace(first[i], pass_=p) for i in rng.permutation(len(first))]
    return order


def measure_device(plan: MeasurePlan, checkpoint: str | Path | None = None,
                   earlier: pd.DataFrame | None = None, *, progress: bool = True) -> pd.DataFrame:
    """Measure ``plan``'s cases on its device; returns the measurement table.

    With ``checkpoint``, the table measured so far is saved there (atomically) at most every
    `CHECKPOINT_EVERY_S` seconds, so an interrupted calibration keeps its measurements. With
    ``earlier`` (a measurement table), the rows returned and saved follow its rows
    (`merge_measurements`), so a checkpoint over the earlier file loses nothing. ``progress``: a line on
    stderr every 20 cases."""
    if plan.device == "cpu" and plan.cores > 0:
        cores = pin_cores(plan.cores)
        print(f"pinned to core(s) {sorted(cores)}", file=sys.stderr)
    device = get_device(plan.device)
    dtype = jax_dtype(plan.dtype, plan.device)
    order = plan_order(plan)
    t0 = time.perf_counter()
    done: list[dict[str, Any]] = []
    saved = [t0]

    def on_case(i: int, n: int, row: dict[str, Any]) -> None:
        done.append(row)
        if checkpoint is not None and time.perf_counter() - saved[0] >= CHECKPOINT_EVERY_S:
            so_far = measurement_table(done)
            save_measurements(so_far if earlier is None else merge_measurements(earlier, so_far), checkpoint)
            saved[0] = time.perf_counter()
        logger.info("[%d/%d %.0fs] %s %.3g ms (spread %.1f%%, n=%d, compile %.1fs)", i + 1, n,
                    time.perf_counter() - t0, row["name"], 1e3 * row["median_s"], 100 * row["rel_spread"], row["n"],
                    row["compile_s"])
        if progress and ((i + 1) % 20 == 0 or i + 1 == n):
            print(f"measured {i + 1}/{n} cases in {time.perf_counter() - t0:.0f}s", file=sys.stderr)

    quiet = plan.quiet_threshold
    if quiet is None:
        quiet = -1.0 if (plan.device == "cpu" and plan.cores == 1) else 0.5
    opts = RunOptions.for_device(plan.device, budget_s=plan.budget_s, quiet_threshold=None if quiet < 0 else quiet,
                                 max_wait_s=plan.max_wait_s, retries=plan.retries)
    df = run_cases(order, device=device, opts=opts, dtype=dtype, progress=on_case, max_time_s=plan.max_measure_s)
    return df if earlier is None else merge_measurements(earlier, df)


__all__ = ["CHECKPOINT_EVERY_S", "MAX_STUDENT_GFLOPS", "MeasurePlan", "STUDENT_SHAPES",
           "measure_device", "plan_order"]
