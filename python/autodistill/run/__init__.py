"""The whole AutoDistill job as one call: `run(config)`.

Stages, each resumable, all in one run folder (`RunFolder` lists its files):

1. search: multi-objective BO over the space; accuracy = held-out MLM accuracy after flash
   distillation, latency = the run's `LatencyObjective` (cost model of the search profile, over a
   serving mix when given).
2. distill: full distillation of up to ``top_k`` Pareto students and of the baseline, same budget.
3. export: a transformers folder per student, checked against the Flax model.
4. glue: fine-tuning on GLUE tasks, when ``[glue] tasks`` names any.
5. confirm: measure each student on the local device, compare with the estimate, recalibrate
   the device profile when an error exceeds the tolerance.
6. report.

The modules: `config` (one frozen dataclass per TOML table), `records` (one record type per file),
`folder` (the only code that knows the folder's file names), `context` (the teacher, data,
evaluator and latency objective, built once) and `stages` (one short function per stage).

Interrupted anywhere, the same call resumes: finished trials, checkpoints, exports and
measurements are kept and not redone.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from autodistill.errors import ConfigError, choices_message
from autodistill.run.config import RunConfig, default_config_text, load_config
from autodistill.run.context import RunContext
from autodistill.run.folder import RunFolder
from autodistill.run.records import ConfirmRecord, StudentRecord
from autodistill.run.stages import STAGES

logger = logging.getLogger(__name__)

__all__ = ["STAGES", "ConfirmRecord", "RunConfig", "RunFolder", "RunResult", "StudentRecord", "default_config_text",
           "load_config", "run"]


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    report_html: Path
    report_md: Path
    stages_run: tuple[str, ...]
    wall_time_s: float


def _check_before_work(ctx: RunContext) -> None:
    """Everything that can fail without training fails here, before the folder is written to."""
    cfg = ctx.cfg
    if cfg.search.executor == "ray" and cfg.search.address:
        from autodistill.executors import check_address

        check_address(cfg.search.address)
    _ = ctx.pool  # building it checks the space, its constraints and the search profile
    if cfg.confirm.enabled:
        from autodistill.run.stages import confirm_profile

        confirm_profile(cfg.confirm.profile)
    cfg.glue.check()
    ctx.load()  # the teacher and the corpus: missing files and empty corpora fail here
    ctx.baseline()


def run(config: RunConfig | None = None, run_dir: str | os.PathLike[str] | None = None, *,
        progress: bool = True, stop_after: str | None = None) -> RunResult:
    """Run (or resume) the whole job in ``run_dir`` (default ``runs/<name>``).

    ``stop_after`` ends the run after that stage (for tests and staged runs). Bad config values, a
    missing teacher, profile or GLUE folder, an empty corpus, an unreachable Ray address or a run
    folder holding another configuration fail here, before anything is written.
    """
    from autodistill.run import stages

    t0 = time.perf_counter()
    cfg = config or load_config()
    if stop_after is not None and stop_after not in STAGES:
        raise ConfigError(choices_message("stage", stop_after, STAGES))
    folder = RunFolder(run_dir if run_dir is not None else Path("runs") / cfg.run.name)
    saved = folder.saved_config_key()
    if saved is not None:
        diff = cfg.resume_difference(saved)
        if diff:
            raise ConfigError(f"{folder.path} holds a run with a different configuration ({'; '.join(diff)[:800]}); "
                              "use another run folder (only [search] budget, [confirm] and [glue] may change on "
                              "resume)")
        folder.check()  # a damaged state.json, result.json, confirm.json or store fails here, before work
    ctx = RunContext(cfg, folder, progress=progress)
    _check_before_work(ctx)
    if saved is None:
        folder.save_config(cfg.resume_key, cfg.text)
    ran = []
    for stage in STAGES:
        logger.info("stage %s", stage)
        t_stage = time.perf_counter()
        info: dict = {}
        if stage == "search":
            s = stages.stage_search(ctx)
            info = {"budget": cfg.search.budget, "n_completed": s.n_completed, "n_failed": s.n_failed}
        elif stage == "distill":
            info = {"students": [r.name for r in stages.stage_distill(ctx)]}
        elif stage == "export":
            stages.stage_export(ctx)
        elif stage == "glue":
            stages.stage_glue(ctx)
            info = {"tasks": list(cfg.glue.tasks)}
        elif stage == "confirm":
            stages.stage_confirm(ctx)
        else:
            stages.stage_report(ctx)
        folder.mark(stage, wall_s=time.perf_counter() - t_stage, **info)
        ran.append(stage)
        if stop_after == stage:
            break
    html, md = folder.report_paths
    return RunResult(folder.path, html, md, tuple(ran), time.perf_counter() - t0)
