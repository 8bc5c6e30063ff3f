"""Running cases: the timing options of a device and one measurement-table row per case."""
from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autodistill.measure.cases import Case, build_case
from autodistill.measure.host import env_fingerprint, wait_for_quiet
from autodistill.measure.table import measurement_table
from autodistill.measure.timing import Timing, compile_fn, time_compiled
from autodistill.measure.xla import xla_cost

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


#: Seconds of untimed calls before timing a case on an accelerator (clocks drop while a case compiles).
ACCELERATOR_WARMUP_S = 0.1


# ================================================================================================= running
@dataclass
class RunOptions:
    """Timing knobs for `run_cases` (see `time_compiled`)."""

    warmup: int = 2
    #: Keep warming up until this many seconds have passed (accelerators: let the clocks ramp up).
    warmup_s: float = 0.0
    min_repeats: int = 5
    max_repeats: int = 200
    rel_spread: float = 0.03
    budget_s: float = 1.0
    xla_cost: bool = True
    #: Wait before timing until other processes use fewer cores than this (None: never wait) ...
    quiet_threshold: float | None = None
    #: ... for at most this long; then re-time up to ``retries`` times while the load stays above it.
    max_wait_s: float = 10.0
    retries: int = 0
    #: Series the stopping rule watches: "wall", or "corrected" (CPU devices; see `Timing`).
    spread_on: str = "wall"
    #: Calls per timed sample (see `time_compiled`): 1 times each call end to end; 0 picks enough
    #: back-to-back calls to hide host dispatch (device time), and then also times a few single
    #: calls end to end (the table's ``e2e_*`` columns).
    calls_per_sample: int = 1

    @classmethod
    def for_device(cls, device: str, **kw: Any) -> RunOptions:
        """Options for timing on platform ``device`` as `autodistill calibrate` does: on a CPU the
        stopping rule watches the load-corrected series and each call is timed on its own (the host
        is the device); an accelerator is warmed up for `ACCELERATOR_WARMUP_S` first, its
        wall-clock series watched, and its samples are device time (back-to-back calls)."""
        cpu = device == "cpu"
        kw.setdefault("calls_per_sample", 1 if cpu else 0)
        return cls(spread_on="corrected" if cpu else "wall", warmup_s=0.0 if cpu else ACCELERATOR_WARMUP_S, **kw)


def measure_case(case: Case, device: Any = None, opts: RunOptions | None = None, dtype: Any = None,
                 fingerprint: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Measure one case; returns one row of the measurement table."""
    opts = opts or RunOptions()
    fn, args = build_case(case, dtype)
    compiled, dargs, compile_s = compile_fn(fn, *args, device=device)
    cost = xla_cost(compiled) if opts.xla_cost else dict.fromkeys(
        ("xla_flops", "xla_dot_flops", "xla_bytes", "xla_transcendentals"), float("nan"))
    waited = 0.0
    t: Timing | None = None
    for _attempt in range(1 + max(0, opts.retries)):
        if opts.quiet_threshold is not None:
            waited += wait_for_quiet(opts.quiet_threshold, max_wait_s=opts.max_wait_s)[0]
        ti = time_compiled(lambda: compiled(*dargs), warmup=opts.warmup, warmup_s=opts.warmup_s,
                           min_repeats=opts.min_repeats,
                           max_repeats=opts.max_repeats, rel_spread=opts.rel_spread, budget_s=opts.budget_s,
                           compile_s=compile_s, spread_on=opts.spread_on, calls_per_sample=opts.calls_per_sample)
        if t is None or ti.bg_load < t.bg_load:
            t = ti
        if opts.quiet_threshold is None or not t.bg_load > opts.quiet_threshold:
            break
    assert t is not None
    e2e = t
    if t.calls_per_sample > 1:  # the end-to-end latency of single calls, dispatch and sync included
        e2e = time_compiled(lambda: compiled(*dargs), warmup=1, min_repeats=5, max_repeats=50,
                            rel_spread=opts.rel_spread, budget_s=min(opts.budget_s, 0.25), spread_on=opts.spread_on)
    row: dict[str, Any] = {
        "case_id": f"{case.name}#{case.repeat}", "kind": case.kind, "name": case.name, "params": case.params_json(),
        "batch": case.batch, "seq": case.seq, "split": case.split, "repeat": case.repeat, "pass": case.pass_,
        "median_s": t.median_s, "min_s": t.min_s, "mean_s": t.mean_s, "iqr_s": t.iqr_s, "rel_spread": t.rel_spread,
        "n": t.n, "stop_reason": t.stop_reason, "compile_s": t.compile_s, "bg_load": t.bg_load, "wait_s": waited,
        **cost,
        "samples_s": " ".join(f"{s:.9f}" for s in t.samples),
        "cpu_samples_s": " ".join(f"{s:.9f}" for s in t.cpu_samples),
        "calls_per_sample": t.calls_per_sample, "e2e_median_s": e2e.median_s, "e2e_min_s": e2e.min_s,
    }
    cs, cc = t.stats("cpu"), t.stats("corrected")
    row.update(cpu_median_s=cs["median_s"], corrected_median_s=cc["median_s"], corrected_min_s=cc["min_s"],
               corrected_rel_spread=cc["iqr_s"] / cc["median_s"] if cc["median_s"] > 0 else float("nan"))
    row.update(fingerprint if fingerprint is not None else env_fingerprint(device))
    return row


def run_cases(cases: Iterable[Case], device: Any = None, opts: RunOptions | None = None, dtype: Any = None,
              progress: Callable[[int, int, dict[str, Any]], None] | None = None,
              max_time_s: float | None = None) -> pd.DataFrame:
    """Measure every case on ``device``; returns the measurement table (one row per case).

    With ``max_time_s``, no case after the first is started once that many seconds have passed:
    the table then holds the cases measured so far (in the given order; shuffle it for a fair subset).
    """
    cases = list(cases)
    fp = env_fingerprint(device)
    rows = []
    t0 = time.perf_counter()
    for i, c in enumerate(cases):
        if i and max_time_s is not None and time.perf_counter() - t0 >= max_time_s:
            logger.warning("time limit %.0f s reached: measured %d of %d cases", max_time_s, i, len(cases))
            break
        fp["date"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        row = measure_case(c, device, opts, dtype, fp)
        rows.append(row)
        if progress is not None:
            progress(i, len(cases), row)
    return measurement_table(rows)


#: What a measuring child prints before its JSON result on stdout (`run_child`).
RESULT_MARK = "@@ROWS@@"


def run_child(script: str, request: Mapping[str, Any], *, timeout_s: float, what: str,
              error: type[Exception]) -> Any:
    """Run ``script`` in a fresh Python process (its JAX, thread pool and pinning are its own), feed it
    ``request`` as JSON on stdin and return the JSON it prints after `RESULT_MARK`.

    A child that fails, or prints no result, raises ``error`` with "``what`` failed" and its stderr's tail.
    """
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", script], input=json.dumps(request), capture_output=True, text=True,
                          timeout=timeout_s)
    if proc.returncode != 0 or RESULT_MARK not in proc.stdout:
        raise error(f"{what} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.rsplit(RESULT_MARK, 1)[1])
