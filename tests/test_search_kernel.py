"""BoTorch's fused kernel: a process killed while holding torch's build lock must not hang later runs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("botorch")

from autodistill.errors import SearchError
from autodistill.search import kernel

REPO = Path(__file__).resolve().parents[1]

# Takes torch's build lock exactly as cpp_extension.load does, then waits to be killed.
HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from torch.utils.file_baton import FileBaton
    baton = FileBaton(sys.argv[1])
    assert baton.try_acquire()
    print("held", flush=True)
    time.sleep(600)
""")

# Builds the qLogNEHVI acquisition (which loads the kernel) on a tiny GP, as the engine does.
BUILD_ACQF = textwrap.dedent("""
    import sys, torch
    from botorch.models import SingleTaskGP
    from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
    if sys.argv[1] == "guarded":
        import logging
        logging.basicConfig()  # as the CLI does
        from autodistill.search.kernel import ensure_fused_kernel
        assert ensure_fused_kernel(), "kernel not loaded"
    X = torch.rand(6, 2, dtype=torch.float64)
    model = SingleTaskGP(X, torch.rand(6, 2, dtype=torch.float64))
    qLogNoisyExpectedHypervolumeImprovement(model=model, ref_point=[0.0, 0.0], X_baseline=X)
    print("built", flush=True)
""")


def _leave_stale_lock(root: Path) -> Path:
    lock = kernel.torch_lock_path(root)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock.exists()
    return lock


def test_stale_torch_lock_hangs_botorch_but_not_autodistill(private_kernel_dir):
    root = private_kernel_dir
    (root / kernel.EXTENSION_NAME).mkdir(parents=True, exist_ok=True)
    lock = _leave_stale_lock(root)
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"), TORCH_EXTENSIONS_DIR=str(root),
               **{kernel.ENV_DIR: str(root)})
    # BoTorch on its own waits on the dead process's lock forever.
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", BUILD_ACQF, "plain"], env=env, capture_output=True, timeout=8)
    assert lock.exists()
    # autodistill clears it, says so, and builds the acquisition.
    done = subprocess.run([sys.executable, "-c", BUILD_ACQF, "guarded"], env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "built" in done.stdout
    assert "removing a stale torch build lock" in done.stderr and str(lock) in done.stderr
    assert not lock.exists()


def test_guard_waits_for_a_live_holder_and_names_it(tmp_path, caplog, monkeypatch):
    root = tmp_path / "ext"
    monkeypatch.setattr(kernel, "WAIT_REPORT_S", 0.3)
    with kernel.build_guard(root):
        code = ("import sys; from pathlib import Path; from autodistill.search.kernel import build_guard\n"
                "with build_guard(Path(sys.argv[1]), timeout_s=1.0): pass\n")
        res = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, PYTHONPATH=str(REPO / "python")))
        assert res.returncode != 0
        assert f"held by pid {os.getpid()}" in res.stderr
    # released: the next one gets it at once, and a torch lock under it is cleared
    lock = kernel.torch_lock_path(root)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.touch()
    t0 = time.monotonic()
    with caplog.at_level("WARNING"), kernel.build_guard(root, timeout_s=5):
        assert not lock.exists()
    assert time.monotonic() - t0 < 5
    assert "stale torch build lock" in caplog.text


def test_guard_timeout_is_a_search_error(tmp_path, monkeypatch, caplog):
    root = tmp_path / "ext"
    monkeypatch.setattr(kernel, "WAIT_REPORT_S", 0.1)
    code = ("import sys, time; from pathlib import Path; from autodistill.search.kernel import build_guard\n"
            "with build_guard(Path(sys.argv[1])):\n    print('in', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(REPO / "python")))
    try:
        assert holder.stdout.readline().strip() == "in"
        with caplog.at_level("WARNING"), pytest.raises(SearchError, match=r"still held by pid \d+ after 0.5 s"):
            with kernel.build_guard(root, timeout_s=0.5):
                pass
        assert f"waiting 0 s for the BoTorch kernel build in {root} (held by pid {holder.pid})" in caplog.text
    finally:
        holder.kill()
        holder.wait()
    with kernel.build_guard(root, timeout_s=5):  # the holder's death released it
        pass


def test_kernel_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv(kernel.ENV_DIR, str(tmp_path / "k"))
    assert kernel.kernel_dir() == tmp_path / "k"
    monkeypatch.delenv(kernel.ENV_DIR)
    assert kernel.kernel_dir() != tmp_path / "k"
