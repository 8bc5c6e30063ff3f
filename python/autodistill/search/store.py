"""`TrialStore`: every proposal and result of a search in one SQLite file (WAL mode).

Layout: a run folder (``runs/NAME``) holds ``trials.sqlite``; a path ending in ``.sqlite`` or
``.db`` names the file itself. Two tables:

* ``meta(key, value)``: JSON values (the space, profile, workload, engine settings, budget,
  cost-model version, creation time).
* ``trials``: one row per proposal: ``trial_id`` (1, 2, ...), the architecture as JSON (a table search:
  its `TableRow`, ``{"row": N, "values": {...}}``, with the known objective as ``latency_s``), ``status``
  (pending -> running -> completed | failed), the proposer (``source``, ``batch_id``, predicted
  accuracy and sd, acquisition value), cost-model ``latency_s`` and ``num_parameters``,
  ``accuracy``, ``measured_latency_s``, ``metrics`` JSON, ``error``, timestamps
  (``proposed_at``, ``started_at``, ``finished_at``, Unix seconds), ``suggest_s`` and ``eval_s``,
  and the ``cost_model_version`` that scored it.

Durability: WAL journal with ``synchronous=FULL``; every state change is its own committed
transaction, so killing the process at any point loses at most the trial being evaluated (it
stays ``running`` and is evaluated again on resume), never a completed one. Readers (``autodistill
trials``) can open the store while a search writes to it.
"""
from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autodistill.arch import StudentArch
from autodistill.candidates import TableRow
from autodistill.errors import AutodistillError, SearchError, choices_message
from autodistill.fileio import atomic_path, check_output_file, file_on_the_way
from autodistill.search.pareto import hypervolume, objective_matrix, pareto_mask, reference_point
from autodistill.search.types import FINISHED, STATUSES, Suggestion, Trial, TrialResult

logger = logging.getLogger(__name__)

__all__ = ["DB_NAME", "RUN_STORE", "SCHEMA_VERSION", "TrialStore", "check_csv_path", "resolve_store_path"]

DB_NAME = "trials.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
    trial_id INTEGER PRIMARY KEY,
    arch_json TEXT NOT NULL,
    arch_name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    source TEXT NOT NULL DEFAULT '',
    batch_id INTEGER,
    latency_s REAL,
    num_parameters INTEGER,
    predicted_accuracy REAL,
    predicted_accuracy_sd REAL,
    acq_value REAL,
    accuracy REAL,
    measured_latency_s REAL,
    metrics_json TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    proposed_at REAL,
    started_at REAL,
    finished_at REAL,
    suggest_s REAL,
    eval_s REAL,
    cost_model_version TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS trials_status ON trials(status);
"""

_COLUMNS = ("trial_id", "arch_json", "status", "source", "batch_id", "latency_s", "num_parameters",
            "predicted_accuracy", "predicted_accuracy_sd", "acq_value", "accuracy", "measured_latency_s",
            "metrics_json", "error", "proposed_at", "started_at", "finished_at", "suggest_s", "eval_s",
            "cost_model_version")


#: Where an `autodistill run` folder keeps its search store.
RUN_STORE = Path("search") / DB_NAME

_SUFFIXES = (".sqlite", ".db", ".sqlite3")


def resolve_store_path(path: str | Path, *, find_run_store: bool = False) -> Path:
    """The SQLite file of a run folder (``runs/NAME/trials.sqlite``) or of a ``.sqlite``/``.db`` path.

    ``find_run_store`` (for reading): an `autodistill run` folder names its ``search/trials.sqlite``.
    A path that cannot hold a store (a file given as the folder, a folder given as the file, a file on
    the way) or a run folder given to write a search of its own raises `SearchError`."""
    p = Path(path)
    if p.suffix in _SUFFIXES:
        db = p
    else:
        if p.is_file():
            raise SearchError(f"store {str(p)!r} is a file, not a folder; give a run folder (runs/NAME) or a path "
                              f"ending in {', '.join(_SUFFIXES)}")
        db = p / DB_NAME
        if not db.exists() and (p / RUN_STORE).is_file():
            if not find_run_store:
                raise SearchError(f"{str(p)!r} is an `autodistill run` folder; its search store is "
                                  f"{str(p / RUN_STORE.parent)!r}: resume that search with `autodistill run`, or "
                                  "give another --store")
            db = p / RUN_STORE
    if db.is_dir():
        raise SearchError(f"store {str(db)!r} is a folder, not a SQLite file")
    blocked = file_on_the_way(db)
    if blocked is not None:
        raise SearchError(f"store {str(db)!r}: {str(blocked)!r} is a file, not a folder")
    return db


#: How a trials CSV written by `TrialStore.to_csv` begins.
CSV_MARK = "trial_id,status,source"


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _is_trials_csv(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().startswith(CSV_MARK)
    except (OSError, UnicodeDecodeError):
        return False


def _why(e: sqlite3.Error) -> str:
    """SQLite's message, with what it means for a store."""
    msg = str(e)
    if "readonly" in msg:
        return f"{msg} (the file or its folder is read-only: make both writable, or copy the store elsewhere)"
    if "malformed" in msg or "not a database" in msg:
        return f"{msg} (the file is damaged or truncated; move it away to start a new search)"
    return msg


def _finite_or_none(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _json_safe(obj: Any) -> Any:
    """Metrics as JSON: NaN/inf become strings, numpy scalars become Python numbers."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else str(f)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def check_csv_path(path: str | Path, db_path: Path, *, force: bool = False) -> Path:
    """Where a trials CSV may go: never over the store ``db_path``'s files or any SQLite database, a folder
    or a path through a file; over another existing file only when it is an earlier trials CSV (its
    header starts with `CSV_MARK`) or with ``force``. Callers check before a search, `to_csv` again."""
    path = Path(path)
    own = {db_path.resolve(), *(Path(f"{db_path}{x}").resolve() for x in ("-wal", "-shm", "-journal", ".lock"))}
    if path.resolve() in own or _is_sqlite(path):
        raise SearchError(f"refusing to write a CSV over {path}: it is a trial store (SQLite) file; "
                          "give the CSV another name")
    return check_output_file(path, "--csv", ours=_is_trials_csv, what="a trials CSV written by autodistill",
                             force=force, error=SearchError)


class TrialStore:
    """The SQLite trial store of one search. Thread-safe (one connection behind a lock).

    Args:
        path: run folder or ``.sqlite`` file.
        create: create the file (and folder) if missing; else raise `SearchError`.
        readonly: open for reading only (``autodistill trials``); writes raise.
    """

    def __init__(self, path: str | Path, *, create: bool = True, readonly: bool = False) -> None:
        self.db_path = resolve_store_path(path, find_run_store=readonly)
        self._readonly = readonly  # writes to a store opened for reading are the caller's bug: sqlite3 raises
        self.path = Path(path)
        if self.db_path.is_file() and self.db_path.stat().st_size == 0:
            raise SearchError(f"{self.db_path} exists but is empty (0 bytes), so it holds no trials: it is not a "
                              "trial store. Move it away (or delete it) to start a new search there")
        existed = self.db_path.exists()
        if not self.db_path.exists():
            if not create or readonly:
                raise SearchError(f"no trial store at {str(self.db_path)!r} (run `autodistill search --store "
                                  f"{self.path}` first)")
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(str(self.db_path), timeout=30.0, check_same_thread=False,
                                         isolation_level=None)
            if existed and not self._conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'trials'").fetchone():
                self._conn.close()
                raise SearchError(f"{self.db_path} exists but is not a trial store (no trials table); a folder "
                                  "holding it is never treated as new. Move the file away to start a new search")
            if readonly:  # no schema writes; WAL readers need the -shm file, so no mode=ro
                self._conn.execute("PRAGMA query_only=ON")
            else:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
                self._conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise SearchError(f"{self.db_path}: not a usable trial store: {_why(e)}") from None
        except OSError as e:
            raise SearchError(f"cannot create the trial store {str(self.db_path)!r}: {e.strerror}") from None
        self._conn.row_factory = sqlite3.Row
        if readonly and not self._read("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'trials'"):
            self._conn.close()
            raise SearchError(f"{self.db_path} is not a trial store yet (no trials table)")
        if not readonly:
            v = self.get_meta("schema_version")
            if v is None:
                self.set_meta({"schema_version": SCHEMA_VERSION})
            elif v != SCHEMA_VERSION:
                raise SearchError(f"{self.db_path}: schema version {v}; this autodistill reads {SCHEMA_VERSION}")

    # ---------------------------------------------------------------- basics
    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> TrialStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TrialStore({str(self.db_path)!r})"

    def _write(self, sql: str, params: Any = (),
               many: bool = False) -> sqlite3.Cursor:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                cur = self._conn.executemany(sql, params) if many else self._conn.execute(sql, params)
                self._conn.execute("COMMIT")
                return cur
            except BaseException as e:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if isinstance(e, sqlite3.DatabaseError) and not self._readonly:  # read-only file, full disk
                    raise SearchError(f"cannot write the trial store {self.db_path}: {_why(e)}") from None
                raise

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as e:
                raise SearchError(f"cannot read the trial store {self.db_path}: {_why(e)}") from None

    # ---------------------------------------------------------------- meta
    def meta(self) -> dict[str, Any]:
        rows = self._read("SELECT key, value FROM meta")
        return {r["key"]: self._json(r["value"], f"meta {r['key']!r}") for r in rows}

    def get_meta(self, key: str, default: Any = None) -> Any:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return self._json(rows[0]["value"], f"meta {key!r}") if rows else default

    def _json(self, text: str, what: str) -> Any:
        try:
            return json.loads(text)
        except (TypeError, ValueError):
            raise SearchError(f"trial store {self.db_path} is damaged: its {what} is not JSON ({str(text)[:60]!r})"
                              ) from None

    def set_meta(self, values: Mapping[str, Any]) -> None:
        self._write("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    [(k, json.dumps(_json_safe(v), sort_keys=True)) for k, v in values.items()], many=True)

    # ---------------------------------------------------------------- writes
    def add_proposals(self, suggestions: Sequence[Suggestion], *, suggest_s: float | None = None,
                      cost_model_version: str = "") -> list[int]:
        """Record proposals as ``pending`` in one transaction; returns their trial ids."""
        now = time.time()
        with self._lock:
            row = self._read("SELECT COALESCE(MAX(batch_id), 0) + 1 AS b, COALESCE(MAX(trial_id), 0) AS t"
                             " FROM trials")[0]
            batch_id, last = int(row["b"]), int(row["t"])
            ids = list(range(last + 1, last + 1 + len(suggestions)))
            self._write(
                "INSERT INTO trials(trial_id, arch_json, arch_name, status, source, batch_id, latency_s,"
                " num_parameters, predicted_accuracy, predicted_accuracy_sd, acq_value, proposed_at, suggest_s,"
                " cost_model_version)"
                " VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(i, json.dumps(s.arch.to_dict(), sort_keys=True), s.arch.short_name(), s.source, batch_id,
                  _finite_or_none(s.latency_s), s.num_parameters, _finite_or_none(s.predicted_accuracy),
                  _finite_or_none(s.predicted_accuracy_sd), _finite_or_none(s.acq_value), now, suggest_s,
                  cost_model_version) for i, s in zip(ids, suggestions)], many=True)
        return ids

    def mark_running(self, trial_id: int) -> None:
        self._transition(trial_id, ("pending", "running"), "status = 'running', started_at = ?", (time.time(),))

    def complete(self, trial_id: int, result: TrialResult, *, eval_s: float | None = None) -> None:
        """Record a finished evaluation; a non-finite accuracy is recorded as ``failed``."""
        if not isinstance(result, TrialResult):
            raise SearchError(f"complete() needs a TrialResult, got {type(result).__name__}")
        status = "completed" if result.ok else "failed"
        err = None if result.ok else f"non-finite result: accuracy={result.accuracy!r}, " \
                                     f"measured_latency_s={result.measured_latency_s!r}"
        self._transition(
            trial_id, ("pending", "running"),
            "status = ?, accuracy = ?, measured_latency_s = ?, metrics_json = ?, error = ?, finished_at = ?,"
            " eval_s = ?",
            (status, _finite_or_none(result.accuracy), _finite_or_none(result.measured_latency_s),
             json.dumps(_json_safe(result.metrics), sort_keys=True), err, time.time(), eval_s))

    def fail(self, trial_id: int, error: str, *, eval_s: float | None = None) -> None:
        self._transition(trial_id, ("pending", "running"), "status = 'failed', error = ?, finished_at = ?, eval_s = ?",
                         (str(error)[:4000], time.time(), eval_s))

    def _transition(self, trial_id: int, allowed_from: tuple[str, ...], sets: str, params: tuple) -> None:
        with self._lock:
            cur = self._write(f"UPDATE trials SET {sets} WHERE trial_id = ? AND status IN "
                              f"({', '.join('?' * len(allowed_from))})", (*params, trial_id, *allowed_from))
            if cur.rowcount != 1:
                rows = self._read("SELECT status FROM trials WHERE trial_id = ?", (trial_id,))
                if not rows:
                    raise SearchError(f"no trial {trial_id} in {self.db_path}")
                raise SearchError(f"trial {trial_id} is {rows[0]['status']!r}; this change needs one of "
                                  f"{list(allowed_from)}")

    # ---------------------------------------------------------------- reads
    def trials(self, status: str | Sequence[str] | None = None) -> list[Trial]:
        """All trials (optionally of some statuses), ordered by trial id."""
        if status is None:
            rows = self._read(f"SELECT {', '.join(_COLUMNS)} FROM trials ORDER BY trial_id")
        else:
            sts = (status,) if isinstance(status, str) else tuple(status)
            for s in sts:
                if s not in STATUSES:
                    raise SearchError(choices_message("trial status", s, STATUSES))
            rows = self._read(f"SELECT {', '.join(_COLUMNS)} FROM trials WHERE status IN "
                              f"({', '.join('?' * len(sts))}) ORDER BY trial_id", sts)
        return [self._trial(r) for r in rows]

    def get(self, trial_id: int) -> Trial:
        rows = self._read(f"SELECT {', '.join(_COLUMNS)} FROM trials WHERE trial_id = ?", (trial_id,))
        if not rows:
            raise SearchError(f"no trial {trial_id} in {self.db_path}")
        return self._trial(rows[0])

    def _trial(self, r: sqlite3.Row) -> Trial:
        d = dict(r)
        what = f"trial {d.get('trial_id')}"
        try:
            raw = self._json(d.pop("arch_json"), f"{what} architecture")
            arch = TableRow.from_dict(raw) if TableRow.is_row_dict(raw) else StudentArch.from_dict(raw)
        except AutodistillError as e:
            raise SearchError(f"trial store {self.db_path} is damaged: {what}: {e}") from None
        metrics = self._json(d.pop("metrics_json") or "{}", f"{what} metrics")
        return Trial(arch=arch, metrics=metrics, **d)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for r in self._read("SELECT status, COUNT(*) AS n FROM trials GROUP BY status"):
            out[r["status"]] = int(r["n"])
        return out

    @property
    def n_finished(self) -> int:
        c = self.counts()
        return sum(c[s] for s in FINISHED)

    # ---------------------------------------------------------------- analysis
    def _objectives(self) -> tuple[list[Trial], np.ndarray, np.ndarray]:
        done = [t for t in self.trials("completed") if t.ok and t.latency_s]
        acc = np.array([t.accuracy for t in done], dtype=np.float64)
        lat = np.array([t.latency_s for t in done], dtype=np.float64)
        return done, acc, lat

    def pareto(self) -> list[Trial]:
        """Completed trials not dominated in (accuracy up, cost-model latency down), fastest first."""
        done, acc, lat = self._objectives()
        if not done:
            return []
        mask = pareto_mask(objective_matrix(acc, lat))
        front = [t for t, m in zip(done, mask) if m]
        return sorted(front, key=lambda t: (t.latency_s, -(t.accuracy or 0.0)))

    def reference_point(self) -> tuple[float, float] | None:
        """``(ref_accuracy, ref_latency_s)``: stored in meta by the run, else inferred from every completed
        trial (`autodistill.search.pareto.reference_point` with ``front_only=False``: it stays beyond
        every trial, so a hypervolume curve over trials is positive even while the front is one point).
        The search summary, ``autodistill trials`` and the report all use this one."""
        ref = self.get_meta("reference_point")
        if ref and ref.get("accuracy") is not None and ref.get("latency_s") is not None:
            return float(ref["accuracy"]), float(ref["latency_s"])
        done, acc, lat = self._objectives()
        if not done:
            return None
        return reference_point(acc, lat, front_only=False)

    def hypervolume(self, ref_accuracy: float | None = None, ref_latency_s: float | None = None) -> float:
        """Hypervolume of the completed trials in the (accuracy, -ln latency_s) plane."""
        done, acc, lat = self._objectives()
        if ref_accuracy is None or ref_latency_s is None:
            ref = self.reference_point()
            if ref is None:
                return 0.0
            ref_accuracy = ref[0] if ref_accuracy is None else ref_accuracy
            ref_latency_s = ref[1] if ref_latency_s is None else ref_latency_s
        return hypervolume(acc, lat, ref_accuracy, ref_latency_s) if done else 0.0

    def to_dataframe(self):  # -> pandas.DataFrame
        """One row per trial: ids, status, arch name and fields, objectives, predictions, timings."""
        import pandas as pd

        rows = []
        for t in self.trials():
            d = {"trial_id": t.trial_id, "status": t.status, "source": t.source, "batch_id": t.batch_id,
                 "arch": t.arch.short_name(), "num_parameters": t.num_parameters, "latency_s": t.latency_s,
                 "accuracy": t.accuracy, "measured_latency_s": t.measured_latency_s,
                 "predicted_accuracy": t.predicted_accuracy, "predicted_accuracy_sd": t.predicted_accuracy_sd,
                 "acq_value": t.acq_value, "error": t.error, "proposed_at": t.proposed_at,
                 "started_at": t.started_at, "finished_at": t.finished_at, "suggest_s": t.suggest_s,
                 "eval_s": t.eval_s, "cost_model_version": t.cost_model_version}
            if isinstance(t.arch, TableRow):
                d.update({"row": t.arch.row, **{f"input.{k}": v for k, v in t.arch.values.items()}})
            else:
                d.update({f"arch.{k}": v for k, v in t.arch.to_dict().items()})
            d.update({f"metrics.{k}": v for k, v in t.metrics.items()})
            rows.append(d)
        df = pd.DataFrame(rows)
        if len(df):
            front = {t.trial_id for t in self.pareto()}
            df["pareto"] = df["trial_id"].isin(front)
        return df

    def to_csv(self, path: str | Path, *, force: bool = False) -> Path:
        """Write every trial to a CSV at ``path`` (atomically).

        Never over this store's own files or any SQLite database; over another existing file only
        when it is an earlier trials CSV (its header starts with `CSV_MARK`) or with ``force``."""
        path = check_csv_path(path, self.db_path, force=force)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            self.to_dataframe().to_csv(tmp, index=False)
        return path
