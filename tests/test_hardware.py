from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from autodistill.arch import reference_arch
from autodistill.errors import ProfileError
from autodistill.hardware import (
    DTYPES,
    OP_CLASSES,
    Calibration,
    ClassTerms,
    list_profiles,
    load_profile,
    profile_from_dict,
    save_profile,
)

REQUIRED = ("tpu_v4i", "tpu_v4", "tpu_v3", "a100", "h100", "cpu_generic")


def test_required_profiles_ship_and_load() -> None:
    names = list_profiles()
    for n in REQUIRED:
        assert n in names
        p = load_profile(n)
        assert p.name == n
        assert set(p.dtypes) <= set(DTYPES)
        r = p.resolve()
        assert r["peak_flops_per_s"] > 0 and r["hbm_bytes_per_s"] > 0


def test_every_profile_field_has_a_source_comment() -> None:
    root = Path(__file__).resolve().parents[1] / "profiles"
    for n in REQUIRED:
        text = (root / f"{n}.toml").read_text()
        for line in text.splitlines():
            key = line.split("=")[0].strip()
            if "=" in line and not line.lstrip().startswith("#") and key not in ("name", "kind", "description"):
                assert "#" in line, f"{n}: no source comment on {line!r}"


def _base() -> dict:
    return tomllib.loads((Path(__file__).resolve().parents[1] / "profiles" / "tpu_v4i.toml").read_text())


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.pop("memory"), r"missing section \[memory\]"),
        (lambda d: d["memory"].pop("hbm_bytes_per_s"), r"missing key 'hbm_bytes_per_s'"),
        (lambda d: d["memory"].update(hbm_bytes_per_s=-1.0), r"hbm_bytes_per_s=-1.0 is out of range"),
        (lambda d: d["compute"].update(matrix_tile_n=0), r"matrix_tile_n=0 must be an integer"),
        (lambda d: d["compute"].update(peak_flops_per_s={"bf17": 1e12}), r"valid choices: bf16, fp16, fp32"),
        (lambda d: d.update(kind="fpga"), r"unknown kind 'fpga'; valid choices: cpu, gpu, tpu"),
        (lambda d: d["memory"].update(hbm_gbps=3), r"unknown key\(s\) \['hbm_gbps'\] in \[memory\]"),
        (lambda d: d["memory"].update(hbm_bytes_per_s=float("nan")), r"hbm_bytes_per_s=nan is out of range"),
        (lambda d: d.update(calibration={"matmul_compute_efficiency": 0.0}), r"compute_efficiency=0.0 is out of range"),
        (lambda d: d.update(calibration={"matmul_speed": 1.0}), r"unknown key\(s\) \['matmul_speed'\]"),
        (lambda d: d["compute"].update(roofline="avg"), r"unknown roofline 'avg'; valid choices: max, sum"),
        (lambda d: d["compute"].update(roofline=1), r"unknown roofline 1; valid choices: max, sum"),
        (lambda d: d.update(roofline="sum"), r"unknown key\(s\) \['roofline'\]"),  # it lives under [compute]
    ],
)
def test_bad_profile_fields_name_what_is_wrong(mutate, match: str) -> None:
    d = _base()
    mutate(d)
    with pytest.raises(ProfileError, match=match):
        profile_from_dict(d, source="t.toml")


def test_unknown_profile_and_dtype_name_valid_choices(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"unknown profile 'tpu_v9'; valid choices: .*tpu_v4i"):
        load_profile("tpu_v9")
    with pytest.raises(ProfileError, match=r"does not exist"):
        load_profile(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(bad)
    with pytest.raises(ProfileError, match=r"no peak for dtype 'fp32'; valid choices: bf16, int8"):
        load_profile("tpu_v4i").resolve("fp32")


def test_roofline_defaults_to_max_and_round_trips(tmp_path: Path) -> None:
    for n in REQUIRED:
        assert load_profile(n).roofline == "max"
    d = _base()
    d["compute"]["roofline"] = "sum"
    p = profile_from_dict(d, source="t.toml")
    assert p.roofline == "sum" and p.resolve()["roofline"] == "sum"
    assert load_profile(save_profile(p, tmp_path / "s.toml")) == p
    with pytest.raises(ProfileError, match=r"unknown roofline 'Max'; valid choices: max, sum"):
        dataclasses.replace(p, roofline="Max")


def test_save_and_load_round_trip_with_calibration(tmp_path: Path) -> None:
    p = load_profile("a100")
    cal = Calibration({c: ClassTerms(0.5 + 0.1 * i, 0.7, 1e-6 * i) for i, c in enumerate(OP_CLASSES)},
                      fitted=True, fixed_overhead_s=3e-5, source='test "quoted"')
    q = p.with_calibration(cal, name="a100_cal")
    out = save_profile(q, tmp_path / "a100_cal.toml")
    r = load_profile(out)
    assert r == q
    assert r.resolve()["attention_compute_efficiency"] == pytest.approx(0.6)
    assert r.effective_fixed_overhead_s() == 3e-5
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temp file


def test_profile_path_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = load_profile("h100").with_calibration(None, name="my_gpu")
    save_profile(p, tmp_path / "my_gpu.toml")
    monkeypatch.setenv("AUTODISTILL_PROFILE_PATH", str(tmp_path))
    assert "my_gpu" in list_profiles()
    assert load_profile("my_gpu").peak_flops_per_s == p.peak_flops_per_s


def test_error_band_spec_only_default_and_calibrated(tmp_path) -> None:
    from autodistill.costmodel import CostModel
    from autodistill.hardware import SPEC_ONLY_BAND, ErrorBand

    spec = load_profile("tpu_v4i")
    est = CostModel(spec).estimate(reference_arch("mobilebert"), 1, 128)
    assert est.interval_s == pytest.approx((est.latency_s * SPEC_ONLY_BAND[0], est.latency_s * SPEC_ONLY_BAND[1]))
    assert "spec-only" in est.interval_source and est.interval_level == 0.9
    cal = Calibration({c: ClassTerms() for c in OP_CLASSES}, fitted=True,
                      interval=ErrorBand(0.92, 1.16, 0.9, 45, "held-out students (n=45)"))
    prof = spec.with_calibration(cal, name="banded")
    est2 = CostModel(prof).estimate(reference_arch("mobilebert"), 1, 128)
    assert est2.interval_s == pytest.approx((0.92 * est2.latency_s, 1.16 * est2.latency_s))
    path = save_profile(prof, tmp_path / "banded.toml")
    assert load_profile(path).calibration.interval == cal.interval
    bad = path.read_text().replace("interval_low = 0.92", "interval_low = 1.5")
    (tmp_path / "bad.toml").write_text(bad)
    with pytest.raises(ProfileError, match=r"interval_low=1.5 must not exceed interval_high=1.16"):
        load_profile(tmp_path / "bad.toml")
    (tmp_path / "half.toml").write_text(path.read_text().replace("interval_high = 1.16\n", ""))
    with pytest.raises(ProfileError, match="interval_low and interval_high go together"):
        load_profile(tmp_path / "half.toml")
