"""The extension's stub (python/autodistill/_costmodel.pyi) names what the built module exports.

mypy's stubtest cannot read the parameters of pybind11 functions, so this compares them with the
signature line pybind11 writes at the top of each docstring.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from autodistill import _costmodel

STUB = Path(__file__).resolve().parents[1] / "python" / "autodistill" / "_costmodel.pyi"


def _stub() -> ast.Module:
    return ast.parse(STUB.read_text())


def _stub_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _stub_params(fn: ast.FunctionDef) -> list[tuple[str, str | None]]:
    """(name, default source or None) of each parameter, in order."""
    args = fn.args.args
    defaults = [None] * (len(args) - len(fn.args.defaults)) + [ast.unparse(d) for d in fn.args.defaults]
    return [(a.arg, d) for a, d in zip(args, defaults)]


def _runtime_params(fn: object) -> list[tuple[str, str | None]]:
    first = (fn.__doc__ or "").splitlines()[0]
    m = re.fullmatch(rf"{fn.__name__}\((.*)\) -> .*", first)
    assert m, f"no pybind11 signature line in {fn.__name__}.__doc__: {first!r}"
    out = []
    for part in re.split(r",\s*(?![^\[]*\])", m.group(1)):  # commas outside [...]
        name, _, rest = part.partition(":")
        default = rest.split("=", 1)[1].strip() if "=" in rest else None
        out.append((name.strip(), default))
    return out


def test_the_stub_names_exactly_the_public_exports():
    runtime = {n for n in dir(_costmodel) if not n.startswith("_")}
    assert _stub_names(_stub()) == runtime


@pytest.mark.parametrize("name", ["estimate", "estimate_batch"])
def test_each_function_has_the_binding_parameters_and_defaults(name):
    fn = next(n for n in _stub().body if isinstance(n, ast.FunctionDef) and n.name == name)
    assert _stub_params(fn) == _runtime_params(getattr(_costmodel, name))


def test_hardware_has_the_binding_attributes():
    cls = next(n for n in _stub().body if isinstance(n, ast.ClassDef) and n.name == "Hardware")
    stub = {n.name for n in cls.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}
    runtime = {n for n in dir(_costmodel.Hardware) if not n.startswith("_")}
    assert stub == runtime


def test_the_parameter_reader_sees_a_renamed_parameter():
    tree = ast.parse("def estimate(rows, hardware, batch, seq, mlm_head=False): ...")
    assert _stub_params(tree.body[0]) != _runtime_params(_costmodel.estimate)


def test_the_package_is_marked_typed():
    assert (STUB.parent / "py.typed").is_file()
