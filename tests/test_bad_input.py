"""Every bad input of the CLI, from one table: exit code 2, a message naming what is wrong, and where the
input is someone's data, that data left as it was (issue 14).

A row is ``Case(id, argv, code, phrase, keep)``: ``argv`` is a list, or a function of the test's folder
(`Files`) that sets the input up and returns the list; ``phrase`` must appear in stderr (stdout when the
code is 0); ``keep`` names the files and folders (relative to the test folder) whose bytes must not
change. Adding a case is one line. The CLI runs in-process (`autodistill.cli.main`), so the whole table
takes seconds.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from autodistill.cli import LONG_COMMANDS, build_parser, main

REPO = Path(__file__).resolve().parents[1]
LATIN1 = "caf\xe9 cr\xe8me".encode("latin-1")
SEARCH = ["search", "--space", "small", "--profile", "tpu_v4i", "--searcher", "random", "--no-progress"]


# ------------------------------------------------------------------------------------------ inputs
@pytest.fixture(scope="module")
def made_store(tmp_path_factory) -> Path:
    """A finished 3-trial search folder, made once and copied by the cases that need one."""
    d = tmp_path_factory.mktemp("store") / "s"
    assert main([*SEARCH, "--budget", "3", "--store", str(d)]) == 0
    return d


class Files:
    """The test's folder, with helpers that write the inputs the cases use."""

    def __init__(self, root: Path, store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root, self._store, self.mp = root, store, monkeypatch

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    def write(self, name: str, data: str | bytes) -> str:
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(p)

    def dir(self, name: str) -> str:
        (self.root / name).mkdir(parents=True, exist_ok=True)
        return str(self.root / name)

    def store(self, name: str = "s") -> str:
        shutil.copytree(self._store, self.root / name)
        return str(self.root / name)

    def damaged_store(self, name: str, how: str) -> str:
        d = Path(self.store(name))
        db = d / "trials.sqlite"
        raw = db.read_bytes()
        db.write_bytes({"truncated": raw[: len(raw) // 3], "garbage": b"not a database at all " * 50,
                        "empty": b""}[how])
        return str(d)

    def profile(self, name: str, edit: Callable[[str], str]) -> str:
        return self.write(name, edit((REPO / "profiles" / "tpu_v4i.toml").read_text()))

    def checkpoint(self, name: str = "ck") -> str:
        self.write(f"{name}/run.json", json.dumps({"vocab_path": None}))
        self.write(f"{name}/0/weights.bin", b"\x00weights")
        return str(self.root / name)

    def run_folder(self, name: str = "run", **files: str | bytes) -> str:
        """A run folder of the default config (its config.json), with ``files`` (relative name -> content)."""
        from autodistill.run import load_config

        d = self.root / name
        self.write(f"{name}/config.json", json.dumps(load_config().resume_key))
        for rel, content in files.items():  # students__t1__result_json: students/t1/result.json
            path = re.sub(r"_(json|sqlite)$", r".\1", rel.replace("__", "/"))
            self.write(f"{name}/{path}", content)
        return str(d)

    def readonly_sqlite(self) -> None:
        """What a read-only file does to SQLite, whoever runs the tests (root writes through chmod)."""
        real = sqlite3.connect
        self.mp.setattr(sqlite3, "connect", lambda db, **kw: real(f"file:{db}?mode=ro", uri=True, **kw))

    def readonly_folder(self) -> None:
        """What a read-only folder does to the store's lock file."""
        real = os.open

        def deny(path, *a, **k):
            if str(path).endswith(".lock"):
                raise PermissionError(13, "Permission denied", str(path))
            return real(path, *a, **k)

        self.mp.setattr(os, "open", deny)


@dataclass(frozen=True)
class Case:
    id: str
    argv: Sequence[str] | Callable[[Files], Sequence[str]]
    code: int
    phrase: str
    keep: tuple[str, ...] = ()  # data-loss cases: these must be byte-for-byte intact

    @property
    def data_loss(self) -> bool:
        return bool(self.keep)


def _search(store: str, *extra: str, budget: str = "4") -> list[str]:
    return [*SEARCH, "--budget", budget, "--store", store, *extra]


def _resumed_with(f: Files, *extra: str) -> list[str]:
    s = f.store("s")
    return _search(s, *extra)


def _other_profile_terms(f: Files) -> list[str]:
    # another tpu_v4i.toml on the profile path, same name: only the latencies tell them apart
    f.mp.setenv("AUTODISTILL_PROFILE_PATH", str(f / "profs"))
    f.profile("profs/tpu_v4i.toml", lambda t: t)
    assert main([*SEARCH, "--budget", "2", "--store", str(f / "p")]) == 0
    slower = f.profile("profs/tpu_v4i.toml", lambda t: t.replace(OVERHEAD, "op_overhead_s = 3.0e-6"))
    assert OVERHEAD not in Path(slower).read_text()
    return [*SEARCH, "--budget", "3", "--store", str(f / "p")]


def _lost_wal(f: Files) -> list[str]:
    # the search was killed after its write-ahead log was deleted: the file lost its tables, the lock
    # file still records the 3 trials it committed
    s = Path(f.store("s"))
    (s / "trials.sqlite.lock").write_text("pid 1 since then; last trial 3, 3 finished\n")
    (s / "trials.sqlite").unlink()
    sqlite3.connect(s / "trials.sqlite").execute("PRAGMA user_version = 1").connection.close()
    return _search(str(s))


def _lost_some_trials(f: Files) -> list[str]:
    s = Path(f.store("s"))
    (s / "trials.sqlite.lock").write_text("pid 1 since then; last trial 9, 9 finished\n")
    return _search(str(s))


def _evaluator_module(f: Files) -> str:
    """A user's evaluator (not the synthetic one) as ``module:factory``, importable from the test folder."""
    f.write("my_evaluator.py", "from autodistill.search.evaluators import SyntheticEvaluator\n\n"
                               "class Mine:\n    def evaluate(self, arch, trial_id):\n"
                               "        return SyntheticEvaluator().evaluate(arch, trial_id)\n")
    f.mp.syspath_prepend(str(f.root))
    return "my_evaluator:Mine"


def _readonly_store(f: Files) -> list[str]:
    s = f.store("s")
    f.readonly_sqlite()
    return _search(s)


def _readonly_folder(f: Files) -> list[str]:
    s = f.store("s")
    os.remove(Path(s) / "trials.sqlite.lock")
    f.readonly_folder()
    return _search(s)


def _profiles_on_path(f: Files, text: str | bytes) -> list[str]:
    f.write("profs/weird.toml", text)
    f.mp.setenv("AUTODISTILL_PROFILE_PATH", str(f / "profs"))
    return ["profiles", "list"]


def _fitted_no(f: Files) -> list[str]:
    text = (REPO / "profiles" / "cpu_local.toml").read_text().replace("fitted = true", 'fitted = "no"')
    assert 'fitted = "no"' in text
    return _profiles_on_path(f, text)


def _verify_reuse(content: str | bytes) -> Callable[[Files], list[str]]:
    return lambda f: ["verify", "--profile", "cpu_local", "--device", "cpu", "--arch", "tinybert-4",
                      "--reuse", f.write("old.json", content)]


def _verify_out(f: Files, out: str) -> list[str]:
    return ["verify", "--profile", "cpu_local", "--device", "cpu", "--arch", "tinybert-4", "--out", out]


def _calibrate_out(out: str) -> list[str]:
    return ["calibrate", "--device", "cpu", "--out", out, "--from-measurements",
            str(REPO / "profiles" / "cpu_local_measurements.csv")]


def _run_config(f: Files, text: str | bytes, out: str = "new_run") -> list[str]:
    return ["run", f.write("c.toml", text), "--out", str(f / out)]


def _export(f: Files, out: str) -> list[str]:
    return ["distill", "export", "--checkpoint-dir", f.checkpoint(), "--out", out, "--no-verify"]


OVERHEAD = "op_overhead_s = 1.0e-6"
TRUNCATED = '{"schema": 1, "name": "x", "ar'
HUGE = '{"num_hidden_layers": 1' + "0" * 5000 + "}"

TABLE = "h,act,latency_s,accuracy\n64,relu,0.001,0.6\n128,gelu,0.002,0.7\n"


def _table(f: Files, text: str = TABLE, *extra: str, inputs: str = "h,act") -> list[str]:
    """``search --candidates`` over a CSV of ``text`` (the table is left as it was)."""
    return ["search", "--candidates", f.write("t.csv", text), "--inputs", inputs, "--budget", "2",
            "--store", str(f / "x"), "--searcher", "random", "--no-progress", *extra]


def _table_edited_after_a_search(f: Files) -> list[str]:
    assert main(_table(f)) == 0
    return _table(f, TABLE.replace("0.7", "0.8"))


CASES = [
    # --- data that was lost or destroyed: refused, and the data is intact
    Case("export-out-is-the-checkpoint", lambda f: _export(f, str(f / "ck")), 2, "is the checkpoint folder",
         keep=("ck",)),
    Case("export-out-holds-the-checkpoint", lambda f: _export(f, str(f.root)), 2, "holds it", keep=("ck",)),
    Case("export-out-inside-the-checkpoint", lambda f: _export(f, str(f / "ck" / "hf")), 2, "is inside",
         keep=("ck",)),
    Case("trials-csv-over-the-store", lambda f: ["trials", f.store(), "--csv", str(f / "s" / "trials.sqlite")], 2,
         "it is a trial store (SQLite) file", keep=("s/trials.sqlite",)),
    Case("search-csv-over-the-store", lambda f: _search(f.store(), "--csv", str(f / "s" / "trials.sqlite")), 2,
         "it is a trial store (SQLite) file", keep=("s/trials.sqlite",)),
    Case("trials-csv-over-another-file", lambda f: ["trials", f.store(), "--csv", f.write("notes.csv", "mine\n")], 2,
         "pass --force to replace it", keep=("notes.csv",)),
    Case("search-csv-over-another-store",
         lambda f: _search(str(f / "new"), "--csv", str(Path(f.store("other")) / "trials.sqlite")), 2,
         "it is a trial store (SQLite) file", keep=("other/trials.sqlite",)),
    Case("empty-store-is-not-a-new-search", lambda f: _search(f.damaged_store("s", "empty")), 2,
         "exists but is empty (0 bytes)", keep=("s/trials.sqlite",)),
    Case("garbage-store-is-not-a-new-search", lambda f: _search(f.damaged_store("s", "garbage")), 2,
         "not a usable trial store", keep=("s/trials.sqlite",)),
    Case("store-that-lost-its-wal", _lost_wal, 2, "write-ahead log (trials.sqlite-wal) was lost",
         keep=("s/trials.sqlite",)),
    Case("store-with-fewer-trials-than-committed", _lost_some_trials, 2, "committed trials up to id 9",
         keep=("s/trials.sqlite",)),
    Case("search-store-is-a-run-folder", lambda f: _search(f.run_folder(search__trials_sqlite=b"x")), 2,
         "is an `autodistill run` folder", keep=("run",)),
    Case("verify-out-over-another-file", lambda f: _verify_out(f, f.write("mine.json", '{"a": 1}')), 2,
         "exists and is not a verify JSON file", keep=("mine.json",)),
    Case("calibrate-out-over-another-toml", lambda f: _calibrate_out(f.write("pyproject.toml", "[project]\n")), 2,
         "exists and is not a hardware profile", keep=("pyproject.toml",)),
    Case("rescale-out-over-another-toml",
         lambda f: ["rescale", "--profile", "cpu_local", "--device", "cpu", "--out", f.write("x.toml", "a = 1\n")], 2,
         "exists and is not a hardware profile", keep=("x.toml",)),
    Case("run-with-another-config-keeps-the-folder",
         lambda f: ["run", "--out", f.run_folder(), "--budget", "3", "--executor", "ray"], 2,
         "holds a run with a different configuration", keep=("run",)),
    # --- answers that were silently wrong
    Case("search-seq-0", lambda f: _search(str(f / "x"), "--seq", "0"), 2, "--seq 0 must be an integer in 1.."),
    Case("search-batch-0", lambda f: _search(str(f / "x"), "--batch", "0"), 2, "--batch 0 must be an integer"),
    Case("search-min-accuracy-2", lambda f: _search(str(f / "x"), "--min-accuracy", "2"), 2,
         "--min-accuracy 2.0 must be an accuracy in [0, 1]"),
    Case("search-seed-negative", lambda f: _search(str(f / "x"), "--seed", "-1"), 2, "--seed -1 must be an integer"),
    Case("trials-limit-negative", lambda f: ["trials", f.store(), "--limit", "-5"], 2, "--limit -5 must be >= 0"),
    Case("profile-fitted-no", _fitted_no, 2, "fitted = 'no' must be true or false"),
    Case("estimate-seq-beyond-positions", ["estimate", "--profile", "tpu_v4i", "--arch", "mobilebert", "--seq", "1000"],
         2, "longer than mobilebert-L24-H512-B128-A4-I512x4's max_position_embeddings=512"),
    Case("table-seq-beyond-positions", ["table", "--seq", "1024"], 2, "longer than the reference models read"),
    Case("verify-shape-beyond-positions",
         ["verify", "--profile", "cpu_local", "--device", "cpu", "--arch", "tinybert-4", "--shape", "1x1024"], 2,
         "max_position_embeddings=512, fewer than 1024 tokens"),
    Case("resume-with-other-noise", lambda f: _resumed_with(f, "--noise-sd", "0.05"), 2,
         "evaluator.noise_sd: stored 0.003, now 0.05"),
    Case("resume-with-other-evaluator", lambda f: _resumed_with(f, "--evaluator", _evaluator_module(f)), 2,
         "different evaluator"),
    Case("evaluator-factory-raises", lambda f: _search(str(f / "x"), "--evaluator", "json:loads"), 2,
         "--evaluator 'json:loads': calling loads() failed: TypeError"),
    Case("resume-with-other-profile-terms", _other_profile_terms, 2, "different latency_digest"),
    Case("run-name-escapes-runs", lambda f: _run_config(f, '[run]\nname = "../../escape"\n'), 2,
         "must be a plain folder name"),
    Case("run-seed-negative", lambda f: _run_config(f, "[run]\nseed = -1\n"), 2, "seed = -1 must be >= 0"),
    Case("run-bad-searcher", lambda f: _run_config(f, '[search]\nsearcher = "grid"\n'), 2, "unknown searcher 'grid'"),
    # --- tracebacks that are now exit 2 with the file named
    Case("profile-toml-not-utf8", lambda f: ["profiles", "show", f.write("p.toml", b'name = "' + LATIN1 + b'"\n')], 2,
         "is not UTF-8 text (byte"),
    Case("estimate-profile-not-utf8",
         lambda f: ["estimate", "--profile", f.write("p.toml", LATIN1), "--arch", "mobilebert"], 2, "not UTF-8"),
    Case("profile-toml-not-toml", lambda f: ["profiles", "show", f.write("p.toml", "name = \n")], 2,
         "not valid TOML"),
    Case("profiles-list-with-a-damaged-file", lambda f: _profiles_on_path(f, LATIN1), 2, "weird.toml' is not UTF-8"),
    Case("space-toml-not-utf8", lambda f: _search(str(f / "x"))[:1] + ["--space", f.write("sp.toml", LATIN1),
                                                                         "--budget", "2", "--store", str(f / "x")],
         2, "space file"),
    Case("space-file-missing", lambda f: ["search", "--space", str(f / "nope.toml"), "--budget", "2", "--store",
                                          str(f / "x")], 2, "does not exist"),
    Case("space-unknown-lists-presets", lambda f: ["search", "--space", "nope", "--budget", "2", "--store",
                                                   str(f / "x")], 2, "valid choices: minilm, mobilebert, small"),
    Case("arch-json-not-utf8", lambda f: ["estimate", "--profile", "tpu_v4i", "--arch", f.write("a.json", LATIN1)], 2,
         "is not UTF-8 text"),
    Case("arch-json-huge-number", lambda f: ["estimate", "--profile", "tpu_v4i", "--arch", f.write("a.json", HUGE)],
         2, "holds a value autodistill cannot read: Exceeds the limit"),
    Case("arch-inline-huge-number", ["estimate", "--profile", "tpu_v4i", "--arch", HUGE], 2, "Exceeds the limit"),
    Case("arch-json-truncated",
         lambda f: ["estimate", "--profile", "tpu_v4i", "--arch", f.write("a.json", '{"num_hidden_layers": 4')], 2,
         "is not valid JSON (truncated or damaged?)"),
    Case("store-is-a-file", lambda f: _search(f.write("notes.txt", "mine")), 2, "is a file, not a folder",
         keep=("notes.txt",)),
    Case("store-under-a-file", lambda f: _search(f.write("notes.txt", "mine") + "/x.sqlite"), 2,
         "is a file, not a folder", keep=("notes.txt",)),
    Case("store-sqlite-is-a-folder", lambda f: _search(f.dir("x.sqlite")), 2, "is a folder, not a SQLite file"),
    Case("trials-of-a-file", lambda f: ["trials", f.write("notes.txt", "mine")], 2, "is a file, not a folder"),
    Case("trials-truncated-store", lambda f: ["trials", f.damaged_store("s", "truncated")], 2,
         "database disk image is malformed", keep=("s/trials.sqlite",)),
    Case("trials-garbage-store", lambda f: ["trials", f.damaged_store("s", "garbage")], 2, "not a usable trial store",
         keep=("s/trials.sqlite",)),
    Case("search-truncated-store", lambda f: _search(f.damaged_store("s", "truncated")), 2,
         "the file is damaged or truncated", keep=("s/trials.sqlite",)),
    Case("search-read-only-store", _readonly_store, 2, "read-only"),
    Case("search-read-only-folder", _readonly_folder, 2, "cannot create the store's lock file"),
    Case("search-csv-is-a-folder", lambda f: _search(str(f / "x"), "--csv", f.dir("out")), 2,
         "is a folder; give a file name"),
    Case("trials-csv-under-a-file",
         lambda f: ["trials", f.store(), "--csv", f.write("notes.txt", "mine") + "/t.csv"], 2,
         "is a file, not a folder", keep=("notes.txt",)),
    Case("verify-out-under-a-file", lambda f: _verify_out(f, f.write("notes.txt", "mine") + "/v.json"), 2,
         "is a file, not a folder", keep=("notes.txt",)),
    Case("verify-out-is-a-folder", lambda f: _verify_out(f, f.dir("v.json")), 2, "is a folder; give a file name"),
    Case("verify-reuse-truncated", _verify_reuse('{"shapes": [{"batch": 1'), 2, "is not valid JSON (truncated"),
    Case("verify-reuse-not-utf8", _verify_reuse(LATIN1), 2, "is not UTF-8 text"),
    Case("verify-run-truncated-result",
         lambda f: ["verify", "--profile", "cpu_local", "--device", "cpu",
                    "--run", f.run_folder(students__t1__result_json=TRUNCATED)], 2, "result.json' is not valid JSON"),
    Case("calibrate-out-is-a-folder", lambda f: _calibrate_out(f.dir("p.toml")), 2, "is a folder; give a file name"),
    Case("calibrate-out-under-a-file", lambda f: _calibrate_out(f.write("notes", "mine") + "/p.toml"), 2,
         "is a file, not a folder", keep=("notes",)),
    Case("rescale-out-is-a-folder",
         lambda f: ["rescale", "--profile", "cpu_local", "--device", "cpu", "--out", f.dir("p.toml")], 2,
         "is a folder; give a file name"),
    Case("run-out-is-a-file", lambda f: ["run", "--out", f.write("notes.txt", "mine")], 2, "is a file, not a folder",
         keep=("notes.txt",)),
    Case("run-config-not-utf8", lambda f: _run_config(f, LATIN1), 2, "is not UTF-8 text"),
    Case("run-config-not-toml", lambda f: _run_config(f, "[run\n"), 2, "not valid TOML"),
    Case("run-truncated-config-json",
         lambda f: ["run", "--out", str(Path(f.write("r/config.json", TRUNCATED)).parent)], 2,
         "config.json' is not valid JSON"),
    Case("run-truncated-state-json", lambda f: ["run", "--out", f.run_folder(state_json=TRUNCATED)], 2,
         "state.json' is not valid JSON", keep=("run",)),
    Case("run-truncated-result-json", lambda f: ["run", "--out", f.run_folder(students__t1__result_json=TRUNCATED)],
         2, "result.json' is not valid JSON", keep=("run",)),
    Case("run-truncated-confirm-json", lambda f: ["run", "--out", f.run_folder(confirm_json=TRUNCATED)], 2,
         "confirm.json' is not valid JSON", keep=("run",)),
    Case("run-garbage-store", lambda f: ["run", "--out", f.run_folder(search__trials_sqlite=b"x" * 5000)], 2,
         "not a usable trial store", keep=("run",)),
    Case("export-truncated-run-json",
         lambda f: ["distill", "export", "--checkpoint-dir", f.write("ck/run.json", TRUNCATED).rsplit("/", 1)[0],
                    "--out", str(f / "hf")], 2, "run.json' is not valid JSON", keep=("ck",)),
    Case("export-out-under-a-file", lambda f: _export(f, f.write("notes.txt", "mine") + "/hf"), 2,
         "is a file, not a folder", keep=("notes.txt", "ck")),
    Case("full-truncated-run-json",
         lambda f: ["distill", "full", "--student", "mobilebert-tiny",
                    "--checkpoint-dir", f.write("ck/run.json", TRUNCATED).rsplit("/", 1)[0]], 2,
         "run.json' is not valid JSON", keep=("ck",)),
    Case("calibrate-seed-negative", lambda f: _calibrate_out(str(f / "p.toml")) + ["--seed", "-3"], 2,
         "--seed -3 must be"),
    # --- search --candidates: a bad candidate table (issue 16)
    Case("table-empty", lambda f: _table(f, ""), 2, "t.csv is empty", keep=("t.csv",)),
    Case("table-no-rows", lambda f: _table(f, "h,act,latency_s,accuracy\n"), 2, "has a header but no rows",
         keep=("t.csv",)),
    Case("table-duplicate-inputs", lambda f: _table(f, TABLE + "64,relu,0.003,0.5\n"), 2,
         "rows 1 and 3 (lines 2 and 4) have the same inputs (h=64, act=relu)", keep=("t.csv",)),
    Case("table-known-not-a-number", lambda f: _table(f, TABLE.replace("0.002", "fast")), 2,
         "known objective latency_s='fast' is not a number", keep=("t.csv",)),
    Case("table-known-not-finite", lambda f: _table(f, TABLE.replace("0.002", "inf")), 2,
         "latency_s='inf' must be a finite number > 0", keep=("t.csv",)),
    Case("table-known-zero", lambda f: _table(f, TABLE.replace("0.002", "0")), 2,
         "latency_s='0' must be a finite number > 0", keep=("t.csv",)),
    Case("table-unknown-column", lambda f: _table(f, inputs="h,width"), 2,
         "--inputs names column 'width', which it does not have; its columns: h, act, latency_s, accuracy"),
    Case("table-unknown-known-column", lambda f: _table(f, TABLE, "--known", "lat"), 2,
         "--known names column 'lat', which it does not have; its columns: h, act"),
    Case("table-objective-is-an-input", lambda f: _table(f, inputs="h,accuracy"), 2,
         "column 'accuracy' is the black-box objective (--objective) and also an input"),
    Case("table-known-is-an-input", lambda f: _table(f, inputs="h,latency_s"), 2,
         "column 'latency_s' is the known objective (--known) and also an input"),
    Case("table-objective-not-a-number", lambda f: _table(f, TABLE.replace("0.7", "good")), 2,
         "objective accuracy='good' is not a number"),
    Case("table-ragged-row", lambda f: _table(f, TABLE + "256,gelu\n"), 2, "line 4 has 2 cells; the header has 4"),
    Case("table-missing", lambda f: ["search", "--candidates", str(f / "no.csv"), "--inputs", "h", "--budget", "2",
                                     "--store", str(f / "x")], 2, "no.csv' does not exist"),
    Case("table-no-inputs", lambda f: _table(f)[:3] + _table(f)[5:], 2, "name its input columns with --inputs"),
    Case("table-with-profile", lambda f: _table(f, TABLE, "--profile", "tpu_v4i"), 2,
         "--profile sets the cost-model latency of a space"),
    Case("table-synthetic-evaluator", lambda f: _table(f, TABLE, "--evaluator", "synthetic"), 2,
         "synthetic scores architectures, not the rows of a candidate table"),
    Case("space-table-evaluator", lambda f: _search(str(f / "x"), "--evaluator", "table"), 2,
         "table scores the rows of a candidate table"),
    Case("space-with-inputs", lambda f: _search(str(f / "x"), "--inputs", "h"), 2,
         "--inputs describes a candidate table; it needs --candidates"),
    Case("table-changed-on-resume", _table_edited_after_a_search, 2,
         "the candidate table differs (another file, its cells edited, or other column roles): digest stored"),
    # --- the CLI as people expect it (exit 0)
    Case("verbose-after-the-subcommand", ["profiles", "list", "-v"], 0, "tpu_v4i"),
    Case("trials-of-a-run-folder", lambda f: ["trials", _run_with_store(f)], 0, "search/trials.sqlite"),
]


def _run_with_store(f: Files) -> str:
    d = Path(f.run_folder())
    shutil.copytree(f._store, d / "search")
    return str(d)


def _snapshot(p: Path) -> object:
    if p.is_file():
        return p.read_bytes()
    if p.is_dir():
        return {str(q.relative_to(p)): q.read_bytes() for q in sorted(p.rglob("*")) if q.is_file()}
    return None


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, tmp_path: Path, made_store: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    files = Files(tmp_path, made_store, monkeypatch)
    argv = list(case.argv(files) if callable(case.argv) else case.argv)
    before = {k: _snapshot(tmp_path / k) for k in case.keep}
    assert all(v is not None for v in before.values()), "a kept path is missing before the command"
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    assert code == case.code, (code, out[-500:], err[-2000:])
    assert "Traceback" not in err
    assert case.phrase in (err if case.code else out), err[-2000:]
    for k, v in before.items():
        assert _snapshot(tmp_path / k) == v, f"{k} changed"


def test_the_table_covers_the_issue() -> None:
    """At least the 35 traceback cases and the 8 data-loss cases of issue 14."""
    assert len({c.id for c in CASES}) == len(CASES)
    assert sum(c.data_loss for c in CASES) >= 8
    assert sum(c.code == 2 for c in CASES) >= 35 + 8


def test_every_long_command_takes_no_progress_and_every_command_v() -> None:
    parser = build_parser()
    for cmd in LONG_COMMANDS:
        sub = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        p = sub[cmd.split()[0]]
        if " " in cmd:
            p = p._subparsers._group_actions[0].choices[cmd.split()[1]]  # type: ignore[union-attr]
        assert any("--no-progress" in a.option_strings for a in p._actions), cmd
    args = parser.parse_args(["-v", "estimate", "--profile", "x", "--arch", "y", "-v"])
    assert args.verbose + args.sub_verbose == 2


def test_search_space_help_lists_every_preset(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["search", "-h"])
    out = " ".join(capsys.readouterr().out.split())
    assert "a preset (minilm, mobilebert, small)" in out


def test_a_latin1_corpus_file_reads_as_latin1_with_a_warning(tmp_path: Path, caplog) -> None:
    from autodistill.distill.data import read_corpus

    f = tmp_path / "book.txt"
    f.write_bytes(b"line one\n" + "Bruneti\xe8re \u201cquoted\u201d".encode("cp1252"))
    with caplog.at_level(logging.WARNING):
        (doc,) = read_corpus(tmp_path)
    assert doc.text == "line one\nBrunetière “quoted”" and "\ufffd" not in doc.text
    assert "book.txt is not UTF-8 (byte offset 16, line 2" in caplog.text
    f.write_bytes("\ufeffcafé".encode())
    assert read_corpus(f)[0].text == "café"  # UTF-8, its byte-order mark dropped


def test_every_subcommand_has_an_example_that_parses_and_every_flag_a_help() -> None:
    import argparse

    from autodistill.cli import EXAMPLES, _subcommands

    parser = build_parser()
    subs = dict(_subcommands(parser))
    assert set(EXAMPLES) == set(subs)
    for name, p in subs.items():
        assert f"example:\n  {EXAMPLES[name]}" in p.format_help(), name
        if p._subparsers is None:  # a leaf: its example is a command line the parser takes
            args = parser.parse_args(EXAMPLES[name].split()[1:])
            assert callable(args.func), name
        for a in p._actions:
            if a.option_strings and not isinstance(a, argparse._HelpAction):
                assert a.help, (name, a.option_strings)  # a hidden alias has help=SUPPRESS, still truthy


def test_help_shows_defaults_and_old_spellings_still_parse() -> None:
    parser = build_parser()
    flash = parser.parse_args(["distill", "flash", "--student", "tinybert-4", "--batch-size", "4", "--seq-len", "32"])
    assert (flash.batch, flash.seq) == (4, 32)
    flash = parser.parse_args(["distill", "flash", "--student", "tinybert-4"])
    from autodistill.distill.flash import FlashConfig

    assert flash.batch == FlashConfig().batch_size  # the default comes from the config dataclass
    search = parser.parse_args(["search", "--space", "small", "--budget", "2", "--store", "s", "--batch-size", "3"])
    assert search.proposals == 3
    verify = parser.parse_args(["verify", "--profile", "cpu_local", "--device", "cpu", "--budget-s", "0.2"])
    assert verify.budget_s == 0.2
    sub = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    text = " ".join(sub["search"].format_help().split())
    assert "(default: 0)" in text and "--batch-size" not in text  # seed 0 shown; the alias hidden
