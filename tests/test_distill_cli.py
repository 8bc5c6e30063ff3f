"""``autodistill distill flash|full|export`` on a tiny teacher folder and a small text corpus."""
from __future__ import annotations

import argparse
import json

import pytest

from autodistill import distill_cli
from autodistill.arch import reference_arch
from autodistill.errors import ArchError, AutodistillError

from test_distill_support import make_teacher_folder, tiny_docs


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autodistill")
    sub = p.add_subparsers(dest="command")
    distill_cli.register(sub)
    return p


def _run(capsys, *argv: str) -> tuple[int, str]:
    args = _parser().parse_args(list(argv))
    code = args.func(args)
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


def test_parse_student() -> None:
    a = distill_cli.parse_student("minilm-l6-h384:num_hidden_layers=2,hidden_size=128,num_attention_heads=2,"
                                  "intermediate_size=512", vocab_size=500)
    assert (a.num_hidden_layers, a.hidden_size, a.embedding_size, a.vocab_size) == (2, 128, 128, 500)
    b = distill_cli.parse_student(json.dumps(a.to_dict()))
    assert b == a
    assert distill_cli.parse_student("mobilebert-tiny") == reference_arch("mobilebert-tiny")
    with pytest.raises(ArchError):
        distill_cli.parse_student("minilm-l6-h384:hidden_size")
    with pytest.raises(ArchError):
        distill_cli.parse_student("no-such-model")


def test_flash_full_export(setup, capsys) -> None:
    root, teacher, corpus, held = setup
    student = ("minilm-l6-h384:num_hidden_layers=1,hidden_size=16,num_attention_heads=2,intermediate_size=32,"
               "max_position_embeddings=64")
    common = ["--teacher", str(teacher), "--corpus", str(corpus), "--heldout", str(held), "--seq-len", "32",
              "--head-steps", "10", "--cache-dir", str(root / "cache"), "--batch-size", "4", "--fast-compile"]
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
        args = _parser().parse_args(["distill", "export", "--checkpoint-dir", str(ck), "--out", str(out_dir)])
        with pytest.raises(AutodistillError, match="is the checkpoint folder .*, holds it or is inside it"):
            args.func(args)
    assert sorted(p.relative_to(ck) for p in ck.rglob("*")) == before


def test_errors_are_autodistill_errors(setup) -> None:
    root, teacher, corpus, held = setup
    args = _parser().parse_args(["distill", "flash", "--student", "bert-base", "--teacher", str(root / "missing")])
    with pytest.raises(AutodistillError, match="does not exist"):
        args.func(args)
