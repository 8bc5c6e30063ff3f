"""The one optimizer builder of distillation and GLUE fine-tuning: schedule, weight-decay mask, clipping.

`make_optimizer` returns an optax chain: global-norm clipping (unless
``clip_norm`` is None), then AdamW or LAMB with decoupled weight decay off the
1-D leaves (biases and norm parameters), on a learning rate that warms up
linearly to its peak and then stays constant or decays linearly or along a
cosine. Flash and full distillation (`autodistill.distill.engine`) and GLUE
fine-tuning (`autodistill.distill.glue`) build theirs here. optax is imported
on the first call, so the constants below load with numpy only.
"""
from __future__ import annotations

from typing import Any

from autodistill.errors import DistillError, choices_message

__all__ = ["OPTIMIZERS", "SCHEDULES", "decay_mask", "learning_rate_schedule", "make_optimizer"]

OPTIMIZERS = ("adamw", "lamb")
SCHEDULES = ("constant", "linear", "cosine")


def decay_mask(tree: Any) -> Any:
    """True for the leaves weight decay applies to: matrices and embedding tables (``ndim >= 2``).

    Biases and norm parameters (1-D) are not decayed, the BERT recipe. (A stacked bias, such as the
    ``(Ls, Ht)`` bias of flash distillation's per-block projections, is 2-D and is decayed.)
    """
    import jax

    return jax.tree.map(lambda x: x.ndim >= 2, tree)


def learning_rate_schedule(peak_lr: float, warmup_steps: int, total_steps: int, *, schedule: str = "constant",
                           warmup_from_zero: bool = False) -> Any:
    """Linear warm-up over ``warmup_steps`` (capped at ``total_steps``) to ``peak_lr``, then ``schedule``
    (``"constant"``, or ``"linear"``/``"cosine"`` decay to 0 at ``total_steps``).

    The warm-up starts at ``peak_lr / warmup_steps`` (the first step already learns), or at 0 with
    ``warmup_from_zero`` (the ``transformers`` linear schedule, which GLUE fine-tuning follows).
    """
    import optax

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
    if not warm:
        return after
    start = 0.0 if warmup_from_zero else peak_lr / warm
    return optax.join_schedules([optax.linear_schedule(start, peak_lr, warm), after], [warm])


def make_optimizer(name: str, peak_lr: float, warmup_steps: int, total_steps: int, *, weight_decay: float = 0.01,
                   clip_norm: float | None = 1.0, schedule: str = "constant", warmup_from_zero: bool = False) -> Any:
    """``clip_by_global_norm`` (unless ``clip_norm`` is None) then AdamW or LAMB (``b1=0.9, b2=0.999,
    eps=1e-6``) on `learning_rate_schedule`, weight decay masked by `decay_mask`."""
    import optax

    if name not in OPTIMIZERS:
        raise DistillError(choices_message("optimizer", name, OPTIMIZERS))
    sched = learning_rate_schedule(peak_lr, warmup_steps, total_steps, schedule=schedule,
                                   warmup_from_zero=warmup_from_zero)
    make = optax.adamw if name == "adamw" else optax.lamb
    tx = make(sched, b1=0.9, b2=0.999, eps=1e-6, weight_decay=weight_decay, mask=decay_mask)
    return tx if clip_norm is None else optax.chain(optax.clip_by_global_norm(clip_norm), tx)
