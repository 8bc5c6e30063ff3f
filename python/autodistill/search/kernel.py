"""BoTorch's fused qLogNEHVI C++ kernel, built once into a folder autodistill owns.

BoTorch compiles ``logei_fused_ext`` on first use with ``torch.utils.cpp_extension.load``, whose
only guard is a ``lock`` file in the build folder: a process killed while it holds that file leaves
it behind, and every later process waits on it forever without a word. So autodistill never builds
the kernel in the shared torch extensions cache, and guards its own build:

* The kernel lives in ``kernel_dir()``: ``$AUTODISTILL_TORCH_EXTENSIONS_DIR`` if set, else
  ``<sys.prefix>/share/autodistill/torch_extensions`` when that is writable (the venv that
  ``make`` creates, warmed at set-up by ``python -m autodistill.search.kernel``), else
  ``~/.cache/autodistill/torch_extensions``. A user's ``TORCH_EXTENSIONS_DIR`` is left alone.
* Every autodistill process takes an ``fcntl`` lock on ``<kernel_dir>/autodistill.lock`` before
  it lets torch build or load there. The kernel makes the holder's death release it; while it is
  held the holder's pid is in the file, and a waiter logs what it waits for every few seconds.
* Holding that lock, no other autodistill process can be building, so torch's ``lock`` file, if
  present, is stale: it is removed with a warning naming it.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from autodistill.errors import SearchError

logger = logging.getLogger(__name__)

ENV_DIR = "AUTODISTILL_TORCH_EXTENSIONS_DIR"
EXTENSION_NAME = "logei_fused_ext"  # the name BoTorch passes to torch.utils.cpp_extension.load
GUARD_NAME = "autodistill.lock"
WAIT_REPORT_S = 5.0

_loaded = False


def kernel_dir() -> Path:
    """The folder that holds autodistill's build of the fused kernel (see the module docstring)."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    prefix = Path(sys.prefix) / "share" / "autodistill" / "torch_extensions"
    probe = prefix if prefix.exists() else prefix.parent.parent
    if os.access(probe, os.W_OK):
        return prefix
    return Path.home() / ".cache" / "autodistill" / "torch_extensions"


def torch_lock_path(root: Path) -> Path:
    """Torch's own lock file for the kernel's build folder under ``root``."""
    return root / EXTENSION_NAME / "lock"


@contextlib.contextmanager
def build_guard(root: Path, timeout_s: float | None = None) -> Iterator[None]:
    """Hold autodistill's lock on ``root``; on entry, clear torch's stale lock file.

    Waits for another autodistill process holding it, logging its pid every ``WAIT_REPORT_S``;
    raises `SearchError` after ``timeout_s`` (None: no limit)."""
    root.mkdir(parents=True, exist_ok=True)
    guard = root / GUARD_NAME
    fd = os.open(guard, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        start = last_report = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if timeout_s is not None and now - start > timeout_s:
                    raise SearchError(f"the BoTorch kernel build in {root} is still held by {_holder(guard)} after "
                                      f"{timeout_s:g} s; wait for it, or stop that process") from None
                if now - last_report >= WAIT_REPORT_S:
                    logger.warning("waiting %.0f s for the BoTorch kernel build in %s (held by %s)",
                                   now - start, root, _holder(guard))
                    last_report = now
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        stale = torch_lock_path(root)
        if stale.exists():
            logger.warning("removing a stale torch build lock %s (left by a process that died while building the "
                           "BoTorch kernel; no autodistill process holds %s)", stale, guard)
            stale.unlink(missing_ok=True)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # releases the flock


def _holder(guard: Path) -> str:
    try:
        text = guard.read_text().strip()
    except OSError:
        text = ""
    return text or "another process"


@contextlib.contextmanager
def _extensions_dir(root: Path) -> Iterator[None]:
    old = os.environ.get("TORCH_EXTENSIONS_DIR")
    os.environ["TORCH_EXTENSIONS_DIR"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCH_EXTENSIONS_DIR", None)
        else:
            os.environ["TORCH_EXTENSIONS_DIR"] = old


def ensure_fused_kernel(timeout_s: float | None = None) -> bool:
    """Build (first time, about 30 s) or load BoTorch's fused kernel under the guard; once per process.

    Returns whether BoTorch now has the compiled kernel (False: it falls back to its pure-Python
    path, as it would on its own, with its warning)."""
    global _loaded
    from botorch.acquisition.multi_objective import logei

    if _loaded or getattr(logei, "_load_attempted", True):
        return getattr(logei, "_C", None) is not None
    root = kernel_dir()
    t0 = time.monotonic()
    with build_guard(root, timeout_s), _extensions_dir(root):
        logei._try_load_fused_kernel()
    _loaded = True
    ok = getattr(logei, "_C", None) is not None
    logger.debug("BoTorch fused kernel %s from %s in %.1f s", "loaded" if ok else "unavailable", root,
                 time.monotonic() - t0)
    return ok


def main() -> int:
    """``python -m autodistill.search.kernel``: warm the kernel (used by ``make setup``)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ok = ensure_fused_kernel()
    print(f"BoTorch fused kernel {'ready' if ok else 'unavailable (BoTorch uses its Python path)'} in {kernel_dir()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
