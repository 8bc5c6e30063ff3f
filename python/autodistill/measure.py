"""Measuring jit-compiled JAX functions: the timing harness and the micro-benchmark suite.

Three layers, each usable alone:

* `time_compiled` / `time_fn`: warm-up, then repeated timed calls (each ended by
  ``block_until_ready``) until the relative spread is small, a time budget is met
  or a repeat cap is hit. Median, min, IQR and every raw sample are kept, as
  wall-clock and as process CPU time.
* Shared machines: `LoadMeter` records how many cores other processes used
  while a case was timed, `wait_for_quiet` waits for them, and `pin_cores`
  pins this process to its own core(s) before JAX starts. Pinned to one core,
  XLA runs single-threaded and the per-call ``min(wall, CPU time)`` (see
  `Timing`) is the latency on an idle core however busy the machine is.
* `env_fingerprint`, `xla_cost`: where a number came from (device kind,
  jax/jaxlib versions, XLA flags, host, date) and what XLA thinks the compiled
  program costs (``compiled.cost_analysis()``, guarded against missing and -1
  values, plus the dot FLOPs read off the optimized HLO).
* `Case`, `micro_suite`, `student_suite`, `run_cases`: the benchmark cases
  (matmuls on and off the matrix-unit tile, dense layers with epilogues,
  attention, softmax, LayerNorm, embedding gathers, whole encoder layers and
  whole students from the search space at several batch sizes and sequence
  lengths) and a runner that returns one table row per case, each with the
  environment fingerprint, ready for `save_measurements` (CSV in ``profiles/``).

Which cost-model ops a case corresponds to is `autodistill.calibration`'s
business; this module only measures. JAX, NumPy and pandas are imported here
(never from ``autodistill/__init__``).

Example::

    from autodistill.measure import time_fn
    import jax.numpy as jnp
    t = time_fn(lambda a, b: a @ b, jnp.ones((256, 256)), jnp.ones((256, 256)))
    t.median_s, t.rel_spread, t.n
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import platform
import re
import socket
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from autodistill.arch import ACTIVATIONS, StudentArch
from autodistill.errors import CalibrationError, choices_message

logger = logging.getLogger(__name__)

#: Kinds of benchmark case, in suite order.
CASE_KINDS = ("peak", "stream", "vector_peak", "matmul", "dense", "attention", "softmax", "layernorm", "gather",
              "chain", "layer", "student")
#: Seconds of untimed calls before timing a case on an accelerator (clocks drop while a case compiles).
ACCELERATOR_WARMUP_S = 0.1
#: Per-case time `autodistill calibrate` fits and `autodistill verify` compares, by platform: the fastest
#: call everywhere. Interference (host dispatch jitter, another tenant on a shared core or cache, another
#: process on ours) only ever adds time, so the fastest call is the statistic that repeats: on an H200,
#: repeated cases' medians varied 21% and their minima 8.8%; on the 2-core CI VM, two passes of the same
#: case differed by 6.5% (median of 212 cases) in their medians and by 5.4% in their minima, and four
#: held-out students timed four times each varied up to 10.2% by corrected median and 5.0% by fastest call.
TIME_COLUMN = {"cpu": "min_s", "gpu": "min_s", "tpu": "min_s"}
#: What each fittable time column of the measurement table is, in words (profile headers, reports).
TIME_DESCRIPTIONS = {"median_s": "median wall-clock time per case",
                     "corrected_median_s": "median per case of per-call min(wall, process CPU time)",
                     "min_s": "fastest call per case"}
#: Kinds used to fit the per-op-class terms (the first three measure base rates instead).
FIT_KINDS = ("matmul", "dense", "attention", "softmax", "layernorm", "gather", "chain", "layer", "student")
#: Ops a ``chain`` case repeats: ``n`` of them back to back in one compiled call.
CHAIN_OPS = ("dense", "softmax")
SUITE_SIZES = ("tiny", "small", "full")
#: Profile dtype -> (JAX array dtype, JAX default matmul precision or None). ``tf32`` is float32
#: arrays with TensorFloat-32 matmuls (JAX's own default for float32 on recent NVIDIA GPUs);
#: ``fp32`` asks for full-precision float32 matmuls.
JAX_DTYPES = {"fp32": ("float32", "highest"), "tf32": ("float32", "tensorfloat32"),
              "bf16": ("bfloat16", None), "fp16": ("float16", None)}

#: Columns of the measurement table, in order (fingerprint columns come from `env_fingerprint`).
TABLE_COLUMNS = (
    "case_id", "kind", "name", "params", "batch", "seq", "split", "repeat", "pass",
    "median_s", "min_s", "mean_s", "iqr_s", "rel_spread", "n", "stop_reason", "compile_s", "bg_load", "wait_s",
    "cpu_median_s", "corrected_median_s", "corrected_min_s", "corrected_rel_spread",
    "xla_flops", "xla_dot_flops", "xla_bytes", "xla_transcendentals", "samples_s", "cpu_samples_s",
    "calls_per_sample", "e2e_median_s", "e2e_min_s",
)
#: A device-time sample on an accelerator runs calls back to back for at least this long (one sync at
#: its end), so the device queue stays full and host dispatch is hidden behind device work.
DEVICE_SAMPLE_S = 2e-3
MAX_CALLS_PER_SAMPLE = 256
FINGERPRINT_COLUMNS = ("device_kind", "platform", "device", "jax_version", "jaxlib_version", "xla_flags",
                       "host", "cpu", "cpu_affinity", "python", "date")


# =============================================================================================== environment
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover - non-Linux
        pass
    return platform.processor() or platform.machine()


def env_fingerprint(device: Any = None) -> dict[str, str]:
    """Where a measurement was taken: device kind, versions, XLA flags, host, UTC date."""
    import jax
    import jaxlib

    dev = device if device is not None else jax.devices()[0]
    return {
        "device_kind": str(getattr(dev, "device_kind", "unknown")),
        "platform": str(getattr(dev, "platform", "unknown")),
        "device": str(dev),
        "jax_version": jax.__version__,
        "jaxlib_version": getattr(jaxlib, "__version__", "unknown"),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "host": socket.gethostname(),
        "cpu": f"{_cpu_model()} x{os.cpu_count()}",
        "cpu_affinity": ",".join(str(c) for c in sorted(_affinity())),
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return set(range(os.cpu_count() or 1))


def jax_backend_started() -> bool:
    """True once JAX has created a backend (its CPU thread pool is then already sized)."""
    import sys

    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except Exception:  # noqa: BLE001 - private API; assume the worst
        return True


def _per_cpu_busy() -> dict[int, float]:
    """Busy CPU seconds so far per core, from /proc/stat (empty where unavailable)."""
    out: dict[int, float] = {}
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:  # pragma: no cover
        return out
    hz = float(os.sysconf("SC_CLK_TCK"))
    for line in lines:
        parts = line.split()
        if parts and parts[0].startswith("cpu") and parts[0] != "cpu":
            vals = [float(v) for v in parts[1:9]]
            out[int(parts[0][3:])] = (sum(vals) - vals[3] - vals[4]) / hz
    return out


def pin_cores(n: int, window_s: float = 0.5) -> set[int]:
    """Restrict this process (every thread) to the ``n`` least busy allowed cores; returns them.

    Call it before JAX starts so that XLA sizes its CPU thread pool to ``n``
    cores: with ``n = 1`` every XLA op runs on one thread and process CPU time
    equals the wall time the call would take on an idle core, however busy
    the machine is (see `Timing.corrected_samples`). ``n <= 0`` keeps all.
    """
    allowed = sorted(_affinity())
    if n <= 0 or n >= len(allowed):
        return set(allowed)
    a = _per_cpu_busy()
    time.sleep(window_s)
    b = _per_cpu_busy()
    chosen = set(sorted(allowed, key=lambda c: (b.get(c, 0.0) - a.get(c, 0.0), c))[:n])
    if jax_backend_started():
        logger.warning("JAX already started: its thread pool keeps the size it had for %d cores", len(allowed))
    for tid in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ["0"]:
        try:
            os.sched_setaffinity(int(tid), chosen)
        except OSError:  # a thread that just exited
            pass
    return chosen


def jax_dtype(dtype: str, platform: str = "cpu") -> Any:
    """The JAX array dtype a profile dtype (``fp32``, ``tf32``, ``bf16``, ``fp16``) is measured in.

    Off the CPU it also sets JAX's default matmul precision where the profile
    dtype names one (``fp32`` -> highest, ``tf32`` -> tensorfloat32), so that
    float32 matmuls run as the profile says on devices with TF32 units (the CPU
    has none, and its profiles were measured without the setting).
    """
    import jax
    import jax.numpy as jnp

    if dtype not in JAX_DTYPES:
        raise CalibrationError(choices_message("measurement dtype", dtype, tuple(JAX_DTYPES)))
    name, precision = JAX_DTYPES[dtype]
    if precision is not None and platform != "cpu":
        jax.config.update("jax_default_matmul_precision", precision)
    return jnp.dtype(name)


def get_device(name: str = "cpu") -> Any:
    """The first JAX device of platform ``name`` (cpu, gpu, tpu), naming the platforms that exist."""
    import jax

    try:
        devs = jax.devices(name)
    except RuntimeError as e:
        have = sorted({d.platform for d in jax.devices()})
        raise CalibrationError(f"no JAX device for platform {name!r} ({e}); available: {', '.join(have)}") from None
    if not devs:  # pragma: no cover - jax raises instead
        raise CalibrationError(f"no JAX device for platform {name!r}")
    return devs[0]


# ============================================================================================ background load
def _proc_stat() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            parts = f.readline().split()
    except OSError:  # pragma: no cover - non-Linux
        return None
    vals = [float(v) for v in parts[1:9]]
    hz = float(os.sysconf("SC_CLK_TCK"))
    idle = vals[3] + vals[4]  # idle + iowait
    total = sum(vals)
    return (total - idle) / hz, total / hz


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system


class LoadMeter:
    """CPU cores kept busy by *other* processes between `start` and `stop` (machine busy time minus ours).

    Reads ``/proc/stat`` (10 ms ticks), so windows under ~0.1 s are coarse; NaN
    where ``/proc/stat`` does not exist.
    """

    def start(self) -> "LoadMeter":
        self._stat = _proc_stat()
        self._self = _self_cpu()
        self._t = time.perf_counter()
        return self

    def stop(self) -> float:
        end = _proc_stat()
        wall = time.perf_counter() - self._t
        if end is None or self._stat is None or wall <= 0:
            return float("nan")
        busy = end[0] - self._stat[0]
        mine = _self_cpu() - self._self
        return max(0.0, (busy - mine) / wall)


def background_load(window_s: float = 0.25) -> float:
    """Cores used by other processes over the next ``window_s`` seconds (sleeping meanwhile)."""
    m = LoadMeter().start()
    time.sleep(window_s)
    return m.stop()


def wait_for_quiet(threshold: float = 0.3, window_s: float = 0.25, max_wait_s: float = 10.0) -> tuple[float, float]:
    """Sleep until other processes use under ``threshold`` cores (or ``max_wait_s`` passes).

    Returns (seconds waited, last background load seen).
    """
    t0 = time.perf_counter()
    while True:
        load = background_load(window_s)
        waited = time.perf_counter() - t0
        if not load >= threshold or waited >= max_wait_s:  # NaN (no /proc/stat) counts as quiet
            return waited, load


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


# ============================================================================================ XLA cost model
_SHAPE_RE = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\w+\[([\d,]*)\]")
_DOT_RE = re.compile(r"\bdot\(\s*%?([\w.\-]+)\s*,\s*%?([\w.\-]+)\s*\)")
_LHS_CONTRACT_RE = re.compile(r"lhs_contracting_dims=\{([\d,]*)\}")


def hlo_dot_flops(hlo_text: str) -> float:
    """2 x output elements x contracted size, summed over every ``dot`` in an HLO module's text.

    Dots inside a ``while`` body are counted once (as XLA's own cost analysis does).
    """
    shapes: dict[str, tuple[int, ...]] = {}
    total = 0.0
    for line in hlo_text.splitlines():
        m = _SHAPE_RE.match(line)
        if not m:
            continue
        name, dims = m.group(1), m.group(2)
        shape = tuple(int(d) for d in dims.split(",") if d)
        shapes[name] = shape
        d = _DOT_RE.search(line)
        if d is None:
            continue
        lhs = shapes.get(d.group(1))
        c = _LHS_CONTRACT_RE.search(line)
        if lhs is None or c is None:
            logger.debug("cannot size dot %s in HLO", name)
            return float("nan")
        contract = [int(i) for i in c.group(1).split(",") if i]
        k = math.prod(lhs[i] for i in contract)
        total += 2.0 * math.prod(shape) * k
    return total


def _cost_value(ca: Any, key: str) -> float:
    """One entry of ``cost_analysis()`` output (dict, or list of dicts in older jax); NaN when missing or < 0."""
    if ca is None:
        return float("nan")
    if isinstance(ca, (list, tuple)):
        vals = [_cost_value(d, key) for d in ca]
        vals = [v for v in vals if math.isfinite(v)]
        return float(sum(vals)) if vals else float("nan")
    try:
        v = float(ca.get(key, float("nan")))
    except (TypeError, ValueError, AttributeError):
        return float("nan")
    return v if math.isfinite(v) and v >= 0 else float("nan")


def xla_cost(compiled: Any) -> dict[str, float]:
    """XLA's view of a compiled program: flops, dot flops, bytes accessed, transcendentals (NaN when unknown)."""
    try:
        ca = compiled.cost_analysis()
    except Exception as e:  # noqa: BLE001 - some backends raise NotImplementedError / XlaRuntimeError
        logger.debug("cost_analysis unavailable: %s", e)
        ca = None
    try:
        dot = hlo_dot_flops(compiled.as_text())
    except Exception as e:  # noqa: BLE001
        logger.debug("HLO text unavailable: %s", e)
        dot = float("nan")
    return {"xla_flops": _cost_value(ca, "flops"), "xla_dot_flops": dot,
            "xla_bytes": _cost_value(ca, "bytes accessed"),
            "xla_transcendentals": _cost_value(ca, "transcendentals")}


# ======================================================================================= benchmark cases
@dataclass(frozen=True)
class Case:
    """One benchmark: ``kind`` (see `CASE_KINDS`), a unique ``name`` and JSON-able ``params``.

    Params by kind (``b`` batch, ``s`` sequence, ``m`` rows = b*s):
      peak/matmul: m, k, n.  dense: m, k, n, act, residual, norm.  stream: n (floats summed: read bandwidth).
      vector_peak: n, depth.  attention: b, heads, s, d.  softmax: b, heads, s.  layernorm: m, h.
      gather: b, s, vocab, h (BERT embeddings + LayerNorm).
      chain: op (`CHAIN_OPS`), n (ops in the call) and the op's shape: dense m, h (``relu(x @ W_i + b_i)``,
      (m, h) -> (m, h), a different W_i each step); softmax b, heads, s. One call runs ``n`` small ops, so
      the slope over ``n`` is the per-op overhead inside a compiled program and the intercept the per-call
      overhead, which single-op micro-benchmarks cannot tell apart.
      layer: arch (a 1-layer BERT StudentArch dict), b, s.  student: arch (StudentArch dict), b, s.
    """

    kind: str
    name: str
    params: Mapping[str, Any]
    split: str = ""  # "train" | "test" for students; "" otherwise
    repeat: int = 0  # >0 for noise-floor re-measurements of the same case
    pass_: int = 0  # which measurement pass (a case is measured once per pass, at different times)

    def __post_init__(self) -> None:
        if self.kind not in CASE_KINDS:
            raise CalibrationError(choices_message("case kind", self.kind, CASE_KINDS))

    @property
    def batch(self) -> int:
        return int(self.params.get("b", 0))

    @property
    def seq(self) -> int:
        return int(self.params.get("s", 0))

    def arch(self) -> StudentArch:
        if "arch" not in self.params:
            raise CalibrationError(f"case {self.name!r} of kind {self.kind!r} has no arch")
        return StudentArch.from_dict(self.params["arch"])

    def params_json(self) -> str:
        return json.dumps(dict(self.params), sort_keys=True)


def _act_fn(name: str) -> Callable[[Any], Any]:
    import jax

    if name not in ACTIVATIONS:
        raise CalibrationError(choices_message("activation", name, ACTIVATIONS))
    return {"relu": jax.nn.relu, "gelu": lambda x: jax.nn.gelu(x, approximate=False),
            "gelu_new": lambda x: jax.nn.gelu(x, approximate=True), "tanh": jax.numpy.tanh,
            "silu": jax.nn.silu}[name]


def _layer_norm(x: Any, g: Any, b: Any, eps: float = 1e-12) -> Any:
    import jax.numpy as jnp

    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)
    return (x - mu) * (1.0 / jnp.sqrt(var + eps)) * g + b


def _attention(q: Any, k: Any, v: Any, mask_bias: Any) -> Any:
    """(b, heads, s, d) scaled dot-product attention with an additive (b, 1, 1, s) mask."""
    import jax
    import jax.numpy as jnp

    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) * scale + mask_bias
    return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(scores, axis=-1), v)


def _bert_layer(p: Mapping[str, Any], x: Any, mask_bias: Any, heads: int, act: Callable[[Any], Any]) -> Any:
    """A post-LN BERT encoder layer in plain jax.numpy (the `layer` micro-benchmark)."""
    b, s, h = x.shape
    d = h // heads

    def split(t: Any) -> Any:
        return t.reshape(b, s, heads, d).transpose(0, 2, 1, 3)

    q, k, v = (split(x @ p[f"w{n}"] + p[f"b{n}"]) for n in "qkv")
    ctx = _attention(q, k, v, mask_bias).transpose(0, 2, 1, 3).reshape(b, s, h)
    a = _layer_norm(ctx @ p["wo"] + p["bo"] + x, p["g1"], p["e1"])
    i = act(a @ p["wi"] + p["bi"])
    return _layer_norm(i @ p["wf"] + p["bf"] + a, p["g2"], p["e2"])


def build_case(case: Case, dtype: Any = None, seed: int = 0) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """The function to time for ``case`` and its (host) arguments."""
    import jax
    import jax.numpy as jnp

    dtype = dtype or jnp.float32
    rng = np.random.default_rng(seed)
    p = case.params

    def arr(*shape: int, scale: float = 0.05) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.dtype(dtype))

    k = case.kind
    if k in ("peak", "matmul"):
        return (lambda a, w: a @ w), (arr(p["m"], p["k"]), arr(p["k"], p["n"]))
    if k == "dense":
        act = _act_fn(p["act"])

        def dense(a: Any, w: Any, bias: Any, res: Any, g: Any, e: Any) -> Any:
            y = act(a @ w + bias)
            if p["residual"]:
                y = y + res
            return _layer_norm(y, g, e) if p["norm"] else y

        return dense, (arr(p["m"], p["k"]), arr(p["k"], p["n"]), arr(p["n"]), arr(p["m"], p["n"]),
                       arr(p["n"]) + 1, arr(p["n"]))
    if k == "stream":  # a read-only pass (a fresh large output would time page faults, not bandwidth)
        # always float32: the bandwidth is read off 4 bytes per element, whatever dtype the matmuls use
        return (lambda x: jnp.sum(x)), ((rng.standard_normal(p["n"], dtype=np.float32) * 0.05),)
    if k == "vector_peak":
        depth = int(p["depth"])

        def chain(x: Any) -> Any:
            for i in range(depth):  # one multiply-add per element per step: 2 FLOPs
                x = x * 0.999 + (0.001 * (i + 1))
            return x

        return chain, ((rng.standard_normal(p["n"], dtype=np.float32) * 0.05),)  # float32: the vector peak
    if k == "attention":
        shape = (p["b"], p["heads"], p["s"], p["d"])
        mask = np.zeros((p["b"], 1, 1, p["s"]), dtype=np.dtype(dtype))
        return _attention, (arr(*shape, scale=1.0), arr(*shape, scale=1.0), arr(*shape), mask)
    if k == "softmax":
        return (lambda x: jax.nn.softmax(x, axis=-1)), (arr(p["b"], p["heads"], p["s"], p["s"], scale=1.0),)
    if k == "layernorm":
        return _layer_norm, (arr(p["m"], p["h"], scale=1.0), arr(p["h"]) + 1, arr(p["h"]))
    if k == "gather":
        b, s, h, vocab = p["b"], p["s"], p["h"], p["vocab"]

        def embed(ids: Any, tt: Any, we: Any, pe: Any, te: Any, g: Any, e: Any) -> Any:
            x = jnp.take(we, ids, axis=0) + pe[None, :s] + jnp.take(te, tt, axis=0)
            return _layer_norm(x, g, e)

        ids = rng.integers(0, vocab, size=(b, s), dtype=np.int32)
        tt = np.zeros((b, s), dtype=np.int32)
        return embed, (ids, tt, arr(vocab, h), arr(512, h), arr(2, h), arr(h) + 1, arr(h))
    if k == "chain":
        n = int(p["n"])
        if p["op"] == "dense":
            def dense_chain(x: Any, ws: Any, bs: Any) -> Any:
                for w, bias in zip(ws, bs):
                    x = jax.nn.relu(x @ w + bias)
                return x

            h = p["h"]
            return dense_chain, (arr(p["m"], h, scale=1.0), tuple(arr(h, h, scale=h ** -0.5) for _ in range(n)),
                                 tuple(arr(h) for _ in range(n)))
        if p["op"] == "softmax":
            def softmax_chain(x: Any) -> Any:
                for _ in range(n):
                    x = jax.nn.softmax(x * 4.0, axis=-1)  # scaled so every step is real work
                return x

            return softmax_chain, (arr(p["b"], p["heads"], p["s"], p["s"], scale=1.0),)
        raise CalibrationError(choices_message("chain op", p["op"], CHAIN_OPS))
    if k == "layer":
        a = case.arch()
        if a.family != "bert" or a.num_hidden_layers != 1:
            raise CalibrationError(f"layer case {case.name!r} needs a 1-layer family='bert' arch")
        b, s, h, f = p["b"], p["s"], a.hidden_size, a.intermediate_size
        params = {f"w{n}": arr(h, h) for n in "qkvo"}
        params.update({f"b{n}": arr(h) for n in "qkvo"})
        params.update(wi=arr(h, f), bi=arr(f), wf=arr(f, h), bf=arr(h), g1=arr(h) + 1, e1=arr(h), g2=arr(h) + 1,
                      e2=arr(h))
        act = _act_fn(a.hidden_act)
        heads = a.num_attention_heads
        mask = np.zeros((b, 1, 1, s), dtype=np.dtype(dtype))
        return (lambda prm, x, mb: _bert_layer(prm, x, mb, heads, act)), (params, arr(b, s, h, scale=1.0), mask)
    if k == "student":
        return _build_student(case.arch(), case.batch, case.seq, dtype, seed)
    raise CalibrationError(choices_message("case kind", k, CASE_KINDS))  # pragma: no cover


def models_available() -> bool:
    """True when the Flax student (`autodistill.models`) can be imported."""
    try:
        from autodistill.models import StudentModel, init_params  # noqa: F401
    except ImportError:
        return False
    return True


def _build_student(arch: StudentArch, batch: int, seq: int, dtype: Any, seed: int
                   ) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """One inference of the Flax student: (params, ids, mask) -> last_hidden_state."""
    import jax

    try:
        from autodistill.models import StudentModel, init_params
    except ImportError as e:
        raise CalibrationError(f"whole-student cases need autodistill.models (the Flax student): {e}") from None
    model = StudentModel(arch=arch, dtype=dtype, mlm_head=False)
    params = init_params(model, jax.random.PRNGKey(seed), batch=1, seq=min(seq, 16))
    if np.dtype(dtype) != np.float32:  # serve in the compute dtype: weights stored in it, no casts per call
        params = jax.tree.map(lambda x: x.astype(dtype), params)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, arch.vocab_size, size=(batch, seq), dtype=np.int32)
    mask = np.ones((batch, seq), dtype=np.int32)

    def forward(prm: Any, input_ids: Any, attention_mask: Any) -> Any:
        return model.apply({"params": prm}, input_ids, token_type_ids=None,
                           attention_mask=attention_mask).last_hidden_state

    return forward, (params, ids, mask)


# ================================================================================================ the suites
def _mk(kind: str, **params: Any) -> Case:
    name = kind + "-" + "-".join(f"{k}{v}" for k, v in params.items() if k not in ("arch",))
    if "arch" in params:
        arch = StudentArch.from_dict(params["arch"])
        tag = hashlib.sha1(json.dumps(arch.to_dict(), sort_keys=True).encode()).hexdigest()[:6]
        name = f"{kind}-{arch.short_name()}-{tag}-b{params['b']}-s{params['s']}"
    return Case(kind, name, params)


#: JAX platforms a suite can be sized for.
PLATFORMS = ("cpu", "gpu", "tpu")


def micro_suite(size: str = "small", seed: int = 0, platform: str = "cpu") -> list[Case]:
    """Micro-benchmarks: base rates (peak, stream, vector), then one group per op kind.

    ``tiny`` is for tests (a few small cases), ``small`` a quick check, ``full``
    the calibration suite. Shapes include widths off the matrix-unit tile (100,
    312, 1000, 1200) and typical BERT widths. On an accelerator (``platform``
    gpu or tpu) the base-rate cases are sized for it: a 1024^3 matmul or a
    64 MiB read takes a few microseconds there, so launch overhead, not the
    peak or the bandwidth, would be measured; they become an 8192^3 matmul, a
    1 GiB read (past any L2) and a 64 Mi-element multiply-add chain. The op
    cases keep the students' shapes on every platform.
    """
    if size not in SUITE_SIZES:
        raise CalibrationError(choices_message("suite size", size, SUITE_SIZES))
    if platform not in PLATFORMS:
        raise CalibrationError(choices_message("platform", platform, PLATFORMS))
    rng = np.random.default_rng(seed)
    cases: list[Case] = []
    if size == "tiny":
        cases += [_mk("matmul", m=64, k=128, n=128), _mk("matmul", m=50, k=100, n=312),
                  _mk("dense", m=64, k=128, n=256, act="gelu", residual=False, norm=False),
                  _mk("attention", b=1, heads=2, s=32, d=32), _mk("softmax", b=1, heads=2, s=32),
                  _mk("layernorm", m=64, h=128), _mk("gather", b=1, s=32, vocab=1000, h=128),
                  _mk("chain", op="dense", n=4, m=16, h=32),
                  _mk("layer", arch=_bert1(128, 2, 256, "gelu"), b=1, s=32)]
        return cases
    full = size == "full"
    if platform == "cpu":
        cases += [_mk("peak", m=1024, k=1024, n=1024) if full else _mk("peak", m=512, k=512, n=512)]
        cases += [_mk("stream", n=16 << 20), _mk("stream", n=1 << 20)]  # 64 MiB (DRAM) and 4 MiB (cache)
        cases += [_mk("vector_peak", n=64 << 10, depth=64)]
    else:
        cases += [_mk("peak", m=8192, k=8192, n=8192) if full else _mk("peak", m=4096, k=4096, n=4096)]
        cases += [_mk("stream", n=256 << 20), _mk("stream", n=4 << 20)]  # 1 GiB (HBM) and 16 MiB (L2)
        cases += [_mk("vector_peak", n=64 << 20, depth=256)]
    # matmuls: rows (= batch x seq) by (K, N), on and off the tile
    ms = (16, 64, 128, 256, 512, 1024) if full else (32, 256)
    widths = (64, 100, 128, 256, 312, 384, 512, 768, 1000, 1024, 1200, 2048, 3072) if full else (128, 312, 768)
    pairs = [(k, n) for k in widths for n in widths]
    n_mm = 60 if full else 6
    for i in rng.choice(len(ms) * len(pairs), size=min(n_mm, len(ms) * len(pairs)), replace=False):
        m = ms[int(i) // len(pairs)]
        k, n = pairs[int(i) % len(pairs)]
        cases.append(_mk("matmul", m=m, k=k, n=n))
    # dense layers with fused epilogues (bias, activation, residual, norm)
    n_dense = 24 if full else 3
    for _ in range(n_dense):
        m = int(rng.choice(ms))
        k, n = (int(x) for x in rng.choice(widths, 2))
        cases.append(_mk("dense", m=m, k=k, n=n, act=str(rng.choice(["relu", "gelu"])),
                         residual=bool(rng.integers(2)), norm=bool(rng.integers(2))))
    # attention, softmax, norms, gathers
    att = [(b, h, s, d) for b in (1, 4, 8) for h in (2, 4, 12) for s in (32, 64, 128) for d in (32, 64)]
    n_att = 16 if full else 2
    for i in rng.choice(len(att), size=n_att, replace=False):
        b, h, s, d = att[int(i)]
        cases.append(_mk("attention", b=b, heads=h, s=s, d=d))
    for b, h, s in ([(1, 4, 128), (8, 4, 128), (4, 12, 64), (8, 2, 32), (2, 8, 128), (1, 2, 32)] if full
                    else [(1, 4, 64)]):
        cases.append(_mk("softmax", b=b, heads=h, s=s))
    for m, h in ([(128, 128), (512, 256), (1024, 512), (64, 768), (1024, 128), (256, 1024)] if full
                 else [(256, 256)]):
        cases.append(_mk("layernorm", m=m, h=h))
    for b, s, h in ([(1, 32, 128), (1, 128, 256), (8, 128, 512), (4, 64, 384), (8, 32, 768)] if full
                    else [(2, 64, 256)]):
        cases.append(_mk("gather", b=b, s=s, vocab=30522, h=h))
    # chains of n small ops in one call: per-op overhead (slope) apart from per-call overhead (intercept)
    for n in ((1, 4, 16, 48) if full else (1, 16)):
        cases.append(_mk("chain", op="dense", n=n, m=32, h=64))
        cases.append(_mk("chain", op="softmax", n=n, b=1, heads=2, s=32))
    if full:
        for n in (1, 8, 24):
            cases.append(_mk("chain", op="dense", n=n, m=256, h=128))
    # whole encoder layers
    layers = [(128, 2, 512, 1, 128), (256, 4, 1024, 4, 64), (384, 12, 1536, 8, 128), (512, 8, 2048, 2, 128),
              (768, 12, 3072, 1, 128), (312, 12, 1200, 4, 32), (256, 4, 512, 8, 32), (512, 8, 1024, 8, 64)]
    for h, heads, f, b, s in (layers if full else layers[:2]):
        cases.append(_mk("layer", arch=_bert1(h, heads, f, "gelu"), b=b, s=s))
    return cases


def _bert1(h: int, heads: int, f: int, act: str) -> dict[str, Any]:
    return StudentArch(family="bert", num_hidden_layers=1, hidden_size=h, embedding_size=h, num_attention_heads=heads,
                       intermediate_size=f, num_feedforward_networks=1, use_bottleneck=False, intra_bottleneck_size=h,
                       key_query_shared_bottleneck=False, trigram_input=False, normalization_type="layer_norm",
                       hidden_act=act).to_dict()


def sample_student(rng: np.random.Generator) -> StudentArch:
    """One architecture from the search space (the MobileBERT family, with BERT as a member).

    MobileBERT students (80%): 2-24 layers, hidden 128-768, bottleneck 64-256,
    1-8 heads, 1-4 stacked FFNs of width 128-1536, NoNorm or LayerNorm, ReLU or
    GELU, trigram input or not, bottleneck or shared query/key attention input.
    BERT students (20%): 2-6 layers, hidden 128-768, FFN 2-4x hidden.
    """
    if rng.random() < 0.2:
        h = int(rng.choice([128, 192, 256, 312, 384, 512, 768]))
        heads = int(rng.choice([d for d in (2, 4, 6, 8, 12) if h % d == 0]))
        return StudentArch(family="bert", num_hidden_layers=int(rng.choice([2, 3, 4, 6])), hidden_size=h,
                           embedding_size=h, num_attention_heads=heads, intermediate_size=int(h * rng.choice([2, 3, 4])),
                           num_feedforward_networks=1, use_bottleneck=False, intra_bottleneck_size=h,
                           key_query_shared_bottleneck=False, trigram_input=False, normalization_type="layer_norm",
                           hidden_act=str(rng.choice(["gelu", "relu"])))
    h = int(rng.choice([128, 256, 384, 512, 640, 768]))
    use_b = bool(rng.random() < 0.85)
    t = int(rng.choice([b for b in (64, 96, 128, 192, 256) if b <= h])) if use_b else h
    heads = int(rng.choice([d for d in (1, 2, 4, 8) if t % d == 0 and t // d >= 16]))
    b_att = bool(use_b and rng.random() < 0.4)
    kq = bool(use_b and not b_att and (t != h or rng.random() < 0.5))
    return StudentArch(
        family="mobilebert", num_hidden_layers=int(rng.choice([2, 4, 6, 8, 12, 16, 24])), hidden_size=h,
        embedding_size=int(rng.choice([64, 128])), num_attention_heads=heads,
        intermediate_size=int(rng.choice([128, 256, 512, 768, 1024, 1536])),
        num_feedforward_networks=int(rng.choice([1, 2, 3, 4])), use_bottleneck=use_b, intra_bottleneck_size=t,
        use_bottleneck_attention=b_att, key_query_shared_bottleneck=kq, trigram_input=bool(rng.random() < 0.8),
        normalization_type=str(rng.choice(["no_norm", "layer_norm"])), hidden_act=str(rng.choice(["relu", "gelu"])))


#: How `student_suite` spreads its students: as drawn, or evenly over log FLOPs.
SPREADS = ("uniform", "log_flops")
#: Name of the built-in broad sampler (`sample_student`) among `student_suite`'s sources.
BROAD = "broad"


def _space_sampler(name: str, seed: int) -> Callable[[np.random.Generator], StudentArch]:
    """Uniform draws from the feasible pool of a search space (`autodistill.space`)."""
    from autodistill.space import build_pool, load_space

    try:
        pool = build_pool(load_space(name), max_candidates=200_000, seed=seed)
    except Exception as e:  # noqa: BLE001 - name the space whatever went wrong
        raise CalibrationError(f"cannot draw students from search space {name!r}: {e}") from None
    return lambda rng: pool.arch(int(rng.integers(len(pool))))


def student_suite(n: int, seed: int = 0, *, test_fraction: float = 0.4, batches: Sequence[int] = (1, 2, 4, 8),
                  seqs: Sequence[int] = (16, 32, 64, 128), max_gflops: float = 12.0,
                  sources: Sequence[str] = (BROAD,), spread: str = "uniform") -> list[Case]:
    """``n`` whole students at random batch sizes and sequence lengths, split train/test by a seeded draw.

    Students come in turn from each of ``sources``: a search-space name (see
    ``autodistill.space.list_spaces()``: uniform draws from its feasible pool) or
    ``"broad"` (`sample_student`, which also covers BERT, LayerNorm, GELU and
    no-bottleneck students). Students whose forward pass exceeds ``max_gflops``
    (matmul FLOPs) are redrawn, which keeps one inference on one CPU core
    under about a tenth of a second.

    ``spread="log_flops"`` draws a pool 20 times larger the same way and keeps
    the ``n`` students nearest to ``n`` points evenly spaced in log FLOPs over
    the pool's range. Uniform draws put most students near the budget (deep,
    wide ones at long sequences), while a search's fastest students, the ones
    its confirmation measures, sit one to three decades lower.
    """
    if spread not in SPREADS:
        raise CalibrationError(choices_message("student spread", spread, SPREADS))
    if spread == "log_flops" and n > 0:
        pool = student_suite(20 * n, seed, test_fraction=test_fraction, batches=batches, seqs=seqs,
                             max_gflops=max_gflops, sources=sources)
        lg = np.log10([max(c.arch().flops_per_token(c.seq) * c.batch * c.seq, 1.0) for c in pool])
        rng = np.random.default_rng(seed + 7919)
        free = np.ones(len(pool), bool)
        chosen = []
        for t in rng.permutation(np.linspace(lg.min(), lg.max(), n)):
            i = int(np.argmin(np.where(free, np.abs(lg - t), np.inf)))
            free[i] = False
            chosen.append(pool[i])
        chosen.sort(key=lambda c: c.name)
        return _split(chosen, test_fraction, rng)
    if n < 0:
        raise CalibrationError(f"number of students must be >= 0, got {n}")
    if not 0.0 < test_fraction < 1.0:
        raise CalibrationError(f"test_fraction={test_fraction} must be in (0, 1)")
    if not sources:
        raise CalibrationError("student_suite needs at least one source")
    samplers = [sample_student if src == BROAD else _space_sampler(src, seed) for src in sources]
    rng = np.random.default_rng(seed)
    cases: list[Case] = []
    seen: set[str] = set()
    tries = 0
    while len(cases) < n:
        tries += 1
        if tries > 100 * (n + 1):
            raise CalibrationError(f"could not draw {n} students under {max_gflops} GFLOP; raise max_gflops")
        arch = samplers[len(cases) % len(samplers)](rng)
        b, s = int(rng.choice(batches)), int(rng.choice(seqs))
        if arch.flops_per_token(s) * b * s > max_gflops * 1e9:
            continue
        c = _mk("student", arch=arch.to_dict(), b=b, s=s)
        if c.name in seen:
            continue
        seen.add(c.name)
        cases.append(c)
    return _split(cases, test_fraction, rng)


def _split(cases: list[Case], test_fraction: float, rng: np.random.Generator) -> list[Case]:
    """``cases`` with a seeded train/test split: ``round(test_fraction * n)`` of them held out."""
    n = len(cases)
    test_idx = set(rng.permutation(n)[:int(round(test_fraction * n))].tolist())
    return [dataclasses.replace(c, split="test" if i in test_idx else "train") for i, c in enumerate(cases)]


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
    def for_device(cls, device: str, **kw: Any) -> "RunOptions":
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
    for attempt in range(1 + max(0, opts.retries)):
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
              max_time_s: float | None = None) -> "pd.DataFrame":  # noqa: F821
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
        fp["date"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        row = measure_case(c, device, opts, dtype, fp)
        rows.append(row)
        if progress is not None:
            progress(i, len(cases), row)
    return measurement_table(rows)


def measurement_table(rows: Iterable[Mapping[str, Any]]) -> "pd.DataFrame":  # noqa: F821
    """Rows as a DataFrame with the `TABLE_COLUMNS` + `FINGERPRINT_COLUMNS` layout."""
    import pandas as pd

    df = pd.DataFrame(list(rows))
    cols = list(TABLE_COLUMNS) + list(FINGERPRINT_COLUMNS)
    for c in cols:
        if c not in df.columns:
            df[c] = np.nan if c not in ("split", "samples_s", "cpu_samples_s", "xla_flags") else ""
    extra = [c for c in df.columns if c not in cols]
    return df[cols + extra]


def save_measurements(df: "pd.DataFrame", path: str | os.PathLike[str]) -> Path:  # noqa: F821
    """Write the measurement table as CSV (``.csv``) or parquet (``.parquet``, needs pyarrow)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".parquet":
        df.to_parquet(tmp, index=False)
    elif path.suffix == ".csv":
        df.to_csv(tmp, index=False)
    else:
        raise CalibrationError(f"measurement file {str(path)!r} must end in .csv or .parquet")
    os.replace(tmp, path)
    return path


def load_measurements(path: str | os.PathLike[str]) -> "pd.DataFrame":  # noqa: F821
    """Read a table written by `save_measurements`, checking its columns."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"measurement file {str(path)!r} does not exist")
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(path, keep_default_na=False, na_values=["", "nan", "NaN"])
    missing = [c for c in ("kind", "name", "params", "median_s") if c not in df.columns]
    if missing:
        raise CalibrationError(f"{path}: measurement table lacks column(s) {missing}")
    for c in ("split", "xla_flags", "stop_reason", "samples_s", "cpu_samples_s"):
        if c in df.columns:
            df[c] = df[c].fillna("").astype(str)
    return df


__all__ = ["ACCELERATOR_WARMUP_S", "CASE_KINDS", "PLATFORMS", "TIME_COLUMN", "TIME_DESCRIPTIONS", "Case", "LoadMeter", "RunOptions", "Timing", "background_load", "build_case", "compile_fn", "env_fingerprint", "get_device",
           "hlo_dot_flops", "jax_dtype", "JAX_DTYPES", "load_measurements", "measure_case", "measurement_table", "micro_suite",
           "models_available", "pin_cores", "run_cases", "sample_student", "save_measurements", "student_suite", "summarize",
           "time_compiled", "time_fn", "wait_for_quiet", "xla_cost"]
