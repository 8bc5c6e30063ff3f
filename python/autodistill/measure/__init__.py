"""Measuring jit-compiled JAX functions on a device, as the calibration fits them.

One submodule per layer, each usable alone:

* `host`: where a number came from (`env_fingerprint`: device kind, JAX versions, XLA flags, host,
  date), `pin_cores` (pinned to one core, XLA runs single-threaded), `LoadMeter` and
  `wait_for_quiet` (other processes' load), `jax_dtype` and `get_device`.
* `timing`: `time_compiled` / `time_fn`: warm-up, then timed samples until the relative spread is
  small, a time budget is met or a repeat cap is hit. A sample is one synchronised call (end to end)
  or, on accelerators, calls back to back with one sync (device time). Every raw sample is kept,
  as wall-clock and as process CPU time (`Timing`).
* `xla`: what XLA thinks the compiled program costs (``cost_analysis()`` guarded against missing
  and -1 values, and the dot FLOPs read off the optimized HLO).
* `cases`: `Case`, and one `CaseKind` object per kind that both builds the case for timing and
  lists its cost-model ops (`autodistill.oprows.OpRow`); `micro_suite` and `student_suite`.
* `runner`: `RunOptions`, `measure_case` and `run_cases`: one measurement-table row per case;
  `run_child`: measuring in a fresh process.
* `table`: the table's columns, which time column is fitted on which platform, its files, merging.
* `plan`: `MeasurePlan` and `measure_device`, the whole measuring procedure of a calibration.

JAX is imported inside functions only: importing this package loads NumPy, never JAX, torch or
pandas (`autodistill` itself never imports it).

Example::

    from autodistill.measure import time_fn
    import jax.numpy as jnp
    t = time_fn(lambda a, b: a @ b, jnp.ones((256, 256)), jnp.ones((256, 256)))
    t.median_s, t.rel_spread, t.n
"""
from __future__ import annotations

from autodistill.measure.cases import (
    BROAD,
    CASE_KINDS,
    CHAIN_OPS,
    FIT_KINDS,
    PLATFORMS,
    SPREADS,
    SUITE_SIZES,
    Case,
    _build_student,
    build_case,
    micro_suite,
    models_available,
    sample_student,
    student_suite,
)
from autodistill.measure.host import (
    JAX_DTYPES,
    LoadMeter,
    background_load,
    env_fingerprint,
    get_device,
    jax_backend_started,
    jax_dtype,
    pin_cores,
    wait_for_quiet,
)
from autodistill.measure.runner import ACCELERATOR_WARMUP_S, RESULT_MARK, RunOptions, measure_case, run_cases, run_child
from autodistill.measure.table import (
    FINGERPRINT_COLUMNS,
    TABLE_COLUMNS,
    TIME_COLUMN,
    TIME_DESCRIPTIONS,
    load_measurements,
    measurement_table,
    save_measurements,
)
from autodistill.measure.timing import (
    DEVICE_SAMPLE_S,
    MAX_CALLS_PER_SAMPLE,
    SPREAD_ON,
    Timing,
    calls_for,
    compile_fn,
    summarize,
    time_compiled,
    time_fn,
)
from autodistill.measure.xla import _cost_value, hlo_dot_flops, xla_cost

__all__ = [
    "ACCELERATOR_WARMUP_S", "BROAD", "CASE_KINDS", "CHAIN_OPS", "DEVICE_SAMPLE_S", "FINGERPRINT_COLUMNS", "FIT_KINDS",
    "JAX_DTYPES", "MAX_CALLS_PER_SAMPLE", "PLATFORMS", "RESULT_MARK", "SPREADS", "SPREAD_ON", "SUITE_SIZES",
    "TABLE_COLUMNS", "TIME_COLUMN", "TIME_DESCRIPTIONS", "Case", "LoadMeter", "RunOptions", "Timing", "_build_student",
    "_cost_value",
    "background_load", "build_case", "calls_for", "compile_fn", "env_fingerprint", "get_device", "hlo_dot_flops",
    "jax_backend_started", "jax_dtype", "load_measurements", "measure_case", "measurement_table", "micro_suite",
    "models_available", "pin_cores", "run_cases", "run_child", "sample_student", "save_measurements", "student_suite",
    "summarize", "time_compiled", "time_fn", "wait_for_quiet", "xla_cost",
]
