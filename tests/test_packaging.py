"""The lock files agree with requirements.in and pyproject.toml (offline; `make lock` rewrites them)."""
from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ("requirements.lock", "requirements-nodeps.lock", "requirements-base.lock")
LINE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9-]*)==(?P<version>\S+) --hash=sha256:[0-9a-f]{64}(  # \S.*)?$")


def read_lock(name: str) -> dict[str, tuple[str, str]]:
    """canonical name -> (version, the requirement part of the line)."""
    out = {}
    for line in (ROOT / name).read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        assert m, f"{name}: not a 'name==version --hash=sha256:...' line: {line!r}"
        assert m["name"] not in out, f"{name}: {m['name']} locked twice"
        out[m["name"]] = (m["version"], line.split("  #", 1)[0])
    return out


def read_in() -> tuple[list[Requirement], list[Requirement]]:
    reqs, nodeps = [], []
    for raw in (ROOT / "requirements.in").read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line:
            (nodeps if re.search(r"#\s*no-deps\b", raw) else reqs).append(Requirement(line))
    return reqs, nodeps


@pytest.mark.parametrize("name", LOCKS)
def test_lock_lines_are_exact_pins_with_hashes(name: str) -> None:
    assert read_lock(name), f"{name} is empty"


def test_every_top_level_requirement_is_locked_at_a_version_it_allows() -> None:
    reqs, nodeps = read_in()
    for reqs_, lock_name in ((reqs, "requirements.lock"), (nodeps, "requirements-nodeps.lock")):
        lock = read_lock(lock_name)
        for req in reqs_:
            name = canonicalize_name(req.name)
            assert name in lock, f"{req} (requirements.in) is not in {lock_name}: run make lock"
            assert req.specifier.contains(Version(lock[name][0]), prereleases=True), (
                f"{lock_name} has {name}=={lock[name][0]}, requirements.in asks {req}: run make lock")


def test_torch_is_the_cpu_build_and_the_linters_are_pinned() -> None:
    lock = read_lock("requirements.lock")
    assert lock["torch"][0] == "2.13.0+cpu"
    assert {n: lock[n][0] for n in ("ruff", "mypy")} == {"ruff": "0.17.6", "mypy": "2.4.1"}


def test_base_lock_is_the_packages_own_dependencies_at_the_main_locks_versions() -> None:
    base, main = read_lock("requirements-base.lock"), read_lock("requirements.lock")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    for dep in map(Requirement, deps):
        name = canonicalize_name(dep.name)
        assert name in base, f"{dep} (pyproject dependencies) is not in requirements-base.lock: run make lock"
        assert dep.specifier.contains(Version(base[name][0]), prereleases=True)
    for name, (_, line) in base.items():
        assert main.get(name, (None, None))[1] == line, f"requirements-base.lock's {name} is not requirements.lock's"


def test_makefile_installs_from_the_locks_with_hashes() -> None:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "--require-hashes -r requirements.lock" in text
    assert "--require-hashes --no-deps -r requirements-nodeps.lock" in text


@pytest.mark.skipif(not (Path(sys.prefix) / ".deps-installed").is_file(), reason="not a venv made by make setup")
def test_the_venv_holds_the_locked_versions() -> None:
    lock = read_lock("requirements.lock") | read_lock("requirements-nodeps.lock")
    wrong = {}
    for name, (version, _) in lock.items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        if have is None or Version(have) != Version(version):
            wrong[name] = (have, version)
    assert not wrong, f"installed != locked (run make setup): {wrong}"
