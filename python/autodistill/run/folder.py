"""The run folder: the only code that knows its file names. Every write is atomic.

::

    run_dir/
      config.toml            the configuration this run was started with, as written
      config.json            what a resume must match (`RunConfig.resume_key`)
      state.json             finished stages (`RunState`)
      cache/                 teacher MLM head and teacher outputs, shared by every trial
      search/                trial store (SQLite, WAL): model exploration with flash distillation
      students/<name>/       full distillation: ckpt/ (orbax), result.json (`StudentRecord`), hf/ (transformers)
      confirm.json           on-device measurements vs estimates (`ConfirmRecord`)
      profiles/              a recalibrated profile of the confirmation device, when needed
      report.html report.md  the report
"""
from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autodistill.errors import ConfigError
from autodistill.fileio import atomic_write_json, atomic_write_text, read_json
from autodistill.run.records import ConfirmRecord, RecordError, RunState, StageRecord, StudentRecord

__all__ = ["RunFolder"]


class RunFolder:
    """A run folder at ``path`` (created on the first write)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"run folder {str(self.path)!r} is a file, not a folder")

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # ------------------------------------------------------------------ paths
    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    @property
    def store_dir(self) -> Path:
        return self.path / "search"

    @property
    def students_dir(self) -> Path:
        return self.path / "students"

    def student_dir(self, name: str) -> Path:
        return self.students_dir / name

    def checkpoint_dir(self, name: str) -> Path:
        return self.student_dir(name) / "ckpt"

    def export_dir(self, name: str) -> Path:
        return self.student_dir(name) / "hf"

    def profile_path(self, name: str) -> Path:
        return self.path / "profiles" / f"{name}.toml"

    @property
    def report_paths(self) -> tuple[Path, Path]:
        """``(report.html, report.md)``."""
        return self.path / "report.html", self.path / "report.md"

    # ------------------------------------------------------------------ config
    def saved_config_key(self) -> Mapping[str, Any] | None:
        """The resume key the run was started with (None for a new folder)."""
        return read_json(self.path / "config.json", what="run config")

    def save_config(self, resume_key: Mapping[str, Any], text: str) -> None:
        atomic_write_json(self.path / "config.json", resume_key)
        if text:
            atomic_write_text(self.path / "config.toml", text)

    def check(self) -> None:
        """Read every record (state, students, confirmation) and the trial store when present, so that a
        damaged or truncated one fails before any work, naming the file."""
        self.state()
        self.students()
        self.confirm()
        from autodistill.search.store import DB_NAME, TrialStore

        if (self.store_dir / DB_NAME).exists():
            with TrialStore(self.store_dir, create=False, readonly=True) as st:
                st.counts()
                st.meta()

    # ------------------------------------------------------------------ state
    def state(self) -> RunState:
        d = read_json(self.path / "state.json", what="run state")
        return RunState() if d is None else RunState.from_dict(d, what=str(self.path / "state.json"))

    def mark(self, stage: str, wall_s: float | None = None, **info: Any) -> RunState:
        """Record ``stage`` as finished now."""
        st = self.state().with_stage(stage, StageRecord(time.time(), wall_s, info))
        atomic_write_json(self.path / "state.json", st.to_dict())
        return st

    # ------------------------------------------------------------------ students
    def _result_path(self, name: str) -> Path:
        return self.student_dir(name) / "result.json"

    def student(self, name: str) -> StudentRecord | None:
        """The record of student ``name`` (None before its distillation wrote one)."""
        p = self._result_path(name)
        d = read_json(p, what="student record", error=RecordError)
        return None if d is None else StudentRecord.from_dict(d, what=str(p))

    def save_student(self, record: StudentRecord) -> None:
        atomic_write_json(self._result_path(record.name), record.to_dict())

    def students(self, ready: bool = False) -> list[StudentRecord]:
        """Every student with a record, by name; only the `StudentRecord.ready` ones with ``ready``."""
        if not self.students_dir.is_dir():
            return []
        out = []
        for folder in sorted(p for p in self.students_dir.iterdir() if p.is_dir()):
            rec = self.student(folder.name)
            if rec is not None and (rec.ready or not ready):
                out.append(rec)
        return out

    # ------------------------------------------------------------------ confirmation
    def confirm(self) -> ConfirmRecord | None:
        p = self.path / "confirm.json"
        d = read_json(p, what="confirmation record", error=RecordError)
        return None if d is None else ConfirmRecord.from_dict(d, what=str(p))

    def save_confirm(self, record: ConfirmRecord) -> None:
        atomic_write_json(self.path / "confirm.json", record.to_dict())
