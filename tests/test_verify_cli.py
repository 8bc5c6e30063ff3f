"""`autodistill verify`: argument checks, students from a run folder, re-scoring saved measurements."""
from __future__ import annotations

import json

import pytest

from autodistill.arch import reference_arch
from autodistill.cli import main
from autodistill.cli.verify import parse_shape, run_students
from autodistill.costmodel import CostModel
from autodistill.errors import ConfigError
from autodistill.hardware import load_profile
from autodistill.verify import item_time_column, profile_dtype

from test_verify import TINY


def test_parse_shape() -> None:
    assert parse_shape("8x128") == (8, 128) and parse_shape(" 1 X 16") == (1, 16)
    for bad in ("8", "8x", "axb", "0x128", "1x9000"):
        with pytest.raises(ConfigError, match="--shape"):
            parse_shape(bad)


def test_time_column_and_dtype_follow_the_device_and_profile() -> None:
    assert item_time_column("cpu") == item_time_column("gpu") == item_time_column("tpu") == "min_s"
    assert profile_dtype(load_profile("cpu_local")) == "fp32"
    assert profile_dtype(load_profile("h200_local")) == "bf16"  # a GPU profile calibrated in bf16 only


def _run_folder(tmp_path):
    for name, status in (("t1", "ok"), ("t2", "failed"), ("base", "ok")):
        d = tmp_path / "run" / "students" / name
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps({"name": name, "status": status, "finished": True,
                                                   "arch": TINY.to_dict()}))
    return tmp_path / "run"


def test_run_students_takes_finished_ones_and_names_bad_folders(tmp_path) -> None:
    assert [n for n, _ in run_students(_run_folder(tmp_path))] == ["base", "t1"]
    with pytest.raises(ConfigError, match="has no students/ folder"):
        run_students(tmp_path / "nowhere")
    (tmp_path / "empty" / "students").mkdir(parents=True)
    with pytest.raises(ConfigError, match="has no finished students"):
        run_students(tmp_path / "empty")


@pytest.mark.parametrize("extra,match", [
    ([], "nothing to verify"),
    (["--arch", "bert-huge"], "bert-huge"),
    (["--arch", "tinybert-4", "--arch", "tinybert-4"], "given twice: tinybert-4"),
    (["--arch", "tinybert-4", "--passes", "0"], "--passes 0"),
    (["--arch", "tinybert-4", "--tolerance", "0"], "--tolerance 0"),
    (["--arch", "tinybert-4", "--out", "x.txt"], "must end in .json"),
    (["--arch", "tinybert-4", "--shape", "1y2"], "--shape '1y2'"),
    (["--arch", "tinybert-4", "--reuse", "/no/such.json"], "does not exist"),
])
def test_bad_arguments_are_named_before_any_timing(extra, match, capsys) -> None:
    assert main(["verify", "--profile", "cpu_local", "--device", "cpu", *extra]) == 2
    assert match in capsys.readouterr().err


def test_reuse_rescores_saved_measurements_against_another_profile(tmp_path, capsys) -> None:
    cm = CostModel(load_profile("cpu_local"), "fp32")
    names = ["tinybert-4", "minilm-l6-h384"]
    meas = {n: cm.latency_s(reference_arch(n), 2, 32) * 1.02 for n in names}
    saved = {"device": "cpu", "profile": "other", "shapes": [
        {"profile": "other", "batch": 2, "seq": 32, "drift": {"ratio": 2.0, "n": 0, "anchors": []},
         "students": [{"name": n, "arch": reference_arch(n).to_dict(), "measured_latency_s": m,
                       "measured_spread": 0.01} for n, m in meas.items()]}]}
    src = tmp_path / "saved.json"
    src.write_text(json.dumps(saved))
    out = tmp_path / "again.json"
    assert main(["verify", "--profile", "cpu_local", "--device", "cpu", "--arch", names[0], "--arch", names[1],
                 "--shape", "2x32", "--reuse", str(src), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    sh = res["shapes"][0]
    assert res["profile"] == "cpu_local" and res["dtype"] == "fp32"
    assert [s["measured_latency_s"] for s in sh["students"]] == pytest.approx(list(meas.values()))
    assert sh["summary"]["mape_before"] == pytest.approx(1 - 1 / 1.02, rel=1e-6)
    assert sh["drift"] is None  # another profile's anchors do not carry over
    assert "tinybert-4" in capsys.readouterr().out
    # a shape or a student the file lacks is an error, not a silent re-measurement
    assert main(["verify", "--profile", "cpu_local", "--device", "cpu", "--arch", names[0], "--shape", "1x32",
                 "--reuse", str(src)]) == 2
    assert main(["verify", "--profile", "cpu_local", "--device", "cpu", "--arch", "mobilebert", "--shape", "2x32",
                 "--reuse", str(src)]) == 2
    assert "no b2xs32 measurement of the architecture of mobilebert" in capsys.readouterr().err
    # matched by the architecture, not the file name: a 24-layer model in a file named like tinybert-4 is not
    # given tinybert-4's time
    big = tmp_path / "tinybert-4.json"
    big.write_text(json.dumps(reference_arch("bert-large").to_dict()))
    assert main(["verify", "--profile", "cpu_local", "--device", "cpu", "--arch", str(big), "--shape", "2x32",
                 "--reuse", str(src)]) == 2
    assert "no b2xs32 measurement of the architecture of tinybert-4" in capsys.readouterr().err
    (tmp_path / "cut.json").write_text(src.read_text()[:40])
    assert main(["verify", "--profile", "cpu_local", "--device", "cpu", "--arch", names[0], "--shape", "2x32",
                 "--reuse", str(tmp_path / "cut.json")]) == 2
    err = capsys.readouterr().err
    assert f"--reuse file {str(tmp_path / 'cut.json')!r} is not valid JSON (truncated or damaged?)" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("content,match", [
    ("[]", "is not a verify JSON file: it has no list of shapes"),
    ('{"shapes": {}}', "is not a verify JSON file: it has no list of shapes"),
    ('{"shapes": [{"batch": 2}]}', "is not a verify JSON file: a shape has no integer batch and seq"),
    ('{"shapes": [{"batch": 2, "seq": 32, "students": [{"arch": {}, "measured_latency_s": null}]}]}',
     "student 0 of the b2xs32 measurements is not a valid record"),
    ('{"shapes": [{"batch": 2, "seq": 32, "profile": "cpu_local", "drift": {"anchors": [{}]}, '
     '"students": [{"arch": ' + json.dumps(reference_arch("tinybert-4").to_dict())
     + ', "measured_latency_s": 0.001}]}]}',
     "the b2xs32 drift check is not valid"),
])
def test_reuse_of_a_file_that_is_not_a_verify_file_exits_2_naming_it(tmp_path, capsys, content, match) -> None:
    f = tmp_path / "other.json"
    f.write_text(content)
    assert main(["verify", "--profile", "cpu_local", "--device", "cpu", "--arch", "tinybert-4", "--shape", "2x32",
                 "--reuse", str(f)]) == 2
    err = capsys.readouterr().err
    assert match in err and repr(str(f)) in err and "Traceback" not in err


def test_out_is_written_whole_and_replaced_atomically(tmp_path, capsys) -> None:
    cm = CostModel(load_profile("cpu_local"), "fp32")
    a = reference_arch("tinybert-4")
    saved = {"shapes": [{"profile": "cpu_local", "batch": 2, "seq": 32, "drift": None, "students": [
        {"name": "t", "arch": a.to_dict(), "measured_latency_s": cm.latency_s(a, 2, 32), "measured_spread": 0.0}]}]}
    src = tmp_path / "saved.json"
    src.write_text(json.dumps(saved))
    out = tmp_path / "sub" / "v.json"
    out.parent.mkdir()
    out.write_text('{"shapes": []}')  # an earlier --out file (another file is refused: test_bad_input)
    assert main(["verify", "--profile", "cpu_local", "--device", "cpu", "--arch", "tinybert-4", "--shape", "2x32",
                 "--reuse", str(src), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["shapes"][0]["students"][0]["name"] == "tinybert-4"
    assert sorted(p.name for p in out.parent.iterdir()) == ["v.json"]  # no temporary file left beside it
    assert f"wrote {out}" in capsys.readouterr().err


def test_verify_times_a_run_folder_on_this_cpu(tmp_path, capsys) -> None:
    out = tmp_path / "v.json"
    assert main(["verify", "--profile", "cpu_local", "--device", "cpu", "--run", str(_run_folder(tmp_path)),
                 "--shape", "1x8", "--passes", "1", "--anchors", "0", "--timing-s", "0.05", "--cores", "0",
                 "--out", str(out)]) == 0
    sh = json.loads(out.read_text())["shapes"][0]
    assert [s["name"] for s in sh["students"]] == ["base", "t1"]
    assert all(s["measured_latency_s"] > 0 and s["est_latency_s"] > 0 for s in sh["students"])
    assert "MAPE" in capsys.readouterr().out


def test_version_and_python_m(capsys) -> None:
    import subprocess
    import sys

    from autodistill import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"autodistill {__version__}"
    res = subprocess.run([sys.executable, "-m", "autodistill", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == f"autodistill {__version__}"
