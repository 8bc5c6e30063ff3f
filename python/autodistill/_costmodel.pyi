"""Types of the C++ extension (csrc/bindings.cc); `autodistill.costmodel` is its only importer.

Kept in step with the binding by ``python -m mypy.stubtest autodistill._costmodel`` (run by ``make lint``)
and by tests/test_costmodel_stub.py, which compares these names and parameters with the built module.
"""
from typing import Any

import numpy as np
import numpy.typing as npt

FEATURE_NAMES: tuple[str, ...]
OP_CLASSES: tuple[str, ...]
ROOFLINES: tuple[str, ...]

class Hardware:
    """Resolved hardware terms; keyword arguments only (unknown or invalid ones raise ValueError)."""

    def __init__(self, **kwargs: Any) -> None: ...
    @property
    def peak_flops_per_s(self) -> float: ...
    @property
    def hbm_bytes_per_s(self) -> float: ...
    @property
    def onchip_bytes(self) -> float: ...
    @property
    def roofline(self) -> str: ...

def estimate(row: npt.ArrayLike, hardware: Hardware, batch: int, seq: int,
             mlm_head: bool = False) -> dict[str, Any]:
    """Latency and per-op breakdown of one feature row ``(F,)``: ``latency_s``, ``fixed_overhead_s``, ``ops``."""

def estimate_batch(features: npt.ArrayLike, hardware: Hardware, batch: int, seq: int, mlm_head: bool = False,
                   threads: int = 0) -> np.ndarray[tuple[int], np.dtype[np.float64]]:
    """Latencies ``(n,)`` of an ``(n, F)`` float64 feature array; threads <= 0 means all cores."""
