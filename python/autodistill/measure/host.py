"""Host control: where a number came from, which cores this process uses, and the load of the others.

`env_fingerprint` names the device, JAX versions, XLA flags, host and date of a measurement;
`pin_cores` pins this process to its own core(s) before JAX starts (pinned to one core, XLA runs
single-threaded); `LoadMeter` records how many cores other processes used while a case was timed
and `wait_for_quiet` waits for them; `jax_dtype` and `get_device` resolve a profile dtype and a
platform name for JAX.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import socket
import time
from pathlib import Path
from typing import Any

from autodistill.errors import CalibrationError, choices_message

logger = logging.getLogger(__name__)


#: Profile dtype -> (JAX array dtype, JAX default matmul precision or None). ``tf32`` is float32
#: arrays with TensorFloat-32 matmuls (JAX's own default for float32 on recent NVIDIA GPUs);
#: ``fp32`` asks for full-precision float32 matmuls.
JAX_DTYPES = {"fp32": ("float32", "highest"), "tf32": ("float32", "tensorfloat32"),
              "bf16": ("bfloat16", None), "fp16": ("float16", None)}


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
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
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

    def start(self) -> LoadMeter:
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
