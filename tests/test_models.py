"""The Flax students against transformers' PyTorch MobileBERT / BERT, and the weight I/O."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import jax.numpy as jnp  # noqa: E402

from autodistill.arch import StudentArch, reference_arch  # noqa: E402
from autodistill.errors import DistillError  # noqa: E402
from autodistill.models import (  # noqa: E402
    EncoderOutput,
    StudentModel,
    init_params,
    load_hf_folder,
    params_from_hf,
    params_to_hf,
    save_hf_folder,
)
from autodistill.models.hf_weights import _flax_shapes  # noqa: E402

TOL = dict(rtol=1e-4, atol=1e-4)
SMALL = dict(num_hidden_layers=2, vocab_size=67, max_position_embeddings=24, type_vocab_size=2)


def _mobile(**kw) -> StudentArch:
    base = dict(SMALL, family="mobilebert", hidden_size=32, embedding_size=16, intra_bottleneck_size=16,
                intermediate_size=24, num_attention_heads=2, num_feedforward_networks=2)
    base.update(kw)
    return StudentArch(**base)


def _bert(**kw) -> StudentArch:
    h = kw.pop("hidden_size", 32)
    base = dict(SMALL, family="bert", hidden_size=h, embedding_size=h, intra_bottleneck_size=h, intermediate_size=37,
                num_attention_heads=2, num_feedforward_networks=1, use_bottleneck=False, trigram_input=False,
                key_query_shared_bottleneck=False, normalization_type="layer_norm", hidden_act="gelu")
    base.update(kw)
    return StudentArch(**base)


# Every switch of the family, every activation, heads 1..4, stacked FFNs 1..3.
ARCHS = {
    "mb-default": _mobile(num_feedforward_networks=3),  # trigram, kq-shared bottleneck, no_norm, relu
    "mb-bneck-attn-ln-gelu": _mobile(use_bottleneck_attention=True, key_query_shared_bottleneck=False,
                                     normalization_type="layer_norm", hidden_act="gelu", num_attention_heads=4,
                                     trigram_input=False),  # embedding_size != hidden_size: projection, no trigram
    "mb-bneck-attn-and-kq-gelu_new": _mobile(use_bottleneck_attention=True, key_query_shared_bottleneck=True,
                                             hidden_act="gelu_new", num_attention_heads=1, num_feedforward_networks=1),
    "mb-plain-e=h-tanh": _mobile(use_bottleneck=False, embedding_size=32, intra_bottleneck_size=32,
                                 trigram_input=False, normalization_type="layer_norm", hidden_act="tanh",
                                 key_query_shared_bottleneck=False),  # no projection; empty MLM `dense`
    "mb-bneck-qkv-from-hidden-silu": _mobile(key_query_shared_bottleneck=False, intra_bottleneck_size=24,
                                             hidden_size=24, embedding_size=8, hidden_act="silu",
                                             num_attention_heads=3, num_feedforward_networks=3),
    "mb-plain-trigram-no_norm": _mobile(use_bottleneck=False, intra_bottleneck_size=32, hidden_act="gelu",
                                        num_attention_heads=4, num_feedforward_networks=1),
    "bert-gelu": _bert(),
    "bert-relu-1head-3layers": _bert(hidden_act="relu", num_attention_heads=1, num_hidden_layers=3),
    "bert-silu-4heads": _bert(hidden_act="silu", num_attention_heads=4, hidden_size=16, intermediate_size=20),
}


def _torch_model(arch: StudentArch, seed: int = 0, norm_gain: float = 1.0):
    cfg_cls = transformers.BertConfig if arch.family == "bert" else transformers.MobileBertConfig
    cfg = cfg_cls(**arch.hf_config_dict())
    torch.manual_seed(seed)
    model = transformers.AutoModelForMaskedLM.from_config(cfg, attn_implementation="eager")
    # Random everything (norm scales and biases too), scaled so that activations stay O(1).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                gain = norm_gain if name.endswith("_embeddings.weight") else 1.0
                p.normal_(0.0, gain / math.sqrt(max(p.shape[-1], 1)))
            elif name.endswith("weight"):
                p.copy_(norm_gain * (1.0 + 0.2 * torch.randn_like(p)))
            else:
                p.normal_(0.0, 0.1 * norm_gain)
    return model.eval()


def _inputs(arch: StudentArch, batch: int = 2, seq: int = 10, seed: int = 1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, arch.vocab_size, (batch, seq), dtype=np.int64)
    types = rng.integers(0, arch.type_vocab_size, (batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), np.int64)
    mask[-1, seq - 3:] = 0  # padded tail in the last row
    return ids, types, mask


def _torch_forward(model, ids, types, mask):
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(types),
                    attention_mask=torch.from_numpy(mask), output_hidden_states=True, output_attentions=True)
    return out


def _flax_forward(arch, params, ids, types, mask, mlm_head=True) -> EncoderOutput:
    model = StudentModel(arch=arch, dtype=jnp.float32, mlm_head=mlm_head)
    apply = jax.jit(model.apply, static_argnames=("output_hidden_states", "output_attentions"))
    return apply({"params": params}, jnp.asarray(ids, jnp.int32), token_type_ids=jnp.asarray(types, jnp.int32),
                 attention_mask=jnp.asarray(mask, jnp.int32), output_hidden_states=True, output_attentions=True)


def _state_dict(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", list(ARCHS))
def test_matches_transformers(name):
    arch = ARCHS[name]
    tmodel = _torch_model(arch)
    sd = _state_dict(tmodel)
    params = params_from_hf(arch, sd)
    assert "cls" in params
    ids, types, mask = _inputs(arch)
    ref = _torch_forward(tmodel, ids, types, mask)
    out = _flax_forward(arch, params, ids, types, mask)

    assert out.last_hidden_state.shape == (2, 10, arch.hidden_size)
    assert len(out.hidden_states) == len(ref.hidden_states) == arch.num_hidden_layers + 1
    for mine, theirs in zip(out.hidden_states, ref.hidden_states):
        np.testing.assert_allclose(np.asarray(mine), theirs.numpy(), **TOL)
    np.testing.assert_allclose(np.asarray(out.last_hidden_state), ref.hidden_states[-1].numpy(), **TOL)
    assert len(out.attentions) == len(ref.attentions) == arch.num_hidden_layers
    for mine, theirs in zip(out.attentions, ref.attentions):
        assert mine.shape == (2, arch.num_attention_heads, 10, 10)
        np.testing.assert_allclose(np.asarray(mine), theirs.numpy(), **TOL)
    assert float(jnp.max(out.attentions[0][-1, :, :, -3:])) == 0.0  # padded keys get no weight
    np.testing.assert_allclose(np.asarray(out.logits), ref.logits.numpy(), **TOL)
    # sanity: the comparison is not vacuous
    assert float(np.std(ref.logits.numpy())) > 0.1


@pytest.mark.parametrize("name", ["mb-bneck-attn-ln-gelu", "bert-gelu"])
def test_layer_norm_epsilons(name):
    """Tiny norm gains and embeddings make every norm input's variance ~1e-6, where eps 1e-5 vs 1e-12 matters.

    transformers builds MobileBERT's embedding and block-output LayerNorms without eps
    (torch's 1e-5) and the others with layer_norm_eps=1e-12; BERT uses 1e-12 throughout.
    """
    arch = ARCHS[name]
    tmodel = _torch_model(arch, norm_gain=1e-3)
    params = params_from_hf(arch, _state_dict(tmodel))
    ids, types, mask = _inputs(arch)
    ref = _torch_forward(tmodel, ids, types, mask)
    out = _flax_forward(arch, params, ids, types, mask)
    for mine, theirs in zip(out.hidden_states, ref.hidden_states):
        theirs = theirs.numpy()
        assert float(np.std(theirs)) < 1e-2
        np.testing.assert_allclose(np.asarray(mine), theirs, rtol=1e-3, atol=1e-3 * float(np.std(theirs)))


@pytest.mark.parametrize("name", ["mb-default", "mb-bneck-attn-and-kq-gelu_new", "mb-plain-e=h-tanh", "bert-gelu"])
def test_round_trip_state_dict(name):
    arch = ARCHS[name]
    tmodel = _torch_model(arch, seed=3)
    sd = _state_dict(tmodel)
    back = params_to_hf(arch, params_from_hf(arch, sd))
    assert set(back) == set(sd)
    for k, v in sd.items():
        assert back[k].shape == v.shape, k
        np.testing.assert_array_equal(back[k], v, err_msg=k)
    # loadable strictly into a fresh transformers model
    fresh = _torch_model(arch, seed=4)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)
    # names without the base-model prefix are accepted too
    prefix = "bert." if arch.family == "bert" else "mobilebert."
    bare = {k.removeprefix(prefix): v for k, v in sd.items()}
    again = params_from_hf(arch, bare)
    np.testing.assert_array_equal(np.asarray(again["embeddings"]["word_embeddings"]["embedding"]),
                                  sd[prefix + "embeddings.word_embeddings.weight"])


@pytest.mark.parametrize("name", ["mb-plain-e=h-tanh", "bert-relu-1head-3layers"])
def test_save_then_transformers_from_pretrained(name, tmp_path):
    arch = ARCHS[name]
    tmodel = _torch_model(arch, seed=5)
    params = params_from_hf(arch, _state_dict(tmodel))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(f"tok{i}" for i in range(arch.vocab_size)) + "\n")
    folder = save_hf_folder(arch, params, tmp_path / "student", vocab_path=vocab)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == arch.family
    assert cfg["architectures"] == ["BertForMaskedLM" if arch.family == "bert" else "MobileBertForMaskedLM"]

    loaded, info = transformers.AutoModelForMaskedLM.from_pretrained(
        folder, attn_implementation="eager", output_loading_info=True)
    loaded.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids, types, mask = _inputs(arch, seed=7)
    # test_matches_transformers shows Flax == the source torch model; the export must reproduce the latter
    np.testing.assert_array_equal(_torch_forward(loaded, ids, types, mask).logits.numpy(),
                                  _torch_forward(tmodel, ids, types, mask).logits.numpy())

    # ... and our own reader gets the same arch and weights back
    arch2, params2, has_head = load_hf_folder(folder)
    assert arch2 == arch and has_head
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(params2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # saving over an existing folder replaces it
    save_hf_folder(arch, params, folder)
    assert not (folder / "vocab.txt").exists()


def test_load_folders_written_by_transformers(tmp_path):
    arch = ARCHS["mb-bneck-attn-ln-gelu"]
    tmodel = _torch_model(arch, seed=6)
    tmodel.save_pretrained(tmp_path / "st")
    got_arch, params, has_head = load_hf_folder(tmp_path / "st")
    assert got_arch == arch and has_head
    # a base model (no head) in the legacy pytorch_model.bin format
    base = tmodel.mobilebert
    (tmp_path / "bin").mkdir()
    base.config.to_json_file(tmp_path / "bin" / "config.json")
    torch.save(base.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    got_arch, base_params, has_head = load_hf_folder(tmp_path / "bin")
    assert got_arch == arch and not has_head and "cls" not in base_params
    ids, types, mask = _inputs(arch)
    out = _flax_forward(arch, base_params, ids, types, mask, mlm_head=False)
    assert out.logits is None
    ref = _torch_forward(tmodel, ids, types, mask)
    np.testing.assert_allclose(np.asarray(out.last_hidden_state), ref.hidden_states[-1].numpy(), **TOL)


@pytest.mark.parametrize("arch", [
    *ARCHS.values(),
    reference_arch("mobilebert").replace(num_hidden_layers=2),
    reference_arch("mobilebert-tiny").replace(num_hidden_layers=2),
    reference_arch("bert-base").replace(num_hidden_layers=2),
], ids=lambda a: a.short_name())
def test_parameter_count_matches_arch(arch):
    for head in (True, False):
        n = sum(math.prod(s) for s in _flax_shapes(arch, head).values())
        assert n == arch.num_parameters(pooler=False, mlm_head=head)


def test_init_params_and_gradients():
    arch = _mobile(num_hidden_layers=1, num_feedforward_networks=1)
    model = StudentModel(arch=arch, dtype=jnp.float32, mlm_head=True)
    params = init_params(model, jax.random.PRNGKey(0), batch=1, seq=8)
    assert sum(x.size for x in jax.tree_util.tree_leaves(params)) == arch.num_parameters(pooler=False, mlm_head=True)
    again = init_params(model, jax.random.PRNGKey(0))
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(again)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    emb = np.asarray(params["embeddings"]["word_embeddings"]["embedding"])
    assert 0.01 < emb.std() < 0.03
    ids, types, mask = _inputs(arch, seq=8)

    def loss(p):
        return jnp.mean(model.apply({"params": p}, ids, token_type_ids=types, attention_mask=mask).logits ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    flat = jax.tree_util.tree_leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in flat)
    assert float(jnp.abs(grads["encoder"]["layer_0"]["attention"]["self"]["query"]["kernel"]).sum()) > 0


# ----------------------------------------------------------------------------- errors
def test_missing_folder_and_files(tmp_path):
    with pytest.raises(DistillError, match="no model folder"):
        load_hf_folder(tmp_path / "nope")
    with pytest.raises(DistillError, match="config.json"):
        load_hf_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32,
                                                      "num_attention_heads": 2}))
    with pytest.raises(DistillError, match="model.safetensors"):
        load_hf_folder(tmp_path)


def test_unsupported_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "distilbert"}))
    with pytest.raises(DistillError, match="distilbert.*bert, mobilebert"):
        load_hf_folder(tmp_path)


def test_shape_mismatch_and_wrong_arch(tmp_path):
    arch = ARCHS["bert-gelu"]
    sd = _state_dict(_torch_model(arch))
    params = params_from_hf(arch, sd)
    folder = save_hf_folder(arch, params, tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] = 40
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DistillError, match="shape mismatch.*intermediate"):
        load_hf_folder(folder)
    with pytest.raises(DistillError, match="missing"):
        params_from_hf(arch.replace(num_hidden_layers=3), sd)
    with pytest.raises(DistillError, match="does not use"):
        params_from_hf(arch.replace(num_hidden_layers=1), sd)
    untied = dict(sd, **{"cls.predictions.decoder.weight": sd["cls.predictions.decoder.weight"] + 1})
    with pytest.raises(DistillError, match="not tied"):
        params_from_hf(arch, untied)
    with pytest.raises(DistillError, match="no MLM head"):
        params_from_hf(arch, {k: v for k, v in sd.items() if not k.startswith("cls.")}, mlm_head=True)
    assert "cls" not in params_from_hf(arch, sd, mlm_head=False)
