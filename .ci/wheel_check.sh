#!/usr/bin/env bash
# The wheel check (`make wheel-check`, part of `make test`): build the wheel once, install it with no
# extras into a clean venv over its own dependencies from requirements-base.lock (hashed), and run the
# CLI from a folder outside the source tree, so that the installed package is what runs: its modules,
# the shipped profiles/*.toml and spaces/*.toml, py.typed, the stub and the C++ extension. A file
# missing from the wheel, an undeclared dependency or a broken extension fails it.
#
# BUILD_PY: the Python that builds the wheel, without build isolation (default .venv/bin/python: its
# scikit-build-core and pybind11 come from requirements.lock). PYTHON: makes the clean venv.
# KEEP_WHEEL_CHECK=1 keeps the temporary folder.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_PY="${BUILD_PY:-$repo/.venv/bin/python}"
PYTHON="${PYTHON:-python3}"
work="$(mktemp -d "${TMPDIR:-/tmp}/autodistill-wheel-check.XXXXXX")"
if [[ "${KEEP_WHEEL_CHECK:-}" == 1 ]]; then echo "wheel check: keeping $work"; else trap 'rm -rf "$work"' EXIT; fi
t0=$SECONDS

# Own build folder (build/ is gitignored), so the editable install's build in build/<tag> is untouched;
# kept between runs, so a rebuild is incremental.
"$BUILD_PY" -m pip wheel -q --no-build-isolation --no-deps -w "$work/dist" \
  -C build-dir="$repo/build/wheel-check/{wheel_tag}" "$repo"
wheel=("$work"/dist/autodistill_hw-*.whl)
[[ -f "${wheel[0]}" ]] || { echo "wheel check: no wheel built" >&2; exit 1; }

"$PYTHON" -m venv "$work/venv"
vpy="$work/venv/bin/python"
"$vpy" -m pip install -q --require-hashes --no-deps -r <(grep -E '^pip==' "$repo/requirements.lock")
"$vpy" -m pip install -q --require-hashes -r "$repo/requirements-base.lock"
# --no-index: anything the wheel needs beyond the locked base fails here rather than being fetched.
"$vpy" -m pip install -q --no-index --no-deps "${wheel[0]}"
"$vpy" -m pip check   # the wheel's declared dependencies are all satisfied by the base lock

mkdir "$work/cwd"
cd "$work/cwd"
unset AUTODISTILL_PROFILE_PATH AUTODISTILL_SPACE_PATH PYTHONPATH
"$work/venv/bin/autodistill" --version
"$work/venv/bin/autodistill" profiles list > profiles.txt
"$work/venv/bin/autodistill" estimate --profile tpu_v4i --arch mobilebert > estimate.txt
"$work/venv/bin/autodistill" estimate --profile h200_local --arch minilm-l6-h384 --json > estimate.json

# What ran is the installed copy, and it carries every file of the package in git.
"$vpy" - "$repo" "${wheel[0]}" <<'EOF'
import json, subprocess, sys, zipfile
from importlib import resources
from pathlib import Path

repo, wheel = Path(sys.argv[1]), Path(sys.argv[2])
import autodistill
import autodistill._costmodel as ext
from autodistill.hardware import list_profiles, load_profile
from autodistill.space import list_spaces

prefix = Path(sys.prefix).resolve()
for what, path in [("package", autodistill.__file__), ("C++ extension", ext.__file__)]:
    p = Path(path).resolve()
    assert p.is_relative_to(prefix), f"{what} loaded from {p}, not from the clean venv {prefix}"
    assert not p.is_relative_to(repo), f"{what} loaded from the source tree: {p}"

pkg = resources.files("autodistill")
names = set(zipfile.ZipFile(wheel).namelist())
try:
    tracked = subprocess.run(["git", "-C", str(repo), "ls-files", "python/autodistill", "profiles"],
                             check=True, capture_output=True, text=True).stdout.split()
except (OSError, subprocess.CalledProcessError):  # not a git checkout: what is on disk
    tracked = [str(p.relative_to(repo)) for d in ("python/autodistill", "profiles") for p in (repo / d).rglob("*")
               if p.is_file() and "__pycache__" not in p.parts]
want = {("autodistill/" + f.removeprefix("python/autodistill/")) if f.startswith("python/")
        else "autodistill/" + f for f in tracked}
want = {f for f in want if f.endswith((".py", ".pyi", ".toml", ".csv", "py.typed"))}
missing = sorted(want - names)
assert not missing, f"files of the source tree missing from the wheel: {missing}"
assert any(n.startswith("autodistill/_costmodel") and n.endswith(".so") for n in names), "no C++ extension in the wheel"

shipped = {p.stem for p in (repo / "profiles").glob("*.toml")}
assert set(list_profiles()) == shipped, f"profiles {sorted(set(list_profiles()) ^ shipped)} differ from profiles/"
listed = {line.split()[0] for line in Path("profiles.txt").read_text().splitlines() if line.strip()}
assert listed == shipped, f"`profiles list` printed {sorted(listed)}"
for name in shipped:
    assert Path(load_profile(name).path).resolve().is_relative_to(prefix), f"profile {name} not read from the wheel"
spaces = {p.stem for p in (repo / "python/autodistill/spaces").glob("*.toml")}
assert set(list_spaces()) >= spaces, f"spaces {sorted(spaces - set(list_spaces()))} not found"
est = json.loads(Path("estimate.json").read_text())
assert est["latency_s"] > 0 and est["profile"] == "h200_local", f"estimate: {est}"
print(f"wheel check: {wheel.name}: {len(names)} files, {len(shipped)} profiles, {len(spaces)} spaces, "
      f"extension {Path(ext.__file__).name}")
EOF
head -3 estimate.txt
echo "wheel check: passed in $((SECONDS - t0)) s"
