"""``autodistill distill flash|full|export`` on a tiny teacher folder and a small text corpus."""
from __future__ import annotations

import json

import pytest

from autodistill.cli import main

from distill_support import make_teacher_folder, tiny_docs


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    teacher = make_teacher_folder(root / "teacher", mlm_head=False)
    corpus = root / "corpus"
    corpus.mkdir()
    docs = tiny_docs()
    for i, d in enumerate(docs[:16]):
        (corpus / f"{i:02d}.txt").write_text(d.text)
    held = root / "held.txt"
    held.write_text("\n\n".join(d.text for d in docs[16:20]))
    return root, teacher, corpus, held


def test_flash_full_export(setup, capsys) -> None:
    root, teacher, corpus, held = setup
    student = ("minilm-l6-h384:num_hidden_layers=1,hidden_size=16,num_attention_heads=2,intermediate_size=32,"
               "max_position_embeddings=64")
    common = ["--teacher", str(teacher), "--corpus", str(corpus), "--heldout", str(held), "--seq", "32",
              "--head-steps", "10", "--cache-dir", str(root / "cache"), "--batch", "4", "--fast-compile"]
    code, out = _run(capsys, "distill", "flash", "--student", student, *common, "--kt-steps", "0", "--pd-steps", "2",
                     "--json")
    assert code == 0
    res = json.loads(out)
    assert res["results"][0]["status"] == "ok" and res["teacher_mlm_accuracy"] >= 0
    assert list((root / "cache" / "mlm_heads").glob("*.safetensors"))

    ck = root / "ck"
    code, out = _run(capsys, "distill", "full", "--student", student, *common, "--checkpoint-dir", str(ck),
                     "--kt-steps", "0", "--pd-steps", "3", "--warmup-steps", "1", "--checkpoint-every", "2",
                     "--export", str(root / "hf"))
    assert code == 0 and "status=ok steps=3/3" in out and "exported" in out
    assert (root / "hf" / "vocab.txt").is_file()
    code, out = _run(capsys, "distill", "full", "--student", student, *common, "--checkpoint-dir", str(ck),
                     "--kt-steps", "0", "--pd-steps", "3", "--warmup-steps", "1", "--checkpoint-every", "2")
    assert code == 0 and "resumed from step 3" in out
    pytest.importorskip("transformers")
    code, out = _run(capsys, "distill", "export", "--checkpoint-dir", str(ck), "--out", str(root / "hf2"))
    assert code == 0 and "logits match" in out
    # the checkpoint is never the export's target: not itself, not a folder holding it, not inside it
    before = sorted(p.relative_to(ck) for p in ck.rglob("*"))
    for out_dir in (ck, root, ck / "inside"):
        assert main(["distill", "export", "--checkpoint-dir", str(ck), "--out", str(out_dir)]) == 2
        assert "is the checkpoint folder" in capsys.readouterr().err
    assert sorted(p.relative_to(ck) for p in ck.rglob("*")) == before


def test_errors_exit_2_naming_the_bad_value(setup, capsys) -> None:
    root, teacher, corpus, held = setup
    assert main(["distill", "flash", "--student", "bert-base", "--teacher", str(root / "missing")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and str(root / "missing") in err and "Traceback" not in err


@pytest.mark.parametrize("student,match", [
    ("no-such-model", "unknown reference architecture 'no-such-model'"),
    ("minilm-l6-h384:hidden_size", "override 'hidden_size' is not key=value"),
])
def test_a_bad_student_exits_2_before_the_teacher_loads(setup, capsys, student, match) -> None:
    root, teacher, corpus, held = setup
    for command in (["flash", "--student", "tinybert-4", "--student", student],
                    ["full", "--student", student, "--checkpoint-dir", str(root / "never")]):
        assert main(["distill", *command, "--teacher", str(root / "missing")]) == 2
        err = capsys.readouterr().err
        assert match in err and "missing" not in err  # the student is named, not the (also bad) teacher
    assert not (root / "never").exists()


def test_prepare_distillation_fits_the_head_once_and_builds_the_data(setup, monkeypatch) -> None:
    from autodistill.distill.data import DataConfig
    from autodistill.distill.setup import DistillSetup, prepare_distillation
    from autodistill.distill.teacher import HeadFitConfig, load_teacher
    from autodistill.errors import DistillError

    root, teacher, corpus, held = setup
    cache = root / "setup-cache"
    kw = dict(corpus=[corpus], heldout=[held], data=DataConfig(seq_len=32, max_heldout_sequences=8),
              head=HeadFitConfig(steps=3))
    first = prepare_distillation(teacher, cache_dir=cache, **kw)
    assert isinstance(first, DistillSetup) and first.cache_dir == cache
    assert not load_teacher(teacher).has_mlm_head and first.teacher.head_source == "fitted"
    assert first.data.seq_len == 32 and first.data.description == "corpus" and 1 <= len(first.data.heldout) <= 8
    heads = list((cache / "mlm_heads").glob("*.safetensors"))
    assert len(heads) == 1 and first.teacher.head_info["steps"] == 3
    written = heads[0].stat().st_mtime_ns
    # no cache_dir: $AUTODISTILL_CACHE (here the same folder), where the fitted head is read, not refitted
    monkeypatch.setenv("AUTODISTILL_CACHE", str(cache))
    again = prepare_distillation(teacher, **kw)
    assert again.cache_dir == cache and again.teacher.fingerprint == first.teacher.fingerprint
    assert again.data.fingerprint == first.data.fingerprint
    assert list((cache / "mlm_heads").glob("*.safetensors")) == heads and heads[0].stat().st_mtime_ns == written
    with pytest.raises(DistillError, match="does not exist") as e:
        prepare_distillation(root / "missing", cache_dir=cache, **kw)
    assert str(root / "missing") in str(e.value)
