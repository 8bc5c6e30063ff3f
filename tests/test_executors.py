from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from autodistill.errors import ConfigError
from autodistill.executors import LocalExecutor, check_address, make_executor


def square_or_fail(x: int) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return x * x


def die_once(marker: str) -> int:
    """Kills its own worker process the first time it runs; succeeds on the retry."""
    p = Path(marker)
    if not p.exists():
        p.write_text("died")
        os._exit(1)
    return os.getpid()


def test_local_executor_records_failures_and_goes_on() -> None:
    outs = sorted(LocalExecutor().map_unordered(square_or_fail, [1, 2, 3, 4]), key=lambda o: o.index)
    assert [o.ok for o in outs] == [True, True, False, True]
    assert [o.value for o in outs if o.ok] == [1, 4, 16]
    assert "ValueError: three is not allowed" in outs[2].error


def test_bad_executor_and_address_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown executor 'dask'; valid choices: local, ray"):
        make_executor("dask")
    with pytest.raises(ConfigError, match="only meaningful with --executor ray"):
        make_executor("local", address="127.0.0.1:6379")
    with pytest.raises(ConfigError, match="must look like HOST:PORT"):
        check_address("nonsense")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"127.0.0.1:{port}' is unreachable"):
        make_executor("ray", address=f"127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 10


def _ray_listeners() -> list[str]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=30).stdout
    return [line for line in out.splitlines() if any(k in line for k in ("gcs_server", "raylet", "ray::"))]


@pytest.fixture(scope="module")
def ray_executor():
    pytest.importorskip("ray")
    ex = make_executor("ray", num_workers=2)
    # Workers cannot import this test module: ship its functions by value.
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ex
    ex.close()


def test_ray_runs_items_and_records_failures(ray_executor) -> None:
    outs = sorted(ray_executor.map_unordered(square_or_fail, [1, 2, 3, 4]), key=lambda o: o.index)
    assert [o.ok for o in outs] == [True, True, False, True]
    assert [o.value for o in outs if o.ok] == [1, 4, 16]
    assert "three is not allowed" in outs[2].error


def test_ray_listens_on_loopback_only(ray_executor) -> None:
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed")
    lines = _ray_listeners()
    assert lines, "no Ray listeners found"
    for line in lines:
        local = line.split()[3]
        assert local.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")), line


def test_ray_worker_death_loses_only_its_item_and_is_retried(ray_executor, tmp_path: Path) -> None:
    markers = [str(tmp_path / f"m{i}") for i in range(3)]
    Path(markers[1]).write_text("already died")  # only items 0 and 2 die once
    outs = list(ray_executor.map_unordered(die_once, markers))
    assert len(outs) == 3 and all(o.ok for o in outs), [o.error for o in outs]
    assert all(Path(m).read_text() for m in markers)
