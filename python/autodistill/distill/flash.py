"""Flash distillation: a short MobileBERT-style distillation that scores a student in minutes.

Two phases, sharing one step counter:

1. **Progressive knowledge transfer** (``kt_steps``): the student's blocks are
   trained one at a time, bottom up (stage ``l`` trains block ``l``, plus the
   embeddings in stage 0; lower blocks frozen when ``freeze_lower``). The loss is
   ``feature_weight * MSE(proj_l(h_s[l]), h_t[m(l)]) + attention_weight *
   KL(a_t[m(l)] || a_s[l])``: the block output against the mapped teacher block
   (through a learned ``hidden_size -> teacher width`` projection when the widths
   differ) and the attention distributions (head-averaged when head counts
   differ). `layer_map` maps student block ``l`` to teacher block ``m(l)``
   uniformly, last to last.
2. **Pretraining distillation** (``pd_steps``): every student parameter, loss
   ``mlm_weight * MLM + kd_weight * KD(teacher top-k logits, T)`` (+ NSP when
   the data has sentence pairs), with a fresh optimizer state.

The result is a `FlashResult`: held-out MLM accuracy (and NSP accuracy), the
per-step loss curve, wall time and a ``status``: ``"ok"``, ``"nan"`` (a
non-finite loss) or ``"diverged"`` (the loss grew ``divergence_factor``-fold over
the start of its stage); a failed run stops early and never raises for it.

Teacher outputs come from a `TeacherCache` (shared by every trial: same
batches, teacher run once) or, without one, from the teacher run inside each
step. Steps are jit-compiled once per student (one program serves every
stage: the stage is a traced argument, and ``lax.switch``/``lax.cond`` make a
stage-``l`` step run only blocks ``0..l`` and update only block ``l``);
batches are sharded over all local devices along the batch axis
(`data_mesh`). Each parameter group (embeddings, each block, the MLM head,
the projections) has its own optimizer state, so a block's Adam statistics
and warm-up start when its stage starts; the pretraining phase starts a
fresh optimizer state for everything.

With budgets of a few hundred steps the pretraining-distillation steps do
most of the work (on the shared-data benchmark, 180 pretraining steps alone
beat 60 + 120 and 120 + 60 for a 4 x 128 student); the default split keeps
a third of the budget for the layer-wise transfer the method prescribes.

`DistillEngine` holds the step functions and is shared with
`autodistill.distill.full`.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autodistill.arch import StudentArch
from autodistill.errors import DistillError, choices_message

logger = logging.getLogger(__name__)

__all__ = [
    "STATUSES", "OPTIMIZERS", "HEAD_INITS", "FlashConfig", "FlashResult", "DistillEngine", "layer_map", "kt_stage",
    "flash_distill", "flash_train", "get_engine", "pd_learning_rate", "run_steps", "StepRun", "data_mesh",
    "make_optimizer", "check_compatible",
]

STATUSES = ("ok", "nan", "diverged")
OPTIMIZERS = ("adamw", "lamb")
SCHEDULES = ("constant", "linear", "cosine")
DTYPES = ("float32", "bfloat16")
HEAD_INITS = ("random", "identity", "teacher")
STAGE_COMPILES = ("auto", "static", "traced")
# "auto" compiles one knowledge-transfer step per stage when the stages are at least this many steps long.
# Measured (benchmarks/bench_distill.py, 4 x 256 student, batch 16 x 128, 2-core CPU): a static stage step
# takes ~0.6x the time of the traced one, and compiling 4 static steps costs ~9 s more than one traced step.
STATIC_STAGE_MIN_STEPS = 32


def layer_map(student_layers: int, teacher_layers: int) -> tuple[int, ...]:
    """Teacher block (0-based) distilled into each student block: uniform, monotone, last to last.

    ``m(l) = ceil((l + 1) * Lt / Ls) - 1``; e.g. 4 student / 6 teacher blocks -> (1, 2, 4, 5),
    12 / 6 -> (0, 0, 1, 1, ..., 5, 5).
    """
    if student_layers < 1 or teacher_layers < 1:
        raise DistillError(f"layer counts must be >= 1 (got {student_layers}, {teacher_layers})")
    return tuple(min(teacher_layers, max(1, -(-(i + 1) * teacher_layers // student_layers))) - 1
                 for i in range(student_layers))


def kt_stage(step: int, kt_steps: int, student_layers: int) -> int:
    """Student block trained at knowledge-transfer step ``step`` (stages of equal length, bottom up)."""
    return min(student_layers - 1, step * student_layers // max(kt_steps, 1))


# ============================================================================ configs and results
@dataclass(frozen=True)
class FlashConfig:
    """Budget (steps) and hyper-parameters of one flash distillation.

    Learning rates peak after ``warmup_steps`` (in each phase) and stay
    constant; the pretraining-distillation rate is ``pd_lr * pd_lr_width_ref
    / hidden_size`` (`pd_learning_rate`; ``None`` turns the width scaling
    off). ``init_from_teacher`` starts the student's embedding tables from the
    teacher's (projected on their top principal directions when narrower) and
    its MLM output bias from the teacher's; ``head_init`` starts the MLM head's
    transform at the identity (``"identity"``), at the teacher's when the
    shapes match (``"teacher"``), or random (``"random"``). ``fast_compile``
    compiles the steps with XLA's backend optimisation off: several times
    faster to compile, slower to run (for tiny models and tests).
    ``stage_compile``: ``"static"`` compiles one knowledge-transfer step per
    student block (faster steps, more compilation), ``"traced"`` one step for
    all blocks, ``"auto"`` static when a stage lasts at least
    `STATIC_STAGE_MIN_STEPS` steps.
    """

    kt_steps: int = 60
    pd_steps: int = 120
    batch_size: int = 16
    kt_lr: float = 1e-3
    pd_lr: float = 2e-3
    pd_lr_width_ref: int | None = 128
    warmup_steps: int = 10
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    optimizer: str = "adamw"
    feature_weight: float = 1.0
    attention_weight: float = 1.0
    mlm_weight: float = 0.5
    kd_weight: float = 0.5
    nsp_weight: float = 1.0
    temperature: float = 1.0
    topk: int = 64
    freeze_lower: bool = True
    init_from_teacher: bool = True
    head_init: str = "identity"
    divergence_factor: float = 100.0
    seed: int = 0
    eval_batch_size: int = 32
    dtype: str = "float32"
    fast_compile: bool = False
    stage_compile: str = "auto"

    def __post_init__(self) -> None:
        if self.stage_compile not in STAGE_COMPILES:
            raise DistillError(choices_message("stage_compile", self.stage_compile, STAGE_COMPILES))
        if self.head_init not in HEAD_INITS:
            raise DistillError(choices_message("head_init", self.head_init, HEAD_INITS))
        ref = self.pd_lr_width_ref
        if ref is not None and (not isinstance(ref, int) or ref < 1):
            raise DistillError(f"FlashConfig.pd_lr_width_ref={ref!r} must be a positive integer or None")
        for name in ("kt_steps", "pd_steps", "warmup_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise DistillError(f"FlashConfig.{name}={v!r} must be an integer >= 0")
        if self.kt_steps + self.pd_steps < 1:
            raise DistillError("FlashConfig needs kt_steps + pd_steps >= 1")
        for name in ("batch_size", "topk", "eval_batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise DistillError(f"FlashConfig.{name}={v!r} must be a positive integer")
        for name in ("kt_lr", "pd_lr", "clip_norm", "temperature", "divergence_factor"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise DistillError(f"FlashConfig.{name}={v!r} must be a finite number > 0")
        for name in ("weight_decay", "feature_weight", "attention_weight", "mlm_weight", "kd_weight", "nsp_weight"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise DistillError(f"FlashConfig.{name}={v!r} must be a finite number >= 0")
        if self.optimizer not in OPTIMIZERS:
            raise DistillError(choices_message("optimizer", self.optimizer, OPTIMIZERS))
        if self.dtype not in DTYPES:
            raise DistillError(choices_message("dtype", self.dtype, DTYPES))

    @property
    def total_steps(self) -> int:
        return self.kt_steps + self.pd_steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class FlashResult:
    """Outcome of `flash_distill`.

    ``losses``: total loss per step done (the first ``kt_steps`` from knowledge
    transfer); ``loss_parts``: per-step components (``feature``, ``attention``,
    ``mlm``, ``kd``, ``nsp``; NaN where a component does not apply).
    ``mlm_accuracy``/``mlm_loss`` are on the held-out split (NaN unless
    ``status == "ok"``); ``nsp_accuracy`` is None without NSP data.
    ``train_tokens_per_s`` counts ``batch_size * seq_len`` positions per step,
    over the steps after each phase's first (compiling) step.
    """

    arch: StudentArch
    status: str
    mlm_accuracy: float
    mlm_loss: float
    nsp_accuracy: float | None
    losses: tuple[float, ...]
    loss_parts: Mapping[str, tuple[float, ...]]
    kt_steps: int
    pd_steps: int
    steps_done: int
    wall_time_s: float
    compile_s: float
    train_tokens_per_s: float
    layer_map: tuple[int, ...]
    message: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise DistillError(choices_message("status", self.status, STATUSES))
        if self.status == "ok" and not (0.0 <= self.mlm_accuracy <= 1.0):
            raise DistillError(f"FlashResult: mlm_accuracy={self.mlm_accuracy} outside [0, 1] for status ok")
        if self.steps_done != len(self.losses):
            raise DistillError("FlashResult: steps_done disagrees with the loss curve")
        if self.wall_time_s < 0:
            raise DistillError("FlashResult: negative wall time")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["arch"] = self.arch.to_dict()
        d["losses"] = list(self.losses)
        d["loss_parts"] = {k: list(v) for k, v in self.loss_parts.items()}
        d["layer_map"] = list(self.layer_map)
        return d


# ============================================================================ optimizers and sharding
def _decay_mask(tree: Any) -> Any:
    import jax

    return jax.tree.map(lambda x: x.ndim >= 2, tree)


def make_optimizer(name: str, peak_lr: float, warmup_steps: int, total_steps: int, *, weight_decay: float = 0.01,
                   clip_norm: float | None = 1.0, schedule: str = "constant"):
    """``clip_by_global_norm`` (unless ``clip_norm`` is None) then AdamW or LAMB; linear warm-up to
    ``peak_lr``, then constant/linear/cosine decay.

    No weight decay on biases and norm parameters (1-D leaves).
    """
    import optax

    if name not in OPTIMIZERS:
        raise DistillError(choices_message("optimizer", name, OPTIMIZERS))
    if schedule not in SCHEDULES:
        raise DistillError(choices_message("schedule", schedule, SCHEDULES))
    warm = max(0, min(int(warmup_steps), int(total_steps)))
    rest = max(1, int(total_steps) - warm)
    if schedule == "constant":
        after = optax.constant_schedule(peak_lr)
    elif schedule == "linear":
        after = optax.linear_schedule(peak_lr, 0.0, rest)
    else:
        after = optax.cosine_decay_schedule(peak_lr, rest)
    sched = optax.join_schedules([optax.linear_schedule(peak_lr / max(warm, 1), peak_lr, warm), after], [warm]) \
        if warm else after
    if name == "adamw":
        tx = optax.adamw(sched, b1=0.9, b2=0.999, eps=1e-6, weight_decay=weight_decay, mask=_decay_mask)
    else:
        tx = optax.lamb(sched, b1=0.9, b2=0.999, eps=1e-6, weight_decay=weight_decay, mask=_decay_mask)
    return tx if clip_norm is None else optax.chain(optax.clip_by_global_norm(clip_norm), tx)


def data_mesh(devices: Sequence[Any] | None = None):
    """A 1-D ``('data',)`` mesh over ``devices`` (default: every local device)."""
    import jax
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
class DistillEngine:
    """Jitted distillation steps for one student and one teacher.

    State (a pytree): ``{"train": {"params": student params (with 'cls'),
    "aux": {"proj": ..., "nsp": ...}}, "opt": optimizer state}``. ``proj``
    (``kernel`` ``(Ls, Hs, Ht)``, ``bias`` ``(Ls, Ht)``) exists only when the
    widths differ; ``nsp`` (pooler + classifier) only with NSP data.

    ``live_teacher``: run the teacher inside the steps (full distillation)
    instead of taking its outputs as inputs (the cached flash path).
    """

    def __init__(self, arch: StudentArch, teacher: Any, *, nsp: bool, kt_tx: Any, pd_tx: Any,
                 feature_weight: float = 1.0, attention_weight: float = 1.0, mlm_weight: float = 0.5,
                 kd_weight: float = 0.5, nsp_weight: float = 1.0, temperature: float = 1.0, topk: int = 64,
                 freeze_lower: bool = True, live_teacher: bool = False, dtype: str = "float32",
                 mesh: Any = None, fast_compile: bool = False, clip_norm: float | None = 1.0,
                 static_stages: bool = False) -> None:
        import jax
        import jax.numpy as jnp
        from jax.sharding import NamedSharding, PartitionSpec as P

        from autodistill.distill import losses as L
        from autodistill.models.encoder import Layer

        self.arch, self.teacher, self.nsp = arch, teacher, nsp
        self.kt_tx, self.pd_tx = kt_tx, pd_tx
        self.mesh = mesh if mesh is not None else data_mesh()
        self.batch_sharding = NamedSharding(self.mesh, P("data"))
        self.replicated = NamedSharding(self.mesh, P())
        self.layer_map = layer_map(arch.num_hidden_layers, teacher.arch.num_hidden_layers)
        self.topk = int(min(topk, teacher.arch.vocab_size))
        self.proj = arch.hidden_size != teacher.arch.hidden_size
        dt = jnp.dtype(dtype)
        ta = teacher.arch
        ls = arch.num_hidden_layers
        tparams = jax.device_put(teacher.params, self.replicated)
        tlayers = jax.device_put(
            jax.tree.map(lambda *xs: jnp.stack(xs), *[teacher.params["encoder"][f"layer_{i}"]
                                                       for i in range(ta.num_hidden_layers)]), self.replicated)
        self.tparams = tparams
        self.tlayers = tlayers
        from autodistill.models import StudentModel

        shapes = jax.eval_shape(lambda: StudentModel(arch=arch, mlm_head=True).init(
            jax.random.PRNGKey(0), jnp.zeros((1, min(4, arch.max_position_embeddings)), jnp.int32)))["params"]
        aux_keys = (["proj"] if self.proj else []) + (["nsp"] if nsp else [])
        self.groups = _param_groups({"params": shapes, "aux": {key: None for key in aux_keys}})
        tlayer_mod = Layer(ta, jnp.float32)
        fw, aw, mw, kw, nw = feature_weight, attention_weight, mlm_weight, kd_weight, nsp_weight
        temp = float(temperature)
        k = self.topk
        proj = self.proj

        def nsp_logits(aux, h):
            pooled = jnp.tanh(h[:, 0].astype(jnp.float32) @ aux["nsp"]["pooler"]["kernel"]
                              + aux["nsp"]["pooler"]["bias"])
            return pooled @ aux["nsp"]["classifier"]["kernel"] + aux["nsp"]["classifier"]["bias"]

        def proj_rows(stage):
            """Update mask of the stacked projections in stage ``stage``: only that row moves."""
            return {"kernel": (jnp.arange(ls) == stage).astype(jnp.float32).reshape(ls, 1, 1),
                    "bias": (jnp.arange(ls) == stage).astype(jnp.float32).reshape(ls, 1)}

        def apply_grouped(tx, state, grads, active, masks):
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
            for name, path in self.groups:
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

        def kt_active(stage):
            act = {}
            for name, path in self.groups:
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

        def teacher_attention(tlayers, t_prev, m, mask):
            tl = jax.tree.map(lambda x: x[m], tlayers)
            with L.dense_2d():
                _, probs = tlayer_mod.apply({"params": tl}, t_prev.astype(jnp.float32), L.attention_bias(mask))
            return probs

        def kt_loss(train, b, stage, t_tgt, t_att):
            hs, att = L.encode_stage(arch, train["params"], b["input_ids"], b["token_type_ids"], b["attention_mask"],
                                     stage, freeze_lower=freeze_lower, dtype=dt)
            hs = hs.astype(jnp.float32)
            if proj:
                hs = hs @ train["aux"]["proj"]["kernel"][stage] + train["aux"]["proj"]["bias"][stage]
            f = L.feature_mse(hs, t_tgt, b["attention_mask"])
            a = L.attention_kl(t_att, att, b["attention_mask"])
            return fw * f + aw * a, {"feature": f, "attention": a}

        def pd_loss(train, b, t_vals, t_ids):
            p = train["params"]
            out = L.encode(arch, p, b["input_ids"], b["token_type_ids"], b["attention_mask"], dtype=dt,
                           attentions=False)
            logits = L.mlm_logits(arch, p, out.last_hidden_state, b["mlm_positions"], dtype=dt)
            mlm, kd = L.mlm_and_kd_loss(logits, b["mlm_labels"], b["mlm_weights"], t_vals, t_ids, temp)
            total = mw * mlm + kw * kd
            parts = {"mlm": mlm, "kd": kd}
            if nsp:
                n, _ = L.nsp_loss(nsp_logits(train["aux"], out.last_hidden_state), b["nsp_labels"],
                                  b["example_weights"])
                total = total + nw * n
                parts["nsp"] = n
            return total, parts

        def teacher_live_kt(tparams, b, m):
            out = L.encode(ta, tparams, b["input_ids"], b["token_type_ids"], b["attention_mask"])
            hs = jnp.stack(out.hidden_states)
            return jax.lax.stop_gradient(hs[m + 1]), jax.lax.stop_gradient(jnp.stack(out.attentions)[m])

        def teacher_live_pd(tparams, b):
            out = L.encode(ta, tparams, b["input_ids"], b["token_type_ids"], b["attention_mask"], attentions=False)
            logits = L.mlm_logits(ta, tparams, out.last_hidden_state, b["mlm_positions"])
            v, i = jax.lax.top_k(logits, k)
            return jax.lax.stop_gradient(v), i

        def kt_step(state, teacher_p, b, stage, m, t_prev=None, t_tgt=None):
            if live_teacher:
                t_tgt, t_att = teacher_live_kt(teacher_p, b, m)
            else:
                t_att = teacher_attention(teacher_p, t_prev, m, b["attention_mask"])
            (loss, parts), g = jax.value_and_grad(kt_loss, has_aux=True)(state["train"], b, stage, t_tgt, t_att)
            masks = {"aux_proj": proj_rows(stage)} if proj else {}
            return apply_grouped(kt_tx, state, g, kt_active(stage), masks), loss, parts

        def pd_step(state, teacher_p, b, t_vals=None, t_ids=None):
            if live_teacher:
                t_vals, t_ids = teacher_live_pd(teacher_p, b)
            (loss, parts), g = jax.value_and_grad(pd_loss, has_aux=True)(state["train"], b, t_vals, t_ids)
            active = {name: path[:2] != ("aux", "proj") for name, path in self.groups}
            return apply_grouped(pd_tx, state, g, active, {}), loss, parts

        def eval_step(train, b):
            p = train["params"]
            out = L.encode(arch, p, b["input_ids"], b["token_type_ids"], b["attention_mask"], dtype=dt,
                           attentions=False)
            logits = L.mlm_logits(arch, p, out.last_hidden_state, b["mlm_positions"], dtype=dt)
            loss, correct = L.mlm_loss(logits, b["mlm_labels"], b["mlm_weights"])
            w = jnp.sum(b["mlm_weights"])
            res = {"loss_sum": loss * w, "correct": correct, "count": w}
            if nsp:
                _, nc = L.nsp_loss(nsp_logits(train["aux"], out.last_hidden_state), b["nsp_labels"],
                                   b["example_weights"])
                res["nsp_correct"] = nc
                res["nsp_count"] = jnp.sum(b["example_weights"])
            return res

        opts = {"xla_backend_optimization_level": 0} if fast_compile else None
        self.static_stages = bool(static_stages)
        self._kt_step = jax.jit(kt_step, donate_argnums=(0,), compiler_options=opts,
                                static_argnums=(3, 4) if self.static_stages else ())
        self._pd_step = jax.jit(pd_step, donate_argnums=(0,), compiler_options=opts)
        self._eval_step = jax.jit(eval_step, compiler_options=opts)

    # ------------------------------------------------------------------ state
    def init_state(self, seed: int, *, init_from_teacher: bool = True, head_init: str = "random") -> dict:
        """Fresh student parameters, aux parameters and the knowledge-transfer optimizer state."""
        import jax
        import jax.numpy as jnp

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
        import jax

        tx = self.kt_tx if phase == "kt" else self.pd_tx
        return jax.device_put({"train": state["train"], "opt": self._opt_init(tx, state["train"])}, self.replicated)

    # ------------------------------------------------------------------ steps
    def put_batch(self, batch: Any) -> dict:
        import jax

        return jax.device_put(batch.arrays(), self.batch_sharding)

    def kt_step(self, state: dict, batch: Any, stage: int, t_prev: np.ndarray | None = None,
                t_tgt: np.ndarray | None = None):
        """One knowledge-transfer step training student block ``stage``; returns ``(state, loss, parts)``."""
        import jax
        import jax.numpy as jnp

        m = self.layer_map[stage]
        b = self.put_batch(batch)
        if t_prev is not None:
            t_prev = jax.device_put(t_prev, self.batch_sharding)
            t_tgt = jax.device_put(t_tgt, self.batch_sharding)
        tp = self.tparams if t_prev is None else self.tlayers
        if self.static_stages:
            return self._kt_step(state, tp, b, int(stage), int(m), t_prev, t_tgt)
        return self._kt_step(state, tp, b, jnp.int32(stage), jnp.int32(m), t_prev, t_tgt)

    def pd_step(self, state: dict, batch: Any, t_vals: np.ndarray | None = None, t_ids: np.ndarray | None = None):
        """One pretraining-distillation step; returns ``(state, loss, parts)``."""
        import jax

        b = self.put_batch(batch)
        if t_vals is not None:
            t_vals = jax.device_put(t_vals, self.batch_sharding)
            t_ids = jax.device_put(t_ids, self.batch_sharding)
        return self._pd_step(state, self.tparams if t_vals is None else None, b, t_vals, t_ids)

    def evaluate(self, state: dict, batches: Sequence[Any]) -> dict[str, float | None]:
        """Held-out MLM accuracy/loss (and NSP accuracy) over ``batches``."""
        tot: dict[str, float] = {}
        for b in batches:
            res = self._eval_step(state["train"], self.put_batch(b))
            for key, v in res.items():
                tot[key] = tot.get(key, 0.0) + float(v)
        count = tot.get("count", 0.0)
        if count == 0:
            raise DistillError("no masked predictions in the held-out batches")
        out: dict[str, float | None] = {"mlm_accuracy": tot["correct"] / count, "mlm_loss": tot["loss_sum"] / count,
                                        "nsp_accuracy": None}
        if self.nsp:
            out["nsp_accuracy"] = tot["nsp_correct"] / max(tot["nsp_count"], 1.0)
        return out


_SVD_CACHE: dict[tuple, np.ndarray] = {}


def _right_singular_vectors(t: np.ndarray) -> np.ndarray:
    """``V^T`` of ``t`` (cached: every student of a search projects the same teacher tables)."""
    key = (t.shape, hash(t[:: max(1, t.shape[0] // 64)].tobytes()), float(t.sum()))
    if key not in _SVD_CACHE:
        if len(_SVD_CACHE) > 8:
            _SVD_CACHE.clear()
        _SVD_CACHE[key] = np.linalg.svd(t, full_matrices=False)[2]
    return _SVD_CACHE[key]


def _param_groups(train: Mapping[str, Any]) -> tuple[tuple[str, tuple[str, ...]], ...]:
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


def _init_head(params: dict, teacher: Any, arch: StudentArch, how: str) -> dict:
    """The student's MLM-head transform: identity dense (``"identity"``), or the teacher's transform
    (``"teacher"``, when the head shapes match; identity otherwise)."""
    import jax.numpy as jnp

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
    import jax.numpy as jnp

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


# ============================================================================ flash distillation
def flash_distill(arch: StudentArch, teacher: Any, data: Any, config: FlashConfig = FlashConfig(), *,
                  cache: Any = None, mesh: Any = None,
                  progress: Callable[[int, float], None] | None = None) -> FlashResult:
    """Flash-distill ``arch`` from ``teacher`` on ``data`` (see the module docstring).

    ``cache``: a `TeacherCache` built for this teacher, data, ``batch_size`` and
    ``seed`` covering ``kt_steps + pd_steps`` batches (hidden states for the
    first ``kt_steps``); None runs the teacher inside each step. Returns a
    `FlashResult`; a NaN or diverging loss gives ``status`` ``"nan"``/``"diverged"``.
    """
    return flash_train(arch, teacher, data, config, cache=cache, mesh=mesh, progress=progress)[0]


def flash_train(arch: StudentArch, teacher: Any, data: Any, config: FlashConfig = FlashConfig(), *,
                cache: Any = None, mesh: Any = None,
                progress: Callable[[int, float], None] | None = None) -> tuple[FlashResult, dict]:
    """`flash_distill`, also returning the trained student parameters (a Flax ``params`` dict with ``'cls'``)."""
    import jax

    cfg = config
    check_compatible(arch, teacher, data, cfg.batch_size, mesh)
    if cache is not None and not cache.covers(teacher, data, cfg.batch_size, cfg.seed, cfg.total_steps, cfg.kt_steps):
        raise DistillError(f"{cache!r} does not cover this run (teacher, data, batch_size={cfg.batch_size}, "
                           f"seed={cfg.seed}, {cfg.total_steps} batches, hidden for {cfg.kt_steps}); rebuild it")
    t0 = time.perf_counter()
    engine = get_engine(arch, teacher, data.nsp, cfg, cache is None, mesh)
    state = engine.init_state(cfg.seed, init_from_teacher=cfg.init_from_teacher, head_init=cfg.head_init)
    run = run_steps(engine, state, data, cfg, cache, 0, cfg.total_steps, progress=progress)
    status, message = run.status, run.message
    ev: dict[str, Any] = {"mlm_accuracy": float("nan"), "mlm_loss": float("nan"), "nsp_accuracy": None}
    if status == "ok":
        ev = engine.evaluate(run.state, data.heldout_batches(cfg.eval_batch_size))
        if not math.isfinite(ev["mlm_loss"]):
            status, message = "nan", "non-finite held-out loss"
            ev = {"mlm_accuracy": float("nan"), "mlm_loss": float("nan"), "nsp_accuracy": None}
    wall = time.perf_counter() - t0
    result = FlashResult(
        arch=arch, status=status, mlm_accuracy=float(ev["mlm_accuracy"]), mlm_loss=float(ev["mlm_loss"]),
        nsp_accuracy=ev["nsp_accuracy"], losses=tuple(run.losses),
        loss_parts={k: tuple(v) for k, v in run.parts.items()}, kt_steps=cfg.kt_steps, pd_steps=cfg.pd_steps,
        steps_done=len(run.losses), wall_time_s=wall, compile_s=run.compile_s,
        train_tokens_per_s=run.tokens_per_s(cfg.batch_size * data.seq_len), layer_map=engine.layer_map,
        message=message)
    logger.info("flash %s: status=%s mlm_accuracy=%.4f steps=%d wall=%.1fs", arch.short_name(), status,
                result.mlm_accuracy, result.steps_done, wall)
    return result, jax.device_get(run.state["train"]["params"])


_ENGINES: dict[tuple, DistillEngine] = {}
_ENGINE_CACHE_SIZE = 8


def pd_learning_rate(cfg: Any, arch: StudentArch) -> float:
    """Peak pretraining-distillation learning rate of ``arch``: ``pd_lr * pd_lr_width_ref / hidden_size``.

    Adam's best step size for hidden matrices falls as 1/width (the muP rule);
    without this scaling a fixed budget favours narrow students (on the
    shared-data benchmark 4 x 384 scored below 4 x 128 at one common rate and
    above it with the scaled rates). ``pd_lr_width_ref=None`` (the `FullConfig` default)
    uses ``pd_lr`` as is.
    """
    ref = getattr(cfg, "pd_lr_width_ref", None)
    return float(cfg.pd_lr) if ref is None else float(cfg.pd_lr) * ref / arch.hidden_size


def static_stages(cfg: Any, arch: StudentArch) -> bool:
    """Whether ``cfg`` (`FlashConfig` / `FullConfig`) compiles one knowledge-transfer step per stage."""
    mode = getattr(cfg, "stage_compile", "auto")
    if mode == "auto":
        return cfg.kt_steps >= STATIC_STAGE_MIN_STEPS * arch.num_hidden_layers
    return mode == "static"


def get_engine(arch: StudentArch, teacher: Any, nsp: bool, cfg: Any, live: bool, mesh: Any) -> DistillEngine:
    """A `DistillEngine` for ``cfg`` (a `FlashConfig` or `FullConfig`), reusing a recent identical one.

    Reuse skips the compilation of the steps (the engine holds no training state).
    """
    engine_fields = {k: v for k, v in dataclasses.asdict(cfg).items()
                     if k not in ("seed", "init_from_teacher", "head_init", "divergence_factor", "eval_batch_size",
                                  "eval_every", "checkpoint_every", "keep_checkpoints")}
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


PART_NAMES = ("feature", "attention", "mlm", "kd", "nsp")


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

    def settle(item) -> bool:
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
            key = ("kt", stage)
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
