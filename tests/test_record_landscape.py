"""The landscape recorder's design and resume (benchmarks/record_landscape.py), without distilling."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "record_landscape.py"


@pytest.fixture(scope="module")
def rec():
    spec = importlib.util.spec_from_file_location("record_landscape", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_spread_is_distinct_seeded_and_far_apart(rec):
    grid = np.array([[x, y] for x in np.linspace(0, 1, 11) for y in np.linspace(0, 1, 11)])
    a = rec.spread_indices(grid, 8, seed=3)
    assert len(set(a)) == 8 and a == rec.spread_indices(grid, 8, seed=3)
    corners = {i for i, (x, y) in enumerate(grid) if x in (0, 1) and y in (0, 1)}
    assert a[1] in corners  # the farthest point from anywhere inside is a corner
    gap = min(np.linalg.norm(grid[i] - grid[j]) for i in a for j in a if i != j)
    assert gap >= 0.3  # 8 seeded random picks of this grid come closer than that (checked below)
    r = np.random.default_rng(3).choice(len(grid), 8, replace=False)
    assert min(np.linalg.norm(grid[i] - grid[j]) for i in r for j in r if i != j) < 0.3
    with pytest.raises(SystemExit, match="more than"):
        rec.spread_indices(grid, 200, seed=0)


def test_resume_drops_a_row_cut_off_by_a_kill(rec, tmp_path):
    cols = rec.columns(["hidden_size"], [2, 4])
    out = tmp_path / "t.csv"
    good = ",".join(["a", "128"] + ["1"] * (len(cols) - 2))
    out.write_text(",".join(cols) + "\n" + good + "\n" + "b,256,0.1", encoding="utf-8")
    rows = rec.read_done(out, cols)
    assert [r["name"] for r in rows] == ["a"]
    assert out.read_text(encoding="utf-8").splitlines()[-1] == good  # the cut-off row is gone from the file
    with pytest.raises(SystemExit, match="header differs"):
        rec.read_done(out, rec.columns(["hidden_size"], [2, 8]))


def test_other_settings_are_refused(rec, tmp_path):
    side = tmp_path / "t.json"
    rec.check_sidecar(side, {"budgets": [30, 60]})
    rec.check_sidecar(side, {"budgets": [30, 60], "teacher": "x"})
    with pytest.raises(SystemExit, match="budgets was"):
        rec.check_sidecar(side, {"budgets": [30, 120]})
