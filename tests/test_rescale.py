"""Drift rescale: re-measured base rates rescale a calibrated profile; bad input is named."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from autodistill.arch import reference_arch
from autodistill.costmodel import CostModel
from autodistill.errors import CalibrationError
from autodistill.hardware import load_profile
from autodistill.rescale import base_rate_rows, calibration_cores, rescale_profile


def _slow_run(factor):
    """A device ``factor`` times slower than at calibration: the calibration-time rows, re-timed."""
    then = base_rate_rows(load_profile("cpu_local"))

    def run(cases, max_s):
        rows = then.set_index("name").loc[[c.name for c in cases]].reset_index()
        for col in ("min_s", "median_s"):
            rows[col] = rows[col] * factor
        return rows

    return run


def test_a_device_1_7x_slower_is_rescaled_back():
    prof = load_profile("cpu_local")
    res = rescale_profile(prof, "cpu", run=_slow_run(1.7))
    assert set(res.ratios) == {"peak_flops_per_s", "vector_flops_per_s", "hbm_bytes_per_s", "onchip_bytes_per_s"}
    assert all(r == pytest.approx(1 / 1.7) for r in res.ratios.values())
    assert res.speed_ratio == pytest.approx(1 / 1.7) and "0.588x" in res.message()
    assert res.profile.calibration.terms == prof.calibration.terms  # efficiencies stay as fitted
    assert "rescaled" in res.profile.calibration.source
    # every op's roofline terms scale by 1.7; the fixed overheads do not
    a = reference_arch("bert-base")
    old, new = CostModel(prof, "fp32").estimate(a, 4, 128), CostModel(res.profile, "fp32").estimate(a, 4, 128)
    for o, n in zip(old.ops, new.ops):
        assert n.compute_s == pytest.approx(1.7 * o.compute_s) and n.memory_s == pytest.approx(1.7 * o.memory_s)
        assert n.overhead_s == pytest.approx(o.overhead_s)
    assert new.latency_s == pytest.approx(1.7 * old.latency_s, rel=0.05)


def test_unchanged_device_changes_nothing():
    prof = load_profile("cpu_local")
    res = rescale_profile(prof, "cpu", run=_slow_run(1.0))
    a = reference_arch("mobilebert")
    assert CostModel(res.profile, "fp32").latency_s(a) == pytest.approx(CostModel(prof, "fp32").latency_s(a))


def test_refuses_spec_only_and_missing_tables(tmp_path):
    with pytest.raises(CalibrationError, match="is spec-only: there are no calibration-time rates"):
        rescale_profile(load_profile("cpu_generic"), "cpu", run=_slow_run(1.0))
    prof = load_profile("cpu_local")
    alone = tmp_path / "alone.toml"
    alone.write_text(open(prof.path).read())
    with pytest.raises(CalibrationError, match="has no measurement table at .*alone_measurements.csv"):
        rescale_profile(load_profile(str(alone)), "cpu", run=_slow_run(1.0))
    with pytest.raises(CalibrationError, match="max_s=0 must be > 0"):
        rescale_profile(prof, "cpu", max_s=0, run=_slow_run(1.0))
    with pytest.raises(CalibrationError, match="no base-rate rows"):
        rescale_profile(prof, "cpu", table=pd.DataFrame({"kind": ["student"], "name": ["x"], "params": ["{}"]}))


@pytest.mark.parametrize("value,cores", [("[0]", 1), ("[0, 1]", 2), (0, 1), (3, 1), (float("nan"), 0), ("?", 0)])
def test_calibration_cores(value, cores):
    assert calibration_cores(pd.DataFrame({"cpu_affinity": [value]})) == cores


def test_cli_rescale_writes_a_new_profile_and_never_the_old(tmp_path, monkeypatch, capsys):
    from autodistill import cli, rescale

    real = rescale.rescale_profile
    monkeypatch.setattr(rescale, "rescale_profile", lambda p, d, max_s: real(p, d, max_s=max_s, run=_slow_run(2.0)))
    out = tmp_path / "moved.toml"
    assert cli.main(["rescale", "--profile", "cpu_local", "--device", "cpu", "--out", str(out), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["speed_ratio"] == pytest.approx(0.5) and load_profile(str(out)).name == "moved"
    assert cli.main(["rescale", "--profile", "cpu_local", "--device", "cpu", "--out",
                     load_profile("cpu_local").path]) == 2
    assert "is the profile being rescaled" in capsys.readouterr().err


def test_real_rescale_on_this_cpu_measures_every_base_case():
    pytest.importorskip("jax")
    res = rescale_profile(load_profile("cpu_local"), "cpu", max_s=20)
    assert res.n_cases == 4 and res.seconds < 120
    assert all(0.05 < r < 20 for r in res.ratios.values()), res.ratios
