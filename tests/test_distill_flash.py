"""Flash distillation: layer map, losses, cached vs live teacher, NaN/divergence, evaluator, sharding."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autodistill.distill import losses as L
from autodistill.distill.flash import FlashResult, flash_distill, flash_train, kt_stage, layer_map
from autodistill.distill.teacher import TeacherCache, load_teacher
from autodistill.errors import DistillError

from distill_support import flash_config, make_data, make_teacher_folder, tiny_student


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return load_teacher(make_teacher_folder(tmp_path_factory.mktemp("t")))


@pytest.fixture(scope="module")
def data(teacher):
    return make_data(teacher)


@pytest.fixture(scope="module")
def cache(teacher, data):
    cfg = flash_config()
    return TeacherCache.build(teacher, data, num_batches=cfg.total_steps, batch_size=cfg.batch_size,
                              hidden_batches=cfg.kt_steps, topk=cfg.topk)


def test_layer_map_and_stages() -> None:
    assert layer_map(4, 6) == (1, 2, 4, 5)
    assert layer_map(6, 6) == tuple(range(6))
    assert layer_map(1, 6) == (5,)
    assert layer_map(12, 6) == (0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5)
    assert [kt_stage(s, 9, 3) for s in range(9)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [kt_stage(s, 2, 4) for s in range(2)] == [0, 2]
    with pytest.raises(DistillError):
        layer_map(0, 6)


def test_losses_basic_properties() -> None:
    rng = np.random.default_rng(0)
    p = jax.nn.softmax(jnp.asarray(rng.normal(size=(2, 4, 5, 5))), axis=-1)
    mask = jnp.ones((2, 5))
    assert float(L.attention_kl(p, p, mask)) == pytest.approx(0.0, abs=1e-6)
    q = jax.nn.softmax(jnp.asarray(rng.normal(size=(2, 2, 5, 5))), axis=-1)
    assert float(L.attention_kl(p, q, mask)) > 0  # head counts differ: head-averaged
    x = jnp.asarray(rng.normal(size=(2, 5, 3)))
    assert float(L.feature_mse(x, x + 1.0, mask)) == pytest.approx(1.0)
    m2 = mask.at[:, 3:].set(0)
    y = x.at[:, 3:].add(100.0)
    assert float(L.feature_mse(x, y, m2)) == pytest.approx(0.0)  # padded tokens do not count
    logits = jnp.asarray(rng.normal(size=(2, 3, 7)))
    vals, ids = jax.lax.top_k(logits, 7)
    w = jnp.ones((2, 3))
    full_ce = -jnp.mean(jnp.sum(jax.nn.softmax(logits) * jax.nn.log_softmax(logits), -1))
    assert float(L.kd_loss(logits, vals, ids, w)) == pytest.approx(float(full_ce), rel=1e-5)
    mlm_sep = L.mlm_loss(logits, ids[..., 0], w)[0]
    mlm_j, kd_j = L.mlm_and_kd_loss(logits, ids[..., 0], w, vals, ids)
    assert float(mlm_j) == pytest.approx(float(mlm_sep), rel=1e-6)
    assert float(kd_j) == pytest.approx(float(L.kd_loss(logits, vals, ids, w)), rel=1e-6)
    labels = jnp.argmax(logits, -1)
    loss, correct = L.mlm_loss(logits, labels, w.at[0, 0].set(0))
    assert float(correct) == 5.0 and float(loss) > 0


# ---------------------------------------------------------------------------- the step functions, called alone
def _step_setup(teacher, data, *, layers: int = 2, proj: bool = True, seed: int = 0):
    """A `StepSpec` (live teacher), a fresh train tree and one batch, built without an engine."""
    from autodistill.distill import engine as E
    from autodistill.models import StudentModel, init_params

    arch = tiny_student(teacher.arch.vocab_size, layers=layers)
    k_student, k_proj = jax.random.split(jax.random.PRNGKey(seed))
    aux = {}
    if proj:
        ht = teacher.arch.hidden_size
        aux["proj"] = {"kernel": jax.random.normal(k_proj, (layers, arch.hidden_size, ht)) / 4.0,
                       "bias": jnp.zeros((layers, ht))}
    train = {"params": init_params(StudentModel(arch=arch, mlm_head=True), k_student), "aux": aux}
    spec = E.StepSpec(arch=arch, teacher_arch=teacher.arch, groups=E.param_groups(train), proj=proj,
                      live_teacher=True, topk=16)
    batch = {k: jnp.asarray(v) for k, v in data.train_batch(0, 4, 0).arrays().items()}
    return E, spec, train, batch


def _opt_state(tx, spec, train):
    import functools
    import operator

    return {name: tx.init(functools.reduce(operator.getitem, path, train)) for name, path in spec.groups}


def _copy(tree):
    return jax.tree.map(lambda x: np.array(x, copy=True), tree)  # the steps donate their state


def test_pd_step_alone_lowers_the_loss_on_a_batch(teacher, data) -> None:
    from autodistill.distill.optim import make_optimizer

    E, spec, train, batch = _step_setup(teacher, data, proj=False)
    tx = make_optimizer("adamw", 3e-3, 0, 10, clip_norm=None)
    state = {"train": train, "opt": _opt_state(tx, spec, train)}
    losses = []
    for _ in range(6):
        state, loss, parts = E.pd_step(state, teacher.params, batch, spec=spec, tx=tx)
        losses.append(float(loss))
        assert set(parts) == {"mlm", "kd"}
        assert float(loss) == pytest.approx(0.5 * float(parts["mlm"]) + 0.5 * float(parts["kd"]), rel=1e-5)
    assert losses[-1] < losses[0], losses
    # the loss piece alone gives the first step's loss
    _, spec2, train2, _ = _step_setup(teacher, data, proj=False)
    t_vals, t_ids = E.teacher_topk(teacher.arch, teacher.params, batch, spec2.topk)
    assert t_vals.shape == batch["mlm_positions"].shape + (16,)
    total, _ = E.pd_loss(spec2, train2, batch, t_vals, t_ids)
    assert float(total) == pytest.approx(losses[0], rel=1e-5)


def test_kt_step_alone_trains_only_its_block_and_projection_row(teacher, data) -> None:
    from autodistill.distill.optim import make_optimizer

    E, spec, train, batch = _step_setup(teacher, data)
    tx = make_optimizer("adamw", 1e-2, 0, 10, clip_norm=None)
    state = {"train": train, "opt": _opt_state(tx, spec, train)}
    before = _copy(train)
    losses = []
    for _ in range(4):
        state, loss, parts = E.kt_step(state, teacher.params, batch, jnp.int32(1), jnp.int32(1), spec=spec, tx=tx)
        losses.append(float(loss))
        assert set(parts) == {"feature", "attention"}
    assert losses[-1] < losses[0], losses
    after = _copy(state["train"])
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa: E731
    p0, p1 = before["params"], after["params"]
    assert same(p0["embeddings"], p1["embeddings"]) and same(p0["cls"], p1["cls"])
    assert same(p0["encoder"]["layer_0"], p1["encoder"]["layer_0"])  # frozen lower block
    assert not same(p0["encoder"]["layer_1"], p1["encoder"]["layer_1"])
    k0, k1 = before["aux"]["proj"]["kernel"], after["aux"]["proj"]["kernel"]
    assert np.array_equal(k0[0], k1[0]) and not np.array_equal(k0[1], k1[1])  # only stage 1's projection row
    # the active groups and masks the step uses
    act = E.kt_active(spec.groups, 1, freeze_lower=True)
    assert act == {"embeddings": False, "layer_0": False, "layer_1": True, "cls": False, "aux_proj": True}
    assert E.kt_active(spec.groups, 1, freeze_lower=False)["layer_0"] is True
    np.testing.assert_array_equal(E.proj_rows(2, 1)["bias"], [[0.0], [1.0]])


def test_apply_grouped_clips_then_updates_active_groups(teacher, data) -> None:
    import optax

    E, spec, train, _ = _step_setup(teacher, data, proj=False)
    tx = optax.sgd(1.0)
    state = {"train": train, "opt": _opt_state(tx, spec, train)}
    grads = jax.tree.map(jnp.ones_like, train)
    n = sum(x.size for x in jax.tree.leaves(train))
    active = {name: name == "layer_0" for name, _ in spec.groups}
    new = E.apply_grouped(tx, _copy(state), grads, active, {}, groups=spec.groups, clip_norm=1.0)
    w0 = np.asarray(train["params"]["encoder"]["layer_0"]["attention"]["self"]["query"]["kernel"])
    w1 = np.asarray(new["train"]["params"]["encoder"]["layer_0"]["attention"]["self"]["query"]["kernel"])
    np.testing.assert_allclose(w0 - w1, 1.0 / math.sqrt(n), rtol=1e-5)  # unit gradients scaled to norm 1
    e0, e1 = (np.asarray(t["params"]["embeddings"]["word_embeddings"]["embedding"]) for t in (train, new["train"]))
    np.testing.assert_array_equal(e0, e1)


def test_eval_step_matches_a_hand_computation(teacher, data) -> None:
    from autodistill.models import StudentModel

    E, spec, train, _ = _step_setup(teacher, data, proj=False, seed=3)
    b = data.heldout_batches(8)[0].arrays()
    res = E.eval_step(train, {k: jnp.asarray(v) for k, v in b.items()}, spec=spec)
    out = StudentModel(arch=spec.arch, mlm_head=True).apply(
        {"params": train["params"]}, b["input_ids"], token_type_ids=b["token_type_ids"],
        attention_mask=b["attention_mask"])
    logits = np.take_along_axis(np.asarray(out.logits, np.float64), b["mlm_positions"][..., None], axis=1)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, b["mlm_labels"][..., None], axis=-1)[..., 0]
    w = b["mlm_weights"].astype(np.float64)
    assert float(res["count"]) == pytest.approx(w.sum())
    assert float(res["loss_sum"]) == pytest.approx(float((nll * w).sum()), rel=1e-4)
    assert float(res["correct"]) == float(((logits.argmax(-1) == b["mlm_labels"]) * w).sum())


def test_recipes_share_fields_defaults_and_checks() -> None:
    import dataclasses

    from autodistill.distill.flash import DistillRecipe, FlashConfig
    from autodistill.distill.full import FullConfig

    flash, full = FlashConfig(), FullConfig()
    assert isinstance(flash, DistillRecipe) and isinstance(full, DistillRecipe)
    common = {f.name for f in dataclasses.fields(DistillRecipe)}
    assert {f.name for f in dataclasses.fields(FlashConfig)} == common
    assert {f.name for f in dataclasses.fields(FullConfig)} - common == {"schedule", "eval_every",
                                                                          "checkpoint_every", "keep_checkpoints"}
    own = {"kt_steps", "pd_steps", "batch_size", "optimizer", "pd_lr", "pd_lr_width_ref", "warmup_steps"}
    assert {k for k in common if getattr(flash, k) != getattr(full, k)} == own
    assert (flash.kt_steps, flash.pd_steps, flash.optimizer, flash.pd_lr_width_ref) == (60, 120, "adamw", 128)
    assert (full.kt_steps, full.pd_steps, full.optimizer, full.pd_lr_width_ref) == (2000, 10000, "lamb", None)
    for cls in (FlashConfig, FullConfig):
        name = cls.__name__
        with pytest.raises(DistillError, match=f"^{name}.kt_lr=0 must be a finite number > 0$"):
            cls(kt_lr=0)
        with pytest.raises(DistillError, match=f"^{name}.batch_size=0 must be a positive integer$"):
            cls(batch_size=0)
        with pytest.raises(DistillError, match=f"^{name}.warmup_steps=-1 must be an integer >= 0$"):
            cls(warmup_steps=-1)
        with pytest.raises(DistillError, match=f"^{name} needs kt_steps"):
            cls(kt_steps=0, pd_steps=0)
        with pytest.raises(DistillError, match="pd_lr_width_ref=True must be a positive integer or None"):
            cls(pd_lr_width_ref=True)
        with pytest.raises(DistillError, match="head_init"):
            cls(head_init="zeros")
    with pytest.raises(DistillError, match="^FullConfig.keep_checkpoints=0 must be a positive integer$"):
        FullConfig(keep_checkpoints=0)
    with pytest.raises(TypeError):
        FlashConfig(1)  # keyword arguments only


def test_flash_cached_equals_live_and_learns(teacher, data, cache) -> None:
    arch = tiny_student(teacher.arch.vocab_size)
    cfg = flash_config()
    live = flash_distill(arch, teacher, data, cfg)
    cached = flash_distill(arch, teacher, data, cfg, cache=cache)
    for r in (live, cached):
        assert isinstance(r, FlashResult) and r.ok and r.steps_done == cfg.total_steps
        assert 0.0 <= r.mlm_accuracy <= 1.0 and math.isfinite(r.mlm_loss) and r.wall_time_s > 0
        assert r.layer_map == (0, 1)
        assert all(math.isfinite(x) for x in r.loss_parts["feature"][: cfg.kt_steps])
        assert all(math.isnan(x) for x in r.loss_parts["kd"][: cfg.kt_steps])
    # the cache stores teacher states in float16: the curves agree closely, not bit for bit
    np.testing.assert_allclose(live.losses, cached.losses, rtol=2e-2, atol=2e-3)
    json.dumps(cached.to_dict())
    # same inputs, same result
    again = flash_distill(arch, teacher, data, cfg, cache=cache)
    assert again.losses == cached.losses and again.mlm_accuracy == cached.mlm_accuracy


@pytest.mark.parametrize("freeze_lower", [True, False])
def test_static_stages_equal_traced_stages(teacher, data, cache, freeze_lower) -> None:
    """One compiled knowledge-transfer step per stage gives the same training as the traced stage."""
    from autodistill.distill.flash import static_stages

    arch = tiny_student(teacher.arch.vocab_size, layers=3)
    runs = {}
    for mode in ("static", "traced"):
        cfg = flash_config(stage_compile=mode, freeze_lower=freeze_lower)
        assert static_stages(cfg, arch) is (mode == "static")
        runs[mode] = flash_distill(arch, teacher, data, cfg, cache=cache)
        assert runs[mode].ok, runs[mode].message
    np.testing.assert_allclose(runs["static"].losses, runs["traced"].losses, rtol=2e-4, atol=1e-5)
    assert runs["static"].mlm_accuracy == pytest.approx(runs["traced"].mlm_accuracy, abs=2e-3)
    # auto: static only when every stage lasts STATIC_STAGE_MIN_STEPS steps or more
    assert not static_stages(flash_config(), arch)
    assert static_stages(flash_config(kt_steps=3 * 32), arch)
    with pytest.raises(DistillError, match="stage_compile"):
        flash_config(stage_compile="sometimes")


def test_flash_trains_down_the_loss(teacher, data, cache) -> None:
    arch = tiny_student(teacher.arch.vocab_size)
    cfg = flash_config(kt_steps=0, pd_steps=30, pd_lr=3e-3, batch_size=4)
    r, params = flash_train(arch, teacher, data, cfg)
    assert r.ok
    assert np.mean(r.losses[-5:]) < np.mean(r.losses[:5])
    assert "cls" in params and params["embeddings"]["word_embeddings"]["embedding"].shape == (arch.vocab_size, 16)


@pytest.mark.parametrize("family", ["bert", "mobilebert"])
def test_flash_other_widths_heads_and_families(teacher, data, cache, family) -> None:
    v = teacher.arch.vocab_size
    arch = (tiny_student(v, layers=3, hidden=32, heads=4) if family == "bert"  # teacher width, more heads
            else tiny_student(v, family="mobilebert", hidden=24))  # bottleneck, trigram input, stacked FFNs
    r = flash_distill(arch, teacher, data, flash_config(head_init="teacher"), cache=cache)
    assert r.ok, r.message


def test_nan_and_divergence_end_the_trial(teacher, data, cache) -> None:
    arch = tiny_student(teacher.arch.vocab_size)
    r = flash_distill(arch, teacher, data, flash_config(kt_lr=1e5, pd_lr=1e5), cache=cache)
    assert r.status in ("nan", "diverged") and not r.ok
    assert math.isnan(r.mlm_accuracy) and r.steps_done < 10 and r.message


def test_flash_rejects_bad_inputs(teacher, data, cache, tmp_path) -> None:
    arch = tiny_student(teacher.arch.vocab_size)
    with pytest.raises(DistillError, match="vocab_size"):
        flash_distill(arch.replace(vocab_size=99), teacher, data, flash_config())
    with pytest.raises(DistillError, match="does not cover"):
        flash_distill(arch, teacher, data, flash_config(pd_steps=50), cache=cache)
    headless = load_teacher(make_teacher_folder(tmp_path / "h", mlm_head=False))
    with pytest.raises(DistillError, match="MLM head"):
        flash_distill(arch, headless, data, flash_config())
    with pytest.raises(DistillError):
        flash_config(optimizer="sgd")
    with pytest.raises(DistillError):
        FlashResult(arch=arch, status="weird", mlm_accuracy=0.1, mlm_loss=1.0, nsp_accuracy=None, losses=(),
                    loss_parts={}, kt_steps=0, pd_steps=0, steps_done=0, wall_time_s=0.0, compile_s=0.0,
                    train_tokens_per_s=0.0, layer_map=())


def test_flash_nsp(teacher) -> None:
    data = make_data(teacher, nsp=True)
    r = flash_distill(tiny_student(teacher.arch.vocab_size), teacher, data, flash_config())
    assert r.ok and r.nsp_accuracy is not None and 0.0 <= r.nsp_accuracy <= 1.0
    assert all(math.isfinite(x) for x in r.loss_parts["nsp"][6:])


def test_evaluator_protocol(teacher, data, tmp_path) -> None:
    from autodistill.distill.evaluator import FlashDistillEvaluator

    search_types = pytest.importorskip("autodistill.search.types")
    ev = FlashDistillEvaluator(teacher, data, steps=10, kt_fraction=0.6, config=flash_config(), cache_dir=tmp_path)
    arch = tiny_student(30522)  # search spaces carry BERT's vocab: adapted to the teacher's
    res = ev.evaluate(arch, trial_id=3)
    assert isinstance(res, search_types.TrialResult) and res.ok
    assert res.metrics["status"] == "ok" and res.metrics["kt_steps"] == 6 and res.metrics["pd_steps"] == 4
    assert res.metrics["teacher_mlm_accuracy"] is not None and len(res.metrics["losses"]) == 10
    assert list((tmp_path / "teacher_outputs").iterdir())
    try:
        from autodistill.search.evaluators import Evaluator
    except ImportError:
        pass
    else:
        assert isinstance(ev, Evaluator)
    bad = FlashDistillEvaluator(teacher, data, config=flash_config(kt_lr=1e5, pd_lr=1e5))
    r2 = bad.evaluate(arch, trial_id=4)
    assert math.isnan(r2.accuracy) and r2.metrics["status"] in ("nan", "diverged")


_SHARDED = textwrap.dedent("""
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, sys.argv[2])
    import jax
    import numpy as np
    from autodistill.distill.engine import data_mesh
    from autodistill.distill.flash import flash_distill, flash_train
    from autodistill.distill.teacher import load_teacher
    from distill_support import flash_config, make_data, tiny_student
    assert len(jax.devices()) == 2
    teacher = load_teacher(sys.argv[1])
    data = make_data(teacher)
    arch = tiny_student(teacher.arch.vocab_size)
    cfg = flash_config()
    two, p2 = flash_train(arch, teacher, data, cfg, mesh=data_mesh())
    np.save(sys.argv[3], np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(p2)]))
    from autodistill.distill.full import FullConfig, full_distill
    fcfg = FullConfig(kt_steps=1, pd_steps=1, batch_size=4, warmup_steps=0, checkpoint_every=1, fast_compile=True)
    ck = sys.argv[3] + ".ck"
    full_distill(arch, teacher, data, fcfg, ck, stop_at_step=1)
    resumed = full_distill(arch, teacher, data, fcfg, ck)
    assert resumed.finished and resumed.resumed_from == 1, resumed
    print(json.dumps({"two": two.losses, "acc2": two.mlm_accuracy}))
""")


@pytest.mark.slow
def test_data_parallel_two_host_devices(teacher, data, tmp_path) -> None:
    """The batch split over 2 host devices (subprocess: XLA flags precede the jax import) = 1 device here.

    The subprocess also checkpoints and resumes a full distillation on the 2-device mesh.
    """
    folder = make_teacher_folder(tmp_path / "t")
    script = tmp_path / "sharded.py"
    script.write_text(_SHARDED)
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    out = subprocess.run([sys.executable, str(script), str(folder), str(Path(__file__).parent),
                          str(tmp_path / "p2.npy")], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(jax.devices()) == 1
    one, p1 = flash_train(tiny_student(teacher.arch.vocab_size), teacher, data, flash_config())
    np.testing.assert_allclose(res["two"], one.losses, rtol=1e-4, atol=1e-5)
    flat1 = np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(p1)])
    np.testing.assert_allclose(np.load(tmp_path / "p2.npy"), flat1, atol=1e-4)
    assert res["acc2"] == pytest.approx(one.mlm_accuracy, abs=0.02)
