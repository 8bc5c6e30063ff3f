"""Declarative search spaces over `StudentArch` and their feasible candidate pools.

A space is a TOML file (presets ship in ``autodistill/spaces/``; load one by
name or by path with `load_space`)::

    name = "mobilebert"
    description = "..."
    base = "mobilebert"              # optional: a reference architecture to start from
    [fixed]                          # optional: StudentArch fields held constant
    hidden_act = "relu"
    [fields]                         # searched fields: choices or integer ranges
    hidden_size = { choices = [128, 256, 512] }
    num_hidden_layers = { min = 2, max = 24, step = 2 }
    num_feedforward_networks = [1, 2, 4]          # shorthand for choices
    [tied]                           # field = source * scale + offset (integers)
    embedding_size = "hidden_size"
    intermediate_size = { field = "hidden_size", scale = 4 }
    [constraints]
    max_parameters = 30_000_000
    relations = ["intra_bottleneck_size <= hidden_size", "head_size >= 16"]
    [[constraints.latency]]          # cost-model latency budget on a named profile
    profile = "tpu_v4i"
    batch = 1
    seq = 128
    max_latency_s = 1e-3
    [[constraints.memory]]           # inference memory on a profile (default budget: its HBM)
    profile = "tpu_v4i"
    batch = 8
    seq = 512
    [objective]                      # workload of the latency objective (profile: CLI may override)
    profile = "tpu_v4i"
    batch = 1
    seq = 128

`build_pool` enumerates the Cartesian product (or samples it when larger than
``max_candidates``), drops invalid and infeasible architectures with vectorized
checks, and scores the rest with the C++ cost model: a few hundred thousand
candidates take well under a second.

Memory is estimated as all weights plus one layer's live activations::

    memory_bytes = dtype_bytes * (num_parameters
                                  + batch * seq * (hidden + 2 * true_hidden + intermediate)
                                  + batch * heads * seq**2)

This module needs numpy and the cost model only (no torch).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import operator
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autodistill.arch import (
    ACTIVATIONS,
    FAMILIES,
    FEATURE_NAMES,
    MAX_DIM,
    MAX_LAYERS,
    NORM_TYPES,
    StudentArch,
    reference_arch,
    reference_names,
)
from autodistill.errors import ArchError, ConfigError, SearchError, choices_message

logger = logging.getLogger(__name__)

__all__ = [
    "CandidatePool",
    "FieldSpec",
    "LatencyConstraint",
    "MemoryConstraint",
    "ObjectiveSpec",
    "Relation",
    "SearchSpace",
    "SpaceConstraints",
    "Tie",
    "build_pool",
    "list_spaces",
    "load_space",
    "space_from_dict",
]

SPACES_DIR = Path(__file__).resolve().parent / "spaces"
SPACE_PATH_ENV = "AUTODISTILL_SPACE_PATH"

_COL = {name: i for i, name in enumerate(FEATURE_NAMES)}
_STR_FIELDS: dict[str, tuple[str, ...]] = {
    "family": FAMILIES, "normalization_type": NORM_TYPES, "hidden_act": ACTIVATIONS,
}
_BOOL_FIELDS = ("use_bottleneck", "use_bottleneck_attention", "key_query_shared_bottleneck", "trigram_input")
_INT_LIMITS = {
    "num_hidden_layers": MAX_LAYERS, "hidden_size": MAX_DIM, "embedding_size": MAX_DIM,
    "num_attention_heads": MAX_DIM, "intermediate_size": MAX_DIM, "num_feedforward_networks": 64,
    "intra_bottleneck_size": MAX_DIM, "vocab_size": 1 << 24,
}
#: Fields a space may search or tie (the cost-model features); any StudentArch field may be fixed.
SEARCHABLE_FIELDS: tuple[str, ...] = FEATURE_NAMES
#: Names usable in relations besides the searchable fields.
DERIVED_NAMES = ("true_hidden_size", "head_size", "num_parameters")
_ARCH_FIELDS = tuple(f.name for f in dataclasses.fields(StudentArch))
_MAX_ENUMERATE = 5_000_000


def _kind(name: str) -> str:
    if name in _STR_FIELDS:
        return "str"
    if name in _BOOL_FIELDS:
        return "bool"
    return "int"


def _encode_value(name: str, v: Any) -> float:
    """A field value as its cost-model feature number (str -> index, bool -> 0/1)."""
    if name in _STR_FIELDS:
        return float(_STR_FIELDS[name].index(v))
    return float(v)


def _check_value(name: str, v: Any, where: str) -> Any:
    kind = _kind(name)
    if kind == "str":
        if v not in _STR_FIELDS[name]:
            raise ConfigError(f"{where}: " + choices_message(f"{name} value", v, _STR_FIELDS[name]))
    elif kind == "bool":
        if not isinstance(v, bool):
            raise ConfigError(f"{where}: {name} values must be true or false, got {v!r}")
    else:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{where}: {name} values must be integers, got {v!r}")
        hi = _INT_LIMITS[name]
        if not 1 <= v <= hi:
            raise ConfigError(f"{where}: {name}={v} is out of range; valid: 1..{hi}")
    return v


# ---------------------------------------------------------------------- spec types
@dataclass(frozen=True)
class FieldSpec:
    """One searched field and its finite set of values (a ``range`` is expanded to its values)."""

    name: str
    values: tuple[Any, ...]
    kind: str = "choices"  # "choices" | "range" (how it was written; for display)

    def __post_init__(self) -> None:
        if self.name not in SEARCHABLE_FIELDS:
            raise ConfigError(choices_message("searchable field", self.name, SEARCHABLE_FIELDS))
        if self.kind not in ("choices", "range"):
            raise ConfigError(choices_message("field kind", self.kind, ("choices", "range")))
        if not self.values:
            raise ConfigError(f"field {self.name}: needs at least one value")
        for v in self.values:
            _check_value(self.name, v, f"field {self.name}")
        if len(set(self.values)) != len(self.values):
            dup = sorted({v for v in self.values if self.values.count(v) > 1}, key=str)
            raise ConfigError(f"field {self.name}: duplicate value(s) {dup}")

    @property
    def numeric(self) -> np.ndarray:
        """Values as cost-model feature numbers, shape ``(len(values),)``."""
        return np.array([_encode_value(self.name, v) for v in self.values], dtype=np.float64)


@dataclass(frozen=True)
class Tie:
    """``name = source * scale + offset`` (integer fields), or ``name = source`` for any field kind."""

    name: str
    source: str
    scale: float = 1.0
    offset: float = 0.0

    def __post_init__(self) -> None:
        for n in (self.name, self.source):
            if n not in SEARCHABLE_FIELDS:
                raise ConfigError(f"tie {self.name} = {self.source}: " + choices_message("field", n, SEARCHABLE_FIELDS))
        if self.name == self.source:
            raise ConfigError(f"tie {self.name}: a field cannot be tied to itself")
        if _kind(self.name) != _kind(self.source):
            raise ConfigError(f"tie {self.name} = {self.source}: fields are of different kinds "
                              f"({_kind(self.name)} vs {_kind(self.source)})")
        for k in ("scale", "offset"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"tie {self.name}: {k}={v!r} must be a finite number")
        if _kind(self.name) != "int" and (self.scale != 1 or self.offset != 0):
            raise ConfigError(f"tie {self.name}: scale/offset only apply to integer fields")
        if self.scale <= 0:
            raise ConfigError(f"tie {self.name}: scale={self.scale} must be > 0")

    def apply(self, v: Any) -> Any:
        if _kind(self.name) != "int":
            return v
        out = v * self.scale + self.offset
        if not float(out).is_integer():
            raise ConfigError(f"tie {self.name} = {self.source} * {self.scale:g} + {self.offset:g} gives "
                              f"non-integer {out!r} for {self.source}={v}")
        return int(out)


_REL_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*|-?[0-9.eE+]+)\s*(<=|>=|==|!=|<|>)\s*"
                     r"([A-Za-z_][A-Za-z0-9_]*|-?[0-9.eE+]+)\s*$")
_OPS = {"<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "<": operator.lt,
        ">": operator.gt}


@dataclass(frozen=True)
class Relation:
    """``left OP right`` over integer fields, derived names (`DERIVED_NAMES`) or numbers."""

    text: str

    def __post_init__(self) -> None:
        self.parts()  # validates

    def parts(self) -> tuple[str | float, str, str | float]:
        m = _REL_RE.match(self.text) if isinstance(self.text, str) else None
        if not m:
            raise ConfigError(f"relation {self.text!r} is not of the form 'a OP b' with OP one of "
                              f"{', '.join(_OPS)}; e.g. 'intra_bottleneck_size <= hidden_size'")
        out: list[str | float] = []
        valid = tuple(n for n in SEARCHABLE_FIELDS if _kind(n) != "str") + DERIVED_NAMES
        for tok in (m.group(1), m.group(3)):
            if tok[0].isalpha() or tok[0] == "_":
                if tok not in valid:
                    raise ConfigError(f"relation {self.text!r}: " + choices_message("name", tok, valid))
                out.append(tok)
            else:
                try:
                    out.append(float(tok))
                except ValueError:
                    raise ConfigError(f"relation {self.text!r}: {tok!r} is not a number") from None
        return out[0], m.group(2), out[1]


@dataclass(frozen=True)
class LatencyConstraint:
    """Cost-model latency of ``batch`` x ``seq`` tokens on ``profile`` must be <= ``max_latency_s``."""

    profile: str
    max_latency_s: float
    batch: int = 1
    seq: int = 128
    dtype: str | None = None

    def __post_init__(self) -> None:
        _check_workload("latency constraint", self.batch, self.seq)
        if isinstance(self.max_latency_s, bool) or not isinstance(self.max_latency_s, (int, float)) \
                or not math.isfinite(self.max_latency_s) or self.max_latency_s <= 0:
            raise ConfigError(f"latency constraint: max_latency_s={self.max_latency_s!r} must be a positive number")
        if not isinstance(self.profile, str) or not self.profile:
            raise ConfigError(f"latency constraint: profile={self.profile!r} must be a profile name or path")

    @property
    def label(self) -> str:
        return f"latency[{Path(self.profile).stem} b{self.batch} s{self.seq}] <= {self.max_latency_s:g}s"


@dataclass(frozen=True)
class MemoryConstraint:
    """Inference memory (module docstring formula) must be <= ``max_bytes``.

    With a ``profile``, bytes per value come from its default dtype and the default budget
    is its ``hbm_bytes``; without one, ``max_bytes`` is required and ``dtype_bytes`` defaults to 2.
    """

    max_bytes: float | None = None
    profile: str | None = None
    batch: int = 1
    seq: int = 128
    dtype_bytes: int | None = None

    def __post_init__(self) -> None:
        _check_workload("memory constraint", self.batch, self.seq)
        if self.profile is None and self.max_bytes is None:
            raise ConfigError("memory constraint: give max_bytes, a profile (its hbm_bytes is the budget), or both")
        mb = self.max_bytes
        if mb is not None and (isinstance(mb, bool) or not isinstance(mb, (int, float)) or not math.isfinite(mb)
                               or mb <= 0):
            raise ConfigError(f"memory constraint: max_bytes={self.max_bytes!r} must be a positive number")
        if self.dtype_bytes is not None and self.dtype_bytes not in (1, 2, 4):
            raise ConfigError(f"memory constraint: dtype_bytes={self.dtype_bytes!r}; valid choices: 1, 2, 4")


@dataclass(frozen=True)
class SpaceConstraints:
    max_parameters: int | None = None
    relations: tuple[Relation, ...] = ()
    latency: tuple[LatencyConstraint, ...] = ()
    memory: tuple[MemoryConstraint, ...] = ()

    def __post_init__(self) -> None:
        if self.max_parameters is not None and (isinstance(self.max_parameters, bool)
                                                or not isinstance(self.max_parameters, (int, float))
                                                or not self.max_parameters > 0):
            raise ConfigError(f"max_parameters={self.max_parameters!r} must be a positive number")


@dataclass(frozen=True)
class ObjectiveSpec:
    """Workload of the latency objective; ``profile`` may be left to the caller (CLI ``--profile``)."""

    profile: str | None = None
    batch: int = 1
    seq: int = 128
    dtype: str | None = None

    def __post_init__(self) -> None:
        _check_workload("objective", self.batch, self.seq)


def _check_workload(where: str, batch: Any, seq: Any) -> None:
    for name, v in (("batch", batch), ("seq", seq)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1 << 20:
            raise ConfigError(f"{where}: {name}={v!r} must be an integer in 1..1048576")


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space. Build with `load_space` or `space_from_dict`."""

    name: str
    fields: tuple[FieldSpec, ...]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    ties: tuple[Tie, ...] = ()
    constraints: SpaceConstraints = SpaceConstraints()
    objective: ObjectiveSpec = ObjectiveSpec()
    description: str = ""
    base: str | None = None
    source: str = "<dict>"

    def __post_init__(self) -> None:
        where = f"space {self.name!r}"
        if not self.fields:
            raise ConfigError(f"{where}: [fields] must name at least one searched field; "
                              f"searchable: {', '.join(SEARCHABLE_FIELDS)}")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: field(s) listed twice: {sorted({n for n in names if names.count(n) > 1})}")
        for k in self.fixed:
            if k not in _ARCH_FIELDS:
                raise ConfigError(f"{where}: [fixed] " + choices_message("StudentArch field", k, _ARCH_FIELDS))
        tied = [t.name for t in self.ties]
        if len(set(tied)) != len(tied):
            raise ConfigError(f"{where}: a field is tied twice: {sorted({n for n in tied if tied.count(n) > 1})}")
        for n in names:
            if n in self.fixed:
                raise ConfigError(f"{where}: {n} is both searched ([fields]) and fixed ([fixed]); pick one")
        for t in self.ties:
            if t.name in names or t.name in self.fixed:
                raise ConfigError(f"{where}: {t.name} is tied and also {'searched' if t.name in names else 'fixed'}")
            if t.source in tied:
                raise ConfigError(f"{where}: tie {t.name} = {t.source}: the source is itself tied; tie to its source")
            for v in self._source_values(t.source):
                _check_value(t.name, t.apply(v), f"{where}: tie {t.name} = {t.source}")
        for k, v in self.fixed.items():
            if k in SEARCHABLE_FIELDS:
                _check_value(k, v, f"{where}: [fixed]")
        if self.base is not None and self.base not in reference_names():
            raise ConfigError(f"{where}: " + choices_message("base architecture", self.base, reference_names()))
        if self.size > 10 ** 12:
            raise ConfigError(f"{where}: {self.size:.3g} combinations is too large to index; narrow the fields")

    def _source_values(self, name: str) -> tuple[Any, ...]:
        for f in self.fields:
            if f.name == name:
                return f.values
        return (self.base_kwargs()[name],)

    # ------------------------------------------------------------------ derived
    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(len(f.values) for f in self.fields)

    @property
    def size(self) -> int:
        """Number of combinations of the searched fields (before any validity or constraint)."""
        return math.prod(self.dims)

    def base_kwargs(self) -> dict[str, Any]:
        """StudentArch keyword arguments every candidate starts from (base, then [fixed])."""
        kw = reference_arch(self.base).to_dict() if self.base else StudentArch().to_dict()
        kw.update(self.fixed)
        return kw

    def arch_of(self, values: Mapping[str, Any]) -> StudentArch:
        """The architecture with searched field values ``values`` (ties applied); raises ArchError."""
        missing = set(self.field_names) - set(values)
        extra = set(values) - set(self.field_names)
        if missing or extra:
            raise ConfigError(f"space {self.name!r}: values need exactly the fields {list(self.field_names)}; "
                              f"missing {sorted(missing)}, unexpected {sorted(extra)}")
        kw = self.base_kwargs()
        kw.update(values)
        for t in self.ties:
            kw[t.name] = t.apply(kw[t.source])
        return StudentArch(**kw)

    def to_dict(self) -> dict[str, Any]:
        """A TOML-shaped dict that `space_from_dict` reads back (stored with every search)."""
        d: dict[str, Any] = {"name": self.name, "description": self.description}
        if self.base:
            d["base"] = self.base
        if self.fixed:
            d["fixed"] = dict(self.fixed)
        d["fields"] = {f.name: {"choices": list(f.values)} for f in self.fields}
        if self.ties:
            d["tied"] = {t.name: {"field": t.source, "scale": t.scale, "offset": t.offset} for t in self.ties}
        c = self.constraints
        cd: dict[str, Any] = {}
        if c.max_parameters is not None:
            cd["max_parameters"] = c.max_parameters
        if c.relations:
            cd["relations"] = [r.text for r in c.relations]
        if c.latency:
            cd["latency"] = [{k: v for k, v in dataclasses.asdict(x).items() if v is not None} for x in c.latency]
        if c.memory:
            cd["memory"] = [{k: v for k, v in dataclasses.asdict(x).items() if v is not None} for x in c.memory]
        if cd:
            d["constraints"] = cd
        d["objective"] = {k: v for k, v in dataclasses.asdict(self.objective).items() if v is not None}
        return d

    def describe(self) -> str:
        lines = [f"space {self.name}: {self.size:,} combinations of {len(self.fields)} fields"]
        for f in self.fields:
            vals = f"{f.values[0]}..{f.values[-1]} ({len(f.values)} values)" if f.kind == "range" else list(f.values)
            lines.append(f"  {f.name}: {vals}")
        for t in self.ties:
            affine = f" * {t.scale:g} + {t.offset:g}" if (t.scale, t.offset) != (1, 0) else ""
            lines.append(f"  {t.name} = {t.source}{affine}")
        return "\n".join(lines)


# ---------------------------------------------------------------------- loading
_TOP_KEYS = ("name", "description", "base", "fixed", "fields", "tied", "constraints", "objective")


def space_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> SearchSpace:
    """Build a space from parsed TOML, naming any missing, unknown or bad key."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a space must be a table")
    unknown = set(data) - set(_TOP_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {sorted(unknown)}; valid: {list(_TOP_KEYS)}")
    name = data.get("name", Path(source).stem if source != "<dict>" else "space")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: name={name!r} must be a non-empty string")
    raw_fields = data.get("fields")
    if not isinstance(raw_fields, Mapping) or not raw_fields:
        raise ConfigError(f"{source}: missing [fields] table; e.g. hidden_size = {{ choices = [256, 512] }}; "
                          f"searchable: {', '.join(SEARCHABLE_FIELDS)}")
    fields = tuple(_parse_field(k, v, source) for k, v in raw_fields.items())
    ties = tuple(_parse_tie(k, v, source) for k, v in _table(data, "tied", source).items())
    constraints = _parse_constraints(_table(data, "constraints", source), source)
    obj = _table(data, "objective", source)
    bad = set(obj) - {"profile", "batch", "seq", "dtype"}
    if bad:
        raise ConfigError(f"{source}: unknown key(s) {sorted(bad)} in [objective]; valid: profile, batch, seq, dtype")
    try:
        objective = ObjectiveSpec(**obj)
        space = SearchSpace(name=name, fields=fields, fixed=dict(_table(data, "fixed", source)), ties=ties,
                            constraints=constraints, objective=objective,
                            description=str(data.get("description", "")), base=data.get("base"), source=source)
    except TypeError as e:
        raise ConfigError(f"{source}: {e}") from None
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    _check_profiles(space, source)
    return space


def _check_profiles(space: SearchSpace, source: str) -> None:
    """Every named profile (and dtype) must load, so a typo fails at load time, not mid-search."""
    from autodistill.hardware import load_profile

    named = [(f"[[constraints.latency]] #{i}", c.profile, c.dtype) for i, c in enumerate(space.constraints.latency)]
    named += [(f"[[constraints.memory]] #{i}", c.profile, None) for i, c in enumerate(space.constraints.memory)
              if c.profile is not None]
    if space.objective.profile is not None:
        named.append(("[objective]", space.objective.profile, space.objective.dtype))
    for where, prof, dtype in named:
        try:
            p = load_profile(prof)
            if dtype is not None:
                p.resolve(dtype)
        except ConfigError as e:
            raise type(e)(f"{source}: {where}: {e}") from None


def _table(data: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    v = data.get(key, {})
    if not isinstance(v, Mapping):
        raise ConfigError(f"{source}: [{key}] must be a table")
    return v


def _parse_field(name: str, spec: Any, source: str) -> FieldSpec:
    where = f"{source}: field {name}"
    if name not in SEARCHABLE_FIELDS:
        raise ConfigError(f"{source}: " + choices_message("searchable field", name, SEARCHABLE_FIELDS))
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected {{ choices = [...] }} or {{ min = .., max = .., step = .. }}, "
                          f"got {spec!r}")
    keys = set(spec)
    if "choices" in spec:
        if keys - {"choices"}:
            raise ConfigError(f"{where}: choices cannot be combined with {sorted(keys - {'choices'})}")
        vals = spec["choices"]
        if not isinstance(vals, list):
            raise ConfigError(f"{where}: choices must be a list, got {vals!r}")
        return FieldSpec(name, tuple(vals), "choices")
    if keys - {"min", "max", "step"} or not {"min", "max"} <= keys:
        raise ConfigError(f"{where}: expected {{ choices = [...] }} or {{ min = .., max = .., step = .. }}; "
                          f"got keys {sorted(keys)}")
    if _kind(name) != "int":
        raise ConfigError(f"{where}: ranges only apply to integer fields; use choices for a {_kind(name)} field")
    lo, hi, step = spec["min"], spec["max"], spec.get("step", 1)
    for k, v in (("min", lo), ("max", hi), ("step", step)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{where}: {k}={v!r} must be an integer")
    if step < 1:
        raise ConfigError(f"{where}: step={step} must be >= 1")
    if lo > hi:
        raise ConfigError(f"{where}: min={lo} > max={hi}")
    vals = tuple(range(lo, hi + 1, step))
    if len(vals) > 100_000:
        raise ConfigError(f"{where}: {len(vals)} values is too many; raise step")
    return FieldSpec(name, vals, "range")


def _parse_tie(name: str, spec: Any, source: str) -> Tie:
    if isinstance(spec, str):
        return Tie(name, spec)
    if isinstance(spec, Mapping):
        bad = set(spec) - {"field", "scale", "offset"}
        if bad or "field" not in spec:
            raise ConfigError(f"{source}: tie {name}: expected \"source_field\" or {{ field = .., scale = .., "
                              f"offset = .. }}; got keys {sorted(spec)}")
        return Tie(name, spec["field"], spec.get("scale", 1.0), spec.get("offset", 0.0))
    raise ConfigError(f"{source}: tie {name}: expected a field name or a table, got {spec!r}")


def _parse_constraints(c: Mapping[str, Any], source: str) -> SpaceConstraints:
    valid = {"max_parameters", "relations", "latency", "memory"}
    bad = set(c) - valid
    if bad:
        raise ConfigError(f"{source}: unknown key(s) {sorted(bad)} in [constraints]; valid: {sorted(valid)}")
    rels = c.get("relations", [])
    if not isinstance(rels, list):
        raise ConfigError(f"{source}: constraints.relations must be a list of strings like 'a <= b'")

    def tables(key: str, cls: type, fields: set[str]) -> tuple:
        items = c.get(key, [])
        if isinstance(items, Mapping):
            items = [items]
        out = []
        for i, t in enumerate(items):
            if not isinstance(t, Mapping):
                raise ConfigError(f"{source}: [[constraints.{key}]] #{i} must be a table")
            extra = set(t) - fields
            if extra:
                raise ConfigError(f"{source}: unknown key(s) {sorted(extra)} in [[constraints.{key}]]; "
                                  f"valid: {sorted(fields)}")
            try:
                out.append(cls(**t))
            except TypeError as e:
                raise ConfigError(f"{source}: [[constraints.{key}]] #{i}: {e}") from None
        return tuple(out)

    mp = c.get("max_parameters")
    if isinstance(mp, float) and mp.is_integer():
        mp = int(mp)
    return SpaceConstraints(
        max_parameters=mp,
        relations=tuple(Relation(r) for r in rels),
        latency=tables("latency", LatencyConstraint, {"profile", "max_latency_s", "batch", "seq", "dtype"}),
        memory=tables("memory", MemoryConstraint, {"max_bytes", "profile", "batch", "seq", "dtype_bytes"}),
    )


def space_dirs() -> list[Path]:
    """Folders searched for ``<name>.toml``: ``$AUTODISTILL_SPACE_PATH``, then the shipped presets."""
    dirs = [Path(p) for p in os.environ.get(SPACE_PATH_ENV, "").split(os.pathsep) if p]
    dirs.append(SPACES_DIR)
    return dirs


def list_spaces() -> tuple[str, ...]:
    """Names of the spaces on the search path (the presets and ``$AUTODISTILL_SPACE_PATH``)."""
    return tuple(sorted({p.stem for d in space_dirs() if d.is_dir() for p in d.glob("*.toml")}))


def load_space(name_or_path: str | os.PathLike[str]) -> SearchSpace:
    """Load a space by preset name (``"mobilebert"``, ``"minilm"``) or by path to a TOML file."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.is_file():
        if not p.is_file():
            raise ConfigError(f"space file {str(p)!r} does not exist")
        return _load_file(p)
    for d in space_dirs():
        cand = d / f"{name_or_path}.toml"
        if cand.is_file():
            return _load_file(cand)
    raise ConfigError(choices_message("search space", str(name_or_path), list_spaces()))


def _load_file(path: Path) -> SearchSpace:
    from autodistill.fileio import read_toml

    return space_from_dict(read_toml(path, what="space file"), source=str(path))


# ---------------------------------------------------------------------- vectorized arch maths
def num_parameters_batch(features: np.ndarray, base: Mapping[str, Any]) -> np.ndarray:
    """Vectorized `StudentArch.num_parameters` (pooler, no MLM head) of ``n x F`` feature rows.

    Non-feature fields (positions, type vocab, classifier_activation) come from ``base``.
    Returns ``n`` float64 counts (exact below 2**53).
    """
    col = lambda n: features[:, _COL[n]]  # noqa: E731
    fam_bert = col("family") == FAMILIES.index("bert")
    use_b = col("use_bottleneck") > 0
    h, e, f = col("hidden_size"), col("embedding_size"), col("intermediate_size")
    t = np.where(use_b, col("intra_bottleneck_size"), h)
    emb_in = e * np.where(col("trigram_input") > 0, 3.0, 1.0)

    def linear(i: np.ndarray | float, o: np.ndarray | float) -> Any:
        return i * o + o

    norm = 2.0
    n = col("vocab_size") * e + base["max_position_embeddings"] * h + base["type_vocab_size"] * h + norm * h
    n = n + np.where(fam_bert, 0.0, linear(emb_in, h))
    v_in = np.where(fam_bert, h, np.where(col("use_bottleneck_attention") > 0, t, h))
    layer = 2 * linear(t, t) + linear(v_in, t) + linear(t, t) + norm * t
    layer = layer + col("num_feedforward_networks") * (linear(t, f) + linear(f, t) + norm * t)
    bott = linear(h, t) + norm * t + linear(t, h) + norm * h
    bott = bott + np.where(col("key_query_shared_bottleneck") > 0, linear(h, t) + norm * t, 0.0)
    layer = layer + np.where(use_b, bott, 0.0)
    n = n + col("num_hidden_layers") * layer
    if base.get("classifier_activation", True):
        n = n + linear(h, h)
    else:
        n = n + np.where(fam_bert, linear(h, h), 0.0)
    return n


def valid_mask(features: np.ndarray) -> np.ndarray:
    """Vectorized `StudentArch` validity of ``n x F`` rows (the checks of ``__post_init__``); ``n`` bools."""
    col = lambda n: features[:, _COL[n]]  # noqa: E731
    use_b = col("use_bottleneck") > 0
    t = np.where(use_b, col("intra_bottleneck_size"), col("hidden_size"))
    heads = col("num_attention_heads")
    ok = (heads >= 1) & (np.mod(t, np.maximum(heads, 1)) == 0)
    bert = col("family") == FAMILIES.index("bert")
    bert_ok = (~use_b) & (col("trigram_input") == 0) & (col("num_feedforward_networks") == 1) \
        & (col("normalization_type") == NORM_TYPES.index("layer_norm")) & (col("embedding_size") == col("hidden_size"))
    ok &= ~bert | bert_ok
    bad_b = use_b & (col("use_bottleneck_attention") == 0) & (col("key_query_shared_bottleneck") == 0) \
        & (col("intra_bottleneck_size") != col("hidden_size"))
    return ok & ~bad_b


def memory_bytes_batch(features: np.ndarray, num_parameters: np.ndarray, batch: int, seq: int,
                       dtype_bytes: int) -> np.ndarray:
    """Inference memory of ``n x F`` rows (module docstring formula), ``n`` float64 bytes."""
    col = lambda n: features[:, _COL[n]]  # noqa: E731
    h = col("hidden_size")
    t = np.where(col("use_bottleneck") > 0, col("intra_bottleneck_size"), h)
    acts = batch * seq * (h + 2 * t + col("intermediate_size")) + batch * col("num_attention_heads") * seq * seq
    return dtype_bytes * (num_parameters + acts)


def _derived(name: str, features: np.ndarray, params: np.ndarray) -> np.ndarray:
    if name == "num_parameters":
        return params
    t = np.where(features[:, _COL["use_bottleneck"]] > 0, features[:, _COL["intra_bottleneck_size"]],
                 features[:, _COL["hidden_size"]])
    if name == "true_hidden_size":
        return t
    return t / features[:, _COL["num_attention_heads"]]  # head_size


# ---------------------------------------------------------------------- candidate pool
def _true_hidden(F: np.ndarray) -> np.ndarray:
    return np.where(F[:, _COL["use_bottleneck"]] > 0, F[:, _COL["intra_bottleneck_size"]], F[:, _COL["hidden_size"]])


#: Derived architecture descriptors added to the GP encoding when they vary and are not a copy of a
#: searched field: attention head size (true_hidden / heads), total FFN width (intermediate x stacked
#: FFNs) and the bottleneck ratio (hidden / true_hidden), all log2.
_SHAPE_FEATURES: tuple[tuple[str, Any], ...] = (
    ("log2_head_size", lambda F: np.log2(_true_hidden(F) / F[:, _COL["num_attention_heads"]])),
    ("log2_ffn_width", lambda F: np.log2(F[:, _COL["intermediate_size"]] * F[:, _COL["num_feedforward_networks"]])),
    ("log2_bottleneck_ratio", lambda F: np.log2(F[:, _COL["hidden_size"]] / _true_hidden(F))),
)


@dataclass(frozen=True, eq=False)
class CandidatePool:
    """The feasible architectures of a space, with cost-model latency of the objective workload.

    Attributes (``n`` candidates, ``k`` searched fields, ``F = len(FEATURE_NAMES)``):
        features: ``n x F`` float64 cost-model feature rows.
        value_index: ``n x k`` int32 index of each searched field's value.
        codes: ``n`` int64 mixed-radix codes of ``value_index``, sorted ascending.
        num_parameters: ``n`` float64 parameter counts.
        latency_s: ``n`` float64 cost-model latency of the objective workload (None without a profile).
        stats: how many candidates survive each filter, in order.
        shape_features: add `_SHAPE_FEATURES` (log head size, FFN width, bottleneck ratio) to `encoded`.
    """

    space: SearchSpace
    features: np.ndarray
    value_index: np.ndarray
    codes: np.ndarray
    num_parameters: np.ndarray
    latency_s: np.ndarray | None
    profile: str | None
    batch: int
    seq: int
    dtype: str | None
    stats: Mapping[str, int]
    sampled: bool = False
    shape_features: bool = True

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def arch(self, i: int) -> StudentArch:
        """The `StudentArch` of candidate ``i``."""
        vals = {f.name: f.values[int(j)] for f, j in zip(self.space.fields, self.value_index[int(i)])}
        return self.space.arch_of(vals)

    def archs(self, idx: Iterable[int]) -> list[StudentArch]:
        return [self.arch(i) for i in idx]

    def index_of(self, arch: StudentArch) -> int | None:
        """Position of ``arch`` in the pool, or None when it is not a (feasible) member."""
        vi = []
        for f in self.space.fields:
            v = getattr(arch, f.name)
            try:
                vi.append(f.values.index(v))
            except ValueError:
                return None
        code = int(np.ravel_multi_index(tuple(vi), self.space.dims))
        pos = int(np.searchsorted(self.codes, code))
        if pos >= len(self.codes) or self.codes[pos] != code:
            return None
        if not np.array_equal(self.features[pos], arch.features()):
            return None
        return pos

    def indices_of(self, archs: Sequence[StudentArch]) -> np.ndarray:
        """Positions of ``archs`` (``-1`` where not in the pool)."""
        return np.array([(-1 if (i := self.index_of(a)) is None else i) for a in archs], dtype=np.int64)

    # ------------------------------------------------------------ GP encoding
    @functools.cached_property
    def _encoding_spec(self) -> list[tuple[str, Any, float, float]]:
        """Columns ``(name, raw(features) -> values, lo, hi)``; the encoding is ``(raw - lo) / (hi - lo)``.

        Varying searched fields (integers on a log2 scale, others as their index), then the shape
        features (`shape_features`), then log parameters and log latency (always last).
        """
        cols: list[tuple[str, Any, float, float]] = []
        for f in self.space.fields:
            if len(f.values) < 2:
                continue
            c = _COL[f.name]
            raw = (lambda F, c=c: np.log2(F[:, c])) if _kind(f.name) == "int" else (lambda F, c=c: F[:, c])
            nums = f.numeric
            v = np.log2(nums) if _kind(f.name) == "int" else nums
            cols.append((f.name, raw, float(v.min()), float(v.max())))
        if self.shape_features and len(self):
            existing = [raw(self.features) for _, raw, _, _ in cols]
            for name, raw in _SHAPE_FEATURES:
                v = raw(self.features)
                if v.max() - v.min() < 1e-9:
                    continue
                if any(e.std() > 0 and abs(np.corrcoef(v, e)[0, 1]) > 0.9999 for e in existing):
                    continue  # a rescaled copy of a searched field
                cols.append((name, raw, float(v.min()), float(v.max())))
        return cols

    @functools.cached_property
    def _derived_bounds(self) -> tuple[tuple[float, float], tuple[float, float]]:
        lp = np.log(self.num_parameters)
        if self.latency_s is None:
            raise SearchError("this pool has no objective latency (built without a profile)")
        ll = np.log(self.latency_s)
        pad = lambda lo, hi: (lo, hi if hi > lo else lo + 1.0)  # noqa: E731
        return pad(float(lp.min()), float(lp.max())), pad(float(ll.min()), float(ll.max()))

    @property
    def encoding_names(self) -> tuple[str, ...]:
        """Column names of `encoded`: varying searched fields, shape features, log params, log latency (last)."""
        return tuple(c[0] for c in self._encoding_spec) + ("log_num_parameters", "log_latency_s")

    @property
    def log_latency_bounds(self) -> tuple[float, float]:
        """(lo, hi) of log(latency_s): encoded last column ``u`` maps to ``lo + u * (hi - lo)``."""
        return self._derived_bounds[1]

    def encode(self, features: np.ndarray, num_parameters: np.ndarray, latency_s: np.ndarray) -> np.ndarray:
        """GP inputs of arbitrary rows, ``n x d`` in [0, 1] (clipped outside the pool's bounds)."""
        cols = self._encoding_spec
        out = np.empty((features.shape[0], len(cols) + 2), dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            for j, (_, raw, lo, hi) in enumerate(cols):
                out[:, j] = (raw(features) - lo) / (hi - lo)
        (plo, phi), (llo, lhi) = self._derived_bounds
        out[:, -2] = (np.log(num_parameters) - plo) / (phi - plo)
        out[:, -1] = (np.log(latency_s) - llo) / (lhi - llo)
        return np.clip(np.nan_to_num(out, nan=0.0), 0.0, 1.0)

    @functools.cached_property
    def encoded(self) -> np.ndarray:
        """``n x d`` float64 GP inputs in [0, 1] (see `encoding_names`)."""
        if self.latency_s is None:
            raise SearchError("this pool has no objective latency (built without a profile)")
        return self.encode(self.features, self.num_parameters, self.latency_s)


def build_pool(space: SearchSpace, profile: str | None = None, *, batch: int | None = None, seq: int | None = None,
               dtype: str | None = None, max_candidates: int = 1_000_000, seed: int = 0,
               threads: int = 0, shape_features: bool = True) -> CandidatePool:
    """Enumerate (or sample) the feasible candidates of ``space`` and score them.

    Args:
        profile: profile of the latency objective; defaults to ``space.objective.profile``.
            With neither, the pool has no ``latency_s``.
        batch, seq, dtype: objective workload; default to ``space.objective``.
        max_candidates: the product is enumerated when it has at most this many combinations,
            else this many distinct combinations are sampled uniformly (seeded).
        threads: cost-model threads (0 = all cores).
        shape_features: include derived shape descriptors in the GP encoding (see `CandidatePool`).

    Raises:
        SearchError: when no candidate survives, naming the filter that emptied the pool.
    """
    from autodistill.costmodel import CostModel
    from autodistill.hardware import load_profile

    profile = profile or space.objective.profile
    batch = batch or space.objective.batch
    seq = seq or space.objective.seq
    dtype = dtype or space.objective.dtype
    if isinstance(max_candidates, bool) or not isinstance(max_candidates, int) or max_candidates < 1:
        raise ConfigError(f"max_candidates={max_candidates!r} must be a positive integer")
    total = space.size
    sampled = total > max_candidates
    if not sampled:
        codes = np.arange(total, dtype=np.int64)
    else:
        rng = np.random.default_rng(seed)
        got = np.unique(rng.integers(0, total, size=max_candidates, dtype=np.int64))
        while len(got) < max_candidates:
            more = rng.integers(0, total, size=2 * (max_candidates - len(got)) + 16, dtype=np.int64)
            got = np.unique(np.concatenate([got, more]))
        codes = np.sort(rng.choice(got, size=max_candidates, replace=False)) if len(got) > max_candidates else got
    if len(codes) > _MAX_ENUMERATE:
        raise ConfigError(f"max_candidates={max_candidates} is above the limit {_MAX_ENUMERATE}")
    vidx = np.stack(np.unravel_index(codes, space.dims), axis=1).astype(np.int32) if len(space.dims) \
        else np.zeros((len(codes), 0), np.int32)
    base_kw = space.base_kwargs()
    base_row = np.array([_encode_value(n, base_kw[n]) for n in FEATURE_NAMES], dtype=np.float64)
    feats = np.repeat(base_row[None, :], len(codes), axis=0)
    for j, f in enumerate(space.fields):
        feats[:, _COL[f.name]] = f.numeric[vidx[:, j]]
    for t in space.ties:
        src = feats[:, _COL[t.source]]
        feats[:, _COL[t.name]] = src * t.scale + t.offset if _kind(t.name) == "int" else src

    stats: dict[str, int] = {"combinations": int(total), "enumerated" if not sampled else "sampled": len(codes)}
    keep = valid_mask(feats)
    stats["valid StudentArch"] = int(keep.sum())

    def apply(mask: np.ndarray, label: str) -> None:
        nonlocal keep
        keep = keep & mask
        stats[label] = int(keep.sum())

    params = num_parameters_batch(feats, base_kw)
    for rel in space.constraints.relations:
        a, op, b = rel.parts()
        va = _value_of(a, feats, params)
        vb = _value_of(b, feats, params)
        apply(_OPS[op](va, vb), rel.text)
    if space.constraints.max_parameters is not None:
        apply(params <= space.constraints.max_parameters, f"num_parameters <= {space.constraints.max_parameters:,}")
    for mc in space.constraints.memory:
        budget, nbytes = mc.max_bytes, mc.dtype_bytes or 2
        if mc.profile is not None:
            prof = load_profile(mc.profile)
            from autodistill.hardware import DTYPE_BYTES
            nbytes = mc.dtype_bytes or DTYPE_BYTES[prof.default_dtype]
            budget = budget if budget is not None else prof.hbm_bytes
        mem = memory_bytes_batch(feats, params, mc.batch, mc.seq, nbytes)
        apply(mem <= budget, f"memory[b{mc.batch} s{mc.seq}] <= {budget:.4g} bytes")
    # Cost-model constraints last (scoring only what is still alive).
    cms: dict[tuple[str, str | None], CostModel] = {}

    def cost_model(p: str, dt: str | None) -> CostModel:
        if (p, dt) not in cms:
            cms[(p, dt)] = CostModel(load_profile(p), dt)
        return cms[(p, dt)]

    for lc in space.constraints.latency:
        alive = np.flatnonzero(keep)
        lat = np.full(len(keep), np.inf)
        if len(alive):
            cm = cost_model(lc.profile, lc.dtype)
            lat[alive] = cm.estimate_batch(feats[alive], lc.batch, lc.seq, threads=threads)
        apply(lat <= lc.max_latency_s, lc.label)

    feats, vidx, codes, params = feats[keep], vidx[keep], codes[keep], params[keep]
    if len(codes) == 0:
        failed = next((k for k, v in stats.items() if v == 0), "?")
        raise SearchError(f"space {space.name!r}: no feasible architecture; candidates left after each filter: "
                          f"{stats} (the pool empties at {failed!r}); loosen that constraint or widen the fields")
    lat_obj = None
    if profile is not None:
        lat_obj = cost_model(profile, dtype).estimate_batch(feats, batch, seq, threads=threads)
    pool = CandidatePool(space=space, features=feats, value_index=vidx, codes=codes, num_parameters=params,
                         latency_s=lat_obj, profile=profile, batch=int(batch), seq=int(seq), dtype=dtype,
                         stats=stats, sampled=sampled, shape_features=shape_features)
    _spot_check(pool, seed)
    logger.info("space %s: %d feasible candidates (%s)", space.name, len(pool), stats)
    return pool


def _value_of(tok: str | float, feats: np.ndarray, params: np.ndarray) -> np.ndarray | float:
    if isinstance(tok, float):
        return tok
    if tok in DERIVED_NAMES:
        return _derived(tok, feats, params)
    return feats[:, _COL[tok]]


def _spot_check(pool: CandidatePool, seed: int, n: int = 64) -> None:
    """Decode a few candidates through StudentArch: the vectorized checks must agree with it."""
    rng = np.random.default_rng(seed)
    for i in rng.choice(len(pool), size=min(n, len(pool)), replace=False):
        try:
            a = pool.arch(int(i))
        except ArchError as e:  # pragma: no cover - the vectorized checks would be out of date
            raise SearchError(f"internal: candidate {i} passed the vectorized checks but StudentArch rejects it: "
                              f"{e}") from e
        if a.num_parameters() != int(pool.num_parameters[i]):  # pragma: no cover
            raise SearchError(f"internal: parameter count mismatch for {a.short_name()}")
