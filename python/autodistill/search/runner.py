"""`run_search`: the resumable loop of searcher + evaluator + trial store.

Each step asks the searcher for a batch (``batch_size`` proposals, recorded ``pending`` in one
transaction), evaluates it (``workers`` threads; each trial goes ``running`` then ``completed`` or
``failed`` in its own transaction) and tells the searcher every result. The loop stops when
``budget`` trials have finished (completed + failed).

Resume: the same call on the same store first replays the store into a fresh searcher (every
trial, in id order), then evaluates the trials a killed run left ``pending`` or ``running`` (same
trial ids), then goes on. The store's ``meta`` pins the space, profile, workload, mode and seed;
resuming with different ones is refused (the budget may change). A lock file next to the
database (``flock``, released by the kernel when the process dies) keeps two runs from writing
the same store at once.

Failures: `TrialFailed`, any other exception from the evaluator, and non-finite accuracies are
recorded as ``failed`` with the error text, and the search goes on; ``max_consecutive_failures``
in a row stop it with `SearchError` (the evaluator is likely broken).
"""
from __future__ import annotations

import logging
import math
import os
import re
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autodistill.candidates import CandidateTable, TableSpace
from autodistill.errors import SearchError, TrialFailed
from autodistill.search.base import Pool
from autodistill.search.evaluators import Evaluator, RowEvaluator, describe_evaluator
from autodistill.search.store import TrialStore, resolve_store_path
from autodistill.search.types import Candidate, Trial, TrialResult
from autodistill.space import SearchSpace, build_pool

logger = logging.getLogger(__name__)

__all__ = ["RunSummary", "make_searcher", "run_search"]

SEARCHERS = ("engine", "random", "nsga2")


@dataclass(frozen=True)
class RunSummary:
    """What a `run_search` call did and where the search stands."""

    store: str
    budget: int
    n_completed: int
    n_failed: int
    n_evaluated_now: int
    resumed: bool
    pareto: tuple[Trial, ...]
    hypervolume: float
    reference_point: tuple[float, float] | None
    wall_s: float
    suggest_s_total: float


def make_searcher(kind: str, pool: Pool, engine_config: Any = None, seed: int = 0,
                  population: int = 10) -> Any:
    """A searcher by name: ``engine`` (`SearchEngine`; imports torch), ``random`` or ``nsga2``."""
    if kind == "engine":
        from autodistill.search.engine import EngineConfig, SearchEngine
        return SearchEngine(pool, engine_config or EngineConfig(seed=seed))
    if kind == "random":
        from autodistill.search.baselines import RandomSearch
        return RandomSearch(pool, seed)
    if kind == "nsga2":
        from autodistill.search.baselines import NSGA2
        return NSGA2(pool, seed, population=population)
    from autodistill.errors import choices_message
    raise SearchError(choices_message("searcher", kind, SEARCHERS))


class _StoreLock:
    """The store's lock file, held by one writer (``flock``, released by the kernel when the process dies).

    It also records the last trial id the writer committed (``last trial N``). SQLite keeps recent
    commits in the write-ahead log (``-wal``) until a checkpoint: a log deleted under a running search,
    or after it was killed, loses them without a trace in the database itself. A store holding fewer
    trials than its lock file records is refused instead of resumed as if nothing happened."""

    def __init__(self, db_path: Path) -> None:
        self.db_path, self.path = db_path, db_path.with_name(db_path.name + ".lock")
        self.fd = -1

    def __enter__(self) -> _StoreLock:
        import fcntl

        try:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise SearchError(f"cannot create the store's lock file {self.path}: {e.strerror} (is the folder "
                              "read-only?)") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise SearchError(f"another search is writing {self.db_path} (lock {self.path}); wait for it or use "
                              "another --store") from None
        text = os.pread(self.fd, 400, 0).decode("utf-8", "replace")
        m, f = re.search(r"last trial (\d+)", text), re.search(r"(\d+) finished", text)
        self.recorded, self.finished = int(m.group(1)) if m else 0, int(f.group(1)) if f else 0
        self.since = time.strftime("%Y-%m-%d %H:%M:%S")
        return self

    def check(self, st: TrialStore) -> None:
        """Refuse a store that lost trials the lock file says were committed."""
        rows = st._read("SELECT COALESCE(MAX(trial_id), 0) AS t FROM trials")
        have, finished = int(rows[0]["t"]), st.n_finished
        if have < self.recorded or finished < self.finished:
            raise SearchError(self.lost(have, finished))
        self.note(have, finished)

    def open_store(self, store: str | Path) -> TrialStore:
        """`TrialStore` ``store``; a file that lost even its tables is named as lost trials when the lock
        file records some. No file at all is a new store (an earlier one was moved away)."""
        if not self.db_path.exists():
            self.recorded = self.finished = 0
        try:
            return TrialStore(store)
        except SearchError as e:
            if self.recorded:
                raise SearchError(f"{e}. {self.lost(0, 0)}") from None
            raise

    def lost(self, have: int, finished: int) -> str:
        return (f"{self.db_path} holds trials up to id {have} ({finished} finished), but the search that last "
                f"wrote it committed trials up to id {self.recorded} ({self.finished} finished; {self.path}): its "
                f"write-ahead log ({self.db_path.name}-wal) was lost, deleted or replaced, and those trials with it. "
                f"Restore the log if you can; to resume from what the file holds, delete {self.path}; to start a "
                "new search, use another --store")

    def note(self, last_trial_id: int, finished: int = 0) -> None:
        """Record the last committed trial id and the count of finished trials (after their commits)."""
        self.recorded, self.finished = max(self.recorded, last_trial_id), max(self.finished, finished)
        text = f"pid {os.getpid()} since {self.since}; last trial {self.recorded}, {self.finished} finished\n".encode()
        os.pwrite(self.fd, text.ljust(80), 0)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _latency_digest(pool: Pool) -> str | None:
    """A digest of the pool's known latencies (12 significant digits): it changes with the profile's
    terms (another file of the same name), the serving mix, its statistic and the cost model itself.
    None for a candidate table (its own digest, in the space, covers the known objective)."""
    if pool.latency_s is None or isinstance(pool, CandidateTable):
        return None
    import hashlib

    lat = np.asarray(pool.latency_s, dtype=np.float64)
    text = ",".join(f"{v:.12g}" for v in lat)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _pinned_meta(space: SearchSpace | TableSpace, pool: Pool, searcher: Any,
                 evaluator_settings: Mapping[str, Any] | None) -> dict[str, Any]:
    cfg = getattr(searcher, "config", None)
    extra = {} if evaluator_settings is None else {"evaluator": dict(evaluator_settings)}
    return {**extra,
        "space": space.to_dict(),
        "profile": pool.profile,
        "workload": {"batch": pool.batch, "seq": pool.seq, "dtype": pool.dtype},
        "latency_digest": _latency_digest(pool),
        "searcher": getattr(searcher, "name", type(searcher).__name__),
        "seed": getattr(searcher, "seed", None),
        "engine_config": cfg.to_dict() if cfg is not None and hasattr(cfg, "to_dict") else None,
    }


#: What a differing pinned key means, for the refusal message.
_PINNED_WHY = {"latency_digest": "the candidates' latencies differ: the profile's terms (another file of the same "
                                  "name?), the serving mix or the cost model changed",
              "space.table": "the candidate table differs (another file, its cells edited, or other column roles)"}


def run_search(*, space: SearchSpace | TableSpace, evaluator: Evaluator | RowEvaluator,
               store: str | Path | TrialStore, budget: int,
               profile: str | None = None, searcher: Any = None, pool: Pool | None = None,
               batch_size: int = 1, workers: int = 1, max_candidates: int = 1_000_000,
               max_consecutive_failures: int = 20, progress: bool = False,
               on_trial: Callable[[Trial], None] | None = None,
               evaluator_settings: Mapping[str, Any] | None = None) -> RunSummary:
    """Run (or resume) a search until ``budget`` trials have finished.

    Args:
        space: the search space; ``profile`` (default ``space.objective.profile``) sets the latency objective.
            A search over a candidate table passes its `TableSpace` (``table.space``) and ``pool=table``
            (`autodistill.candidates.load_candidates`): its known objective plays the latency.
        evaluator: scores architectures (`autodistill.search.evaluators.Evaluator`), or a table's rows
            (`RowEvaluator`, e.g. `TableEvaluator` reading the table's objective column).
        store: run folder, ``.sqlite`` path or an open `TrialStore`.
        budget: completed trials wanted, counting earlier runs; failed trials do not use it up (a search
            stops with `SearchError` after ``max_consecutive_failures`` failures in a row, and so never
            ends without a completed trial).
        searcher: an ask/tell searcher over ``pool`` (default: `SearchEngine` with default settings).
        pool: the candidate pool (default: `build_pool(space, profile)`).
        batch_size: proposals per step (q); ``workers`` evaluate them concurrently.
        progress: show a tqdm progress bar.
        on_trial: called with each finished `Trial`.
        evaluator_settings: what sets the evaluator's answers (its spec, noise, seed), pinned in the store
            with the space and the latencies so that a resume with others is refused; default
            `describe_evaluator` (a `SyntheticEvaluator`'s settings; None, nothing pinned, for others).
    """
    from autodistill.costmodel import COST_MODEL_VERSION

    for name, v, lo in (("budget", budget, 1), ("batch_size", batch_size, 1), ("workers", workers, 1),
                        ("max_consecutive_failures", max_consecutive_failures, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise SearchError(f"{name}={v!r} must be an integer >= {lo}")
    t_run = time.perf_counter()
    if pool is None:
        if isinstance(space, TableSpace):
            raise SearchError(f"a search over the candidate table {space.source} needs pool=its CandidateTable "
                              "(autodistill.candidates.load_candidates)")
        pool = build_pool(space, profile, max_candidates=max_candidates)
    if isinstance(pool, CandidateTable) is not isinstance(space, TableSpace) or (
            isinstance(pool, CandidateTable) and pool.space is not space):
        raise SearchError("pool and space do not match: a candidate table is searched with space=table.space, "
                          "pool=table; a space with its own CandidatePool")
    if searcher is None:
        searcher = make_searcher("engine", pool)
    db_path = store.db_path if isinstance(store, TrialStore) else resolve_store_path(store)
    with _StoreLock(db_path) as lock:
        st = store if isinstance(store, TrialStore) else lock.open_store(store)
        try:
            lock.check(st)
            settings = describe_evaluator(evaluator) if evaluator_settings is None else evaluator_settings
            return _run(st, space, pool, searcher, evaluator, budget, batch_size, workers, max_consecutive_failures,
                        progress, on_trial, COST_MODEL_VERSION, t_run, settings, lock.note)
        finally:
            if st is not store:  # opened here
                st.close()


def _run(st: TrialStore, space: SearchSpace | TableSpace, pool: Pool, searcher: Any,
         evaluator: Evaluator | RowEvaluator, budget: int,
         batch_size: int, workers: int, max_fail: int, progress: bool, on_trial: Callable[[Trial], None] | None,
         cm_version: str, t_run: float, evaluator_settings: Mapping[str, Any] | None,
         note: Callable[[int, int], None]) -> RunSummary:
    pinned = _pinned_meta(space, pool, searcher, evaluator_settings)
    old = st.meta()
    resumed = "pinned" in old
    if resumed:
        # keys a store written by an older autodistill lacks are added, not compared (in the engine's
        # settings too: a setting added since, e.g. feasibility_level, is not a difference)
        diff = sorted(k for k in pinned if k in old["pinned"]
                      and old["pinned"][k] != _added_only(k, _roundtrip(pinned[k]), old["pinned"][k]))
        if diff:
            details = []
            for k in diff:
                was = old["pinned"].get(k)
                now = _added_only(k, _roundtrip(pinned[k]), was)
                if k in _PINNED_WHY:
                    details.append(_PINNED_WHY[k])
                elif isinstance(was, dict) and isinstance(now, dict):
                    details += [_differs(f"{k}.{kk}", was.get(kk), now.get(kk))
                                for kk in sorted(set(was) | set(now)) if was.get(kk) != now.get(kk)]
                else:
                    details.append(f"{k}: stored {was!r}, now {now!r}")
            raise SearchError(f"store {st.db_path} was created with different {', '.join(diff)} "
                              f"({'; '.join(details)[:600]}); resume with the same arguments or use a new --store")
        grown = set(_roundtrip(pinned).get("engine_config") or {}) - set(old["pinned"].get("engine_config") or {})
        if set(pinned) - set(old["pinned"]) or (grown and isinstance(old["pinned"].get("engine_config"), dict)):
            st.set_meta({"pinned": {**old["pinned"], **_roundtrip(pinned)}})
        if old.get("cost_model_version") != cm_version:
            logger.warning("store %s was started with cost model %s; this is %s (each trial records its own)",
                           st.db_path, old.get("cost_model_version"), cm_version)
    else:
        st.set_meta({"pinned": pinned, "cost_model_version": cm_version, "created_at": time.time(),
                     "pool": {"size": len(pool), "stats": dict(pool.stats), "sampled": pool.sampled}})
    cfg = getattr(searcher, "config", None)
    if cfg is not None and getattr(cfg, "ref_accuracy", None) is not None and getattr(cfg, "ref_latency_s", None):
        st.set_meta({"reference_point": {"accuracy": cfg.ref_accuracy, "latency_s": cfg.ref_latency_s}})
    st.set_meta({"budget": budget})

    existing = st.trials()
    for t in existing:
        searcher.observe(t)
    leftover = [t for t in existing if not t.finished]
    if leftover:
        logger.info("resuming: %d trial(s) left pending/running by an earlier run", len(leftover))
    # The budget counts completed trials: a failed one (a crashed worker, a NaN loss) does not use it up,
    # so a fixed rerun after failures still gets the trials it asked for. Failures are bounded by
    # ``max_consecutive_failures`` in a row, which stops the search with an error.
    completed = sum(1 for t in existing if t.ok)
    n_now, suggest_total, consecutive = 0, 0.0, 0

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=budget, initial=min(completed, budget), desc=f"search {space.name}", unit="trial")
    try:
        while completed < budget:
            if leftover:
                batch_ids = [t.trial_id for t in leftover[:batch_size]]
                archs = {t.trial_id: t.arch for t in leftover[:batch_size]}
                leftover = leftover[batch_size:]
            else:
                n_new = min(batch_size, budget - completed)
                t0 = time.perf_counter()
                sugg = searcher.suggest_detailed(n_new)
                dt = time.perf_counter() - t0
                suggest_total += dt
                batch_ids = st.add_proposals(sugg, suggest_s=dt, cost_model_version=cm_version)
                note(max(batch_ids), 0)
                archs = dict(zip(batch_ids, (s.arch for s in sugg)))

            def one(tid: int, arch: Candidate) -> Trial:
                st.mark_running(tid)
                t0 = time.perf_counter()
                try:
                    res = evaluator.evaluate(arch, tid)
                    if not isinstance(res, TrialResult):
                        raise SearchError(f"evaluator returned {type(res).__name__}, expected TrialResult")
                    st.complete(tid, res, eval_s=time.perf_counter() - t0)
                except TrialFailed as e:
                    st.fail(tid, f"TrialFailed: {e}", eval_s=time.perf_counter() - t0)
                except Exception as e:  # noqa: BLE001 - any evaluator error is one failed trial
                    logger.warning("trial %d (%s) raised %s: %s", tid, arch.short_name(), type(e).__name__, e)
                    st.fail(tid, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=5)}",
                            eval_s=time.perf_counter() - t0)
                return st.get(tid)

            if workers > 1 and len(batch_ids) > 1:
                with ThreadPoolExecutor(max_workers=min(workers, len(batch_ids))) as ex:
                    done = list(ex.map(one, batch_ids, [archs[tid] for tid in batch_ids]))
            else:
                done = [one(tid, archs[tid]) for tid in batch_ids]
            for t in sorted(done, key=lambda t: t.trial_id):
                searcher.observe(t)
                completed += t.ok
                n_now += 1
                consecutive = consecutive + 1 if not t.ok else 0
                if on_trial is not None:
                    on_trial(t)
                if bar is not None and t.ok:
                    bar.update(1)
                    if t.ok:
                        bar.set_postfix(acc=f"{t.accuracy:.4f}", lat_ms=f"{(t.latency_s or math.nan) * 1e3:.3f}")
            note(max(batch_ids), st.n_finished)
            if consecutive >= max_fail:
                raise SearchError(f"{consecutive} trials in a row failed (last: {done[-1].error!r}); the evaluator "
                                  f"looks broken. Fix it and rerun the same command to resume.")
    finally:
        if bar is not None:
            bar.close()
    counts = st.counts()
    return RunSummary(store=str(st.db_path), budget=budget, n_completed=counts["completed"],
                      n_failed=counts["failed"], n_evaluated_now=n_now, resumed=resumed,
                      pareto=tuple(st.pareto()), hypervolume=st.hypervolume(), reference_point=st.reference_point(),
                      wall_s=time.perf_counter() - t_run, suggest_s_total=suggest_total)


def _added_only(key: str, v: Any, stored: Any = None) -> Any:
    """The pinned ``engine_config`` without the settings a ``stored`` one (an older store's) lacks."""
    if key != "engine_config" or not isinstance(v, dict) or not isinstance(stored, dict):
        return v
    return {k: x for k, x in v.items() if k in stored}


def _differs(key: str, was: Any, now: Any) -> str:
    """How a pinned value ``key`` differs: what it means (`_PINNED_WHY`) and, for a table of values, which."""
    if key in _PINNED_WHY and isinstance(was, dict) and isinstance(now, dict):
        return _PINNED_WHY[key] + ": " + ", ".join(f"{x} stored {was.get(x)!r}, now {now.get(x)!r}"
                                                   for x in sorted(set(was) | set(now)) if was.get(x) != now.get(x))
    return f"{key}: stored {was!r}, now {now!r}"


def _roundtrip(v: Any) -> Any:
    """``v`` as it reads back from the store's JSON (tuples become lists, keys strings)."""
    import json

    from autodistill.search.store import _json_safe
    return json.loads(json.dumps(_json_safe(v), sort_keys=True))
