"""What XLA thinks a compiled program costs: ``compiled.cost_analysis()``, guarded against missing and
-1 values, and the dot FLOPs read off the optimized HLO.
"""
from __future__ import annotations

import logging
import math
import re
from typing import Any

logger = logging.getLogger(__name__)


# ============================================================================================ XLA cost model
_SHAPE_RE = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\w+\[([\d,]*)\]")
_DOT_RE = re.compile(r"\bdot\(\s*%?([\w.\-]+)\s*,\s*%?([\w.\-]+)\s*\)")
_LHS_CONTRACT_RE = re.compile(r"lhs_contracting_dims=\{([\d,]*)\}")


def hlo_dot_flops(hlo_text: str) -> float:
    """2 x output elements x contracted size, summed over every ``dot`` in an HLO module's text.

    Dots inside a ``while`` body are counted once (as XLA's own cost analysis does).
    """
    shapes: dict[str, tuple[int, ...]] = {}
    total = 0.0
    for line in hlo_text.splitlines():
        m = _SHAPE_RE.match(line)
        if not m:
            continue
        name, dims = m.group(1), m.group(2)
        shape = tuple(int(d) for d in dims.split(",") if d)
        shapes[name] = shape
        d = _DOT_RE.search(line)
        if d is None:
            continue
        lhs = shapes.get(d.group(1))
        c = _LHS_CONTRACT_RE.search(line)
        if lhs is None or c is None:
            logger.debug("cannot size dot %s in HLO", name)
            return float("nan")
        contract = [int(i) for i in c.group(1).split(",") if i]
        k = math.prod(lhs[i] for i in contract)
        total += 2.0 * math.prod(shape) * k
    return total


def _cost_value(ca: Any, key: str) -> float:
    """One entry of ``cost_analysis()`` output (dict, or list of dicts in older jax); NaN when missing or < 0."""
    if ca is None:
        return float("nan")
    if isinstance(ca, (list, tuple)):
        vals = [_cost_value(d, key) for d in ca]
        vals = [v for v in vals if math.isfinite(v)]
        return float(sum(vals)) if vals else float("nan")
    try:
        v = float(ca.get(key, float("nan")))
    except (TypeError, ValueError, AttributeError):
        return float("nan")
    return v if math.isfinite(v) and v >= 0 else float("nan")


def xla_cost(compiled: Any) -> dict[str, float]:
    """XLA's view of a compiled program: flops, dot flops, bytes accessed, transcendentals (NaN when unknown)."""
    try:
        ca = compiled.cost_analysis()
    except Exception as e:  # noqa: BLE001 - some backends raise NotImplementedError / XlaRuntimeError
        logger.debug("cost_analysis unavailable: %s", e)
        ca = None
    try:
        dot = hlo_dot_flops(compiled.as_text())
    except Exception as e:  # noqa: BLE001
        logger.debug("HLO text unavailable: %s", e)
        dot = float("nan")
    return {"xla_flops": _cost_value(ca, "flops"), "xla_dot_flops": dot,
            "xla_bytes": _cost_value(ca, "bytes accessed"),
            "xla_transcendentals": _cost_value(ca, "transcendentals")}
