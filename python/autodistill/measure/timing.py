"""Timing one compiled call: warm-up, then repeated timed samples until the spread settles.

A sample is one call ended by ``block_until_ready`` (its end-to-end latency), or on an
accelerator enough calls dispatched back to back to span `DEVICE_SAMPLE_S` with one sync at the
end (the device time per call). Median, min, IQR and every raw sample are kept, as wall-clock and
as process CPU time (see `Timing`).
"""
from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autodistill.errors import CalibrationError, choices_message
from autodistill.measure.host import LoadMeter

#: A device-time sample on an accelerator runs calls back to back for at least this long (one sync at
#: its end), so the device queue stays full and host dispatch is hidden behind device work.
DEVICE_SAMPLE_S = 2e-3
MAX_CALLS_PER_SAMPLE = 256


# ==================================================================================================== timing
@dataclass(frozen=True)
class Timing:
    """Repeated times of one compiled call (seconds).

    ``samples`` are wall-clock times. ``cpu_samples`` are the process CPU times
    of the same calls (all threads). On a CPU device their per-call minimum,
    ``corrected_samples``, removes the time a call spent waiting for a core that
    another process held (the CPU time then is the smaller) while keeping wall
    time for calls that ran on several cores at once (the wall time then is
    the smaller). Off-CPU devices leave the host idle: use the wall times.
    """

    median_s: float
    min_s: float
    mean_s: float
    iqr_s: float
    n: int
    stop_reason: str  # "spread" | "budget" | "max_repeats"
    compile_s: float = float("nan")
    samples: tuple[float, ...] = ()
    bg_load: float = float("nan")  # cores used by other processes while timing
    cpu_samples: tuple[float, ...] = ()
    calls_per_sample: int = 1  # >1: each sample is the device time per call of that many back-to-back calls

    @property
    def rel_spread(self) -> float:
        """Interquartile range over the median."""
        return self.iqr_s / self.median_s if self.median_s > 0 else float("nan")

    @property
    def corrected_samples(self) -> tuple[float, ...]:
        if len(self.cpu_samples) != len(self.samples):
            return self.samples
        return tuple(min(w, c) if c > 0 else w for w, c in zip(self.samples, self.cpu_samples))

    def stats(self, which: str = "wall") -> dict[str, float]:
        """median, min, IQR of the ``wall``, ``cpu`` or ``corrected`` series."""
        xs = {"wall": self.samples, "cpu": self.cpu_samples, "corrected": self.corrected_samples}[which]
        if not xs:
            return {"median_s": float("nan"), "min_s": float("nan"), "iqr_s": float("nan")}
        q1, med, q3 = _quartiles(xs)
        return {"median_s": med, "min_s": float(min(xs)), "iqr_s": q3 - q1}


def _quartiles(xs: Sequence[float]) -> tuple[float, float, float]:
    q = np.percentile(np.asarray(xs, dtype=np.float64), [25.0, 50.0, 75.0])
    return float(q[0]), float(q[1]), float(q[2])


def summarize(samples: Sequence[float], stop_reason: str = "given", compile_s: float = float("nan"),
              cpu_samples: Sequence[float] = ()) -> Timing:
    """A `Timing` from raw wall-clock (and optionally CPU-time) samples."""
    if len(samples) == 0:
        raise CalibrationError("no timing samples to summarize")
    q1, med, q3 = _quartiles(samples)
    return Timing(median_s=med, min_s=float(min(samples)), mean_s=float(statistics.fmean(samples)),
                  iqr_s=q3 - q1, n=len(samples), stop_reason=stop_reason, compile_s=compile_s,
                  samples=tuple(float(s) for s in samples), cpu_samples=tuple(float(s) for s in cpu_samples))


SPREAD_ON = ("wall", "corrected")


def calls_for(call_s: float, target_s: float = DEVICE_SAMPLE_S) -> int:
    """Calls per device-time sample for a call of ``call_s`` seconds: enough to span ``target_s``."""
    if not call_s > 0:
        return MAX_CALLS_PER_SAMPLE
    return int(min(MAX_CALLS_PER_SAMPLE, max(1, math.ceil(target_s / call_s))))


def time_compiled(call: Callable[[], Any], *, warmup: int = 2, min_repeats: int = 5, max_repeats: int = 200,
                  rel_spread: float = 0.03, budget_s: float = 1.0, compile_s: float = float("nan"),
                  spread_on: str = "wall", warmup_s: float = 0.0, calls_per_sample: int = 1) -> Timing:
    """Time ``call()`` (already compiled; must return JAX arrays) until its spread settles.

    Runs ``warmup`` untimed calls (and more until ``warmup_s`` seconds have passed: an
    accelerator idle during the compile has lowered its clocks), then timed samples, recording
    wall-clock and process CPU time. A sample is ``calls_per_sample`` calls dispatched back to back
    and ended by one ``jax.block_until_ready``, its time divided by the calls: with 1, each call's
    end-to-end latency (dispatch and sync included); with more, the device time per call (the
    queue stays full); 0 picks the count with `calls_for` from the warm-up's last call. Stops
    once at least ``min_repeats`` samples are in and the interquartile range of
    the ``spread_on`` series (``wall`` or ``corrected``, see `Timing`) is at most
    ``rel_spread`` of its median, or the timed calls have used ``budget_s``
    seconds, or after ``max_repeats``.
    """
    import jax

    if warmup < 0 or min_repeats < 1 or max_repeats < min_repeats:
        raise CalibrationError(f"need warmup >= 0 and 1 <= min_repeats <= max_repeats; got warmup={warmup}, "
                               f"min_repeats={min_repeats}, max_repeats={max_repeats}")
    if not (budget_s > 0 and rel_spread >= 0):
        raise CalibrationError(f"need budget_s > 0 and rel_spread >= 0; got {budget_s}, {rel_spread}")
    if spread_on not in SPREAD_ON:
        raise CalibrationError(choices_message("spread_on", spread_on, SPREAD_ON))
    if isinstance(calls_per_sample, bool) or not isinstance(calls_per_sample, int) or not (
            0 <= calls_per_sample <= MAX_CALLS_PER_SAMPLE):
        raise CalibrationError(f"calls_per_sample={calls_per_sample!r} must be an integer in "
                               f"0..{MAX_CALLS_PER_SAMPLE} (0: automatic)")
    w0 = time.perf_counter()
    last = float("nan")
    for _ in range(max(warmup, 1 if calls_per_sample == 0 else 0)):  # auto: time at least one call first
        t = time.perf_counter()
        jax.block_until_ready(call())
        last = time.perf_counter() - t
    while time.perf_counter() - w0 < warmup_s:
        t = time.perf_counter()
        jax.block_until_ready(call())
        last = time.perf_counter() - t
    k = calls_per_sample or calls_for(last)
    meter = LoadMeter().start()
    samples: list[float] = []
    cpu: list[float] = []
    watch: list[float] = []
    spent = 0.0
    reason = "max_repeats"
    perf, ptime = time.perf_counter, time.process_time
    while len(samples) < max_repeats:
        c0 = ptime()
        t0 = perf()
        out = None
        for _ in range(k):
            out = call()
        jax.block_until_ready(out)
        total = perf() - t0
        dt, dc = total / k, (ptime() - c0) / k
        samples.append(dt)
        cpu.append(dc)
        watch.append(min(dt, dc) if spread_on == "corrected" and dc > 0 else dt)
        spent += total
        if len(samples) >= min_repeats:
            q1, med, q3 = _quartiles(watch)
            if q3 - q1 <= rel_spread * med:
                reason = "spread"
                break
            if spent >= budget_s:
                reason = "budget"
                break
    return dataclasses.replace(summarize(samples, reason, compile_s, cpu), bg_load=meter.stop(), calls_per_sample=k)


def compile_fn(fn: Callable[..., Any], *args: Any, device: Any = None) -> tuple[Any, tuple[Any, ...], float]:
    """Put ``args`` on ``device``, jit-compile ``fn`` for them; returns (compiled, device args, compile seconds)."""
    import jax

    dev = device if device is not None else jax.devices()[0]
    dargs = tuple(jax.device_put(a, dev) for a in args)
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*dargs).compile()
    return compiled, dargs, time.perf_counter() - t0


def time_fn(fn: Callable[..., Any], *args: Any, device: Any = None, **kw: Any) -> Timing:
    """Compile ``fn`` for ``args`` on ``device`` and time it (keyword arguments go to `time_compiled`)."""
    compiled, dargs, compile_s = compile_fn(fn, *args, device=device)
    return time_compiled(lambda: compiled(*dargs), compile_s=compile_s, **kw)
