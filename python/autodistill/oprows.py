"""Cost-model ops as rows a fit prices: one record per op, totals over its instances.

Both ends of calibration speak this: a measured case lists the ops it consists of
(`autodistill.measure.cases`, one object per case kind), and `autodistill.calibration` prices many
of them at once with the fitting copy of the model.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autodistill.costmodel_reference import OpShape, log_residual

if TYPE_CHECKING:
    from autodistill.arch import StudentArch
    from autodistill.hardware import HardwareProfile


@dataclass(frozen=True)
class OpRow:
    """One cost-model op, totals over its ``count`` instances (as `autodistill.costmodel.OpEstimate`)."""

    op_class: str
    count: float
    flops: float
    padded_flops: float
    vector_flops: float
    weight_bytes: float
    act_bytes: float
    weights_onchip: bool
    acts_onchip: bool
    name: str = ""
    # Matmuls: way i of running them costs ramp_a[i] + ramp_b[i] * half_rate_k FLOPs (totals, as
    # `costmodel_reference.tile_candidates`); empty for other ops (their cost is padded_flops).
    ramp_a: tuple[float, ...] = ()
    ramp_b: tuple[float, ...] = ()
    log_residual: float = 0.0  # the profile's shape residual at this op (its time is scaled by exp of it)


def _residual(op: OpShape, hw: Mapping[str, Any]) -> float:
    return log_residual(hw.get(f"{op.op_class}_residual", ()), op.dims) if op.ramp_a else 0.0


def op_row(op: OpShape, hw: Mapping[str, float]) -> OpRow:
    """A micro-benchmark op (a `costmodel_reference` shape: one instance, run ``op.count`` times) as an
    `OpRow` of totals: weights and activations each count as on-chip when one instance's fit in half
    the on-chip memory."""
    cap = 0.5 * hw["onchip_bytes"]
    c = op.count
    return OpRow(op.op_class, c, op.flops * c, op.padded_flops * c, op.vector_flops * c, op.weight_bytes * c,
                 op.act_bytes * c, op.weight_bytes <= cap, op.act_bytes <= cap, op.name,
                 tuple(a * c for a in op.ramp_a), tuple(b * c for b in op.ramp_b), _residual(op, hw))


def student_ops(arch: StudentArch, profile: HardwareProfile, batch: int, seq: int, dtype: str) -> list[OpRow]:
    """A student's ops as `OpRow` totals, from the reference walk (the shipped model's twin)."""
    from autodistill import costmodel_reference as ref

    hw = profile.resolve(dtype)
    w_onchip = ref.weight_bytes(arch, False, hw["dtype_bytes"]) <= 0.5 * hw["onchip_bytes"]
    cap = 0.5 * hw["onchip_bytes"]
    out = []
    for op in ref.ops(arch, hw, batch, seq):
        c = op.count
        out.append(OpRow(op.op_class, c, op.flops * c, op.padded_flops * c, op.vector_flops * c, op.weight_bytes * c,
                         op.act_bytes * c, w_onchip, op.act_bytes <= cap, op.name,
                         tuple(a * c for a in op.ramp_a), tuple(b * c for b in op.ramp_b), _residual(op, hw)))
    return out


__all__ = ["OpRow", "op_row", "student_ops"]
