"""Shared fixtures and strategies for the test suite."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: Hypothesis budgets: ``AUTODISTILL_HYPOTHESIS`` names a profile (default ``ci``). A property test asks
#: for a multiple of the profile's ``max_examples`` (`strategies.examples`), so ``ci`` runs the counts the
#: suite always ran, ``dev`` a tenth of them and ``thorough`` ten times as many.
HYPOTHESIS_ENV = "AUTODISTILL_HYPOTHESIS"
HYPOTHESIS_PROFILES = {"dev": 10, "ci": 100, "thorough": 1000}


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
    _load_hypothesis_profile()


def _load_hypothesis_profile() -> None:
    """Register the budgets of `HYPOTHESIS_PROFILES` and load the one ``$AUTODISTILL_HYPOTHESIS`` names
    (before any test module is imported, so their ``@settings`` see it); an unknown name stops the run."""
    from hypothesis import settings

    from autodistill.errors import choices_message

    for name, n in HYPOTHESIS_PROFILES.items():
        settings.register_profile(name, max_examples=n)
    name = os.environ.get(HYPOTHESIS_ENV, "").strip() or "ci"
    if name not in HYPOTHESIS_PROFILES:
        raise pytest.UsageError(f"{HYPOTHESIS_ENV}: " + choices_message("hypothesis profile", name,
                                                                          HYPOTHESIS_PROFILES))
    settings.load_profile(name)
