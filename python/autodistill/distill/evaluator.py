"""`FlashDistillEvaluator`: the search's evaluator, scoring a student by flash distillation.

It implements `autodistill.search.evaluators.Evaluator`: ``evaluate(arch,
trial_id) -> TrialResult`` with ``accuracy`` = held-out MLM accuracy after a
flash distillation of ``steps`` steps. Every trial uses the same batches and
one `TeacherCache` (built at the first evaluation, in memory or under
``cache_dir`` where other processes find it), so trials differ only by the
student. A NaN or diverging run returns NaN accuracy with the status in the
metrics (the search records a failed trial); other errors of one trial raise
`TrialFailed`. Safe to call from several threads (the first call builds the
shared state under a lock).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
from typing import TYPE_CHECKING, Any

from autodistill.arch import StudentArch
from autodistill.errors import DistillError, TrialFailed

if TYPE_CHECKING:
    from autodistill.distill.teacher import TeacherCache

logger = logging.getLogger(__name__)

__all__ = ["FlashDistillEvaluator"]


class FlashDistillEvaluator:
    """Score students by flash distillation from one teacher on one data set.

    Args:
        teacher: a `Teacher` (fitted an MLM head on ``data`` at first use when it has none).
        data: a `DistillData` (the held-out split gives the accuracy).
        steps: total steps per trial, split ``kt_fraction`` knowledge transfer / rest
            pretraining distillation; None keeps ``config``'s split.
        config: the `FlashConfig` (default: ``FlashConfig()``).
        cache_dir: where the teacher cache (and a fitted head) live; None keeps the
            teacher cache in memory (a fitted head then goes to the default cache root).
        adapt_vocab: give students the teacher's ``vocab_size`` (search spaces use
            BERT's 30522; a teacher with another vocab would otherwise reject them).
        mesh: a ``('data',)`` device mesh (default: all local devices).
        keep_losses: include the per-step loss curve in the metrics.
    """

    def __init__(self, teacher: Any, data: Any, steps: int | None = None, *, config: Any = None,
                 kt_fraction: float = 1 / 3, cache_dir: str | os.PathLike | None = None, adapt_vocab: bool = True,
                 mesh: Any = None, keep_losses: bool = True, head_fit: Any = None) -> None:
        from autodistill.distill.flash import FlashConfig

        cfg = config if config is not None else FlashConfig()
        if steps is not None:
            if not isinstance(steps, int) or steps < 2:
                raise DistillError(f"steps={steps!r} must be an integer >= 2")
            if not 0.0 <= kt_fraction <= 1.0:
                raise DistillError(f"kt_fraction={kt_fraction} must be in [0, 1]")
            kt = int(round(steps * kt_fraction))
            cfg = dataclasses.replace(cfg, kt_steps=kt, pd_steps=steps - kt)
        self.config = cfg
        self.data = data
        self.cache_dir = cache_dir
        self.adapt_vocab = adapt_vocab
        self.mesh = mesh
        self.keep_losses = keep_losses
        self._teacher = teacher
        self._head_fit = head_fit
        self._cache: TeacherCache | None = None
        self._teacher_acc: float | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ shared state
    def prepare(self) -> None:
        """Fit the teacher's MLM head if needed, evaluate the teacher and build the teacher cache (once)."""
        with self._lock:
            if self._cache is not None:
                return
            from autodistill.distill.teacher import HeadFitConfig, TeacherCache, ensure_mlm_head, evaluate_mlm

            cfg = self.config
            self._teacher = ensure_mlm_head(self._teacher, self.data, self._head_fit or HeadFitConfig(),
                                            cache_dir=self.cache_dir)
            self._teacher_acc = evaluate_mlm(self._teacher.arch, self._teacher.params,
                                             self.data.heldout_batches(cfg.eval_batch_size))["mlm_accuracy"]
            self._cache = TeacherCache.build(self._teacher, self.data, num_batches=cfg.total_steps,
                                             batch_size=cfg.batch_size, seed=cfg.seed, hidden_batches=cfg.kt_steps,
                                             topk=cfg.topk, cache_dir=self.cache_dir)
            logger.info("evaluator ready: teacher held-out MLM accuracy %.4f, %r", self._teacher_acc, self._cache)

    @property
    def teacher(self) -> Any:
        """The teacher (with its MLM head once `prepare` ran)."""
        return self._teacher

    @property
    def teacher_mlm_accuracy(self) -> float:
        self.prepare()
        assert self._teacher_acc is not None
        return self._teacher_acc

    def adapt(self, arch: StudentArch) -> StudentArch:
        """``arch`` with the teacher's vocab size (when ``adapt_vocab``)."""
        tv = self._teacher.arch.vocab_size
        if self.adapt_vocab and arch.vocab_size != tv:
            return arch.replace(vocab_size=tv)
        return arch

    # ------------------------------------------------------------------ evaluation
    def run(self, arch: StudentArch):
        """The `FlashResult` of ``arch`` (after `adapt`)."""
        from autodistill.distill.flash import flash_distill

        self.prepare()
        return flash_distill(self.adapt(arch), self._teacher, self.data, self.config, cache=self._cache,
                             mesh=self.mesh)

    def metrics(self, arch: StudentArch) -> dict[str, Any]:
        """Flash-distill ``arch`` and return its metrics as a plain dict (``mlm_accuracy``, ``status``, ...)."""
        r = self.run(arch)
        a = r.arch
        m: dict[str, Any] = {
            "mlm_accuracy": r.mlm_accuracy, "mlm_loss": r.mlm_loss, "status": r.status, "message": r.message,
            "wall_time_s": r.wall_time_s, "compile_s": r.compile_s, "train_tokens_per_s": r.train_tokens_per_s,
            "steps": r.steps_done, "kt_steps": r.kt_steps, "pd_steps": r.pd_steps,
            "final_loss": r.losses[-1] if r.losses else float("nan"),
            "teacher_mlm_accuracy": self._teacher_acc, "chance_accuracy": self.data.chance_accuracy(),
            "num_parameters": a.num_parameters(pooler=False, mlm_head=True), "layer_map": list(r.layer_map),
        }
        if r.nsp_accuracy is not None:
            m["nsp_accuracy"] = r.nsp_accuracy
        if self.keep_losses:
            m["losses"] = list(r.losses)
        return m

    def evaluate(self, arch: StudentArch, trial_id: int = 0):
        """`Evaluator` protocol: a ``TrialResult`` whose accuracy is the held-out MLM accuracy.

        NaN accuracy (with ``metrics["status"]``) for a NaN/diverged run; `TrialFailed` for other errors.
        """
        from autodistill.search.types import TrialResult

        try:
            m = self.metrics(arch)
        except (DistillError, ValueError, RuntimeError, MemoryError) as e:
            raise TrialFailed(f"flash distillation of {arch.short_name()} (trial {trial_id}) failed: {e}") from e
        acc = m["mlm_accuracy"] if m["status"] == "ok" else float("nan")
        if not math.isfinite(acc):
            logger.warning("trial %d %s: %s (%s)", trial_id, arch.short_name(), m["status"], m["message"])
        return TrialResult(accuracy=float(acc), metrics=m)

    def __repr__(self) -> str:
        c = self.config
        return (f"FlashDistillEvaluator({self._teacher!r}, {self.data!r}, kt_steps={c.kt_steps}, "
                f"pd_steps={c.pd_steps}, batch_size={c.batch_size})")
