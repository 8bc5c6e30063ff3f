"""StableHLO export (``jax.export``): reloaded in a fresh process it gives the Flax logits; damage is named."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from autodistill.errors import DistillError
from autodistill.models import StudentModel, init_params

from distill_support import tiny_student

pytest.importorskip("flatbuffers")  # jax.export serialization needs it

from autodistill.distill.stablehlo import (  # noqa: E402
    SIGNATURE_FILE,
    STABLEHLO_FILE,
    check_stablehlo,
    export_stablehlo,
    fixed_inputs,
    load_stablehlo,
    stablehlo_written,
)

VOCAB = 40


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    arch = tiny_student(VOCAB, family="mobilebert")  # trigram input, bottlenecks, NoNorm
    params = init_params(StudentModel(arch=arch, mlm_head=True), jax.random.PRNGKey(1))
    folder = export_stablehlo(arch, params, tmp_path_factory.mktemp("shlo") / "stablehlo")
    return arch, params, folder


def test_round_trip_in_a_fresh_process_matches_flax(exported) -> None:
    arch, params, folder = exported
    sig = json.loads((folder / SIGNATURE_FILE).read_text())
    assert [i["name"] for i in sig["inputs"]] == ["input_ids", "token_type_ids", "attention_mask"]
    assert sig["inputs"][0]["shape"] == ["b", "s"] and sig["inputs"][0]["dtype"] == "int32"
    assert sig["arch"] == arch.to_dict() and sig["autodistill"] and sig["output"]["name"] == "logits"
    assert stablehlo_written(folder, arch)
    chk = check_stablehlo(folder, arch, params)
    assert chk["max_abs_diff"] <= 1e-4 * chk["scale"]
    # in this process too, at another batch and length than the check's (symbolic dimensions)
    prog = load_stablehlo(folder)
    ids, types, mask = fixed_inputs(arch, batch=3, seq=11, seed=5)
    ref = StudentModel(arch=arch, mlm_head=True).apply({"params": params}, ids, token_type_ids=types,
                                                       attention_mask=mask).logits
    np.testing.assert_allclose(prog(ids, types, mask), np.asarray(ref), atol=1e-5)


def test_the_check_fails_against_other_weights(exported) -> None:
    arch, _, folder = exported
    other = init_params(StudentModel(arch=arch, mlm_head=True), jax.random.PRNGKey(2))
    with pytest.raises(DistillError, match=r"StableHLO check failed.*model\.stablehlo.*differ"):
        check_stablehlo(folder, arch, other)


def test_a_corrupted_program_is_named(exported, tmp_path) -> None:
    arch, _, folder = exported
    bad = tmp_path / "bad"
    bad.mkdir()
    data = bytearray((folder / STABLEHLO_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / STABLEHLO_FILE).write_bytes(bytes(data))
    (bad / SIGNATURE_FILE).write_text((folder / SIGNATURE_FILE).read_text())
    with pytest.raises(DistillError, match=rf"{bad / STABLEHLO_FILE}.*damaged"):
        load_stablehlo(bad)
    # garbage that matches its signature's digest: the deserializer's failure is named too
    sig = json.loads((folder / SIGNATURE_FILE).read_text())
    import hashlib

    (bad / STABLEHLO_FILE).write_bytes(b"not a program")
    sig["sha256"] = hashlib.sha256(b"not a program").hexdigest()
    (bad / SIGNATURE_FILE).write_text(json.dumps(sig))
    with pytest.raises(DistillError, match=rf"{bad / STABLEHLO_FILE} cannot be deserialized"):
        load_stablehlo(bad)
    with pytest.raises(DistillError, match=rf"{bad / STABLEHLO_FILE} cannot be deserialized"):
        check_stablehlo(bad, arch, exported[1])  # the fresh process reports it the same way
    (bad / SIGNATURE_FILE).unlink()
    assert not stablehlo_written(bad, arch)
    with pytest.raises(DistillError, match="signature.json is missing"):
        load_stablehlo(bad)


def test_a_folder_of_other_files_is_refused(exported, tmp_path) -> None:
    arch, params, _ = exported
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DistillError, match="holds other files"):
        export_stablehlo(arch, params, tmp_path)


def test_cli_stablehlo_flag_writes_the_folder(exported, tmp_path, monkeypatch, capsys) -> None:
    from autodistill.cli import main
    from autodistill.distill import full

    arch, params, _ = exported
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "run.json").write_text(json.dumps({"vocab_path": None}))
    monkeypatch.setattr(full, "load_checkpoint", lambda d, step=None: (arch, params))
    out = tmp_path / "hf"
    assert main(["distill", "export", "--checkpoint-dir", str(ck), "--out", str(out), "--no-verify",
                 "--stablehlo"]) == 0
    shlo = tmp_path / "hf.stablehlo"
    assert "as StableHLO to" in capsys.readouterr().out
    assert (out / "config.json").is_file() and stablehlo_written(shlo, arch)
    assert load_stablehlo(shlo)(np.ones((1, 5), np.int32)).shape == (1, 5, VOCAB)


def test_run_export_stage_writes_stablehlo_beside_hf_and_confirm_times_it(exported, tmp_path, monkeypatch) -> None:
    """The export stage writes ``students/<name>/stablehlo`` (checked in a fresh process), a resume skips it,
    and the confirmation adds ``stablehlo_latency_s`` to confirm.json."""
    from types import SimpleNamespace

    from autodistill.distill import export as export_mod, full, stablehlo as shlo_mod
    from autodistill.run import stages
    from autodistill.run.folder import RunFolder
    from autodistill.run.records import ConfirmedStudent, ConfirmRecord, StudentRecord

    arch, params, _ = exported
    folder = RunFolder(tmp_path / "run")
    folder.save_student(StudentRecord("trial0001", arch, status="ok", finished=True, mlm_accuracy=0.1, steps=2))
    monkeypatch.setattr(full, "load_checkpoint", lambda d, step=None: (arch, params))

    def fake_hf(arch, params, out_dir, **kw):  # the transformers export has its own tests
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text("{}")
        return out_dir

    monkeypatch.setattr(export_mod, "export_student", fake_hf)
    ctx = SimpleNamespace(folder=folder, teacher=SimpleNamespace(vocab_path=None),
                          cfg=SimpleNamespace(confirm=SimpleNamespace(batch=1, seq=16, device="cpu", cores=1,
                                                                      passes=1)))
    stages.stage_export(ctx)
    shlo = folder.student_dir("trial0001") / "stablehlo"
    assert stablehlo_written(shlo, arch) and folder.students()[0].exported

    def no_export(*a, **k):
        raise AssertionError("the resume exported again")

    monkeypatch.setattr(shlo_mod, "export_stablehlo", no_export)
    monkeypatch.setattr(export_mod, "export_student", no_export)
    stages.stage_export(ctx)

    rec = ConfirmRecord("cpu", "cpu_generic", 1, 16, "min_s", 0.1,
                        (ConfirmedStudent("trial0001", arch, 1e-3, 0.0, 1e-3),))
    timed = stages._with_stablehlo_latency(ctx, rec, None)
    lat = timed.students[0].stablehlo_latency_s
    assert lat is not None and 0 < lat < 1
    folder.save_confirm(timed)
    assert json.loads((folder.path / "confirm.json").read_text())["students"][0]["stablehlo_latency_s"] == lat
    assert folder.confirm() == timed
    # a reusable earlier confirmation lends its time instead of timing again
    monkeypatch.setattr(shlo_mod, "time_stablehlo", no_export)
    assert stages._with_stablehlo_latency(ctx, rec, timed) == timed
