"""Shared fixtures and strategies for the test suite."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests that need it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def private_kernel_dir(tmp_path: Path) -> Path:
    """An extensions folder of the test's own for BoTorch's fused kernel, seeded with the warmed build
    when there is one (no 30 s compile): a test that kills processes never touches the one runs use."""
    import shutil

    from autodistill.search import kernel

    root = tmp_path / "torch_extensions"
    warmed = kernel.kernel_dir() / kernel.EXTENSION_NAME
    if (warmed / f"{kernel.EXTENSION_NAME}.so").exists():
        shutil.copytree(warmed, root / kernel.EXTENSION_NAME, ignore=shutil.ignore_patterns("lock"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def pytest_configure(config: pytest.Config) -> None:
    # Keep JAX on the CPU and quiet in tests, whatever the machine has.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
