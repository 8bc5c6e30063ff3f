"""The distillation steps shared by flash and full distillation, and the loop that runs them.

The steps are module-level functions, jitted with the static parts of a run as
static arguments:

* ``spec``: a `StepSpec`, everything about one student and teacher that shapes
  the program (the architectures, the loss weights, the parameter groups...);
* ``tx``: the phase's optax transformation (`autodistill.distill.optim`).

`kt_step` (knowledge transfer of block ``stage``), `pd_step` (pretraining
distillation) and `eval_step` (held-out MLM sums) take and return plain pytrees,
so a test can call one on a tiny batch. They are built from the loss pieces
`kt_loss` and `pd_loss`, the teacher-side `teacher_attention`,
`teacher_kt_targets` and `teacher_topk`, and the grouped update
`apply_grouped`. `compiled_steps` jits them for one engine with its spec and
optimizers bound: a stage traced or static (one program per student block),
XLA's backend optimisation on or off.

State (a pytree): ``{"train": {"params": student params (with 'cls'),
"aux": {"proj": ..., "nsp": ...}}, "opt": {group name: optimizer state}}``.
``proj`` (``kernel`` ``(Ls, Hs, Ht)``, ``bias`` ``(Ls, Ht)``) exists only when the
widths differ; ``nsp`` (pooler + classifier) only with NSP data. Each parameter
group (the embeddings, each block, the MLM head, each aux part) has its own
optimizer state, so a block's Adam statistics and warm-up start with its stage.

`DistillEngine` holds one student's `StepSpec`, optimizers, the teacher's
parameters on the devices and the batch sharding; `get_engine` reuses a recent
identical one; `run_steps` runs the two-phase schedule with NaN/divergence
checks; `check_compatible` refuses a student that cannot be distilled.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypedDict

import jax
import jax.numpy as jnp
import numpy as np

from autodistill.arch import StudentArch
from autodistill.distill import losses as L
from autodistill.distill.flash import kt_stage, layer_map, pd_learning_rate, static_stages
from autodistill.distill.optim import make_optimizer
from autodistill.errors import DistillError

logger = logging.getLogger(__name__)

__all__ = [
    "PART_NAMES", "DistillEngine", "HeldoutMetrics", "StepRun", "StepSpec", "Steps", "apply_grouped",
    "check_compatible", "compiled_steps", "data_mesh", "eval_step", "get_engine", "kt_active", "kt_loss", "kt_step",
    "nsp_logits", "param_groups", "pd_loss", "pd_step", "proj_rows", "run_steps", "teacher_attention",
    "teacher_kt_targets", "teacher_topk",
]

#: Loss components reported per step (NaN where one does not apply).
PART_NAMES = ("feature", "attention", "mlm", "kd", "nsp")
#: Compiler options of ``fast_compile``: several times faster to compile, slower to run.
FAST_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0}

Groups = tuple[tuple[str, tuple[str, ...]], ...]


# ============================================================================ the static part of a step
@dataclass(frozen=True)
class StepSpec:
    """What shapes one student's step programs (hashable: a static argument of the jitted steps).

    ``groups``: the optimizer groups ``(name, path into state["train"])`` (`param_groups`).
    ``proj``: the student is narrower or wider than the teacher (the features go through a
    projection); ``nsp``: the data has sentence pairs. ``live_teacher``: the teacher runs
    inside the steps (full distillation) instead of its outputs being inputs (the cached
    flash path). ``topk``: teacher logits kept for KD. ``dtype``: the student's compute dtype.
    ``clip_norm``: global-norm clipping of the gradients (None: none).
    """

    arch: StudentArch
    teacher_arch: StudentArch
    groups: Groups
    nsp: bool = False
    proj: bool = False
    topk: int = 64
    feature_weight: float = 1.0
    attention_weight: float = 1.0
    mlm_weight: float = 0.5
    kd_weight: float = 0.5
    nsp_weight: float = 1.0
    temperature: float = 1.0
    freeze_lower: bool = True
    live_teacher: bool = False
    dtype: str = "float32"
    clip_norm: float | None = 1.0


def param_groups(train: Mapping[str, Any]) -> Groups:
    """Optimizer groups: the embeddings, each block, the MLM head, each aux part: ``(name, path)``."""
    groups: list[tuple[str, tuple[str, ...]]] = []
    for key in train["params"]:
        if key == "encoder":
            for layer in sorted(train["params"]["encoder"], key=lambda n: int(n.split("_")[1])):
                groups.append((layer, ("params", "encoder", layer)))
        else:
            groups.append((key, ("params", key)))
    for key in train["aux"]:
        groups.append((f"aux_{key}", ("aux", key)))
    return tuple(groups)


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for k in path:
        tree = tree[k]
    return tree


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for k in path[:-1]:
        tree[k] = dict(tree[k])
        tree = tree[k]
    tree[path[-1]] = value


# ============================================================================ loss pieces
def nsp_logits(aux: Mapping[str, Any], h: jax.Array) -> jax.Array:
    """NSP logits ``(B, 2)`` of the pooled ``[CLS]`` state of ``h`` ``(B, S, H)`` (pooler + classifier in ``aux``)."""
    pooled = jnp.tanh(h[:, 0].astype(jnp.float32) @ aux["nsp"]["pooler"]["kernel"] + aux["nsp"]["pooler"]["bias"])
    return pooled @ aux["nsp"]["classifier"]["kernel"] + aux["nsp"]["classifier"]["bias"]


def kt_loss(spec: StepSpec, train: Mapping[str, Any], batch: Mapping[str, jax.Array], stage: Any,
            t_tgt: jax.Array, t_att: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Knowledge-transfer loss of student block ``stage``: ``feature_weight * MSE(proj(h_s), t_tgt) +
    attention_weight * KL(t_att || a_s)``; returns ``(total, {"feature", "attention"})``.

    ``t_tgt`` ``(B, S, Ht)``: the mapped teacher block's output; ``t_att`` ``(B, At, S, S)``: its attention.
    """
    hs, att = L.encode_stage(spec.arch, train["params"], batch["input_ids"], batch["token_type_ids"],
                             batch["attention_mask"], stage, freeze_lower=spec.freeze_lower,
                             dtype=jnp.dtype(spec.dtype))
    hs = hs.astype(jnp.float32)
    if spec.proj:
        hs = hs @ train["aux"]["proj"]["kernel"][stage] + train["aux"]["proj"]["bias"][stage]
    f = L.feature_mse(hs, t_tgt, batch["attention_mask"])
    a = L.attention_kl(t_att, att, batch["attention_mask"])
    return spec.feature_weight * f + spec.attention_weight * a, {"feature": f, "attention": a}


def pd_loss(spec: StepSpec, train: Mapping[str, Any], batch: Mapping[str, jax.Array], t_vals: jax.Array,
            t_ids: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Pretraining-distillation loss: ``mlm_weight * MLM + kd_weight * KD`` (+ ``nsp_weight * NSP``);
    returns ``(total, {"mlm", "kd"[, "nsp"]})``. ``t_vals``/``t_ids`` ``(B, P, k)``: the teacher's top-k logits."""
    dt = jnp.dtype(spec.dtype)
    p = train["params"]
    out = L.encode(spec.arch, p, batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], dtype=dt,
                   attentions=False)
    logits = L.mlm_logits(spec.arch, p, out.last_hidden_state, batch["mlm_positions"], dtype=dt)
    mlm, kd = L.mlm_and_kd_loss(logits, batch["mlm_labels"], batch["mlm_weights"], t_vals, t_ids,
                                float(spec.temperature))
    total = spec.mlm_weight * mlm + spec.kd_weight * kd
    parts = {"mlm": mlm, "kd": kd}
    if spec.nsp:
        n, _ = L.nsp_loss(nsp_logits(train["aux"], out.last_hidden_state), batch["nsp_labels"],
                          batch["example_weights"])
        total = total + spec.nsp_weight * n
        parts["nsp"] = n
    return total, parts


def teacher_attention(teacher_arch: StudentArch, tlayers: Any, t_prev: jax.Array, m: Any,
                      mask: jax.Array) -> jax.Array:
    """Attention probabilities ``(B, At, S, S)`` of teacher block ``m`` (from the stacked blocks ``tlayers``)
    on its input ``t_prev`` ``(B, S, Ht)`` (the cached path: only this block runs)."""
    from autodistill.models.encoder import Layer

    tl = jax.tree.map(lambda x: x[m], tlayers)
    with L.dense_2d():
        _, probs = Layer(teacher_arch, jnp.float32).apply({"params": tl}, t_prev.astype(jnp.float32),
                                                          L.attention_bias(mask))
    return probs


def teacher_kt_targets(teacher_arch: StudentArch, tparams: Any, batch: Mapping[str, jax.Array],
                       m: Any) -> tuple[jax.Array, jax.Array]:
    """The live teacher's output of block ``m`` ``(B, S, Ht)`` and its attention ``(B, At, S, S)`` (no gradient)."""
    out = L.encode(teacher_arch, tparams, batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    hs = jnp.stack(out.hidden_states)
    return jax.lax.stop_gradient(hs[m + 1]), jax.lax.stop_gradient(jnp.stack(out.attentions)[m])


def teacher_topk(teacher_arch: StudentArch, tparams: Any, batch: Mapping[str, jax.Array],
                 k: int) -> tuple[jax.Array, jax.Array]:
    """The live teacher's top-``k`` MLM logits and their ids at the masked positions, each ``(B, P, k)``."""
    out = L.encode(teacher_arch, tparams, batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                   attentions=False)
    logits = L.mlm_logits(teacher_arch, tparams, out.last_hidden_state, batch["mlm_positions"])
    v, i = jax.lax.top_k(logits, k)
    return jax.lax.stop_gradient(v), i


# ============================================================================ grouped updates
def proj_rows(num_layers: int, stage: Any) -> dict[str, jax.Array]:
    """Update mask of the stacked projections in stage ``stage``: only that row moves."""
    return {"kernel": (jnp.arange(num_layers) == stage).astype(jnp.float32).reshape(num_layers, 1, 1),
            "bias": (jnp.arange(num_layers) == stage).astype(jnp.float32).reshape(num_layers, 1)}


def kt_active(groups: Groups, stage: Any, freeze_lower: bool) -> dict[str, Any]:
    """Which groups knowledge-transfer stage ``stage`` updates: block ``stage`` (and the blocks below it
    without ``freeze_lower``), the embeddings in stage 0 (always without ``freeze_lower``), the projections;
    never the MLM head. A traced ``stage`` gives traced flags."""
    act: dict[str, Any] = {}
    for name, path in groups:
        if path[0] == "aux":
            act[name] = path[1] == "proj"
        elif path[1] == "encoder":
            i = int(path[2].split("_")[1])
            act[name] = (stage == i) if freeze_lower else (stage >= i)
        elif path[1] == "embeddings":
            act[name] = (stage == 0) if freeze_lower else True
        else:
            act[name] = False  # the MLM head
    return act


def apply_grouped(tx: Any, state: Mapping[str, Any], grads: Any, active: Mapping[str, Any],
                  masks: Mapping[str, Any], *, groups: Groups, clip_norm: float | None) -> dict[str, Any]:
    """Clip by the global norm, then update each parameter group whose ``active`` flag is set.

    ``active[g]`` is a Python bool (static) or a traced bool: a ``lax.cond`` then skips the
    group's optimizer work at run time (the frozen blocks of knowledge transfer). Gradients
    of inactive parameters are zero by construction (stop-gradient / not in the loss);
    ``masks[g]`` (optional) multiplies a group's updates (the projection rows).
    """
    if clip_norm is not None:
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(grads)))
        scale = jnp.minimum(1.0, clip_norm / jnp.maximum(norm, 1e-12))
        grads = jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)
    train = {"params": dict(state["train"]["params"]), "aux": dict(state["train"]["aux"])}
    opt = dict(state["opt"])
    for name, path in groups:
        p, g, o = _get(state["train"], path), _get(grads, path), state["opt"][name]
        m = masks.get(name)

        def do(args, m=m):
            p, g, o = args
            u, o = tx.update(g, o, p)
            if m is not None:
                u = jax.tree.map(lambda d, w: d * w, u, m)
            return jax.tree.map(lambda x, d: x + d.astype(x.dtype), p, u), o

        flag = active[name]
        if flag is True:
            p, o = do((p, g, o))
        elif flag is not False:
            p, o = jax.lax.cond(flag, do, lambda args: (args[0], args[2]), (p, g, o))
        _set(train, path, p)
        opt[name] = o
    return {"train": train, "opt": opt}


# ============================================================================ the steps
_STEP_STATIC = ("spec", "tx")


@functools.partial(jax.jit, static_argnames=_STEP_STATIC, donate_argnames=("state",))
def kt_step(state: Any, teacher_p: Any, batch: Mapping[str, jax.Array], stage: Any, m: Any,
            t_prev: jax.Array | None = None, t_tgt: jax.Array | None = None, *, spec: StepSpec,
            tx: Any) -> tuple[Any, jax.Array, dict[str, jax.Array]]:
    """One knowledge-transfer step training student block ``stage`` against teacher block ``m``.

    ``teacher_p``: the teacher's params (``spec.live_teacher``: the teacher runs here), or its
    stacked blocks with ``t_prev``/``t_tgt`` ``(B, S, Ht)``, the cached input and output of block
    ``m``. Returns ``(state, loss, {"feature", "attention"})``; ``state`` is donated.
    """
    if spec.live_teacher:
        t_tgt, t_att = teacher_kt_targets(spec.teacher_arch, teacher_p, batch, m)
    else:
        t_att = teacher_attention(spec.teacher_arch, teacher_p, t_prev, m, batch["attention_mask"])
    (loss, parts), g = jax.value_and_grad(functools.partial(kt_loss, spec), has_aux=True)(
        state["train"], batch, stage, t_tgt, t_att)
    masks = {"aux_proj": proj_rows(spec.arch.num_hidden_layers, stage)} if spec.proj else {}
    new = apply_grouped(tx, state, g, kt_active(spec.groups, stage, spec.freeze_lower), masks, groups=spec.groups,
                        clip_norm=spec.clip_norm)
    return new, loss, parts


@functools.partial(jax.jit, static_argnames=_STEP_STATIC, donate_argnames=("state",))
def pd_step(state: Any, teacher_p: Any, batch: Mapping[str, jax.Array], t_vals: jax.Array | None = None,
            t_ids: jax.Array | None = None, *, spec: StepSpec, tx: Any) -> tuple[Any, jax.Array, dict[str, jax.Array]]:
    """One pretraining-distillation step of every student parameter (the projections aside).

    ``teacher_p``: the teacher's params (``spec.live_teacher``), else None with the cached top-k
    ``t_vals``/``t_ids`` ``(B, P, k)``. Returns ``(state, loss, {"mlm", "kd"[, "nsp"]})``; ``state`` is donated.
    """
    if spec.live_teacher:
        t_vals, t_ids = teacher_topk(spec.teacher_arch, teacher_p, batch, spec.topk)
    (loss, parts), g = jax.value_and_grad(functools.partial(pd_loss, spec), has_aux=True)(
        state["train"], batch, t_vals, t_ids)
    active = {name: path[:2] != ("aux", "proj") for name, path in spec.groups}
    return apply_grouped(tx, state, g, active, {}, groups=spec.groups, clip_norm=spec.clip_norm), loss, parts


@functools.partial(jax.jit, static_argnames=("spec",))
def eval_step(train: Mapping[str, Any], batch: Mapping[str, jax.Array], *, spec: StepSpec) -> dict[str, jax.Array]:
    """Held-out sums of one batch: ``loss_sum`` (MLM cross-entropy times the prediction weight), ``correct``,
    ``count`` (the weight of the masked predictions), and with NSP ``nsp_correct``, ``nsp_count``."""
    dt = jnp.dtype(spec.dtype)
    p = train["params"]
    out = L.encode(spec.arch, p, batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], dtype=dt,
                   attentions=False)
    logits = L.mlm_logits(spec.arch, p, out.last_hidden_state, batch["mlm_positions"], dtype=dt)
    loss, correct = L.mlm_loss(logits, batch["mlm_labels"], batch["mlm_weights"])
    w = jnp.sum(batch["mlm_weights"])
    res = {"loss_sum": loss * w, "correct": correct, "count": w}
    if spec.nsp:
        _, nc = L.nsp_loss(nsp_logits(train["aux"], out.last_hidden_state), batch["nsp_labels"],
                           batch["example_weights"])
        res["nsp_correct"] = nc
        res["nsp_count"] = jnp.sum(batch["example_weights"])
    return res


class Steps(NamedTuple):
    """One engine's jitted ``kt``, ``pd`` and ``eval`` steps, its spec and optimizers bound (`compiled_steps`)."""

    kt: Any
    pd: Any
    eval: Any


def compiled_steps(spec: StepSpec, kt_tx: Any, pd_tx: Any, *, fast_compile: bool = False,
                   static_stages: bool = False) -> Steps:
    """`kt_step`, `pd_step` and `eval_step` with ``spec`` and the optimizers bound, jitted for one engine.

    ``kt(state, teacher_p, batch, stage, m, t_prev, t_tgt)``, ``pd(state, teacher_p, batch, t_vals, t_ids)``
    and ``eval(train, batch)``. ``static_stages``: ``stage`` and the teacher block ``m`` are static (one
    program per student block: faster steps, more compilation). ``fast_compile``: XLA's backend
    optimisation off (`FAST_COMPILE_OPTIONS`).

    Each engine jits its own bound copies so that its compiled programs go when it goes (`get_engine`
    keeps the 8 most recent engines). JAX's caches keep whatever the module-level steps compile, keyed
    on their static arguments, for the life of the process: 24 tiny students flash-distilled through
    them grew the process by 1.7 GB after the 8th, against 0.9 GB with per-engine copies.
    """
    opts = FAST_COMPILE_OPTIONS if fast_compile else None
    kt = jax.jit(functools.partial(kt_step.__wrapped__, spec=spec, tx=kt_tx), donate_argnames=("state",),
                 static_argnames=("stage", "m") if static_stages else (), compiler_options=opts)
    pd = jax.jit(functools.partial(pd_step.__wrapped__, spec=spec, tx=pd_tx), donate_argnames=("state",),
                 compiler_options=opts)
    ev = jax.jit(functools.partial(eval_step.__wrapped__, spec=spec), compiler_options=opts)
    return Steps(kt, pd, ev)


# ============================================================================ sharding and checks
def data_mesh(devices: Sequence[Any] | None = None) -> Any:
    """A 1-D ``('data',)`` mesh over ``devices`` (default: every local device)."""
    from jax.sharding import Mesh

    devs = list(devices) if devices is not None else jax.local_devices()
    return Mesh(np.array(devs), ("data",))


def check_compatible(arch: StudentArch, teacher: Any, data: Any, batch_size: int, mesh: Any = None) -> None:
    """Raise `DistillError` when ``arch`` cannot be distilled from ``teacher`` on ``data``."""
    if not isinstance(arch, StudentArch):
        raise DistillError(f"the student must be a StudentArch, got {type(arch).__name__}")
    if arch.vocab_size != teacher.arch.vocab_size:
        raise DistillError(f"student vocab_size={arch.vocab_size} differs from the teacher's "
                           f"{teacher.arch.vocab_size}; students share the teacher's vocab "
                           f"(arch.replace(vocab_size={teacher.arch.vocab_size}))")
    if arch.max_position_embeddings < data.seq_len:
        raise DistillError(f"student max_position_embeddings={arch.max_position_embeddings} < seq_len={data.seq_len}")
    if teacher.arch.max_position_embeddings < data.seq_len:
        raise DistillError(f"teacher max_position_embeddings={teacher.arch.max_position_embeddings} "
                           f"< seq_len={data.seq_len}")
    if data.nsp and arch.type_vocab_size < 2:
        raise DistillError("NSP data needs type_vocab_size >= 2")
    if not teacher.has_mlm_head:
        raise DistillError(f"{teacher!r} has no MLM head; call ensure_mlm_head(teacher, data) first")
    n = 1 if mesh is None else mesh.devices.size
    if batch_size % n:
        raise DistillError(f"batch_size={batch_size} is not divisible by the {n} devices of the data mesh")


# ============================================================================ the engine
class HeldoutMetrics(TypedDict):
    """`DistillEngine.evaluate`: held-out MLM accuracy and mean loss over the masked predictions, NSP accuracy
    (None without NSP data)."""

    mlm_accuracy: float
    mlm_loss: float
    nsp_accuracy: float | None
    mlm_predictions: int


class DistillEngine:
    """The steps of one student and one teacher: its `StepSpec`, optimizers, the teacher on the devices.

    ``live_teacher``: run the teacher inside the steps (full distillation) instead of taking its
    outputs as inputs (the cached flash path). The engine holds no training state (see the module
    docstring for the state's layout).
    """

    def __init__(self, arch: StudentArch, teacher: Any, *, nsp: bool, kt_tx: Any, pd_tx: Any,
                 feature_weight: float = 1.0, attention_weight: float = 1.0, mlm_weight: float = 0.5,
                 kd_weight: float = 0.5, nsp_weight: float = 1.0, temperature: float = 1.0, topk: int = 64,
                 freeze_lower: bool = True, live_teacher: bool = False, dtype: str = "float32",
                 mesh: Any = None, fast_compile: bool = False, clip_norm: float | None = 1.0,
                 static_stages: bool = False) -> None:
        from jax.sharding import NamedSharding, PartitionSpec as P

        from autodistill.models import StudentModel

        self.arch, self.teacher, self.nsp = arch, teacher, nsp
        self.kt_tx, self.pd_tx = kt_tx, pd_tx
        self.mesh = mesh if mesh is not None else data_mesh()
        self.batch_sharding = NamedSharding(self.mesh, P("data"))
        self.replicated = NamedSharding(self.mesh, P())
        self.layer_map = layer_map(arch.num_hidden_layers, teacher.arch.num_hidden_layers)
        self.topk = int(min(topk, teacher.arch.vocab_size))
        self.proj = arch.hidden_size != teacher.arch.hidden_size
        ta = teacher.arch
        self.tparams = jax.device_put(teacher.params, self.replicated)
        self.tlayers = jax.device_put(
            jax.tree.map(lambda *xs: jnp.stack(xs), *[teacher.params["encoder"][f"layer_{i}"]
                                                       for i in range(ta.num_hidden_layers)]), self.replicated)
        shapes = jax.eval_shape(lambda: StudentModel(arch=arch, mlm_head=True).init(
            jax.random.PRNGKey(0), jnp.zeros((1, min(4, arch.max_position_embeddings)), jnp.int32)))["params"]
        aux_keys = (["proj"] if self.proj else []) + (["nsp"] if nsp else [])
        self.groups = param_groups({"params": shapes, "aux": {key: None for key in aux_keys}})
        self.spec = StepSpec(arch=arch, teacher_arch=ta, groups=self.groups, nsp=bool(nsp), proj=self.proj,
                             topk=self.topk, feature_weight=feature_weight, attention_weight=attention_weight,
                             mlm_weight=mlm_weight, kd_weight=kd_weight, nsp_weight=nsp_weight,
                             temperature=float(temperature), freeze_lower=freeze_lower, live_teacher=live_teacher,
                             dtype=dtype, clip_norm=clip_norm)
        self.static_stages = bool(static_stages)
        self.steps = compiled_steps(self.spec, kt_tx, pd_tx, fast_compile=bool(fast_compile),
                                    static_stages=self.static_stages)

    # ------------------------------------------------------------------ state
    def init_state(self, seed: int, *, init_from_teacher: bool = True, head_init: str = "random") -> dict:
        """Fresh student parameters, aux parameters and the knowledge-transfer optimizer state."""
        from autodistill.models import StudentModel, init_params

        a, ta = self.arch, self.teacher.arch
        rng = jax.random.PRNGKey(seed)
        r_student, r_proj, r_nsp = jax.random.split(rng, 3)
        params = init_params(StudentModel(arch=a, mlm_head=True), r_student)
        if init_from_teacher:
            params = _init_from_teacher(params, self.teacher.params, a)
        if head_init != "random":
            params = _init_head(params, self.teacher, a, head_init)
        aux: dict[str, Any] = {}
        if self.proj:
            aux["proj"] = {
                "kernel": jax.random.normal(r_proj, (a.num_hidden_layers, a.hidden_size, ta.hidden_size),
                                            jnp.float32) / math.sqrt(a.hidden_size),
                "bias": jnp.zeros((a.num_hidden_layers, ta.hidden_size), jnp.float32),
            }
        if self.nsp:
            k1, k2 = jax.random.split(r_nsp)
            aux["nsp"] = {
                "pooler": {"kernel": 0.02 * jax.random.normal(k1, (a.hidden_size, a.hidden_size)),
                           "bias": jnp.zeros((a.hidden_size,))},
                "classifier": {"kernel": 0.02 * jax.random.normal(k2, (a.hidden_size, 2)), "bias": jnp.zeros((2,))},
            }
        train = {"params": params, "aux": aux}
        state = {"train": train, "opt": self._opt_init(self.kt_tx, train)}
        return jax.device_put(state, self.replicated)

    def _opt_init(self, tx: Any, train: dict) -> dict:
        return {name: tx.init(_get(train, path)) for name, path in self.groups}

    def reset_optimizer(self, state: dict, phase: str) -> dict:
        """A fresh optimizer state for ``phase`` (``"kt"`` or ``"pd"``), keeping the parameters."""
        tx = self.kt_tx if phase == "kt" else self.pd_tx
        return jax.device_put({"train": state["train"], "opt": self._opt_init(tx, state["train"])}, self.replicated)

    # ------------------------------------------------------------------ steps
    def put_batch(self, batch: Any) -> dict:
        return jax.device_put(batch.arrays(), self.batch_sharding)

    def kt_step(self, state: dict, batch: Any, stage: int, t_prev: np.ndarray | None = None,
                t_tgt: np.ndarray | None = None) -> tuple[dict, Any, dict]:
        """One knowledge-transfer step training student block ``stage``; returns ``(state, loss, parts)``."""
        m = self.layer_map[stage]
        b = self.put_batch(batch)
        if t_prev is not None:
            t_prev = jax.device_put(t_prev, self.batch_sharding)
            t_tgt = jax.device_put(t_tgt, self.batch_sharding)
        tp = self.tparams if t_prev is None else self.tlayers
        if self.static_stages:
            return self.steps.kt(state, tp, b, int(stage), int(m), t_prev, t_tgt)
        return self.steps.kt(state, tp, b, jnp.int32(stage), jnp.int32(m), t_prev, t_tgt)

    def pd_step(self, state: dict, batch: Any, t_vals: np.ndarray | None = None,
                t_ids: np.ndarray | None = None) -> tuple[dict, Any, dict]:
        """One pretraining-distillation step; returns ``(state, loss, parts)``."""
        b = self.put_batch(batch)
        if t_vals is not None:
            t_vals = jax.device_put(t_vals, self.batch_sharding)
            t_ids = jax.device_put(t_ids, self.batch_sharding)
        return self.steps.pd(state, self.tparams if t_vals is None else None, b, t_vals, t_ids)

    def evaluate(self, state: dict, batches: Sequence[Any]) -> HeldoutMetrics:
        """Held-out MLM accuracy/loss (and NSP accuracy) over ``batches``."""
        tot: dict[str, float] = {}
        for b in batches:
            res = self.steps.eval(state["train"], self.put_batch(b))
            for key, v in res.items():
                tot[key] = tot.get(key, 0.0) + float(v)
        count = tot.get("count", 0.0)
        if count == 0:
            raise DistillError("no masked predictions in the held-out batches")
        out: HeldoutMetrics = {"mlm_accuracy": tot["correct"] / count, "mlm_loss": tot["loss_sum"] / count,
                               "nsp_accuracy": None, "mlm_predictions": int(round(count))}
        if self.nsp:
            out["nsp_accuracy"] = tot["nsp_correct"] / max(tot["nsp_count"], 1.0)
        return out


# ============================================================================ initialisation from the teacher
_SVD_CACHE: dict[tuple, np.ndarray] = {}


def _right_singular_vectors(t: np.ndarray) -> np.ndarray:
    """``V^T`` of ``t`` (cached: every student of a search projects the same teacher tables)."""
    key = (t.shape, hash(t[:: max(1, t.shape[0] // 64)].tobytes()), float(t.sum()))
    if key not in _SVD_CACHE:
        if len(_SVD_CACHE) > 8:
            _SVD_CACHE.clear()
        _SVD_CACHE[key] = np.linalg.svd(t, full_matrices=False)[2]
    return _SVD_CACHE[key]


def _init_head(params: dict, teacher: Any, arch: StudentArch, how: str) -> dict:
    """The student's MLM-head transform: identity dense (``"identity"``), or the teacher's transform
    (``"teacher"``, when the head shapes match; identity otherwise)."""
    if "cls" not in params:
        return params
    params = dict(params)
    cls = dict(params["cls"])
    pred = dict(cls["predictions"])
    tr = dict(pred["transform"])
    h = arch.hidden_size
    tcls = teacher.params.get("cls")
    same = (tcls is not None and teacher.arch.hidden_size == h and teacher.arch.family == arch.family
            and teacher.arch.embedding_size == arch.embedding_size)
    if how == "teacher" and same:
        ttr = tcls["predictions"]["transform"]
        tr = {k: {n: jnp.array(np.asarray(v, np.float32)) for n, v in ttr[k].items()} for k in ttr}
    else:
        tr["dense"] = {"kernel": jnp.eye(h, dtype=jnp.float32), "bias": jnp.zeros((h,), jnp.float32)}
    pred["transform"] = tr
    cls["predictions"] = pred
    params["cls"] = cls
    return params


def _init_from_teacher(params: dict, tparams: Mapping[str, Any], arch: StudentArch) -> dict:
    """Student embedding tables from the teacher's (top principal directions when narrower); MLM output bias too."""
    params = dict(params)
    emb = dict(params["embeddings"])
    temb = tparams["embeddings"]
    for table in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        s = np.asarray(emb[table]["embedding"])
        t = np.asarray(temb[table]["embedding"], np.float32)
        rows = min(s.shape[0], t.shape[0])
        width = s.shape[1]
        if width >= t.shape[1]:
            new = s.copy()
            new[:rows, : t.shape[1]] = t[:rows]
        else:
            vt = _right_singular_vectors(t)
            new = s.copy()
            kk = min(width, vt.shape[0])
            new[:rows, :kk] = t[:rows] @ vt[:kk].T
        emb[table] = {"embedding": jnp.asarray(new, jnp.float32)}
    params["embeddings"] = emb
    if "cls" in params and "cls" in tparams:
        cls = dict(params["cls"])
        pred = dict(cls["predictions"])
        pred["bias"] = jnp.array(np.asarray(tparams["cls"]["predictions"]["bias"], np.float32))  # a copy
        cls["predictions"] = pred
        params["cls"] = cls
    return params


# ============================================================================ engine reuse and the step loop
_ENGINES: dict[tuple, DistillEngine] = {}
_ENGINE_CACHE_SIZE = 8
# Recipe fields that do not shape the engine (they act outside the steps).
_NOT_ENGINE_FIELDS = ("seed", "init_from_teacher", "head_init", "divergence_factor", "eval_batch_size", "eval_every",
                      "checkpoint_every", "keep_checkpoints")


def get_engine(arch: StudentArch, teacher: Any, nsp: bool, cfg: Any, live: bool, mesh: Any) -> DistillEngine:
    """A `DistillEngine` for ``cfg`` (a `FlashConfig` or `FullConfig`), reusing a recent identical one.

    Reuse skips the compilation of the steps (the engine holds no training state).
    """
    engine_fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_ENGINE_FIELDS}
    devices = None if mesh is None else tuple(d.id for d in mesh.devices.flat)
    key = (arch, teacher.fingerprint, id(teacher.params), nsp, live, devices, type(cfg).__name__,
           tuple(sorted(engine_fields.items())))
    engine = _ENGINES.get(key)
    if engine is None:
        schedule = getattr(cfg, "schedule", "constant")
        kt_tx = make_optimizer(cfg.optimizer, cfg.kt_lr, cfg.warmup_steps, cfg.kt_steps,
                               weight_decay=cfg.weight_decay, clip_norm=None, schedule=schedule)
        pd_tx = make_optimizer(cfg.optimizer, pd_learning_rate(cfg, arch), cfg.warmup_steps, cfg.pd_steps,
                               weight_decay=cfg.weight_decay, clip_norm=None, schedule=schedule)
        engine = DistillEngine(arch, teacher, nsp=nsp, kt_tx=kt_tx, pd_tx=pd_tx,
                               feature_weight=cfg.feature_weight, attention_weight=cfg.attention_weight,
                               mlm_weight=cfg.mlm_weight, kd_weight=cfg.kd_weight, nsp_weight=cfg.nsp_weight,
                               temperature=cfg.temperature, topk=cfg.topk, freeze_lower=cfg.freeze_lower,
                               live_teacher=live, dtype=cfg.dtype, mesh=mesh, fast_compile=cfg.fast_compile,
                               clip_norm=cfg.clip_norm, static_stages=static_stages(cfg, arch))
        while len(_ENGINES) >= _ENGINE_CACHE_SIZE:
            _ENGINES.pop(next(iter(_ENGINES)))
        _ENGINES[key] = engine
    return engine


class _Monitor:
    """Stops a run on a non-finite loss, or one ``factor`` times its stage's first loss."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.ref: dict[Any, float] = {}

    def check(self, loss: float, stage: Any) -> tuple[str, str] | None:
        if not math.isfinite(loss):
            return "nan", f"non-finite loss {loss} at stage {stage}"
        ref = self.ref.setdefault(stage, loss)
        if loss > self.factor * max(ref, 0.1):
            return "diverged", f"loss {loss:.4g} exceeds {self.factor:g} x the stage's first loss {ref:.4g}"
        return None


@dataclass
class StepRun:
    """Progress of `run_steps`: the state, the loss curve, the status and timings."""

    state: Any
    losses: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)
    status: str = "ok"
    message: str = ""
    compile_s: float = 0.0
    steady_s: float = 0.0
    steady_steps: int = 0

    def tokens_per_s(self, tokens_per_step: int) -> float:
        return tokens_per_step * self.steady_steps / self.steady_s if self.steady_s > 0 else float("nan")


def run_steps(engine: DistillEngine, state: Any, data: Any, cfg: Any, cache: Any, start: int, stop: int, *,
              progress: Callable[[int, float], None] | None = None,
              on_step: Callable[[int, Any, StepRun], Any] | None = None, run: StepRun | None = None) -> StepRun:
    """Steps ``start .. stop-1`` of the two-phase schedule (``cfg.kt_steps`` then ``cfg.pd_steps``).

    Without ``on_step`` a step's loss is read while the next step runs. With
    it, each step is settled first and ``on_step(step, state, run)`` is called
    (checkpointing); it may return a replacement state. Stops early on a NaN
    or diverging loss (``run.status``).
    """
    run = run if run is not None else StepRun(state)
    for name in PART_NAMES:
        run.parts.setdefault(name, [])
    monitor = _Monitor(cfg.divergence_factor)
    ls = engine.arch.num_hidden_layers
    last_t: list[float | None] = [None]

    def settle(item: tuple) -> bool:
        step, loss, parts, key, t_start, first = item
        loss_f = float(loss)
        now = time.perf_counter()
        if first:
            run.compile_s += now - t_start
        elif last_t[0] is not None:
            run.steady_s += now - last_t[0]
            run.steady_steps += 1
        last_t[0] = now
        run.losses.append(loss_f)
        for name in PART_NAMES:
            run.parts[name].append(float(parts[name]) if name in parts else float("nan"))
        if progress is not None:
            progress(step, loss_f)
        bad = monitor.check(loss_f, key)
        if bad is not None:
            run.status, run.message = bad
            logger.warning("step %d: %s", step, bad[1])
            return False
        return True

    pending = None
    for step in range(start, stop):
        t_start = time.perf_counter()
        if step < cfg.kt_steps:
            stage = kt_stage(step, cfg.kt_steps, ls)
            m = engine.layer_map[stage]
            if cache is not None:
                state, loss, parts = engine.kt_step(state, cache.batch(step), stage, cache.hidden_states(step, m),
                                                    cache.hidden_states(step, m + 1))
            else:
                state, loss, parts = engine.kt_step(state, data.train_batch(step, cfg.batch_size, cfg.seed), stage)
            key: tuple[str, int] = ("kt", stage)
        else:
            if step == cfg.kt_steps:
                state = engine.reset_optimizer(state, "pd")
            if cache is not None:
                v, i = cache.topk_outputs(step)
                state, loss, parts = engine.pd_step(state, cache.batch(step), v, i)
            else:
                state, loss, parts = engine.pd_step(state, data.train_batch(step, cfg.batch_size, cfg.seed))
            key = ("pd", 0)
        item = (step, loss, parts, key, t_start, step == start or step == cfg.kt_steps)
        if on_step is None:
            prev, pending = pending, item
            if prev is not None and not settle(prev):
                pending = None
                break
        else:
            if not settle(item):
                break
            new = on_step(step, state, run)
            if new is not None:
                state = new
    if pending is not None:
        settle(pending)
    run.state = state
    return run
