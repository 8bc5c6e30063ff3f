"""The benchmark cases: what to time, and the suites of them.

`Case` is one benchmark (a kind of `CASE_KINDS`, a unique name, JSON-able params); `build_case`
gives the JAX function to time and its arguments; `micro_suite` and `student_suite` are the
calibration suites (matmuls on and off the matrix-unit tile, dense layers with epilogues,
attention, softmax, LayerNorm, embedding gathers, chains of small ops, whole encoder layers and
whole students at several batch sizes and sequence lengths).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from autodistill.arch import ACTIVATIONS, StudentArch
from autodistill.errors import CalibrationError, choices_message
from autodistill.oprows import OpRow, op_row, student_ops

if TYPE_CHECKING:
    from autodistill.hardware import HardwareProfile


#: Kinds of benchmark case, in suite order.
CASE_KINDS = ("peak", "stream", "vector_peak", "matmul", "dense", "attention", "softmax", "layernorm", "gather",
              "chain", "layer", "student")
#: Kinds used to fit the per-op-class terms.
FIT_KINDS = ("matmul", "dense", "attention", "softmax", "layernorm", "gather", "chain", "layer", "student")
#: Kinds that measure base rates (peak FLOP/s, bandwidths) instead: the rest of `CASE_KINDS`.
BASE_KINDS = tuple(k for k in CASE_KINDS if k not in FIT_KINDS)
#: Ops a ``chain`` case repeats: ``n`` of them back to back in one compiled call.
CHAIN_OPS = ("dense", "softmax")
SUITE_SIZES = ("tiny", "small", "full")


# ======================================================================================= benchmark cases
@dataclass(frozen=True)
class Case:
    """One benchmark: ``kind`` (see `CASE_KINDS`), a unique ``name`` and JSON-able ``params``.

    Params by kind (``b`` batch, ``s`` sequence, ``m`` rows = b*s):
      peak/matmul: m, k, n.  dense: m, k, n, act, residual, norm.  stream: n (floats summed: read bandwidth).
      vector_peak: n, depth.  attention: b, heads, s, d.  softmax: b, heads, s.  layernorm: m, h.
      gather: b, s, vocab, h (BERT embeddings + LayerNorm).
      chain: op (`CHAIN_OPS`), n (ops in the call) and the op's shape: dense m, h (``relu(x @ W_i + b_i)``,
      (m, h) -> (m, h), a different W_i each step); softmax b, heads, s. One call runs ``n`` small ops, so
      the slope over ``n`` is the per-op overhead inside a compiled program and the intercept the per-call
      overhead, which single-op micro-benchmarks cannot tell apart.
      layer: arch (a 1-layer BERT StudentArch dict), b, s.  student: arch (StudentArch dict), b, s.
    """

    kind: str
    name: str
    params: Mapping[str, Any]
    split: str = ""  # "train" | "test" for students; "" otherwise
    repeat: int = 0  # >0 for noise-floor re-measurements of the same case
    pass_: int = 0  # which measurement pass (a case is measured once per pass, at different times)

    def __post_init__(self) -> None:
        if self.kind not in CASE_KINDS:
            raise CalibrationError(choices_message("case kind", self.kind, CASE_KINDS))

    @property
    def batch(self) -> int:
        return int(self.params.get("b", 0))

    @property
    def seq(self) -> int:
        return int(self.params.get("s", 0))

    def arch(self) -> StudentArch:
        if "arch" not in self.params:
            raise CalibrationError(f"case {self.name!r} of kind {self.kind!r} has no arch")
        return StudentArch.from_dict(self.params["arch"])

    def params_json(self) -> str:
        return json.dumps(dict(self.params), sort_keys=True)


def _act_fn(name: str) -> Callable[[Any], Any]:
    import jax

    if name not in ACTIVATIONS:
        raise CalibrationError(choices_message("activation", name, ACTIVATIONS))
    return {"relu": jax.nn.relu, "gelu": lambda x: jax.nn.gelu(x, approximate=False),
            "gelu_new": lambda x: jax.nn.gelu(x, approximate=True), "tanh": jax.numpy.tanh,
            "silu": jax.nn.silu}[name]


def _layer_norm(x: Any, g: Any, b: Any, eps: float = 1e-12) -> Any:
    import jax.numpy as jnp

    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)
    return (x - mu) * (1.0 / jnp.sqrt(var + eps)) * g + b


def _attention(q: Any, k: Any, v: Any, mask_bias: Any) -> Any:
    """(b, heads, s, d) scaled dot-product attention with an additive (b, 1, 1, s) mask."""
    import jax
    import jax.numpy as jnp

    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) * scale + mask_bias
    return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(scores, axis=-1), v)


def _bert_layer(p: Mapping[str, Any], x: Any, mask_bias: Any, heads: int, act: Callable[[Any], Any]) -> Any:
    """A post-LN BERT encoder layer in plain jax.numpy (the `layer` micro-benchmark)."""
    b, s, h = x.shape
    d = h // heads

    def split(t: Any) -> Any:
        return t.reshape(b, s, heads, d).transpose(0, 2, 1, 3)

    q, k, v = (split(x @ p[f"w{n}"] + p[f"b{n}"]) for n in "qkv")
    ctx = _attention(q, k, v, mask_bias).transpose(0, 2, 1, 3).reshape(b, s, h)
    a = _layer_norm(ctx @ p["wo"] + p["bo"] + x, p["g1"], p["e1"])
    i = act(a @ p["wi"] + p["bi"])
    return _layer_norm(i @ p["wf"] + p["bf"] + a, p["g2"], p["e2"])


class CaseKind:
    """One kind of benchmark case: how to build it for timing, and the cost-model ops it consists of.

    `build` returns the function to time and its host arguments (``arr(*shape, scale=...)`` makes
    seeded random arrays of the case's dtype); `ops` lists the case's ops as `OpRow` totals for
    ``profile`` at ``dtype``. Base-rate kinds measure a rate instead and have no ops.
    """

    name = ""
    fitted = True  # a kind whose ops the fit prices (FIT_KINDS); the others measure base rates

    def build(self, case: Case, arr: Callable[..., np.ndarray], rng: np.random.Generator,
              dtype: Any, seed: int) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        raise NotImplementedError

    def ops(self, params: Mapping[str, Any], profile: HardwareProfile, dtype: str) -> list[OpRow]:
        raise CalibrationError(f"no cost-model ops for case kind {self.name!r}: it measures a base rate; "
                               f"fitted kinds: {', '.join(FIT_KINDS)}")


class _Peak(CaseKind):
    name, fitted = "peak", False

    def build(self, case, arr, rng, dtype, seed):
        p = case.params
        return (lambda a, w: a @ w), (arr(p["m"], p["k"]), arr(p["k"], p["n"]))


class _Stream(CaseKind):
    name, fitted = "stream", False

    def build(self, case, arr, rng, dtype, seed):  # a read-only pass (a fresh output would time page faults)
        import jax.numpy as jnp

        # always float32: the bandwidth is read off 4 bytes per element, whatever dtype the matmuls use
        return (lambda x: jnp.sum(x)), ((rng.standard_normal(case.params["n"], dtype=np.float32) * 0.05),)


class _VectorPeak(CaseKind):
    name, fitted = "vector_peak", False

    def build(self, case, arr, rng, dtype, seed):
        depth = int(case.params["depth"])

        def chain(x: Any) -> Any:
            for i in range(depth):  # one multiply-add per element per step: 2 FLOPs
                x = x * 0.999 + (0.001 * (i + 1))
            return x

        return chain, ((rng.standard_normal(case.params["n"], dtype=np.float32) * 0.05),)  # float32: the vector peak


class _Matmul(_Peak):
    name, fitted = "matmul", True

    def ops(self, params, profile, dtype):
        from autodistill.costmodel_reference import dense_op

        hw = profile.resolve(dtype)
        p = params
        return [op_row(dense_op(hw, p["m"], p["k"], p["n"], 0.0, False, False, bias=False, name="matmul"), hw)]


class _Dense(CaseKind):
    name = "dense"

    def build(self, case, arr, rng, dtype, seed):
        p = case.params
        act = _act_fn(p["act"])

        def dense(a: Any, w: Any, bias: Any, res: Any, g: Any, e: Any) -> Any:
            y = act(a @ w + bias)
            if p["residual"]:
                y = y + res
            return _layer_norm(y, g, e) if p["norm"] else y

        return dense, (arr(p["m"], p["k"]), arr(p["k"], p["n"]), arr(p["n"]), arr(p["m"], p["n"]),
                       arr(p["n"]) + 1, arr(p["n"]))

    def ops(self, params, profile, dtype):
        from autodistill.costmodel_reference import (
            ACTIVATION_FLOPS,
            BIAS_FLOPS,
            LAYER_NORM_FLOPS,
            RESIDUAL_FLOPS,
            dense_op,
        )

        hw = profile.resolve(dtype)
        p = params
        epi = BIAS_FLOPS + ACTIVATION_FLOPS[p["act"]] + (RESIDUAL_FLOPS if p["residual"] else 0.0) + (
            LAYER_NORM_FLOPS if p["norm"] else 0.0)
        return [op_row(dense_op(hw, p["m"], p["k"], p["n"], epi, bool(p["residual"]), bool(p["norm"])), hw)]


class _Attention(CaseKind):
    name = "attention"

    def build(self, case, arr, rng, dtype, seed):
        p = case.params
        shape = (p["b"], p["heads"], p["s"], p["d"])
        mask = np.zeros((p["b"], 1, 1, p["s"]), dtype=np.dtype(dtype))
        return _attention, (arr(*shape, scale=1.0), arr(*shape, scale=1.0), arr(*shape), mask)

    def ops(self, params, profile, dtype):
        from autodistill.costmodel_reference import attention_ops

        hw = profile.resolve(dtype)
        p = params
        return [op_row(op, hw) for op in attention_ops(hw, p["b"] * p["heads"], p["s"], p["d"])]


class _Softmax(CaseKind):
    name = "softmax"

    def build(self, case, arr, rng, dtype, seed):
        import jax

        p = case.params
        return (lambda x: jax.nn.softmax(x, axis=-1)), (arr(p["b"], p["heads"], p["s"], p["s"], scale=1.0),)

    def ops(self, params, profile, dtype):
        from autodistill.costmodel_reference import softmax_op

        hw = profile.resolve(dtype)
        return [op_row(softmax_op(hw, params["b"] * params["heads"], params["s"]), hw)]


class _LayerNorm(CaseKind):
    name = "layernorm"

    def build(self, case, arr, rng, dtype, seed):
        p = case.params
        return _layer_norm, (arr(p["m"], p["h"], scale=1.0), arr(p["h"]) + 1, arr(p["h"]))

    def ops(self, params, profile, dtype):
        from autodistill.costmodel_reference import LAYER_NORM_FLOPS

        hw = profile.resolve(dtype)
        p, db = params, hw["dtype_bytes"]
        ab = 2.0 * p["m"] * p["h"] * db
        return [OpRow("vector", 1.0, 0.0, 0.0, LAYER_NORM_FLOPS * p["m"] * p["h"], 2.0 * p["h"] * db, ab, True,
                      ab <= 0.5 * hw["onchip_bytes"], "layernorm")]


class _Gather(CaseKind):
    name = "gather"

    def build(self, case, arr, rng, dtype, seed):
        import jax.numpy as jnp

        p = case.params
        b, s, h, vocab = p["b"], p["s"], p["h"], p["vocab"]

        def embed(ids: Any, tt: Any, we: Any, pe: Any, te: Any, g: Any, e: Any) -> Any:
            x = jnp.take(we, ids, axis=0) + pe[None, :s] + jnp.take(te, tt, axis=0)
            return _layer_norm(x, g, e)

        ids = rng.integers(0, vocab, size=(b, s), dtype=np.int32)
        tt = np.zeros((b, s), dtype=np.int32)
        return embed, (ids, tt, arr(vocab, h), arr(512, h), arr(2, h), arr(h) + 1, arr(h))

    def ops(self, params, profile, dtype):
        from autodistill.costmodel_reference import LAYER_NORM_FLOPS

        hw = profile.resolve(dtype)
        M, H = float(params["b"] * params["s"]), float(params["h"])
        ab = (M * H + 2 * M * H + M * H) * hw["dtype_bytes"]  # BERT embeddings: E = H, no projection
        return [OpRow("gather", 1.0, 0.0, 0.0, M * H * (2.0 + LAYER_NORM_FLOPS), 0.0, ab, True,
                      ab <= 0.5 * hw["onchip_bytes"], "embedding_gather")]


class _Chain(CaseKind):
    name = "chain"

    def build(self, case, arr, rng, dtype, seed):
        import jax

        p = case.params
        n = int(p["n"])
        if p["op"] == "dense":
            def dense_chain(x: Any, ws: Any, bs: Any) -> Any:
                for w, bias in zip(ws, bs):
                    x = jax.nn.relu(x @ w + bias)
                return x

            h = p["h"]
            return dense_chain, (arr(p["m"], h, scale=1.0), tuple(arr(h, h, scale=h ** -0.5) for _ in range(n)),
                                 tuple(arr(h) for _ in range(n)))
        if p["op"] == "softmax":
            def softmax_chain(x: Any) -> Any:
                for _ in range(n):
                    x = jax.nn.softmax(x * 4.0, axis=-1)  # scaled so every step is real work
                return x

            return softmax_chain, (arr(p["b"], p["heads"], p["s"], p["s"], scale=1.0),)
        raise CalibrationError(choices_message("chain op", p["op"], CHAIN_OPS))

    def ops(self, params, profile, dtype):
        from autodistill.costmodel_reference import ACTIVATION_FLOPS, BIAS_FLOPS, dense_op, softmax_op

        hw = profile.resolve(dtype)
        p = params
        n = float(p["n"])
        if p["op"] == "dense":
            return [op_row(dense_op(hw, p["m"], p["h"], p["h"], BIAS_FLOPS + ACTIVATION_FLOPS["relu"], False, False,
                                    name="chain_dense", count=n), hw)]
        if p["op"] == "softmax":
            return [op_row(softmax_op(hw, p["b"] * p["heads"], p["s"], count=n), hw)]
        raise CalibrationError(choices_message("chain op", p["op"], CHAIN_OPS))


class _Layer(CaseKind):
    name = "layer"

    def build(self, case, arr, rng, dtype, seed):
        p = case.params
        a = case.arch()
        if a.family != "bert" or a.num_hidden_layers != 1:
            raise CalibrationError(f"layer case {case.name!r} needs a 1-layer family='bert' arch")
        b, s, h, f = p["b"], p["s"], a.hidden_size, a.intermediate_size
        params = {f"w{n}": arr(h, h) for n in "qkvo"}
        params.update({f"b{n}": arr(h) for n in "qkvo"})
        params.update(wi=arr(h, f), bi=arr(f), wf=arr(f, h), bf=arr(h), g1=arr(h) + 1, e1=arr(h), g2=arr(h) + 1,
                      e2=arr(h))
        act = _act_fn(a.hidden_act)
        heads = a.num_attention_heads
        mask = np.zeros((b, 1, 1, s), dtype=np.dtype(dtype))
        return (lambda prm, x, mb: _bert_layer(prm, x, mb, heads, act)), (params, arr(b, s, h, scale=1.0), mask)

    def ops(self, params, profile, dtype):
        arch = StudentArch.from_dict(params["arch"])
        return [r for r in student_ops(arch, profile, int(params["b"]), int(params["s"]), dtype)
                if not r.name.startswith("embedding")]


class _Student(CaseKind):
    name = "student"

    def build(self, case, arr, rng, dtype, seed):
        return _build_student(case.arch(), case.batch, case.seq, dtype, seed)

    def ops(self, params, profile, dtype):
        return student_ops(StudentArch.from_dict(params["arch"]), profile, int(params["b"]), int(params["s"]), dtype)


#: One object per case kind, in `CASE_KINDS` order: it builds the case and lists its ops.
KINDS: dict[str, CaseKind] = {k.name: k for k in (
    _Peak(), _Stream(), _VectorPeak(), _Matmul(), _Dense(), _Attention(), _Softmax(), _LayerNorm(), _Gather(),
    _Chain(), _Layer(), _Student())}
assert tuple(KINDS) == CASE_KINDS and tuple(k for k, v in KINDS.items() if v.fitted) == FIT_KINDS
assert tuple(k for k, v in KINDS.items() if not v.fitted) == BASE_KINDS


def case_kind(kind: str) -> CaseKind:
    """The `CaseKind` named ``kind``."""
    if kind not in KINDS:
        raise CalibrationError(choices_message("case kind", kind, CASE_KINDS))
    return KINDS[kind]


def build_case(case: Case, dtype: Any = None, seed: int = 0) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """The function to time for ``case`` and its (host) arguments (its kind's `CaseKind.build`)."""
    import jax.numpy as jnp

    dtype = dtype or jnp.float32
    rng = np.random.default_rng(seed)

    def arr(*shape: int, scale: float = 0.05) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.dtype(dtype))

    return case_kind(case.kind).build(case, arr, rng, dtype, seed)


def models_available() -> bool:
    """True when the Flax student (`autodistill.models`) can be imported."""
    try:
        from autodistill.models import StudentModel, init_params  # noqa: F401
    except ImportError:
        return False
    return True


def _build_student(arch: StudentArch, batch: int, seq: int, dtype: Any, seed: int
                   ) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """One inference of the Flax student: (params, ids, mask) -> last_hidden_state."""
    import jax

    try:
        from autodistill.models import StudentModel, init_params
    except ImportError as e:
        raise CalibrationError(f"whole-student cases need autodistill.models (the Flax student): {e}") from None
    model = StudentModel(arch=arch, dtype=dtype, mlm_head=False)
    params = init_params(model, jax.random.PRNGKey(seed), batch=1, seq=min(seq, 16))
    if np.dtype(dtype) != np.float32:  # serve in the compute dtype: weights stored in it, no casts per call
        params = jax.tree.map(lambda x: x.astype(dtype), params)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, arch.vocab_size, size=(batch, seq), dtype=np.int32)
    mask = np.ones((batch, seq), dtype=np.int32)

    def forward(prm: Any, input_ids: Any, attention_mask: Any) -> Any:
        return model.apply({"params": prm}, input_ids, token_type_ids=None,
                           attention_mask=attention_mask).last_hidden_state

    return forward, (params, ids, mask)


# ================================================================================================ the suites
def _mk(kind: str, **params: Any) -> Case:
    name = kind + "-" + "-".join(f"{k}{v}" for k, v in params.items() if k not in ("arch",))
    if "arch" in params:
        arch = StudentArch.from_dict(params["arch"])
        tag = hashlib.sha1(json.dumps(arch.to_dict(), sort_keys=True).encode()).hexdigest()[:6]
        name = f"{kind}-{arch.short_name()}-{tag}-b{params['b']}-s{params['s']}"
    return Case(kind, name, params)


#: JAX platforms a suite can be sized for.
PLATFORMS = ("cpu", "gpu", "tpu")


def micro_suite(size: str = "small", seed: int = 0, platform: str = "cpu") -> list[Case]:
    """Micro-benchmarks: base rates (peak, stream, vector), then one group per op kind.

    ``tiny`` is for tests (a few small cases), ``small`` a quick check, ``full``
    the calibration suite. Shapes include widths off the matrix-unit tile (100,
    312, 1000, 1200) and typical BERT widths. On an accelerator (``platform``
    gpu or tpu) the base-rate cases are sized for it: a 1024^3 matmul or a
    64 MiB read takes a few microseconds there, so launch overhead, not the
    peak or the bandwidth, would be measured; they become an 8192^3 matmul, a
    1 GiB read (past any L2) and a 64 Mi-element multiply-add chain. The op
    cases keep the students' shapes on every platform.
    """
    if size not in SUITE_SIZES:
        raise CalibrationError(choices_message("suite size", size, SUITE_SIZES))
    if platform not in PLATFORMS:
        raise CalibrationError(choices_message("platform", platform, PLATFORMS))
    rng = np.random.default_rng(seed)
    cases: list[Case] = []
    if size == "tiny":
        cases += [_mk("matmul", m=64, k=128, n=128), _mk("matmul", m=50, k=100, n=312),
                  _mk("dense", m=64, k=128, n=256, act="gelu", residual=False, norm=False),
                  _mk("attention", b=1, heads=2, s=32, d=32), _mk("softmax", b=1, heads=2, s=32),
                  _mk("layernorm", m=64, h=128), _mk("gather", b=1, s=32, vocab=1000, h=128),
                  _mk("chain", op="dense", n=4, m=16, h=32),
                  _mk("layer", arch=_bert1(128, 2, 256, "gelu"), b=1, s=32)]
        return cases
    full = size == "full"
    if platform == "cpu":
        cases += [_mk("peak", m=1024, k=1024, n=1024) if full else _mk("peak", m=512, k=512, n=512)]
        cases += [_mk("stream", n=16 << 20), _mk("stream", n=1 << 20)]  # 64 MiB (DRAM) and 4 MiB (cache)
        cases += [_mk("vector_peak", n=64 << 10, depth=64)]
    else:
        cases += [_mk("peak", m=8192, k=8192, n=8192) if full else _mk("peak", m=4096, k=4096, n=4096)]
        cases += [_mk("stream", n=256 << 20), _mk("stream", n=4 << 20)]  # 1 GiB (HBM) and 16 MiB (L2)
        cases += [_mk("vector_peak", n=64 << 20, depth=256)]
    # matmuls: rows (= batch x seq) by (K, N), on and off the tile
    ms = (16, 64, 128, 256, 512, 1024) if full else (32, 256)
    widths = (64, 100, 128, 256, 312, 384, 512, 768, 1000, 1024, 1200, 2048, 3072) if full else (128, 312, 768)
    pairs = [(k, n) for k in widths for n in widths]
    n_mm = 60 if full else 6
    for i in rng.choice(len(ms) * len(pairs), size=min(n_mm, len(ms) * len(pairs)), replace=False):
        m = ms[int(i) // len(pairs)]
        k, n = pairs[int(i) % len(pairs)]
        cases.append(_mk("matmul", m=m, k=k, n=n))
    # dense layers with fused epilogues (bias, activation, residual, norm)
    n_dense = 24 if full else 3
    for _ in range(n_dense):
        m = int(rng.choice(ms))
        k, n = (int(x) for x in rng.choice(widths, 2))
        cases.append(_mk("dense", m=m, k=k, n=n, act=str(rng.choice(["relu", "gelu"])),
                         residual=bool(rng.integers(2)), norm=bool(rng.integers(2))))
    # attention, softmax, norms, gathers
    att = [(b, h, s, d) for b in (1, 4, 8) for h in (2, 4, 12) for s in (32, 64, 128) for d in (32, 64)]
    n_att = 16 if full else 2
    for i in rng.choice(len(att), size=n_att, replace=False):
        b, h, s, d = att[int(i)]
        cases.append(_mk("attention", b=b, heads=h, s=s, d=d))
    for b, h, s in ([(1, 4, 128), (8, 4, 128), (4, 12, 64), (8, 2, 32), (2, 8, 128), (1, 2, 32)] if full
                    else [(1, 4, 64)]):
        cases.append(_mk("softmax", b=b, heads=h, s=s))
    for m, h in ([(128, 128), (512, 256), (1024, 512), (64, 768), (1024, 128), (256, 1024)] if full
                 else [(256, 256)]):
        cases.append(_mk("layernorm", m=m, h=h))
    for b, s, h in ([(1, 32, 128), (1, 128, 256), (8, 128, 512), (4, 64, 384), (8, 32, 768)] if full
                    else [(2, 64, 256)]):
        cases.append(_mk("gather", b=b, s=s, vocab=30522, h=h))
    # chains of n small ops in one call: per-op overhead (slope) apart from per-call overhead (intercept)
    for n in ((1, 4, 16, 48) if full else (1, 16)):
        cases.append(_mk("chain", op="dense", n=n, m=32, h=64))
        cases.append(_mk("chain", op="softmax", n=n, b=1, heads=2, s=32))
    if full:
        for n in (1, 8, 24):
            cases.append(_mk("chain", op="dense", n=n, m=256, h=128))
    # whole encoder layers
    layers = [(128, 2, 512, 1, 128), (256, 4, 1024, 4, 64), (384, 12, 1536, 8, 128), (512, 8, 2048, 2, 128),
              (768, 12, 3072, 1, 128), (312, 12, 1200, 4, 32), (256, 4, 512, 8, 32), (512, 8, 1024, 8, 64)]
    for h, heads, f, b, s in (layers if full else layers[:2]):
        cases.append(_mk("layer", arch=_bert1(h, heads, f, "gelu"), b=b, s=s))
    return cases


def _bert1(h: int, heads: int, f: int, act: str) -> dict[str, Any]:
    return StudentArch(family="bert", num_hidden_layers=1, hidden_size=h, embedding_size=h, num_attention_heads=heads,
                       intermediate_size=f, num_feedforward_networks=1, use_bottleneck=False, intra_bottleneck_size=h,
                       key_query_shared_bottleneck=False, trigram_input=False, normalization_type="layer_norm",
                       hidden_act=act).to_dict()


def sample_student(rng: np.random.Generator) -> StudentArch:
    """One architecture from the search space (the MobileBERT family, with BERT as a member).

    MobileBERT students (80%): 2-24 layers, hidden 128-768, bottleneck 64-256,
    1-8 heads, 1-4 stacked FFNs of width 128-1536, NoNorm or LayerNorm, ReLU or
    GELU, trigram input or not, bottleneck or shared query/key attention input.
    BERT students (20%): 2-6 layers, hidden 128-768, FFN 2-4x hidden.
    """
    if rng.random() < 0.2:
        h = int(rng.choice([128, 192, 256, 312, 384, 512, 768]))
        heads = int(rng.choice([d for d in (2, 4, 6, 8, 12) if h % d == 0]))
        return StudentArch(family="bert", num_hidden_layers=int(rng.choice([2, 3, 4, 6])), hidden_size=h,
                           embedding_size=h, num_attention_heads=heads,
                           intermediate_size=int(h * rng.choice([2, 3, 4])),
                           num_feedforward_networks=1, use_bottleneck=False, intra_bottleneck_size=h,
                           key_query_shared_bottleneck=False, trigram_input=False, normalization_type="layer_norm",
                           hidden_act=str(rng.choice(["gelu", "relu"])))
    h = int(rng.choice([128, 256, 384, 512, 640, 768]))
    use_b = bool(rng.random() < 0.85)
    t = int(rng.choice([b for b in (64, 96, 128, 192, 256) if b <= h])) if use_b else h
    heads = int(rng.choice([d for d in (1, 2, 4, 8) if t % d == 0 and t // d >= 16]))
    b_att = bool(use_b and rng.random() < 0.4)
    kq = bool(use_b and not b_att and (t != h or rng.random() < 0.5))
    return StudentArch(
        family="mobilebert", num_hidden_layers=int(rng.choice([2, 4, 6, 8, 12, 16, 24])), hidden_size=h,
        embedding_size=int(rng.choice([64, 128])), num_attention_heads=heads,
        intermediate_size=int(rng.choice([128, 256, 512, 768, 1024, 1536])),
        num_feedforward_networks=int(rng.choice([1, 2, 3, 4])), use_bottleneck=use_b, intra_bottleneck_size=t,
        use_bottleneck_attention=b_att, key_query_shared_bottleneck=kq, trigram_input=bool(rng.random() < 0.8),
        normalization_type=str(rng.choice(["no_norm", "layer_norm"])), hidden_act=str(rng.choice(["relu", "gelu"])))


#: How `student_suite` spreads its students: as drawn, or evenly over log FLOPs.
SPREADS = ("uniform", "log_flops")
#: Name of the built-in broad sampler (`sample_student`) among `student_suite`'s sources.
BROAD = "broad"


def _space_sampler(name: str, seed: int) -> Callable[[np.random.Generator], StudentArch]:
    """Uniform draws from the feasible pool of a search space (`autodistill.space`)."""
    from autodistill.space import build_pool, load_space

    try:
        pool = build_pool(load_space(name), max_candidates=200_000, seed=seed)
    except Exception as e:  # noqa: BLE001 - name the space whatever went wrong
        raise CalibrationError(f"cannot draw students from search space {name!r}: {e}") from None
    return lambda rng: pool.arch(int(rng.integers(len(pool))))


def student_suite(n: int, seed: int = 0, *, test_fraction: float = 0.4, batches: Sequence[int] = (1, 2, 4, 8),
                  seqs: Sequence[int] = (16, 32, 64, 128), max_gflops: float = 12.0,
                  sources: Sequence[str] = (BROAD,), spread: str = "uniform") -> list[Case]:
    """``n`` whole students at random batch sizes and sequence lengths, split train/test by a seeded draw.

    Students come in turn from each of ``sources``: a search-space name (see
    ``autodistill.space.list_spaces()``: uniform draws from its feasible pool) or
    ``"broad"` (`sample_student`, which also covers BERT, LayerNorm, GELU and
    no-bottleneck students). Students whose forward pass exceeds ``max_gflops``
    (matmul FLOPs) are redrawn, which keeps one inference on one CPU core
    under about a tenth of a second.

    ``spread="log_flops"`` draws a pool 20 times larger the same way and keeps
    the ``n`` students nearest to ``n`` points evenly spaced in log FLOPs over
    the pool's range. Uniform draws put most students near the budget (deep,
    wide ones at long sequences), while a search's fastest students, the ones
    its confirmation measures, sit one to three decades lower.
    """
    if spread not in SPREADS:
        raise CalibrationError(choices_message("student spread", spread, SPREADS))
    if spread == "log_flops" and n > 0:
        pool = student_suite(20 * n, seed, test_fraction=test_fraction, batches=batches, seqs=seqs,
                             max_gflops=max_gflops, sources=sources)
        lg = np.log10([max(c.arch().flops_per_token(c.seq) * c.batch * c.seq, 1.0) for c in pool])
        rng = np.random.default_rng(seed + 7919)
        free = np.ones(len(pool), bool)
        chosen = []
        for t in rng.permutation(np.linspace(lg.min(), lg.max(), n)):
            i = int(np.argmin(np.where(free, np.abs(lg - t), np.inf)))
            free[i] = False
            chosen.append(pool[i])
        chosen.sort(key=lambda c: c.name)
        return _split(chosen, test_fraction, rng)
    if n < 0:
        raise CalibrationError(f"number of students must be >= 0, got {n}")
    if not 0.0 < test_fraction < 1.0:
        raise CalibrationError(f"test_fraction={test_fraction} must be in (0, 1)")
    if not sources:
        raise CalibrationError("student_suite needs at least one source")
    samplers = [sample_student if src == BROAD else _space_sampler(src, seed) for src in sources]
    rng = np.random.default_rng(seed)
    cases: list[Case] = []
    seen: set[str] = set()
    tries = 0
    while len(cases) < n:
        tries += 1
        if tries > 100 * (n + 1):
            raise CalibrationError(f"could not draw {n} students under {max_gflops} GFLOP; raise max_gflops")
        arch = samplers[len(cases) % len(samplers)](rng)
        b, s = int(rng.choice(batches)), int(rng.choice(seqs))
        if arch.flops_per_token(s) * b * s > max_gflops * 1e9:
            continue
        c = _mk("student", arch=arch.to_dict(), b=b, s=s)
        if c.name in seen:
            continue
        seen.add(c.name)
        cases.append(c)
    return _split(cases, test_fraction, rng)


def _split(cases: list[Case], test_fraction: float, rng: np.random.Generator) -> list[Case]:
    """``cases`` with a seeded train/test split: ``round(test_fraction * n)`` of them held out."""
    n = len(cases)
    test_idx = set(rng.permutation(n)[:int(round(test_fraction * n))].tolist())
    return [dataclasses.replace(c, split="test" if i in test_idx else "train") for i, c in enumerate(cases)]
