"""Where trials run: in this process (default) or on Ray workers.

An executor maps a picklable function over items and yields a `TaskOutcome`
per item as each finishes. A failing item (an exception in ``fn``) is an
outcome with ``ok=False``, never an exception in the caller. With Ray, a
worker process that dies loses only its own item, which Ray retries up to
``max_retries`` times.

A local Ray instance is started on the loopback interface only (every Ray
server listens on 127.0.0.1); ``address`` connects to an existing cluster
instead, after checking that it answers.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from autodistill.errors import ConfigError, choices_message

logger = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class TaskOutcome:
    """Result of one item: ``value`` when ``ok``, else ``error`` (a one-line reason plus traceback)."""

    index: int
    ok: bool
    value: Any = None
    error: str | None = None
    wall_time_s: float = 0.0


class Executor(Protocol):
    def map_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[TaskOutcome]: ...

    def close(self) -> None: ...


def _call(fn: Callable[[Any], Any], item: Any) -> tuple[bool, Any, str | None, float]:
    t0 = time.perf_counter()
    try:
        value = fn(item)
        return True, value, None, time.perf_counter() - t0
    except Exception as e:  # an item's failure is data, not a crash of the caller
        return False, None, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}", time.perf_counter() - t0


class LocalExecutor:
    """Runs items one after another in this process."""

    def map_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[TaskOutcome]:
        for i, item in enumerate(items):
            ok, value, err, dt = _call(fn, item)
            if not ok:
                logger.warning("item %d failed: %s", i, err.splitlines()[0] if err else "")
            yield TaskOutcome(i, ok, value, err, dt)

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_address(address: str, timeout_s: float = 3.0) -> tuple[str, int]:
    """Parse ``host:port`` and check that something accepts TCP connections there, before any work."""
    host, sep, port_s = address.rpartition(":")
    if not sep or not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ConfigError(f"Ray address {address!r} must look like HOST:PORT (e.g. 127.0.0.1:6379)")
    try:
        with socket.create_connection((host, int(port_s)), timeout=timeout_s):
            pass
    except OSError as e:
        raise ConfigError(f"Ray address {address!r} is unreachable ({e}); start the cluster or omit --address "
                          "to run a local instance") from None
    return host, int(port_s)


def _import_ray_on_loopback():
    """Import ray so that a local instance binds every server to 127.0.0.1.

    Ray binds to the host's interface unless its 'cluster' mode is off; the
    switch is read when ray is first imported, so it is set here before that.
    """
    if "ray" not in sys.modules:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray._private import ray_constants

    if ray_constants.ENABLE_RAY_CLUSTER:  # ray was imported earlier by someone else
        ray_constants.ENABLE_RAY_CLUSTER = False
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return ray


class RayExecutor:
    """Runs items as Ray tasks, ``num_workers`` at a time.

    Args:
        address: ``HOST:PORT`` of an existing cluster; None starts a local instance on 127.0.0.1.
        num_workers: CPUs given to a local instance (default: all cores).
        max_retries: re-runs of an item whose worker process died.
        num_cpus_per_task: Ray CPU request per item.
    """

    def __init__(self, address: str | None = None, num_workers: int | None = None, max_retries: int = 2,
                 num_cpus_per_task: float = 1.0) -> None:
        if num_workers is not None and num_workers < 1:
            raise ConfigError(f"num_workers={num_workers} must be >= 1")
        if max_retries < 0:
            raise ConfigError(f"max_retries={max_retries} must be >= 0")
        if address is not None:
            check_address(address)
        self._ray = _import_ray_on_loopback()
        self.max_retries = max_retries
        self.num_cpus_per_task = num_cpus_per_task
        self._owns_instance = False
        self._lock = threading.Lock()
        self._fn_refs: dict[int, tuple[Any, Any]] = {}
        self._remote: Any = None
        if not self._ray.is_initialized():
            kw: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            if address is None:
                kw.update(num_cpus=num_workers or os.cpu_count() or 1)
                self._ray.init(**kw)
            else:
                self._ray.init(address=address, **kw)
            self._owns_instance = True
        logger.info("Ray executor on %s", self._ray.get_runtime_context().gcs_address)

    def map_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[TaskOutcome]:
        ray = self._ray
        remote = ray.remote(num_cpus=self.num_cpus_per_task, max_retries=self.max_retries,
                            retry_exceptions=False)(_call)
        fn_ref = ray.put(fn)
        pending = {remote.remote(fn_ref, item): i for i, item in enumerate(items)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            i = pending.pop(ref)
            try:
                ok, value, err, dt = ray.get(ref)
            except Exception as e:  # worker died more than max_retries times, or the task could not run
                ok, value, err, dt = False, None, f"{type(e).__name__}: {e}", 0.0
            if not ok:
                logger.warning("item %d failed: %s", i, (err or "").splitlines()[0])
            yield TaskOutcome(i, ok, value, err, dt)

    def call(self, fn: Callable[[Any], Any], item: Any) -> TaskOutcome:
        """Run one item as a Ray task and wait for it (safe from several threads).

        ``fn`` is put into the object store once and reused by later calls.
        """
        ray = self._ray
        with self._lock:
            key = id(fn)
            if key not in self._fn_refs:
                self._fn_refs[key] = (fn, ray.put(fn))
            fn_ref = self._fn_refs[key][1]
            if self._remote is None:
                self._remote = ray.remote(num_cpus=self.num_cpus_per_task, max_retries=self.max_retries,
                                          retry_exceptions=False)(_call)
        try:
            ok, value, err, dt = ray.get(self._remote.remote(fn_ref, item))
        except Exception as e:  # worker died more than max_retries times
            ok, value, err, dt = False, None, f"{type(e).__name__}: {e}", 0.0
        return TaskOutcome(0, ok, value, err, dt)

    def close(self) -> None:
        if self._owns_instance and self._ray.is_initialized():
            self._ray.shutdown()
            self._owns_instance = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TaskEvaluator:
    """A search evaluator that runs each evaluation as one task of ``executor`` (`RayExecutor.call`); the
    search runner's worker threads keep several in flight.

    ``fn((arch_dict, trial_id))`` runs on the worker and returns ``(accuracy or None, metrics)``: plain
    data both ways, so it travels to any worker.
    """

    def __init__(self, executor: Any, fn: Callable[[tuple[dict, int]], tuple[float | None, dict]]) -> None:
        self.executor = executor
        self.fn = fn

    def evaluate(self, arch: Any, trial_id: int = 0) -> Any:
        from autodistill.errors import TrialFailed
        from autodistill.search.types import TrialResult

        out = self.executor.call(self.fn, (arch.to_dict(), trial_id))
        if not out.ok:
            raise TrialFailed(f"trial {trial_id} failed on a Ray worker: {out.error}")
        acc, metrics = out.value
        return TrialResult(accuracy=float("nan") if acc is None else acc, metrics=metrics)


def make_executor(kind: str = "local", address: str | None = None, num_workers: int | None = None) -> Executor:
    """``"local"`` or ``"ray"``; errors name the valid choices."""
    if kind not in EXECUTORS:
        raise ConfigError(choices_message("executor", kind, EXECUTORS))
    if kind == "local":
        if address is not None:
            raise ConfigError("--address is only meaningful with --executor ray")
        return LocalExecutor()
    return RayExecutor(address=address, num_workers=num_workers)
