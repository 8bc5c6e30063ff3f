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
    code, out, _ = run(capsys, "estimate", "--profile", "tpu_v4i", "--arch", "mobilebert", "--batch", "1", "--seq", "128")
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
