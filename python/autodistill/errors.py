"""The small exception hierarchy of autodistill.

Every error names the bad value and, where there is a finite set, the valid
choices, so that a user can fix the input without reading the source.
"""
from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "AutodistillError",
    "ConfigError",
    "ArchError",
    "ProfileError",
    "CostModelError",
    "CalibrationError",
    "SearchError",
    "DistillError",
    "TrialFailed",
    "choices_message",
]


class AutodistillError(Exception):
    """Base class of every error autodistill raises on purpose."""


class ConfigError(AutodistillError, ValueError):
    """A configuration value is missing, malformed or out of range."""


class ArchError(ConfigError):
    """A student architecture is not valid (e.g. heads do not divide the width)."""


class ProfileError(ConfigError):
    """A hardware profile is missing, malformed or has an out-of-range field."""


class CostModelError(AutodistillError, ValueError):
    """The cost model was given input it cannot score (NaN, negatives, wrong shapes)."""


class CalibrationError(AutodistillError):
    """Measurements cannot be fitted into a profile."""


class SearchError(AutodistillError):
    """The search space, the trial store or the engine is in a bad state."""


class DistillError(AutodistillError):
    """A teacher, corpus or distillation run cannot proceed."""


class TrialFailed(AutodistillError):
    """One trial failed (NaN loss, divergence, worker death); the search goes on."""


def choices_message(what: str, value: object, choices: Iterable[object]) -> str:
    """Return ``"unknown <what> 'value'; valid choices: a, b, c"``."""
    listed = ", ".join(str(c) for c in sorted(choices, key=str))
    return f"unknown {what} {value!r}; valid choices: {listed}"
