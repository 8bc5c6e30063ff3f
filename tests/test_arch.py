from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings

from autodistill.arch import FEATURE_NAMES, StudentArch, reference_arch, reference_names
from autodistill.errors import ArchError

from strategies import student_archs


def _hf_count(arch: StudentArch) -> int:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    if arch.family == "bert":
        model = transformers.BertModel(transformers.BertConfig(**arch.hf_config_dict()))
    else:
        model = transformers.MobileBertModel(transformers.MobileBertConfig(**arch.hf_config_dict()))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["mobilebert", "mobilebert-tiny", "bert-base", "minilm-l6-h384", "tinybert-4"])
def test_parameter_count_matches_transformers_reference(name: str) -> None:
    arch = reference_arch(name)
    assert arch.num_parameters() == _hf_count(arch)


def test_mobilebert_is_about_24_6m_parameters() -> None:
    # Sun et al. 2020 report 25.3M with the MLM/NSP heads; the encoder alone is ~24.6M.
    assert 24.5e6 < reference_arch("mobilebert").num_parameters(pooler=False) < 24.7e6


def _random_small_archs(n: int, seed: int) -> list[StudentArch]:
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        heads = int(rng.choice([1, 2, 4]))
        t = heads * int(rng.integers(2, 12))
        family = "bert" if len(out) % 3 == 0 else "mobilebert"
        if family == "bert":
            out.append(StudentArch(family="bert", num_hidden_layers=int(rng.integers(1, 3)), hidden_size=t,
                                   embedding_size=t, num_attention_heads=heads,
                                   intermediate_size=int(rng.integers(4, 40)), num_feedforward_networks=1,
                                   use_bottleneck=False, intra_bottleneck_size=t, key_query_shared_bottleneck=False,
                                   trigram_input=False, normalization_type="layer_norm", hidden_act="gelu",
                                   vocab_size=int(rng.integers(50, 200))))
            continue
        ub = bool(rng.integers(2))
        mode = rng.choice(["kq", "attn"])
        out.append(StudentArch(num_hidden_layers=int(rng.integers(1, 3)),
                               hidden_size=int(rng.integers(8, 48)) if ub else t,
                               embedding_size=int(rng.integers(4, 32)), num_attention_heads=heads,
                               intermediate_size=int(rng.integers(4, 40)),
                               num_feedforward_networks=int(rng.integers(1, 4)), use_bottleneck=ub,
                               intra_bottleneck_size=t, use_bottleneck_attention=bool(mode == "attn"),
                               key_query_shared_bottleneck=bool(mode == "kq"), trigram_input=bool(rng.integers(2)),
                               normalization_type=str(rng.choice(["no_norm", "layer_norm"])),
                               classifier_activation=bool(rng.integers(2)),
                               vocab_size=int(rng.integers(50, 200))))
    return out


@pytest.mark.parametrize("arch", _random_small_archs(12, seed=7), ids=lambda a: a.short_name())
def test_parameter_count_matches_transformers_random(arch: StudentArch) -> None:
    assert arch.num_parameters() == _hf_count(arch)


def test_reference_configs_are_all_valid_and_named() -> None:
    names = reference_names()
    for expected in ("bert-base", "bert-large", "mobilebert", "mobilebert-tiny", "tinybert-4", "tinybert-6",
                     "distilbert", "minilm-l6-h384"):
        assert expected in names
    with pytest.raises(ArchError, match="valid choices: .*mobilebert"):
        reference_arch("mobilebert-huge")


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(num_attention_heads=3), r"num_attention_heads=3 does not divide the attention width 128"),
        (dict(hidden_size=0), r"hidden_size=0 is out of range"),
        (dict(num_hidden_layers=-1), r"num_hidden_layers=-1 is out of range"),
        (dict(intermediate_size=1.5), r"intermediate_size must be an integer"),
        (dict(normalization_type="batch_norm"), r"valid choices: layer_norm, no_norm"),
        (dict(hidden_act="swish2"), r"unknown hidden_act 'swish2'"),
        (dict(family="gpt"), r"valid choices: bert, mobilebert"),
        (dict(use_bottleneck="yes"), r"use_bottleneck must be a bool"),
        (dict(family="bert"), r"family='bert' \(BertModel\) needs"),
        (dict(key_query_shared_bottleneck=False), r"enable one of the two"),
    ],
)
def test_invalid_arch_is_a_clear_error(changes: dict, match: str) -> None:
    with pytest.raises(ArchError, match=match):
        dataclasses.replace(reference_arch("mobilebert"), **changes)


@settings(max_examples=200, deadline=None)
@given(student_archs())
def test_feature_round_trip(arch: StudentArch) -> None:
    row = arch.features()
    assert row.shape == (len(FEATURE_NAMES),) and row.dtype == np.float64
    back = StudentArch.from_features(row)
    assert back.features().tolist() == row.tolist()


def test_from_dict_names_unknown_fields() -> None:
    with pytest.raises(ArchError, match=r"unknown StudentArch field\(s\) \['hiden_size'\]"):
        StudentArch.from_dict({"hiden_size": 3})
    a = reference_arch("tinybert-4")
    assert StudentArch.from_dict(a.to_dict()) == a


def test_flops_per_token_matches_cost_model_breakdown() -> None:
    from autodistill.costmodel import CostModel
    from autodistill.hardware import load_profile

    cm = CostModel(load_profile("tpu_v4i"))
    for name in reference_names():
        a = reference_arch(name)
        est = cm.estimate(a, batch=2, seq=64)
        assert est.flops == pytest.approx(a.flops_per_token(64) * 2 * 64, rel=1e-12)
