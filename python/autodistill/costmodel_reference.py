"""The latency cost model in plain Python: the readable spec and the test oracle.

`csrc/costmodel/model.cc` implements exactly this, fast. Keep the two in step:
the tests check they agree to 1e-9 relative on random students and profiles.

For one inference of ``batch x seq`` tokens the model walks the ops below. Each
op has matrix FLOPs (2 per MAC), the same FLOPs with M, K, N padded up to the
matrix-unit tile, the FLOPs of elementwise work fused into it (bias,
activation, residual, norm: XLA fuses these epilogues into their producer),
weight bytes and activation bytes. Its time is the roofline::

    combine(padded_flops / (peak * ce[class]),
            vector_flops / (vector_peak * ce[vector]),
            weight_bytes / (bw_w * me[class]) + act_bytes / (bw_a * me[class])) + overhead[class]

where ``combine`` is the profile's ``roofline``: ``max`` (the default: compute,
vector and memory traffic overlap perfectly) or ``sum`` (they do not overlap).

Matmuls (classes ``matmul`` and ``attention``) are shape-aware (see `tile_candidates`):

* with ``parallel_units`` U > 0 in the profile, output tiles ``tile_m x tile_n`` run on U units in
  waves, and K may be split s ways (`SPLITS`: each split is a tile of its own, and pays
  `SPLIT_COST_K` steps of K per split for its partial sums): a way of running the matmul costs
  ``2 * ceil(tiles * s / U) * U * tile_m * tile_n * (ceil_k(K / s) + split cost + half_rate_k)``
  FLOPs of matrix-unit time, and the matmul takes the cheapest way; U = 0 pads M, N, K only:
  ``2 * Mp * Np * (Kp + half_rate_k)``;
* ``half_rate_k[class]`` is the K ramp: a tile's loop over K costs as much as that many more steps
  of K (prologue, epilogue, pipeline fill), so small-K matmuls run far below peak;
* a calibrated profile may carry a bounded shape residual per matmul class (`log_residual`, fitted
  on per-op rows and kept only where it lowers held-out error): the op's time is multiplied by
  exp(residual), at most a factor e^0.5 either way.

Every way's cost is nondecreasing in M, N and K, so the cheapest is too: a wider or longer student
never gets a lower estimate. ``padded_flops`` in a breakdown is the chosen way's work without the
ramp (whole waves of tiles, split costs included).

``bw_w`` is the on-chip bandwidth when every non-embedding weight fits in half
the on-chip memory (pinned, as on TPUv4i's CMEM), else HBM bandwidth; ``bw_a``
is on-chip when the op's activations fit in the other half. Ops repeated in
every layer are costed once and multiplied by the count. The total adds a
fixed per-inference overhead.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from autodistill.arch import ACTIVATIONS, StudentArch
from autodistill.hardware import OP_CLASSES, RESIDUAL_KNOTS_LOG2, RESIDUAL_MAX_LOG, HardwareProfile

BIAS_FLOPS, RESIDUAL_FLOPS, SCALE_MASK_FLOPS, SOFTMAX_FLOPS = 1.0, 1.0, 2.0, 5.0
LAYER_NORM_FLOPS, NO_NORM_FLOPS = 8.0, 2.0
ACTIVATION_FLOPS = {"relu": 1.0, "gelu": 10.0, "gelu_new": 10.0, "tanh": 6.0, "silu": 5.0}
assert set(ACTIVATION_FLOPS) == set(ACTIVATIONS)


@dataclass(frozen=True)
class OpShape:
    """Work of ONE instance of an op; ``count`` instances run per inference."""

    name: str
    op_class: str
    count: float
    flops: float = 0.0
    padded_flops: float = 0.0
    vector_flops: float = 0.0
    weight_bytes: float = 0.0
    act_bytes: float = 0.0
    # Matmuls only: way i of running it costs ramp_a[i] + ramp_b[i] * half_rate_k FLOPs (`tile_candidates`).
    ramp_a: tuple[float, ...] = ()
    ramp_b: tuple[float, ...] = ()
    dims: tuple[int, int, int] = (0, 0, 0)  # matmuls: (M, N, K) of one of its groups, for `log_residual`


def residual_basis(dims: tuple[int, int, int]) -> list[float]:
    """The weights of the residual's `RESIDUAL_LEN` values at ``dims`` = (M, N, K): per dimension, the hat
    functions of log2 of it at `RESIDUAL_KNOTS_LOG2` (flat beyond the end knots)."""
    knots = RESIDUAL_KNOTS_LOG2
    nk = len(knots)
    out = [0.0] * (3 * nk)
    for d, v in enumerate(dims):
        x = min(max(math.log2(v), knots[0]), knots[-1])
        j = min(int(math.floor((x - knots[0]) / (knots[1] - knots[0]))), nk - 2)
        t = (x - knots[j]) / (knots[j + 1] - knots[j])
        out[d * nk + j] += 1.0 - t
        out[d * nk + j + 1] += t
    return out


def log_residual(values: tuple[float, ...], dims: tuple[int, int, int]) -> float:
    """A matmul class's fitted shape residual at ``dims`` = (M, N, K): ``residual_basis . values``,
    clipped to +-RESIDUAL_MAX_LOG; 0 without one."""
    if not values or dims[0] <= 0:
        return 0.0
    nk = len(RESIDUAL_KNOTS_LOG2)
    w = residual_basis(dims)
    r = 0.0
    for d in range(3):  # summed per dimension in the order model.cc sums them
        r += sum(w[i] * values[i] for i in range(d * nk, (d + 1) * nk) if w[i] != 0.0)
    return min(max(r, -RESIDUAL_MAX_LOG), RESIDUAL_MAX_LOG)


#: Ways to split K tried for a matmul on parallel units (1: no split).
SPLITS = (1, 2, 4, 8, 16)
#: Steps of K each split costs every tile for its partial sums (estimate: writing, re-reading and
#: adding a tile of partial outputs costs about as much as 16 steps of the tile's main loop).
SPLIT_COST_K = 16.0


def tile_candidates(hw: Mapping[str, float], groups: float, m: int, n: int, k: int
                    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(a, b)`` of ``groups`` independent ``(m, k) @ (k, n)`` matmuls: way i costs ``a[i] + b[i] * k0``
    FLOPs of matrix-unit time, for the class's K ramp ``k0`` (see the module docstring)."""
    tm, tn, tk = hw["tile_m"], hw["tile_n"], hw["tile_k"]
    units = hw["parallel_units"]
    if units <= 0:
        area = 2.0 * groups * pad(m, tm) * pad(n, tn)
        return (area * pad(k, tk),), (area,)
    tiles = groups * float(-(-m // int(tm))) * float(-(-n // int(tn)))
    a, b = [], []
    for s in SPLITS:
        per_step = 2.0 * math.ceil(tiles * s / units) * units * tm * tn
        a.append(per_step * (pad(-(-k // s), tk) + (SPLIT_COST_K * s if s > 1 else 0.0)))
        b.append(per_step)
    return tuple(a), tuple(b)


def matmul_flops(ramp_a: tuple[float, ...], ramp_b: tuple[float, ...], half_rate_k: float) -> tuple[float, int]:
    """The cheapest way's FLOPs with the ramp, and its index (0 for an op with no ways)."""
    best, arg = 0.0, 0
    for i, (a, b) in enumerate(zip(ramp_a, ramp_b)):
        v = a + b * half_rate_k
        if i == 0 or v < best:
            best, arg = v, i
    return best, arg


def pad(x: int, tile: float) -> float:
    """``x`` rounded up to a multiple of ``tile``."""
    t = int(tile)
    return float(-(-x // t) * t)


def weight_bytes(a: StudentArch, mlm_head: bool, dtype_bytes: float) -> float:
    """Bytes of every weight the matmuls read in one inference (embedding tables excluded)."""
    h, t, f = float(a.hidden_size), float(a.true_hidden_size), float(a.intermediate_size)
    v_in = t if (a.use_bottleneck and a.use_bottleneck_attention) else h
    layer = 2 * (t * t + t) + (v_in * t + t) + (t * t + 3 * t)
    layer += a.num_feedforward_networks * ((t * f + f) + (f * t + 3 * t))
    if a.use_bottleneck:
        layer += (h * t + 3 * t) + (t * h + 3 * h)
        if a.key_query_shared_bottleneck and not a.use_bottleneck_attention:
            layer += h * t + 3 * t
    total = a.num_hidden_layers * layer
    if _projects_embedding(a):
        total += a.embedding_input_size * h + 3 * h
    if mlm_head:
        total += (h * h + 3 * h) + (h * a.vocab_size + a.vocab_size)
    return total * dtype_bytes


def dense_op(hw: Mapping[str, float], m: int, k: int, n: int, epi: float, residual: bool, norm: bool, *,
             name: str = "dense", count: float = 1.0, bias: bool = True) -> OpShape:
    """An ``(m, k) @ (k, n)`` matmul with a fused epilogue of ``epi`` FLOPs per output (one instance)."""
    db = hw["dtype_bytes"]
    M, K, N = float(m), float(k), float(n)
    a, b = tile_candidates(hw, 1.0, m, n, k)
    return OpShape(
        name, "matmul", count,
        flops=2.0 * M * K * N,
        padded_flops=a[0],
        vector_flops=M * N * epi,
        weight_bytes=(K * N + (N if bias else 0.0) + (2.0 * N if norm else 0.0)) * db,
        act_bytes=(M * K + M * N + (M * N if residual else 0.0)) * db,
        ramp_a=a, ramp_b=b, dims=(m, n, k),
    )


def attention_ops(hw: Mapping[str, float], batch_heads: float, seq: int, d: int,
                  count: float = 1.0) -> tuple[OpShape, OpShape, OpShape]:
    """Scores, softmax and context of ``batch_heads`` independent ``(seq, d)`` heads (one instance each)."""
    db = hw["dtype_bytes"]
    B, S, D = float(batch_heads), float(seq), float(d)
    sa, sb = tile_candidates(hw, B, seq, seq, d)
    ca, cb = tile_candidates(hw, B, seq, d, seq)
    return (
        OpShape("attention_scores", "attention", count,
                flops=2.0 * B * S * D * S, padded_flops=sa[0],
                vector_flops=B * S * S * SCALE_MASK_FLOPS, act_bytes=(2.0 * B * S * D + B * S * S) * db,
                ramp_a=sa, ramp_b=sb, dims=(seq, seq, d)),
        softmax_op(hw, B, seq, count),
        OpShape("attention_context", "attention", count,
                flops=2.0 * B * S * S * D, padded_flops=ca[0],
                act_bytes=(B * S * S + 2.0 * B * S * D) * db, ramp_a=ca, ramp_b=cb, dims=(seq, d, seq)),
    )


def softmax_op(hw: Mapping[str, float], batch_heads: float, seq: int, count: float = 1.0) -> OpShape:
    """Row softmax over ``batch_heads`` ``(seq, seq)`` score matrices (one instance)."""
    B, S = float(batch_heads), float(seq)
    return OpShape("softmax", "vector", count, vector_flops=B * S * S * SOFTMAX_FLOPS,
                   act_bytes=2.0 * B * S * S * hw["dtype_bytes"])


def _projects_embedding(a: StudentArch) -> bool:
    return a.family == "mobilebert" and (a.trigram_input or a.embedding_size != a.hidden_size)


def ops(a: StudentArch, hw: dict[str, float], batch: int, seq: int, mlm_head: bool = False) -> Iterator[OpShape]:
    """The ops of one inference, in execution order (``hw`` is `HardwareProfile.resolve`)."""
    db = hw["dtype_bytes"]
    m = batch * seq
    M = float(m)
    ln = LAYER_NORM_FLOPS if a.normalization_type == "layer_norm" else NO_NORM_FLOPS
    act = ACTIVATION_FLOPS[a.hidden_act]
    L = float(a.num_hidden_layers)
    h, t, f = a.hidden_size, a.true_hidden_size, a.intermediate_size

    def dense(name: str, count: float, k: int, n: int, epi: float, residual: bool, norm: bool) -> OpShape:
        return dense_op(hw, m, k, n, epi, residual, norm, name=name, count=count)

    # Embeddings: gather word rows, add position and token-type rows, project (MobileBERT), norm.
    E, H = float(a.embedding_size), float(h)
    project = _projects_embedding(a)
    yield OpShape("embedding_gather", "gather", 1,
                  vector_flops=0.0 if project else M * H * (2.0 + ln),
                  act_bytes=(M * E + 2.0 * M * H + M * float(a.embedding_input_size)) * db)
    if project:
        yield dense("embedding_transformation", 1, a.embedding_input_size, h, BIAS_FLOPS + 2.0 + ln, True, True)

    # Encoder layers.
    if a.use_bottleneck:
        yield dense("bottleneck_input", L, h, t, BIAS_FLOPS + ln, False, True)
        if a.key_query_shared_bottleneck and not a.use_bottleneck_attention:
            yield dense("bottleneck_attention", L, h, t, BIAS_FLOPS + ln, False, True)
    yield dense("query", L, t, t, BIAS_FLOPS, False, False)
    yield dense("key", L, t, t, BIAS_FLOPS, False, False)
    yield dense("value", L, t if (a.use_bottleneck and a.use_bottleneck_attention) else h, t, BIAS_FLOPS, False, False)
    yield from attention_ops(hw, float(batch) * float(a.num_attention_heads), seq, t // a.num_attention_heads, L)
    yield dense("attention_output", L, t, t, BIAS_FLOPS + RESIDUAL_FLOPS + ln, True, True)
    if a.num_feedforward_networks > 1:
        extra = L * float(a.num_feedforward_networks - 1)
        yield dense("ffn_stacked_intermediate", extra, t, f, BIAS_FLOPS + act, False, False)
        yield dense("ffn_stacked_output", extra, f, t, BIAS_FLOPS + RESIDUAL_FLOPS + ln, True, True)
    yield dense("intermediate", L, t, f, BIAS_FLOPS + act, False, False)
    yield dense("output", L, f, t, BIAS_FLOPS + RESIDUAL_FLOPS + ln, True, True)
    if a.use_bottleneck:
        yield dense("output_bottleneck", L, t, h, BIAS_FLOPS + RESIDUAL_FLOPS + ln, True, True)

    if mlm_head:
        yield dense("mlm_transform", 1, h, h, BIAS_FLOPS + act + LAYER_NORM_FLOPS, False, True)
        yield dense("mlm_decoder", 1, h, a.vocab_size, BIAS_FLOPS, False, False)


@dataclass(frozen=True)
class OpEstimate:
    """One costed op of the breakdown; every quantity is the total over its ``count`` instances.

    Shared by this reference and `autodistill.costmodel` (whose C++ breakdown fills the same fields).
    """

    name: str
    op_class: str
    count: float
    flops: float
    padded_flops: float
    vector_flops: float
    weight_bytes: float
    act_bytes: float
    weights_onchip: bool
    acts_onchip: bool
    compute_s: float
    vector_s: float
    memory_s: float
    overhead_s: float
    shape_factor: float  # the class's fitted shape residual at this op; latency_s includes it as a factor
    latency_s: float

    @property
    def bytes_moved(self) -> float:
        return self.weight_bytes + self.act_bytes

    @property
    def bound(self) -> str:
        """The largest roofline term: compute, vector or memory.

        Under ``roofline = "max"`` it is the term that sets the op's time; under ``"sum"`` it is the
        largest of the three added terms (the one worth making faster first).
        """
        terms = {"compute": self.compute_s, "vector": self.vector_s, "memory": self.memory_s}
        return max(terms, key=terms.__getitem__)


RefOp = OpEstimate  # the reference's name for it


def estimate(a: StudentArch, profile: HardwareProfile, batch: int = 1, seq: int = 128, *,
             dtype: str | None = None, mlm_head: bool = False) -> tuple[float, list[RefOp]]:
    """Return ``(latency_s, ops)``: the total and the per-op breakdown (ops sum to total minus fixed overhead)."""
    hw = profile.resolve(dtype)
    onchip_bw = max(hw["onchip_bytes_per_s"], hw["hbm_bytes_per_s"])
    weights_onchip = weight_bytes(a, mlm_head, hw["dtype_bytes"]) <= 0.5 * hw["onchip_bytes"]
    act_capacity = 0.5 * hw["onchip_bytes"]
    total = hw["fixed_overhead_s"]
    out = []
    for op in ops(a, hw, batch, seq, mlm_head):
        ce = hw[f"{op.op_class}_compute_efficiency"]
        me = hw[f"{op.op_class}_memory_efficiency"]
        acts_onchip = op.act_bytes <= act_capacity
        bw_w = onchip_bw if weights_onchip else hw["hbm_bytes_per_s"]
        bw_a = onchip_bw if acts_onchip else hw["hbm_bytes_per_s"]
        padded = op.padded_flops
        compute_flops = padded
        if op.ramp_a:
            compute_flops, way = matmul_flops(op.ramp_a, op.ramp_b, hw[f"{op.op_class}_half_rate_k"])
            padded = op.ramp_a[way]
        compute_s = compute_flops / (hw["peak_flops_per_s"] * ce)
        vector_s = op.vector_flops / (hw["vector_flops_per_s"] * hw["vector_compute_efficiency"])
        memory_s = op.weight_bytes / (bw_w * me) + op.act_bytes / (bw_a * me)
        overhead_s = hw[f"{op.op_class}_overhead_s"]
        if hw["roofline"] == "sum":
            latency_s = compute_s + vector_s + memory_s + overhead_s
        else:
            latency_s = max(compute_s, vector_s, memory_s) + overhead_s
        shape_factor = math.exp(log_residual(hw.get(f"{op.op_class}_residual", ()), op.dims)) if op.ramp_a else 1.0
        latency_s *= shape_factor
        c = op.count
        out.append(RefOp(op.name, op.op_class, c, op.flops * c, padded * c, op.vector_flops * c,
                         op.weight_bytes * c, op.act_bytes * c, weights_onchip, acts_onchip, compute_s * c,
                         vector_s * c, memory_s * c, overhead_s * c, shape_factor, latency_s * c))
        total += latency_s * c
    assert math.isfinite(total)
    return total, out


def latency_s(a: StudentArch, profile: HardwareProfile, batch: int = 1, seq: int = 128, *,
              dtype: str | None = None, mlm_head: bool = False) -> float:
    return estimate(a, profile, batch, seq, dtype=dtype, mlm_head=mlm_head)[0]


__all__ = ["OP_CLASSES", "OpEstimate", "OpShape", "RefOp", "attention_ops", "dense_op", "estimate", "latency_s", "ops",
           "log_residual", "matmul_flops", "residual_basis", "pad", "softmax_op", "tile_candidates", "weight_bytes",
           "SPLITS", "SPLIT_COST_K"]
