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
(`autodistill.distill.engine.data_mesh`). Each parameter group (embeddings,
each block, the MLM head, the projections) has its own optimizer state, so a
block's Adam statistics and warm-up start when its stage starts; the
pretraining phase starts a fresh optimizer state for everything.

With budgets of a few hundred steps the pretraining-distillation steps do
most of the work (on the shared-data benchmark, 180 pretraining steps alone
beat 60 + 120 and 120 + 60 for a 4 x 128 student); the default split keeps
a third of the budget for the layer-wise transfer the method prescribes.

`DistillRecipe` holds the fields flash and full distillation share, their
defaults and their checks; `FlashConfig` and `autodistill.distill.full.FullConfig`
extend it. The steps, `DistillEngine` and the step loop are in
`autodistill.distill.engine`, shared with `autodistill.distill.full`. This
module loads numpy only; JAX loads when a distillation runs.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from autodistill.arch import StudentArch
from autodistill.distill.optim import OPTIMIZERS, SCHEDULES, make_optimizer
from autodistill.errors import DistillError, choices_message

logger = logging.getLogger(__name__)

__all__ = [
    "STATUSES", "OPTIMIZERS", "SCHEDULES", "HEAD_INITS", "DistillRecipe", "FlashConfig", "FlashResult", "layer_map",
    "kt_stage", "flash_distill", "flash_train", "pd_learning_rate", "static_stages", "make_optimizer",
]

STATUSES = ("ok", "nan", "diverged")
DTYPES = ("float32", "bfloat16")
HEAD_INITS = ("random", "identity", "teacher")
STAGE_COMPILES = ("auto", "static", "traced")
# "auto" compiles one knowledge-transfer step per stage when the stages are at least this many steps long.
# Measured (benchmarks/bench_distill.py, 4 x 256 student, batch 16 x 128, 2-core CPU): a static stage step
# takes ~0.6x the time of the traced one, and compiling 4 static steps costs ~9 s more than one traced step.
STATIC_STAGE_MIN_STEPS = 32

# Names that moved to `autodistill.distill.engine`, still importable from here (loading JAX on first use).
_ENGINE_NAMES = ("DistillEngine", "StepRun", "check_compatible", "data_mesh", "get_engine", "run_steps")


def __getattr__(name: str) -> Any:
    if name in _ENGINE_NAMES:
        from autodistill.distill import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
@dataclass(frozen=True, kw_only=True)
class DistillRecipe:
    """The fields, defaults and checks flash and full distillation share (keyword arguments only).

    Each recipe sets its own budget and optimizer defaults (``kt_steps``,
    ``pd_steps``, ``batch_size``, ``optimizer``, ``pd_lr``, ``pd_lr_width_ref``,
    ``warmup_steps``); the rest are common. Learning rates warm up over
    ``warmup_steps`` in each phase (capped at its length) to their peak, ``kt_lr``
    for the knowledge transfer and for the pretraining distillation ``pd_lr *
    pd_lr_width_ref / hidden_size`` (`pd_learning_rate`; ``None`` turns the width
    scaling off). ``weight_decay`` is decoupled and off biases and norms;
    ``clip_norm`` clips the global gradient norm. The losses are weighted by
    ``feature_weight``, ``attention_weight`` (knowledge transfer), ``mlm_weight``,
    ``kd_weight`` and ``nsp_weight`` (pretraining distillation), KD at
    ``temperature`` over the teacher's ``topk`` logits. ``init_from_teacher``
    starts the student's embedding tables from the teacher's (projected on their
    top principal directions when narrower) and its MLM output bias from the
    teacher's; ``head_init`` starts the MLM head's transform at the identity
    (``"identity"``), at the teacher's when the shapes match (``"teacher"``), or
    random (``"random"``). A loss ``divergence_factor`` times its stage's first
    ends the run (``"diverged"``). ``fast_compile`` compiles the steps with XLA's
    backend optimisation off: several times faster to compile, slower to run (for
    tiny models and tests). ``stage_compile``: ``"static"`` compiles one
    knowledge-transfer step per student block (faster steps, more compilation),
    ``"traced"`` one step for all blocks, ``"auto"`` static when a stage lasts at
    least `STATIC_STAGE_MIN_STEPS` steps.
    """

    kt_steps: int
    pd_steps: int
    batch_size: int
    kt_lr: float = 1e-3
    pd_lr: float
    pd_lr_width_ref: int | None
    warmup_steps: int
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    optimizer: str
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
        self._check_integers(("kt_steps", "pd_steps", "warmup_steps"), minimum=0)
        if self.kt_steps + self.pd_steps < 1:
            raise DistillError(f"{type(self).__name__} needs kt_steps + pd_steps >= 1")
        self._check_integers(("batch_size", "topk", "eval_batch_size"), minimum=1)
        for name in ("kt_lr", "pd_lr", "clip_norm", "temperature", "divergence_factor"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise DistillError(f"{type(self).__name__}.{name}={v!r} must be a finite number > 0")
        for name in ("weight_decay", "feature_weight", "attention_weight", "mlm_weight", "kd_weight", "nsp_weight"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise DistillError(f"{type(self).__name__}.{name}={v!r} must be a finite number >= 0")
        ref = self.pd_lr_width_ref
        if ref is not None and (not isinstance(ref, int) or isinstance(ref, bool) or ref < 1):
            raise DistillError(f"{type(self).__name__}.pd_lr_width_ref={ref!r} must be a positive integer or None")
        for name, choices in (("optimizer", OPTIMIZERS), ("dtype", DTYPES), ("head_init", HEAD_INITS),
                              ("stage_compile", STAGE_COMPILES)):
            if getattr(self, name) not in choices:
                raise DistillError(choices_message(name, getattr(self, name), choices))

    def _check_integers(self, names: tuple[str, ...], *, minimum: int) -> None:
        """Each of ``names`` is an ``int`` >= ``minimum`` (0: "an integer >= 0", 1: "a positive integer")."""
        what = "an integer >= 0" if minimum == 0 else "a positive integer"
        for name in names:
            v = getattr(self, name)
            if not isinstance(v, int) or v < minimum:
                raise DistillError(f"{type(self).__name__}.{name}={v!r} must be {what}")

    @property
    def total_steps(self) -> int:
        return self.kt_steps + self.pd_steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class FlashConfig(DistillRecipe):
    """Budget (steps) and hyper-parameters of one flash distillation (fields: `DistillRecipe`).

    AdamW; learning rates peak after ``warmup_steps`` (in each phase) and stay
    constant; the pretraining-distillation rate scales with the width
    (``pd_lr_width_ref=128``).
    """

    kt_steps: int = 60
    pd_steps: int = 120
    batch_size: int = 16
    pd_lr: float = 2e-3
    pd_lr_width_ref: int | None = 128
    warmup_steps: int = 10
    optimizer: str = "adamw"


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

    from autodistill.distill.engine import HeldoutMetrics, check_compatible, get_engine, run_steps

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
    nan_ev: HeldoutMetrics = {"mlm_accuracy": float("nan"), "mlm_loss": float("nan"), "nsp_accuracy": None,
                              "mlm_predictions": 0}
    ev = nan_ev
    if status == "ok":
        ev = engine.evaluate(run.state, data.heldout_batches(cfg.eval_batch_size))
        if not math.isfinite(ev["mlm_loss"]):
            status, message = "nan", "non-finite held-out loss"
            ev = nan_ev
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


def pd_learning_rate(cfg: DistillRecipe, arch: StudentArch) -> float:
    """Peak pretraining-distillation learning rate of ``arch``: ``pd_lr * pd_lr_width_ref / hidden_size``.

    Adam's best step size for hidden matrices falls as 1/width (the muP rule);
    without this scaling a fixed budget favours narrow students (on the
    shared-data benchmark 4 x 384 scored below 4 x 128 at one common rate and
    above it with the scaled rates). ``pd_lr_width_ref=None`` (the `FullConfig` default)
    uses ``pd_lr`` as is.
    """
    ref = cfg.pd_lr_width_ref
    return float(cfg.pd_lr) if ref is None else float(cfg.pd_lr) * ref / arch.hidden_size


def static_stages(cfg: DistillRecipe, arch: StudentArch) -> bool:
    """Whether ``cfg`` (`FlashConfig` / `FullConfig`) compiles one knowledge-transfer step per stage."""
    mode = cfg.stage_compile
    if mode == "auto":
        return cfg.kt_steps >= STATIC_STAGE_MIN_STEPS * arch.num_hidden_layers
    return mode == "static"
