"""The stages of a run, each a short function of the `RunContext` that reads and writes only through the
`RunFolder` and its records. Every stage skips the work it finds finished (trials, student records,
exports, measurements), so a resume runs them all again."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from autodistill.errors import AutodistillError, ConfigError
from autodistill.run.context import RemoteEvaluate, RunContext
from autodistill.run.records import ConfirmRecord, StudentRecord

if TYPE_CHECKING:
    from pathlib import Path

    from autodistill.arch import StudentArch
    from autodistill.search.runner import RunSummary

logger = logging.getLogger(__name__)

__all__ = ["STAGES", "chosen_students", "confirm_profile", "stage_confirm", "stage_distill", "stage_export",
           "stage_glue", "stage_report", "stage_search"]

STAGES = ("search", "distill", "export", "glue", "confirm", "report")


def stage_search(ctx: RunContext) -> RunSummary:
    """Model exploration: flash-distil the searcher's proposals until the budget is met."""
    from autodistill.executors import TaskEvaluator, make_executor
    from autodistill.search.runner import make_searcher, run_search

    cfg = ctx.cfg.search
    ctx.evaluator.prepare()  # teacher head + teacher outputs on disk before any worker needs them
    # the engine's settings from [search] (random and nsga2 take none, and load no torch)
    searcher = make_searcher(cfg.searcher, ctx.pool, engine_config=ctx.engine_config() if cfg.searcher == "engine"
                             else None, seed=ctx.cfg.run.seed)
    executor = make_executor(cfg.executor, cfg.address or None, cfg.workers if cfg.executor == "ray" else None)
    evaluator = (ctx.evaluator if cfg.executor == "local"
                 else TaskEvaluator(executor, RemoteEvaluate(ctx.cfg.to_dict(), str(ctx.folder.path))))
    try:
        summary = run_search(space=ctx.space, evaluator=evaluator, store=ctx.folder.store_dir, budget=cfg.budget,
                             searcher=searcher, pool=ctx.pool, batch_size=cfg.batch_size, workers=cfg.workers,
                             progress=ctx.progress)
    finally:
        executor.close()
    logger.info("search: %d completed, %d failed, hypervolume %.4g", summary.n_completed, summary.n_failed,
                summary.hypervolume)
    return summary


def chosen_students(ctx: RunContext) -> list[tuple[StudentRecord, StudentArch]]:
    """The students to distill fully, as records to fill in: ``top_k`` of the search's Pareto students
    (`autodistill.search.selection.select_students`), then the baseline."""
    from autodistill.search.selection import select_students
    from autodistill.search.store import TrialStore

    with TrialStore(ctx.folder.store_dir, create=False, readonly=True) as st:
        picked = select_students(st.pareto(), st.trials("completed"), ctx.cfg.full.top_k,
                                 feasibility=ctx.latency_feasibility())
    out = []
    for t in picked:
        arch = ctx.evaluator.adapt(t.arch)
        out.append((StudentRecord(f"trial{t.trial_id:04d}", arch, status="pending", finished=False,
                                  trial_id=t.trial_id, flash_accuracy=t.accuracy, est_latency_s=t.latency_s), arch))
    base = ctx.baseline()
    if base is not None:
        out.append((StudentRecord("baseline", base, status="pending", finished=False, baseline=True), base))
    return out


def stage_distill(ctx: RunContext) -> list[StudentRecord]:
    """Full distillation of the chosen students and of the baseline, with the same budget."""
    from autodistill.distill.flash import FlashConfig
    from autodistill.distill.full import FullConfig, full_distill

    cfg = ctx.cfg.full
    kt = int(round(cfg.steps * float(cfg.kt_fraction)))
    fcfg = FullConfig(kt_steps=kt, pd_steps=cfg.steps - kt, batch_size=cfg.batch_size,
                      warmup_steps=max(1, cfg.steps // 10), checkpoint_every=max(1, cfg.steps // 4),
                      seed=ctx.cfg.run.seed, optimizer="adamw",
                      # the flash recipe's peak rates (width-scaled PD rate), decayed linearly over the budget
                      kt_lr=FlashConfig.kt_lr, pd_lr=FlashConfig.pd_lr, pd_lr_width_ref=FlashConfig.pd_lr_width_ref)
    results = []
    for todo, arch in chosen_students(ctx):
        prev = ctx.folder.student(todo.name)
        if prev is not None and prev.finished:
            results.append(prev)
            continue
        with _progress_bar(ctx, fcfg.total_steps, f"distill {todo.name}") as on_step:
            r = full_distill(arch, ctx.teacher, ctx.data, fcfg, ctx.folder.checkpoint_dir(todo.name), resume=True,
                             progress=on_step)
        rec = StudentRecord(todo.name, arch, status=r.status, finished=r.finished, mlm_accuracy=r.mlm_accuracy,
                            steps=r.steps_done, wall_time_s=r.wall_time_s, train_tokens_per_s=r.train_tokens_per_s,
                            message=r.message, trial_id=todo.trial_id, flash_accuracy=todo.flash_accuracy,
                            est_latency_s=todo.est_latency_s, baseline=todo.baseline,
                            mlm_predictions=r.mlm_predictions)
        ctx.folder.save_student(rec)
        results.append(rec)
        logger.info("distilled %s (%s): %s, MLM accuracy %.4f", rec.name, arch.short_name(), r.status, r.mlm_accuracy)
    return results


class _progress_bar:
    """``with _progress_bar(ctx, total, desc) as on_step``: a tqdm bar fed by ``on_step(step, loss)``."""

    def __init__(self, ctx: RunContext, total: int, desc: str) -> None:
        self.bar = None
        if ctx.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, leave=False)

    def __enter__(self):
        def on_step(step: int, loss: float) -> None:
            if self.bar is not None:
                self.bar.n = step
                self.bar.set_postfix(loss=f"{loss:.3f}")
                self.bar.refresh()

        return on_step

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def stablehlo_dir(ctx: RunContext, name: str) -> Path:
    """``students/<name>/stablehlo``: the student's StableHLO program, beside ``hf/``."""
    return ctx.folder.export_dir(name).parent / "stablehlo"


def stage_export(ctx: RunContext) -> None:
    """A transformers folder per ready student, checked against the Flax model, and beside it a StableHLO
    program (``jax.export``, symbolic batch and sequence) reloaded in a fresh process and checked too.
    Without ``flatbuffers`` (needed by ``jax.export`` serialization) the StableHLO program is skipped
    with a warning."""
    from autodistill.distill.export import export_student
    from autodistill.distill.full import load_checkpoint
    from autodistill.distill.stablehlo import (
        SIGNATURE_FILE,
        check_stablehlo,
        export_stablehlo,
        stablehlo_available,
        stablehlo_written,
    )

    no_shlo = stablehlo_available()
    if no_shlo is not None:
        logger.warning("export: no StableHLO programs: %s", no_shlo)
    for rec in ctx.folder.students(ready=True):
        hf = ctx.folder.export_dir(rec.name)
        shlo = stablehlo_dir(ctx, rec.name)
        hf_done = rec.exported and (hf / "config.json").is_file()
        shlo_done = no_shlo is not None or stablehlo_written(shlo, rec.arch)
        if hf_done and shlo_done:
            continue
        arch, params = load_checkpoint(ctx.folder.checkpoint_dir(rec.name))
        if not hf_done:
            export_student(arch, params, hf, vocab_path=ctx.teacher.vocab_path, verify=True)
            rec = rec.with_export(str(hf))
            ctx.folder.save_student(rec)
        if not shlo_done:
            export_stablehlo(arch, params, shlo)
            try:
                chk = check_stablehlo(shlo, arch, params)
            except AutodistillError:
                (shlo / SIGNATURE_FILE).unlink(missing_ok=True)  # not a finished export: a resume redoes it
                raise
            logger.info("exported %s as StableHLO to %s (reloaded in a fresh process in %.2fs; max |logit diff| "
                        "%.2e)", rec.name, shlo, chk["load_s"], chk["max_abs_diff"])


def stage_glue(ctx: RunContext) -> None:
    """Fine-tune every ready student on each ``[glue] tasks`` task (none by default)."""
    cfg = ctx.cfg.glue
    if not cfg.tasks:
        return
    from autodistill.distill.full import load_checkpoint
    from autodistill.distill.glue import finetune_glue

    cfg.check()
    for rec in ctx.folder.students(ready=True):
        arch, params = load_checkpoint(ctx.folder.checkpoint_dir(rec.name))
        for task in cfg.tasks:
            if any(k.startswith(f"{task}/") for k in rec.glue):
                continue
            r = finetune_glue(arch, params, ctx.teacher.vocab_path, task, cfg.resolved_dir(), steps=cfg.steps,
                              batch_size=cfg.batch_size, learning_rate=1e-4, seq_len=ctx.cfg.data.seq_len,
                              seed=ctx.cfg.run.seed)
            rec = rec.with_glue({f"{task}/{k}": v for k, v in r.metrics.items()})
            ctx.folder.save_student(rec)


def confirm_profile(name: str):
    """The confirmation profile; ``cpu_local`` falls back to ``cpu_generic`` on a machine without one."""
    from autodistill.errors import ProfileError
    from autodistill.hardware import load_profile

    try:
        return load_profile(name)
    except ProfileError:
        if name == "cpu_local":
            logger.warning("profile cpu_local not found; confirming against cpu_generic")
            return load_profile("cpu_generic")
        raise


def stage_confirm(ctx: RunContext) -> ConfirmRecord | None:
    """Measure every ready student on the local device against the confirmation profile's estimate; a
    profile refitted to the measurements (when an error exceeds the tolerance) goes to ``profiles/``."""
    from autodistill.hardware import save_profile
    from autodistill.verify import confirm, item_time_column, match_reused

    cfg = ctx.cfg.confirm
    if not cfg.enabled:
        return None
    students = [(r.name, r.arch) for r in ctx.folder.students(ready=True)]
    if not students:
        return None
    prof = confirm_profile(cfg.profile)
    rows, drift = None, None
    prev = ctx.folder.confirm()
    # Reuse finished measurements of the same architectures at the same shape, timed with the statistic
    # compared now (files written before confirm.json recorded it hold load-corrected medians).
    if prev is not None and (prev.batch, prev.seq, prev.time_column) == (cfg.batch, cfg.seq,
                                                                          item_time_column(cfg.device)):
        try:
            rows = match_reused(prev.to_dict(), students)
            drift = prev.drift_check()
        except ConfigError:  # another set of students: measure them all again
            rows = None
    rep = confirm(students, prof, batch=cfg.batch, seq=cfg.seq, device=cfg.device, tolerance=cfg.tolerance,
                  cores=cfg.cores, passes=cfg.passes, measurements=rows, anchors=cfg.anchors, drift=drift)
    saved = None
    if rep.recalibrated is not None:
        saved = str(save_profile(rep.recalibrated, ctx.folder.profile_path(rep.recalibrated.name)))
    rec = ConfirmRecord.of_report(rep, cfg.batch, cfg.seq, recalibrated_profile=saved)
    rec = _with_stablehlo_latency(ctx, rec, prev if rows is not None else None)
    ctx.folder.save_confirm(rec)
    return rec


def _with_stablehlo_latency(ctx: RunContext, rec: ConfirmRecord, prev: ConfirmRecord | None) -> ConfirmRecord:
    """``rec`` with each student's reloaded StableHLO program timed at the confirmation shape, in a fresh
    pinned process like the students (``stablehlo_latency_s``; reused from ``prev`` for the same arch).
    Students without a program, or a machine without ``flatbuffers``, keep None."""
    from dataclasses import replace

    from autodistill.distill.stablehlo import stablehlo_available, stablehlo_written, time_stablehlo

    cfg = ctx.cfg.confirm
    if stablehlo_available() is not None:
        return rec
    old = {s.name: s for s in prev.students} if prev is not None else {}
    values: dict[str, float | None] = {}
    todo = []
    for s in rec.students:
        o = old.get(s.name)
        if o is not None and o.arch == s.arch and o.stablehlo_latency_s is not None:
            values[s.name] = o.stablehlo_latency_s
        elif stablehlo_written(stablehlo_dir(ctx, s.name), s.arch):
            todo.append(s.name)
    if todo:
        try:
            times: list[float | None] = list(time_stablehlo(
                [stablehlo_dir(ctx, n) for n in todo], cfg.batch, cfg.seq, device=cfg.device, cores=cfg.cores,
                passes=cfg.passes))
        except AutodistillError as e:
            logger.warning("confirm: StableHLO programs not timed: %s", e)
            times = [None] * len(todo)
        values.update(zip(todo, times))
    return replace(rec, students=tuple(replace(s, stablehlo_latency_s=values.get(s.name)) for s in rec.students))


def stage_report(ctx: RunContext) -> tuple[Any, Any]:
    """``report.html`` and ``report.md``: every student, the references, the search and the confirmation."""
    from autodistill import __version__
    from autodistill.arch import reference_arch
    from autodistill.measure.table import TIME_DESCRIPTIONS
    from autodistill.report import ReportData, StudentRow, TrialPoint, write_report
    from autodistill.search.pareto import hypervolume_curve
    from autodistill.search.store import TrialStore

    objective = ctx.objective

    def est(a: StudentArch) -> float:
        return float(objective.latency_s([a])[0])

    with TrialStore(ctx.folder.store_dir, create=False, readonly=True) as st:
        done = [t for t in st.trials() if t.finished]
        ref = st.reference_point()  # the one the search logged its hypervolume against
    points = tuple(TrialPoint(t.accuracy if t.ok else None, t.latency_s, trial_id=t.trial_id,
                              config=t.arch.short_name(), params=t.arch.num_parameters(pooler=False),
                              status=t.status, source=t.source)
                   for t in done)
    hv: tuple[float, ...] = ()
    if ref is not None and done:
        acc = [t.accuracy if t.ok and t.accuracy is not None else float("nan") for t in done]
        lat = [t.latency_s if t.latency_s else float("nan") for t in done]
        hv = tuple(float(x) for x in hypervolume_curve(acc, lat, ref[0], ref[1]))
    conf = ctx.folder.confirm()
    by_name = conf.by_name() if conf is not None else {}
    band = None
    if by_name:
        try:  # the interval the confirmation profile's estimates carry
            band = confirm_profile(ctx.cfg.confirm.profile).error_band()
        except AutodistillError as e:
            logger.warning("no latency interval in the report: %s", e)
    search_band = objective.cost_model.profile.error_band()
    feas = ctx.latency_feasibility()
    rows = []
    students = ctx.folder.students()
    for res in students:
        a, c = res.arch, by_name.get(res.name)
        est_s = est(a)
        rows.append(StudentRow(res.name, a.short_name(), a.num_parameters(pooler=False), est_s,
                               flash_accuracy=res.flash_accuracy,
                               mlm_accuracy=res.mlm_accuracy if res.status == "ok" else None, glue=dict(res.glue),
                               local_est_latency_s=c.est_latency_s if c else None,
                               measured_latency_s=c.measured_latency_s if c else None,
                               recal_est_latency_s=c.recal_latency_s if c else None,
                               drift_est_latency_s=c.drift_latency_s if c else None,
                               local_interval_s=band.around(c.est_latency_s) if band and c and c.est_latency_s
                               else None, pareto=not res.baseline, baseline=res.baseline,
                               est_interval_s=search_band.around(est_s), mlm_predictions=res.mlm_predictions,
                               exported=res.exported, trial_id=res.trial_id,
                               p_within_budget=float(feas.probability(est_s)) if feas else None))
    teacher = ctx.teacher
    ta = teacher.arch
    # the teacher is scored on the same held-out tokens as the students
    n_heldout = max((r.mlm_predictions for r in students), default=0)
    rows.append(StudentRow(f"teacher ({teacher.name})", ta.short_name(), ta.num_parameters(pooler=False), est(ta),
                           reference=True, mlm_accuracy=ctx.evaluator.teacher_mlm_accuracy,
                           mlm_predictions=n_heldout))
    for name in ("bert-base", "mobilebert", "mobilebert-tiny"):
        a = reference_arch(name)
        rows.append(StudentRow(name, a.short_name(), a.num_parameters(pooler=False), est(a), reference=True))
    notes = [f"search: {len([t for t in done if t.ok])} completed, {len([t for t in done if not t.ok])} failed "
             f"trials; latency objective: {objective.describe()}; latency interval on "
             f"{objective.cost_model.profile.name}: measured/estimated in [{search_band.low:.3g}, "
             f"{search_band.high:.3g}] ({search_band.source or 'the profile'})"]
    if feas is not None:
        notes.append("latency budget: " + feas.describe())
    if conf is not None:
        if conf.note:
            notes.append(conf.note)
        if conf.time_column in TIME_DESCRIPTIONS:
            notes.append(f"measured latency: {TIME_DESCRIPTIONS[conf.time_column]}, fastest of the timing passes; "
                         "the statistic the profile was fitted to")
        drift = conf.drift or {}
        if drift.get("n"):
            notes.append(f"drift check: {int(drift['n'])} students of the {conf.profile} calibration table, "
                         f"re-timed beside the confirmation, ran at {drift['ratio']:.3f}x their calibration-time "
                         "latency (median)")
    device = f"{conf.device} (profile {conf.profile})" if conf is not None else "n/a (profile n/a)"
    state = ctx.folder.state()
    meta = {"run": ctx.cfg.run.name, "report written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "autodistill": __version__, "run folder": str(ctx.folder.path),
            "config": str(ctx.folder.path / "config.toml") if (ctx.folder.path / "config.toml").is_file()
            else "the embedded default", "seed": str(ctx.cfg.run.seed), "teacher": teacher.name,
            "search": f"{ctx.cfg.search.searcher}, budget {ctx.cfg.search.budget} trials"}
    times = {k: float(v.wall_s) for k, v in state.stages.items() if v.wall_s is not None}
    data = ReportData(f"autodistill run: {ctx.cfg.run.name}", objective.cost_model.profile.name, device, tuple(rows),
                      points, hv, dict(conf.summary) if conf is not None else {}, tuple(notes),
                      reference_point=ref, metadata=meta, stage_times_s=times,
                      refit_profile=conf.recalibrated_profile if conf is not None else None,
                      link_base=str(ctx.folder.path))
    return write_report(data, ctx.folder.path)
