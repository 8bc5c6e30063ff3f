"""Full distillation of a chosen student: the flash losses with long budgets, checkpoints and exact resume.

Same two phases and losses as `autodistill.distill.flash` (progressive
knowledge transfer, then pretraining distillation), with:

* AdamW or LAMB, linear warm-up then constant / linear / cosine decay, per phase;
* the teacher run inside each step (no cache: budgets are long);
* orbax checkpoints every ``checkpoint_every`` steps (and at the end) under
  ``checkpoint_dir``, holding the parameters, the optimizer state, the step
  and the loss curve; ``run.json`` beside them records the student, the config,
  the teacher and the data, and a resume checks them;
* resume after an interruption gives bit-identical results: batch ``i`` is a
  pure function of ``(seed, i)`` (`DistillData.train_batch`), the phase and the
  trained block follow from the step, and the restored state is exact;
* data parallelism over every local device (``jax.sharding``: the batch axis is
  split over a ``('data',)`` mesh, parameters are replicated).

`load_checkpoint` returns ``(arch, params)`` of the latest (or a given) step,
ready for `autodistill.distill.export.export_student`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autodistill.arch import StudentArch
from autodistill.distill.flash import SCHEDULES, STATUSES, DistillRecipe
from autodistill.errors import DistillError, choices_message

logger = logging.getLogger(__name__)

__all__ = ["FullConfig", "FullResult", "full_distill", "load_checkpoint", "latest_step"]

_RUN_FILE = "run.json"


@dataclass(frozen=True, kw_only=True)
class FullConfig(DistillRecipe):
    """Budget and hyper-parameters of a full distillation (common fields: `DistillRecipe`).

    LAMB by default; ``warmup_steps`` applies to each phase (capped at its length);
    ``schedule`` is the decay after warm-up. ``checkpoint_every`` steps (and the
    last step) are saved, the newest ``keep_checkpoints`` kept. ``eval_every > 0``
    also records the held-out MLM accuracy during training.
    """

    kt_steps: int = 2000
    pd_steps: int = 10000
    batch_size: int = 32
    optimizer: str = "lamb"
    pd_lr: float = 1e-3
    pd_lr_width_ref: int | None = None
    warmup_steps: int = 200
    schedule: str = "linear"
    eval_every: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_integers(("eval_every",), minimum=0)
        self._check_integers(("checkpoint_every", "keep_checkpoints"), minimum=1)
        if self.schedule not in SCHEDULES:
            raise DistillError(choices_message("schedule", self.schedule, SCHEDULES))


@dataclass(frozen=True)
class FullResult:
    """Outcome of `full_distill`.

    ``steps_done`` counts all steps including those before a resume;
    ``losses`` is the whole curve (restored from the checkpoint, then this
    run's). ``finished``: the budget was reached (held-out metrics are then
    set; NaN otherwise). ``resumed_from``: the checkpoint step, or None.
    ``evals``: ``(step, held-out MLM accuracy)`` pairs from ``eval_every``.
    """

    arch: StudentArch
    status: str
    finished: bool
    steps_done: int
    mlm_accuracy: float
    mlm_loss: float
    nsp_accuracy: float | None
    losses: tuple[float, ...]
    wall_time_s: float
    train_tokens_per_s: float
    checkpoint_dir: str
    resumed_from: int | None
    evals: tuple[tuple[int, float], ...] = ()
    message: str = ""
    mlm_predictions: int = 0  # held-out masked tokens behind mlm_accuracy

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise DistillError(choices_message("status", self.status, STATUSES))
        if self.steps_done != len(self.losses):
            raise DistillError("FullResult: steps_done disagrees with the loss curve")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["arch"] = self.arch.to_dict()
        d["losses"] = list(self.losses)
        d["evals"] = [list(e) for e in self.evals]
        return d


def _pack_empty(tree: Any) -> Any:
    """Orbax cannot save zero-size arrays (MobileBERT's extra MLM rows when hidden == embedding):
    stand a one-element placeholder in for each; `_unpack_empty` puts the empty arrays back."""
    import jax
    import jax.numpy as jnp

    return jax.tree.map(lambda x: jnp.zeros((1,), x.dtype) if getattr(x, "size", 1) == 0 else x, tree)


def _unpack_empty(tree: Any, template: Any) -> Any:
    """``tree`` with the leaves that are empty in ``template`` (arrays or shape structs) restored empty."""
    import jax
    import jax.numpy as jnp

    return jax.tree.map(lambda x, t: jnp.zeros(t.shape, t.dtype) if getattr(t, "size", 1) == 0 else x, tree, template)


def _manager(directory: Path, keep: int):
    import orbax.checkpoint as ocp

    opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory.absolute(), options=opts)


def latest_step(checkpoint_dir: str | os.PathLike) -> int | None:
    """Newest saved step under ``checkpoint_dir`` (None when there is none)."""
    d = Path(checkpoint_dir)
    if not d.is_dir():
        return None
    steps = [int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(steps) if steps else None


def _run_record(arch: StudentArch, teacher: Any, data: Any, cfg: FullConfig) -> dict[str, Any]:
    return {"arch": arch.to_dict(), "config": cfg.to_dict(), "teacher": teacher.name,
            "teacher_fingerprint": teacher.fingerprint, "data_fingerprint": data.fingerprint,
            "vocab_path": str(teacher.vocab_path)}


def full_distill(arch: StudentArch, teacher: Any, data: Any, config: FullConfig, checkpoint_dir: str | os.PathLike,
                 *, resume: bool = True, stop_at_step: int | None = None, mesh: Any = None,
                 progress: Callable[[int, float], None] | None = None) -> FullResult:
    """Distill ``arch`` for ``config.total_steps`` steps, checkpointing into ``checkpoint_dir``.

    ``resume``: continue from the newest checkpoint there (it must come from the
    same student, config, teacher and data); otherwise the folder must not
    hold checkpoints. ``stop_at_step`` ends this call early after that many
    total steps (as an interruption would; a checkpoint is written there).
    ``mesh``: a ``('data',)`` mesh (default: all local devices). A NaN or
    diverging loss ends the run with that status and no exception.
    """
    import jax
    import orbax.checkpoint as ocp

    from autodistill.distill.engine import PART_NAMES, HeldoutMetrics, StepRun, check_compatible, get_engine, run_steps

    cfg = config
    check_compatible(arch, teacher, data, cfg.batch_size, mesh)
    ckdir = Path(checkpoint_dir)
    record = _run_record(arch, teacher, data, cfg)
    latest = latest_step(ckdir)
    if latest is not None and not resume:
        raise DistillError(f"{ckdir} already holds checkpoints (newest step {latest}); resume or use a new folder")
    if latest is not None:
        try:
            old = json.loads((ckdir / _RUN_FILE).read_text())
        except (OSError, ValueError) as e:
            raise DistillError(f"{ckdir} has checkpoints but no readable {_RUN_FILE}: {e}") from None
        diff = [k for k in ("arch", "config", "teacher_fingerprint", "data_fingerprint") if old.get(k) != record[k]]
        if diff:
            raise DistillError(f"cannot resume from {ckdir}: its run differs in {diff}; use a new folder")
    ckdir.mkdir(parents=True, exist_ok=True)
    (ckdir / _RUN_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))

    t0 = time.perf_counter()
    engine = get_engine(arch, teacher, data.nsp, cfg, True, mesh)
    state = engine.init_state(cfg.seed, init_from_teacher=cfg.init_from_teacher, head_init=cfg.head_init)
    mngr = _manager(ckdir, cfg.keep_checkpoints)
    run = StepRun(state)
    evals: list[tuple[int, float]] = []
    start = 0
    if latest is not None:
        restored = mngr.restore(latest, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_pack_empty(state)), meta=ocp.args.JsonRestore()))
        state = _unpack_empty(restored["state"], state)
        meta = restored["meta"]
        run.losses = [float(x) for x in meta["losses"]]
        run.parts = {k: [float(x) for x in meta["parts"].get(k, [])] for k in PART_NAMES}
        evals = [tuple(e) for e in meta.get("evals", [])]
        start = int(meta["step"])
        if start != latest or len(run.losses) != start:
            raise DistillError(f"checkpoint {ckdir}/{latest} is inconsistent (step {start}, "
                               f"{len(run.losses)} losses)")
        logger.info("resumed %s from step %d in %s", arch.short_name(), start, ckdir)
    stop = cfg.total_steps if stop_at_step is None else max(start, min(int(stop_at_step), cfg.total_steps))

    def save(step_done: int, st: Any, r: StepRun) -> None:
        meta = {"step": step_done, "losses": r.losses, "parts": r.parts, "evals": [list(e) for e in evals]}
        mngr.save(step_done, args=ocp.args.Composite(state=ocp.args.StandardSave(_pack_empty(st)),
                                                     meta=ocp.args.JsonSave(meta)), force=True)

    def on_step(step: int, st: Any, r: StepRun) -> None:
        done = step + 1
        if cfg.eval_every and done % cfg.eval_every == 0:
            ev = engine.evaluate(st, data.heldout_batches(cfg.eval_batch_size))
            evals.append((done, ev["mlm_accuracy"]))
            logger.info("step %d: held-out MLM accuracy %.4f", done, ev["mlm_accuracy"])
        if done % cfg.checkpoint_every == 0 or done == stop:
            save(done, st, r)
        return None

    try:
        run = run_steps(engine, state, data, cfg, None, start, stop, progress=progress, on_step=on_step, run=run)
    finally:
        mngr.wait_until_finished()
    finished = run.status == "ok" and len(run.losses) == cfg.total_steps
    ev: HeldoutMetrics = {"mlm_accuracy": float("nan"), "mlm_loss": float("nan"), "nsp_accuracy": None,
                          "mlm_predictions": 0}
    if finished:
        ev = engine.evaluate(run.state, data.heldout_batches(cfg.eval_batch_size))
    mngr.close()
    result = FullResult(
        arch=arch, status=run.status, finished=finished, steps_done=len(run.losses),
        mlm_accuracy=float(ev["mlm_accuracy"]), mlm_loss=float(ev["mlm_loss"]), nsp_accuracy=ev["nsp_accuracy"],
        losses=tuple(run.losses), wall_time_s=time.perf_counter() - t0,
        train_tokens_per_s=run.tokens_per_s(cfg.batch_size * data.seq_len), checkpoint_dir=str(ckdir),
        resumed_from=latest, evals=tuple(evals), message=run.message, mlm_predictions=int(ev["mlm_predictions"]))
    jax.block_until_ready(run.state)
    logger.info("full %s: status=%s steps=%d mlm_accuracy=%.4f", arch.short_name(), result.status,
                result.steps_done, result.mlm_accuracy)
    return result


def load_checkpoint(checkpoint_dir: str | os.PathLike, step: int | None = None) -> tuple[StudentArch, dict]:
    """``(arch, params)`` (Flax params with the MLM head) of a `full_distill` checkpoint (newest by default)."""
    import jax
    import orbax.checkpoint as ocp

    ckdir = Path(checkpoint_dir)
    if not (ckdir / _RUN_FILE).is_file():
        raise DistillError(f"{ckdir} is not a full-distillation checkpoint folder (no {_RUN_FILE})")
    step = latest_step(ckdir) if step is None else step
    if step is None or not (ckdir / str(step)).is_dir():
        raise DistillError(f"{ckdir} has no checkpoint" + ("" if step is None else f" for step {step}"))
    record = json.loads((ckdir / _RUN_FILE).read_text())
    arch = StudentArch.from_dict(record["arch"])
    mngr = _manager(ckdir, 1_000_000)
    try:
        restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    finally:
        mngr.close()
    params = restored["state"]["train"]["params"]
    from autodistill.models import StudentModel, init_params

    template = init_params(StudentModel(arch=arch, mlm_head=True), jax.random.PRNGKey(0))  # shapes only
    return arch, _unpack_empty(jax.tree.map(lambda x: jax.numpy.asarray(x), params), template)
