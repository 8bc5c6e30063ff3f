"""Search over any table of candidates: each row of a CSV file is one candidate (issue 16).

    autodistill search --candidates bench.csv --inputs hidden,layers,act --known latency_s \\
        --objective accuracy --budget 40 --store runs/t1

The columns named play one of three roles; any other column is ignored:

* ``inputs``: what the searchers see of a candidate. A numeric column is scaled to [0, 1] over the
  table (min-max); a categorical one (a cell that is not a number, or named in ``categorical``) is
  one-hot encoded, one GP input per category. A column with one value only adds no input.
* ``known``: one known objective, minimised (``latency_s`` by default): the role the cost-model
  latency plays in a search over a space. It is read, never modelled; it must be a finite number
  > 0 in every row (it enters the engine on a log scale) and each trial stores it as its
  ``latency_s``.
* ``objective``: the black box, maximised (e.g. ``accuracy``). With `TableEvaluator` (a benchmark)
  a trial reads a row's value when it "evaluates" the row, so the search sees it only then; an
  empty or NaN cell is a failed trial. With an evaluator of your own the table needs no objective.

`load_candidates` reads and checks the file (an error names the file and what is wrong: no rows,
two rows with the same inputs, a known objective that is not a finite positive number, an unknown
column, one column in two roles) and returns a `CandidateTable`. It offers the interface of
`autodistill.space.CandidatePool` that the searchers use, so the engine, random search, NSGA-II,
the trial store and `autodistill.search.runner.run_search` work on it unchanged. A candidate is a
`TableRow` (its row number and input values), stored in the trial store in place of an architecture.
`TableSpace` describes the table (the roles of its columns and a digest of their cells) and is
pinned in the store: resuming with another table, or the same one edited, is refused.

This module needs numpy only.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autodistill.errors import ConfigError, SearchError
from autodistill.space import SpaceConstraints

__all__ = ["CandidateTable", "TableRow", "TableSpace", "load_candidates"]

#: More categories than this in one input column is refused (an id column? leave it out of the inputs).
MAX_CATEGORIES = 64
#: Mixed-radix codes of the inputs' value indices must fit in int64 (NSGA-II's genes).
_MAX_CODE = 2 ** 62


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class TableRow:
    """One candidate of a table: its row number (1 = the first row after the header) and input values
    (numbers as float, categories as str). What an evaluator of a table search receives."""

    row: int
    values: Mapping[str, float | str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.row, bool) or not isinstance(self.row, int) or self.row < 1:
            raise SearchError(f"table row={self.row!r} must be an integer >= 1")
        if not isinstance(self.values, Mapping):
            raise SearchError(f"table row {self.row}: values must be a mapping, got {type(self.values).__name__}")

    def features(self) -> np.ndarray:
        """The key the searchers know a candidate by (its row number), as `StudentArch.features`."""
        return np.array([float(self.row)])

    def short_name(self) -> str:
        text = f"row {self.row}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in self.values.items())
        return text if len(text) <= 60 else text[:57] + "..."

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "values": dict(self.values)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TableRow:
        if not isinstance(d, Mapping) or set(d) != {"row", "values"}:
            raise SearchError(f"a table row is {{'row': N, 'values': {{...}}}}, got {d!r}"[:200])
        return cls(row=d["row"], values=dict(d["values"]))

    @staticmethod
    def is_row_dict(d: Any) -> bool:
        """Whether ``d`` (a stored candidate) is a table row rather than an architecture."""
        return isinstance(d, Mapping) and set(d) == {"row", "values"}


@dataclass(frozen=True)
class TableSpace:
    """What a table search searches: the file, the roles of its columns and a digest of their cells.

    ``dims`` counts the distinct values of each input (NSGA-II's genes); ``constraints`` is empty
    (every row is feasible: filter the table to constrain it).
    """

    name: str
    source: str
    inputs: tuple[str, ...]
    categorical: tuple[str, ...]
    known: str
    objective: str | None
    n_rows: int
    digest: str
    dims: tuple[int, ...]
    constraints: SpaceConstraints = SpaceConstraints()

    @property
    def size(self) -> int:
        return self.n_rows

    def to_dict(self) -> dict[str, Any]:
        """What the trial store pins (not the file's name or place: a moved table resumes)."""
        return {"table": {"inputs": list(self.inputs), "categorical": list(self.categorical), "known": self.known,
                          "objective": self.objective, "n_rows": self.n_rows, "digest": self.digest}}

    def describe(self) -> str:
        kinds = ", ".join(f"{c} ({'categorical' if c in self.categorical else 'numeric'})" for c in self.inputs)
        obj = self.objective or "from the evaluator"
        return (f"table {self.source}: {self.n_rows:,} candidates; inputs {kinds}; known objective {self.known} "
                f"(minimised); black-box objective {obj} (maximised)")


@dataclass(frozen=True, eq=False)
class CandidateTable:
    """The rows of a candidate table, as the searchers see a `CandidatePool` (``n`` rows, ``k`` inputs).

    Attributes:
        rows: ``n`` row numbers (pool position -> row of the file).
        input_values: each row's input values, in ``space.inputs`` order.
        value_index: ``n x k`` int32 index of each input's value among its sorted distinct values.
        codes: ``n`` int64 mixed-radix codes of ``value_index``, ascending (the pool is in code order);
            the row order when the codes would not fit in int64 (NSGA-II then refuses the table).
        latency_s: ``n`` values of the known objective (the role of the cost-model latency).
        objective_values: ``n`` black-box values (NaN where empty), or None without an objective column.
        encoded: ``n x d`` GP inputs in [0, 1] (`encoding_names`); the last column is the scaled log of
            the known objective, as in `CandidatePool.encoded`.
    """

    space: TableSpace
    rows: np.ndarray
    input_values: tuple[tuple[float | str, ...], ...]
    value_index: np.ndarray
    codes: np.ndarray
    latency_s: np.ndarray
    objective_values: np.ndarray | None
    encoded: np.ndarray
    encoding_names: tuple[str, ...]
    log_latency_bounds: tuple[float, float]
    num_parameters: None = None
    profile: None = None
    batch: int = 0  # no workload: the known objective is a column
    seq: int = 0
    dtype: None = None
    sampled: bool = False

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @property
    def stats(self) -> dict[str, int]:
        return {"rows": len(self)}

    def arch(self, i: int) -> TableRow:
        """The `TableRow` at pool position ``i`` (named as `CandidatePool.arch`)."""
        i = int(i)
        return TableRow(int(self.rows[i]), dict(zip(self.space.inputs, self.input_values[i])))

    def archs(self, idx: Iterable[int]) -> list[TableRow]:
        return [self.arch(i) for i in idx]

    def index_of(self, arch: Any) -> int | None:
        """Pool position of ``arch`` (a `TableRow` of this table with the same inputs), else None."""
        if not isinstance(arch, TableRow):
            return None
        pos = self._positions.get(arch.row)
        if pos is None or dict(zip(self.space.inputs, self.input_values[pos])) != dict(arch.values):
            return None
        return pos

    def indices_of(self, archs: Sequence[Any]) -> np.ndarray:
        return np.array([(-1 if (i := self.index_of(a)) is None else i) for a in archs], dtype=np.int64)

    @property
    def _positions(self) -> dict[int, int]:
        cache = self.__dict__.get("_pos_cache")
        if cache is None:
            cache = {int(r): i for i, r in enumerate(self.rows)}
            object.__setattr__(self, "_pos_cache", cache)
        return cache


# ---------------------------------------------------------------------- loading
def _columns(names: str | Sequence[str] | None, what: str) -> tuple[str, ...]:
    if names is None:
        return ()
    items = names.split(",") if isinstance(names, str) else list(names)
    out = tuple(str(n).strip() for n in items)
    if any(not n for n in out):
        raise ConfigError(f"{what} {names!r}: an empty column name; give COL,COL")
    return out


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and ``(line number, cells)`` of each non-blank data row."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = [(reader.line_num, cells) for cells in reader if any(c.strip() for c in cells)]
    except FileNotFoundError:
        raise ConfigError(f"candidate table {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"candidate table {str(path)!r} is a folder; give a CSV file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"candidate table {path} is not UTF-8 text (byte {e.start}: "
                          f"{e.object[e.start:e.start + 1]!r})") from None
    except csv.Error as e:
        raise ConfigError(f"candidate table {path}: not valid CSV: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read candidate table {str(path)!r}: {e.strerror}") from None
    if header is None or not any(h.strip() for h in header):
        raise ConfigError(f"candidate table {path} is empty: it needs a header row of column names and one row "
                          "per candidate")
    header = [h.strip() for h in header]
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup or "" in header:
        raise ConfigError(f"candidate table {path}: the header names column(s) {dup or ['(empty)']} "
                          f"{'twice' if dup else 'without a name'}; each column needs one unique name")
    for line, cells in rows:
        if len(cells) != len(header):
            raise ConfigError(f"candidate table {path}: line {line} has {len(cells)} cells; the header has "
                              f"{len(header)} ({', '.join(header)})")
    return header, rows


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def load_candidates(path: str | os.PathLike[str], *, inputs: str | Sequence[str], known: str = "latency_s",
                    objective: str | None = None, categorical: str | Sequence[str] | None = None) -> CandidateTable:
    """Read the candidate table at ``path`` (CSV with a header row); see the module docstring.

    Args:
        inputs: the columns the searchers see (a sequence, or one string ``"a,b,c"``).
        known: the known objective's column (minimised, finite and > 0 in every row).
        objective: the black-box objective's column (maximised; numbers, an empty cell or NaN is a
            failed trial), or None when an evaluator of your own scores the rows.
        categorical: input columns to one-hot encode even when their cells are numbers (a column with
            any other cell is categorical anyway).

    Raises:
        ConfigError: naming the file and what is wrong with it.
    """
    p = Path(path)
    src = str(p)
    ins = _columns(inputs, "--inputs")
    cats_forced = _columns(categorical, "--categorical")
    if not ins:
        raise ConfigError(f"candidate table {src}: name the input columns (--inputs COL,COL)")
    header, rows = _read_csv(p)
    roles = [("--inputs", c) for c in ins] + [("--known", known)] + \
        ([("--objective", objective)] if objective is not None else []) + [("--categorical", c) for c in cats_forced]
    for flag, c in roles:
        if c not in header:
            raise ConfigError(f"candidate table {src}: {flag} names column {c!r}, which it does not have; its "
                              f"columns: {', '.join(header)}")
    dup = sorted({c for c in ins if ins.count(c) > 1})
    if dup:
        raise ConfigError(f"candidate table {src}: --inputs names {dup} twice")
    for flag, o in (("--known", known), ("--objective", objective)):
        if o is not None and o in ins:
            role = "known" if flag == "--known" else "black-box"
            raise ConfigError(f"candidate table {src}: column {o!r} is the {role} objective ({flag}) and also an "
                              "input; an objective cannot be an input: drop it from --inputs")
    if objective is not None and objective == known:
        raise ConfigError(f"candidate table {src}: column {known!r} is both the known and the black-box objective; "
                          "give two different columns")
    bad = [c for c in cats_forced if c not in ins]
    if bad:
        raise ConfigError(f"candidate table {src}: --categorical names {bad}, which are not inputs; inputs: "
                          f"{', '.join(ins)}")
    if not rows:
        raise ConfigError(f"candidate table {src} has a header but no rows: it needs one row per candidate")
    col = {c: header.index(c) for c in header}

    def where(j: int) -> str:
        return f"candidate table {src}: row {j + 1} (line {rows[j][0]})"

    # inputs: numbers, or categories
    cats: list[str] = []
    columns: list[list[float | str]] = []
    for c in ins:
        cells = [cells[col[c]].strip() for _, cells in rows]
        for j, t in enumerate(cells):
            if not t:
                raise ConfigError(f"{where(j)}: input {c} is empty; every input needs a value")
        nums = [_number(t) for t in cells]
        if c in cats_forced or any(v is None for v in nums):
            cats.append(c)
            columns.append(list(cells))
            n_cat = len(set(cells))
            if n_cat > MAX_CATEGORIES:
                raise ConfigError(f"candidate table {src}: input {c} has {n_cat} categories, more than "
                                  f"{MAX_CATEGORIES} (an id or name column? leave it out of --inputs)")
        else:
            for j, v in enumerate(nums):
                if v is None or not math.isfinite(v):
                    raise ConfigError(f"{where(j)}: input {c}={cells[j]!r} is not a finite number")
            columns.append([float(v) for v in nums if v is not None])
    vectors = list(zip(*columns))
    first: dict[tuple[Any, ...], int] = {}
    for j, vec in enumerate(vectors):
        k = first.setdefault(vec, j)
        if k != j:
            shown = ", ".join(f"{c}={_fmt(v)}" for c, v in zip(ins, vec))
            raise ConfigError(f"candidate table {src}: rows {k + 1} and {j + 1} (lines {rows[k][0]} and {rows[j][0]}) "
                              f"have the same inputs ({shown}); each candidate must be one row: drop or merge the "
                              "duplicates, or add the input that tells them apart")

    lat = np.empty(len(rows))
    for j, (_, cells) in enumerate(rows):
        t = cells[col[known]].strip()
        v = _number(t)
        if v is None:
            raise ConfigError(f"{where(j)}: known objective {known}={t!r} is not a number")
        if not math.isfinite(v) or v <= 0:
            raise ConfigError(f"{where(j)}: known objective {known}={t!r} must be a finite number > 0 (it is "
                              "minimised on a log scale, as latency)")
        lat[j] = v
    obj = None
    if objective is not None:
        obj = np.empty(len(rows))
        for j, (_, cells) in enumerate(rows):
            t = cells[col[objective]].strip()
            v = _number(t) if t else math.nan
            if v is None:
                raise ConfigError(f"{where(j)}: objective {objective}={t!r} is not a number (leave the cell empty "
                                  "for a failed evaluation)")
            obj[j] = v

    used = list(ins) + [known] + ([objective] if objective is not None else [])
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps([used, sorted(cats)]).encode())
    for _, cells in rows:
        h.update(json.dumps([cells[col[c]].strip() for c in used]).encode())

    # value indices, codes (the pool in code order), encoding
    levels = [sorted(set(vals), key=lambda v: (isinstance(v, str), v)) for vals in columns]
    vidx = np.array([[lv.index(v) for lv, v in zip(levels, vec)] for vec in vectors], dtype=np.int32) \
        if ins else np.zeros((len(rows), 0), np.int32)
    dims = tuple(len(lv) for lv in levels)
    if math.prod(dims) < _MAX_CODE:
        codes = np.ravel_multi_index(tuple(vidx.T.astype(np.int64)), dims).astype(np.int64)
        order = np.argsort(codes, kind="stable")
        codes = codes[order]
    else:
        order = np.arange(len(rows))
        codes = order.astype(np.int64)
    enc_cols: list[np.ndarray] = []
    names: list[str] = []
    for c, vals, lv in zip(ins, columns, levels):
        if len(lv) < 2:
            continue
        if c in cats:
            for cat in lv:
                enc_cols.append(np.array([v == cat for v in vals], dtype=np.float64))
                names.append(f"{c}={cat}")
        else:
            x = np.array(vals, dtype=np.float64)
            enc_cols.append((x - x.min()) / (x.max() - x.min()))
            names.append(c)
    ll = np.log(lat)
    lo, hi = float(ll.min()), float(ll.max())
    hi = hi if hi > lo else lo + 1.0
    enc_cols.append((ll - lo) / (hi - lo))
    names.append(f"log_{known}")
    encoded = np.stack(enc_cols, axis=1)[order]

    space = TableSpace(name=p.stem, source=src, inputs=ins, categorical=tuple(c for c in ins if c in cats),
                       known=known, objective=objective, n_rows=len(rows), digest=h.hexdigest(), dims=dims)
    return CandidateTable(space=space, rows=(order + 1).astype(np.int64),
                          input_values=tuple(vectors[int(j)] for j in order), value_index=vidx[order],
                          codes=codes,
                          latency_s=lat[order], objective_values=None if obj is None else obj[order],
                          encoded=np.ascontiguousarray(encoded), encoding_names=tuple(names),
                          log_latency_bounds=(lo, hi))
