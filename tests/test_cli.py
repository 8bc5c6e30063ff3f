from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autodistill.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_profiles_list_and_show(capsys) -> None:
    code, out, _ = run(capsys, "profiles", "list")
    assert code == 0 and "tpu_v4i" in out and "a100" in out
    code, out, _ = run(capsys, "profiles", "show", "tpu_v4i")
    assert code == 0 and "hbm_bytes_per_s = 614000000000" in out


def test_estimate_table_and_json(capsys) -> None:
    code, out, _ = run(capsys, "estimate", "--profile", "tpu_v4i", "--arch", "mobilebert", "--batch", "1", "--seq",
                       "128")
    assert code == 0
    assert "attention_scores" in out and "ffn_stacked_output" in out and "fixed_overhead" in out
    code, out, _ = run(capsys, "estimate", "--profile", "a100", "--arch", "bert-base", "--json", "--mlm-head")
    d = json.loads(out)
    assert d["latency_s"] > 0 and d["ops"][-1]["name"] == "mlm_decoder" and d["arch"]["hidden_size"] == 768


def test_estimate_arch_from_json_file(capsys, tmp_path: Path) -> None:
    f = tmp_path / "a.json"
    f.write_text(json.dumps({"num_hidden_layers": 4, "hidden_size": 256, "intra_bottleneck_size": 64}))
    code, out, _ = run(capsys, "estimate", "--profile", "h100", "--arch", str(f))
    assert code == 0 and "mobilebert-L4-H256-B64" in out


@pytest.mark.parametrize(
    "argv, match",
    [
        (("estimate", "--profile", "tpu_v9", "--arch", "mobilebert"), "unknown profile 'tpu_v9'; valid choices"),
        (("estimate", "--profile", "tpu_v4i", "--arch", "bert-huge"), "unknown reference architecture 'bert-huge'"),
        (("estimate", "--profile", "tpu_v4i", "--arch", "mobilebert", "--dtype", "fp8"), "no peak for dtype 'fp8'"),
        (("estimate", "--profile", "tpu_v4i", "--arch", "mobilebert", "--batch", "0"), "batch=0 must be"),
        (("estimate", "--profile", "tpu_v4i", "--arch", "missing.json"), "arch file 'missing.json' does not exist"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(capsys, argv, match: str) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2 and match in err


def test_table_prints_every_reference_on_every_profile(capsys) -> None:
    code, out, _ = run(capsys, "table")
    assert code == 0
    for name in ("bert-base", "mobilebert", "minilm-l6-h384"):
        assert name in out
    assert "tpu_v4i" in out.splitlines()[1]


def test_console_script_runs() -> None:
    exe = Path(sys.executable).with_name("autodistill")
    if not exe.exists():
        pytest.skip("console script not installed in this environment")
    out = subprocess.run([str(exe), "archs"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "mobilebert-tiny" in out.stdout


def test_the_parser_and_an_estimate_load_neither_torch_nor_jax() -> None:
    code = ("import sys; from autodistill.cli import main; "
            "assert main(['estimate', '--profile', 'tpu_v4i', '--arch', 'mobilebert']) == 0; "
            "heavy = sorted({'torch', 'jax', 'flax', 'pandas'} & set(sys.modules)); assert not heavy, heavy")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "fixed_overhead" in res.stdout


def test_python_m_autodistill_cli_is_the_same_command_line() -> None:
    res = subprocess.run([sys.executable, "-m", "autodistill.cli", "archs"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and "mobilebert-tiny" in res.stdout
    res = subprocess.run([sys.executable, "-m", "autodistill.cli", "estimate", "--profile", "nope", "--arch",
                          "mobilebert"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "unknown profile 'nope'" in res.stderr and "Traceback" not in res.stderr


# ------------------------------------------------------------------ nothing imports the CLI
REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "python" / "autodistill"
#: The entry points, which only call `autodistill.cli.main` (pyproject's script is the third).
ENTRY_POINTS = {PACKAGE / "__main__.py"}


def _cli_imports(source: str, module: str) -> list[str]:
    """Every import of ``autodistill.cli`` (or a module in it) in ``source``, the code of ``module``:
    import statements, relative ones included, and ``importlib.import_module`` / ``__import__`` of a
    literal name."""
    import ast

    def is_cli(name: str) -> bool:
        return name == "autodistill.cli" or name.startswith("autodistill.cli.")

    package = module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if is_cli(a.name)]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            found += [f"{base}.{a.name}" for a in node.names if is_cli(base) or is_cli(f"{base}.{a.name}")]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str) and is_cli(node.args[0].value)
              and (getattr(node.func, "attr", None) == "import_module" or getattr(node.func, "id", None) in (
                  "import_module", "__import__"))):
            found.append(node.args[0].value)
    return found


@pytest.mark.parametrize("source, module, hits", [
    ("import autodistill.cli", "autodistill.x", 1),
    ("import autodistill.cli.verify as v", "autodistill.x", 1),
    ("from autodistill.cli.estimate import register", "autodistill.x", 1),
    ("from autodistill import cli", "autodistill.x", 1),
    ("from autodistill import arch, cli as c", "autodistill.x", 1),
    ("from . import cli", "autodistill.x", 1),
    ("from .cli import main", "autodistill.x", 1),
    ("from ..cli.verify import parse_shape", "autodistill.measure.plan", 1),
    ("def f():\n    from autodistill.cli import main\n", "bench", 1),
    ("import importlib\nimportlib.import_module('autodistill.cli.search')", "bench", 1),
    ("__import__('autodistill.cli')", "bench", 1),
    ("from autodistill import arch, client\nimport autodistill.clinic\nfrom .calibration import x", "autodistill.x", 0),
    ("from . import verify", "autodistill.measure.plan", 0),
])
def test_the_import_scan_finds_every_form(source: str, module: str, hits: int) -> None:
    assert len(_cli_imports(source, module)) == hits


def test_nothing_outside_the_cli_package_imports_it() -> None:
    files = [p for p in PACKAGE.rglob("*.py") if (PACKAGE / "cli") not in p.parents and p not in ENTRY_POINTS]
    files += sorted((REPO / "benchmarks").rglob("*.py"))
    assert len(files) > 20 and PACKAGE / "arch.py" in files and REPO / "benchmarks" / "op_profile.py" in files
    bad = {}
    for p in files:
        module = ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts) if PACKAGE in p.parents else p.stem
        if hits := _cli_imports(p.read_text(encoding="utf-8"), module):
            bad[str(p.relative_to(REPO))] = hits
    assert not bad, f"the CLI holds no logic for others to import; move what these need into the library: {bad}"


def test_entry_points_only_call_the_cli_main() -> None:
    for p in ENTRY_POINTS:
        assert _cli_imports(p.read_text(encoding="utf-8"), "autodistill.__main__") == ["autodistill.cli.main"]
    assert 'autodistill = "autodistill.cli:main"' in (REPO / "pyproject.toml").read_text(encoding="utf-8")
