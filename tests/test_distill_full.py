"""Full distillation: AdamW/LAMB, checkpoints, bit-identical resume, divergence status, checkpoint loading."""
from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

from autodistill.distill.full import FullConfig, full_distill, latest_step, load_checkpoint
from autodistill.distill.teacher import load_teacher
from autodistill.errors import DistillError

from distill_support import make_data, make_teacher_folder, tiny_student


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return load_teacher(make_teacher_folder(tmp_path_factory.mktemp("t")))


@pytest.fixture(scope="module")
def data(teacher):
    return make_data(teacher)


def _cfg(**kw) -> FullConfig:
    base = dict(kt_steps=4, pd_steps=4, batch_size=4, warmup_steps=2, checkpoint_every=3, optimizer="lamb",
                schedule="linear", eval_batch_size=16, fast_compile=True)
    base.update(kw)
    return FullConfig(**base)


def _leaves(params):
    return [np.asarray(x) for x in jax.tree.leaves(params)]


def test_resume_after_interruption_is_identical(teacher, data, tmp_path) -> None:
    arch = tiny_student(teacher.arch.vocab_size)
    cfg = _cfg()
    straight = full_distill(arch, teacher, data, cfg, tmp_path / "straight")
    assert straight.finished and straight.status == "ok" and straight.steps_done == 8
    assert sorted(int(p.name) for p in (tmp_path / "straight").iterdir() if p.name.isdigit()) == [6, 8]
    # "kill" at step 5 (inside the knowledge-transfer -> pretraining boundary region), then resume
    part = full_distill(arch, teacher, data, cfg, tmp_path / "resumed", stop_at_step=5)
    assert not part.finished and part.steps_done == 5 and latest_step(tmp_path / "resumed") == 5
    assert math.isnan(part.mlm_accuracy)
    resumed = full_distill(arch, teacher, data, cfg, tmp_path / "resumed")
    assert resumed.resumed_from == 5 and resumed.finished
    assert resumed.losses == straight.losses
    assert resumed.mlm_accuracy == straight.mlm_accuracy
    a1, p1 = load_checkpoint(tmp_path / "straight")
    a2, p2 = load_checkpoint(tmp_path / "resumed")
    assert a1 == a2 == arch and "cls" in p1
    for x, y in zip(_leaves(p1), _leaves(p2)):
        np.testing.assert_array_equal(x, y)
    json.dumps(resumed.to_dict())


def test_resume_guards(teacher, data, tmp_path) -> None:
    arch = tiny_student(teacher.arch.vocab_size)
    full_distill(arch, teacher, data, _cfg(kt_steps=2, pd_steps=1, checkpoint_every=1), tmp_path / "r")
    with pytest.raises(DistillError, match="differs"):
        full_distill(arch, teacher, data, _cfg(kt_steps=2, pd_steps=2, checkpoint_every=1), tmp_path / "r")
    with pytest.raises(DistillError, match="already holds"):
        full_distill(arch, teacher, data, _cfg(kt_steps=2, pd_steps=1, checkpoint_every=1), tmp_path / "r",
                     resume=False)
    with pytest.raises(DistillError, match="not a full-distillation"):
        load_checkpoint(tmp_path)
    with pytest.raises(DistillError):
        FullConfig(optimizer="sgd")
    with pytest.raises(DistillError):
        FullConfig(schedule="step")


def test_absurd_learning_rate_gives_a_status(teacher, data, tmp_path) -> None:
    arch = tiny_student(teacher.arch.vocab_size)
    r = full_distill(arch, teacher, data, _cfg(optimizer="adamw", kt_lr=1e6, pd_lr=1e6), tmp_path / "x")
    assert r.status in ("nan", "diverged") and not r.finished and r.message


def test_adamw_eval_every(teacher, data, tmp_path) -> None:
    arch = tiny_student(teacher.arch.vocab_size)
    r = full_distill(arch, teacher, data, _cfg(optimizer="adamw", schedule="cosine", eval_every=4), tmp_path / "e")
    assert r.finished and [s for s, _ in r.evals] == [4, 8]
    assert r.evals[-1][1] == pytest.approx(r.mlm_accuracy)
