"""autodistill: hardware-aware automatic distillation of BERT-style students.

Importing the package is cheap: it loads neither torch nor JAX, and does no
I/O. Heavy frameworks are imported by the stages that use them.

Data flows one way: hardware profile -> cost model -> calibration -> search
-> distill -> verify -> run -> cli.
"""
from __future__ import annotations

import logging

from autodistill.arch import StudentArch, reference_arch, reference_names
from autodistill.errors import (
    ArchError,
    AutodistillError,
    ConfigError,
    CostModelError,
    ProfileError,
)
from autodistill.hardware import HardwareProfile, list_profiles, load_profile

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "ArchError",
    "AutodistillError",
    "ConfigError",
    "CostModelError",
    "HardwareProfile",
    "ProfileError",
    "StudentArch",
    "list_profiles",
    "load_profile",
    "reference_arch",
    "reference_names",
    "__version__",
]
