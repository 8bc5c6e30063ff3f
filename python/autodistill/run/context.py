"""What the stages share: the config, the folder, one teacher, the data, the evaluator and the latency
objective, each built on first use."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autodistill.errors import ConfigError
from autodistill.run.config import RunConfig, resolve_baseline
from autodistill.run.folder import RunFolder

if TYPE_CHECKING:
    from autodistill.arch import StudentArch
    from autodistill.costmodel import LatencyObjective
    from autodistill.distill.data import DistillData
    from autodistill.distill.evaluator import FlashDistillEvaluator
    from autodistill.search.engine import EngineConfig
    from autodistill.search.feasibility import LatencyFeasibility
    from autodistill.space import CandidatePool, SearchSpace

__all__ = ["RemoteEvaluate", "RunContext", "latency_objective", "load_space_and_pool", "load_teacher_and_data"]


@dataclass
class RunContext:
    """The shared state of one run (or of one Ray worker evaluating its trials)."""

    cfg: RunConfig
    folder: RunFolder
    progress: bool = True
    _evaluator: Any = field(default=None, repr=False)
    _data: Any = field(default=None, repr=False)
    _space: Any = field(default=None, repr=False)
    _pool: Any = field(default=None, repr=False)

    # ------------------------------------------------------------------ teacher, data, evaluator
    def load(self) -> None:
        """Teacher, corpus and evaluator (cheap; the teacher's MLM head is fitted by `teacher`).
        A missing teacher or an empty corpus fails here."""
        if self._evaluator is not None:
            return
        from autodistill.distill.evaluator import FlashDistillEvaluator
        from autodistill.distill.flash import FlashConfig

        cfg = self.cfg
        bare, self._data = load_teacher_and_data(cfg)
        fcfg = FlashConfig(batch_size=cfg.flash.batch_size, seed=cfg.run.seed)
        self._evaluator = FlashDistillEvaluator(bare, self._data, steps=cfg.flash.steps,
                                                kt_fraction=float(cfg.flash.kt_fraction), config=fcfg,
                                                cache_dir=self.folder.cache_dir)

    @property
    def data(self) -> DistillData:
        self.load()
        return self._data

    @property
    def evaluator(self) -> FlashDistillEvaluator:
        self.load()
        return self._evaluator

    @property
    def teacher(self) -> Any:
        """The one teacher every stage uses: with its MLM head (fitted once on the frozen teacher when it
        has none, cached in ``cache/``), as flash distillation scores students against it."""
        self.evaluator.prepare()
        return self.evaluator.teacher

    def baseline(self) -> StudentArch | None:
        """The configured baseline student at the teacher's vocab size (None for ``"none"``)."""
        return resolve_baseline(self.cfg.full.baseline, self.teacher.arch.vocab_size)

    # ------------------------------------------------------------------ search space and objective
    @property
    def space(self) -> SearchSpace:
        self._load_space()
        return self._space

    @property
    def pool(self) -> CandidatePool:
        self._load_space()
        return self._pool

    @property
    def objective(self) -> LatencyObjective:
        return latency_objective(self.cfg, self.pool)

    def engine_config(self) -> EngineConfig:
        """The search engine's settings from ``[search]``: the run's seed, ``min_accuracy`` (the outcome
        constraint) and ``feasibility_level`` (the latency budget as a probability of feasibility)."""
        from autodistill.search.engine import EngineConfig

        s = self.cfg.search
        return EngineConfig(seed=self.cfg.run.seed, min_accuracy=s.min_accuracy,
                            feasibility_level=float(s.feasibility_level))

    def latency_feasibility(self) -> LatencyFeasibility | None:
        """The space's latency budget on the objective workload as ``P(latency <= budget) >= [search]
        feasibility_level`` under the search profile's error band (None when the space has no budget)."""
        from autodistill.search.feasibility import pool_feasibility

        return pool_feasibility(self.pool, float(self.cfg.search.feasibility_level))

    def _load_space(self) -> None:
        if self._space is None:
            self._space, self._pool = load_space_and_pool(self.cfg)


def load_teacher_and_data(cfg: RunConfig) -> tuple[Any, DistillData]:
    """The ``[teacher]`` (without a fitted MLM head yet) and the ``[data]`` of ``cfg`` (a `DistillData`
    tokenized with the teacher's vocabulary). A missing teacher or an empty corpus fails here."""
    from autodistill.distill.data import DataConfig, build_data, default_corpus, read_corpus
    from autodistill.distill.teacher import load_teacher

    bare = load_teacher(None if cfg.teacher.path == "default" else cfg.teacher.path)
    spec = list(cfg.data.corpus)
    docs: list[Any] = []
    if "builtin" in spec:
        docs.extend(default_corpus())
        spec.remove("builtin")
    if spec:
        docs.extend(read_corpus(spec))
    heldout = read_corpus(list(cfg.data.heldout)) if cfg.data.heldout else None
    dcfg = DataConfig(seq_len=cfg.data.seq_len, max_train_sequences=cfg.data.max_train_sequences,
                      max_heldout_sequences=cfg.data.max_heldout_sequences,
                      heldout_fraction=float(cfg.data.heldout_fraction))
    return bare, build_data(bare.tokenizer(), docs, dcfg, heldout=heldout, description=",".join(cfg.data.corpus))


def latency_objective(cfg: RunConfig, pool: CandidatePool) -> LatencyObjective:
    """The run's latency objective: the pool's profile and dtype over the config's serving mix (or the
    pool's one request shape)."""
    from autodistill.costmodel import LatencyObjective, ServingMix

    mix = (ServingMix.from_list(list(cfg.search.serving_mix)) if cfg.search.serving_mix
           else ServingMix.single(pool.batch, pool.seq))
    stat = cfg.search.mix_statistic if cfg.search.serving_mix else "mean_s"
    if pool.profile is None:
        raise ConfigError("the run's candidate pool has no latency profile; set [search] profile")
    return LatencyObjective(pool.profile, pool.dtype, mix, stat)


def load_space_and_pool(cfg: RunConfig) -> tuple[SearchSpace, CandidatePool]:
    """The search space and its candidate pool, priced by the run's `latency_objective`."""
    from collections.abc import Mapping

    from autodistill.space import build_pool, load_space, space_from_dict

    spec = cfg.search.space
    space = space_from_dict(dict(spec), source="[search.space]") if isinstance(spec, Mapping) else load_space(spec)
    pool = build_pool(space, cfg.search.profile)
    if cfg.search.serving_mix:
        pool = dataclasses.replace(pool, latency_s=latency_objective(cfg, pool).latency_s(pool.features))
    return space, pool


# ---------------------------------------------------------------------------------------------- Ray workers
_WORKER_CONTEXTS: dict[str, RunContext] = {}


@dataclass(frozen=True)
class RemoteEvaluate:
    """A trial evaluation a Ray worker runs: it rebuilds the run's context once per worker (the teacher
    head and teacher outputs are read from ``cache/``, written once by the driver) and scores one arch."""

    sections: Any  # `RunConfig.to_dict` (plain data: it travels to the worker)
    run_dir: str

    def __call__(self, item: tuple[dict, int]) -> tuple[float | None, dict]:
        from autodistill.arch import StudentArch
        from autodistill.fileio import json_default

        arch_d, trial_id = item
        key = json.dumps(self.sections, sort_keys=True) + self.run_dir
        ctx = _WORKER_CONTEXTS.get(key)
        if ctx is None:
            ctx = RunContext(RunConfig.from_dict(self.sections), RunFolder(Path(self.run_dir)), progress=False)
            _WORKER_CONTEXTS[key] = ctx
        r = ctx.evaluator.evaluate(StudentArch.from_dict(arch_d), trial_id)
        acc = r.accuracy if math.isfinite(r.accuracy) else None
        return acc, json.loads(json.dumps(dict(r.metrics), default=json_default))
