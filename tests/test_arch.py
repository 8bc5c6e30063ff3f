from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings

from autodistill.arch import (
    FEATURE_NAMES,
    MOBILEBERT_SHAPED_BASELINE,
    StudentArch,
    reference_arch,
    reference_names,
    resolve,
)
from autodistill.errors import ArchError

from strategies import examples, student_archs


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


@settings(max_examples=examples(2), deadline=None)
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


# ----------------------------------------------------------------------------------------- resolve
def test_resolve_reads_every_spec_form(tmp_path) -> None:
    small = reference_arch("tinybert-4").replace(num_hidden_layers=2)
    assert resolve("tinybert-4") == reference_arch("tinybert-4")  # a reference name
    assert resolve(" mobilebert-tiny ") == reference_arch("mobilebert-tiny")
    f = tmp_path / "small.json"
    f.write_text(json.dumps(small.to_dict()))
    assert resolve(str(f)) == small and resolve(f) == small  # a JSON file, as str or path
    g = tmp_path / "no_suffix"
    g.write_text(json.dumps({"num_hidden_layers": 3}))
    assert resolve(str(g)) == StudentArch(num_hidden_layers=3)  # an existing file without .json
    assert resolve(json.dumps(small.to_dict())) == small  # an inline JSON object
    assert resolve(small.to_dict()) == small  # a mapping of fields
    assert resolve(small) is small
    # NAME:key=value,...: ints, bools, strings; spaces and empty items ignored
    got = resolve("mobilebert:num_hidden_layers=4, use_bottleneck_attention=true,hidden_act=gelu,")
    assert got == reference_arch("mobilebert").replace(num_hidden_layers=4, use_bottleneck_attention=True,
                                                       hidden_act="gelu")


def test_resolve_override_of_a_bert_ties_its_widths_to_hidden_size() -> None:
    a = resolve("minilm-l6-h384:num_hidden_layers=2,hidden_size=128,num_attention_heads=2,intermediate_size=512")
    assert (a.num_hidden_layers, a.hidden_size, a.embedding_size, a.intra_bottleneck_size) == (2, 128, 128, 128)
    assert a.family == "bert" and a.vocab_size == reference_arch("minilm-l6-h384").vocab_size
    # a width given explicitly is kept (and here refused, as BertModel ties it)
    with pytest.raises(ArchError, match="embedding_size == hidden_size"):
        resolve("minilm-l6-h384:hidden_size=128,embedding_size=64,num_attention_heads=2")
    # a MobileBERT base does not tie them
    m = resolve("mobilebert:hidden_size=256")
    assert (m.hidden_size, m.embedding_size, m.intra_bottleneck_size) == (256, 128, 128)


def test_resolve_mobilebert_shaped_is_the_pipeline_baseline_but_not_a_reference() -> None:
    a = resolve("mobilebert-shaped")
    assert a == StudentArch(**MOBILEBERT_SHAPED_BASELINE)
    assert (a.num_hidden_layers, a.hidden_size, a.intra_bottleneck_size, a.num_feedforward_networks) == (6, 384, 96, 4)
    assert a.family == "mobilebert" and a.use_bottleneck and a.trigram_input
    assert "mobilebert-shaped" not in reference_names()  # `autodistill archs` and `table` list published models
    assert resolve("mobilebert-shaped:num_hidden_layers=3") == a.replace(num_hidden_layers=3)
    with pytest.raises(TypeError):
        MOBILEBERT_SHAPED_BASELINE["num_hidden_layers"] = 2  # type: ignore[index]


def test_resolve_vocab_size_replaces_the_archs() -> None:
    for spec in ("tinybert-4", "mobilebert-shaped", "tinybert-4:num_hidden_layers=2",
                 json.dumps({"num_hidden_layers": 2}), {"num_hidden_layers": 2}):
        assert resolve(spec, vocab_size=500).vocab_size == 500
    assert resolve("tinybert-4", vocab_size=None).vocab_size == 30522
    with pytest.raises(ArchError, match="vocab_size=0 is out of range"):
        resolve("tinybert-4", vocab_size=0)


@pytest.mark.parametrize("spec, match", [
    ("bert-huge", r"unknown reference architecture 'bert-huge'; valid choices: .*tinybert-6 \(or mobilebert-shaped"),
    ("", r"unknown reference architecture ''"),
    ("bert-huge:hidden_size=128", r"unknown reference architecture 'bert-huge'"),
    ("minilm-l6-h384:hidden_size", r"student 'minilm-l6-h384:hidden_size': override 'hidden_size' is not key=value"),
    ("tinybert-4:hiden_size=3", r"student 'tinybert-4:hiden_size=3': unknown StudentArch field\(s\) \['hiden_size'\]"),
    ("tinybert-4:hidden_size=abc", r"student 'tinybert-4:hidden_size=abc': hidden_size must be an integer, got 'abc'"),
    ("mobilebert:num_attention_heads=3", r"num_attention_heads=3 does not divide"),
    ("{not json", r"student '\{not json' is not valid JSON"),
    ('{"hiden_size": 3}', r"unknown StudentArch field\(s\) \['hiden_size'\]"),
    ("missing.json", r"arch file 'missing.json' does not exist"),
    ({"hiden_size": 3}, r"unknown StudentArch field\(s\) \['hiden_size'\]"),
    ({"num_hidden_layers": 0}, r"num_hidden_layers=0 is out of range"),
    (3, r"arch spec 3 must be a name, a JSON file or object"),
    (None, r"arch spec None must be"),
])
def test_resolve_names_a_bad_spec(spec, match: str) -> None:
    with pytest.raises(ArchError, match=match):
        resolve(spec)


def test_resolve_names_a_bad_arch_file(tmp_path) -> None:
    (tmp_path / "cut.json").write_text('{"num_hidden_layers": ')
    with pytest.raises(ArchError, match=r"arch file '.*cut.json' is not valid JSON"):
        resolve(str(tmp_path / "cut.json"))
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ArchError, match=r"arch file '.*list.json' must hold a JSON object of StudentArch fields"):
        resolve(str(tmp_path / "list.json"))
    (tmp_path / "bad.json").write_text('{"hiden_size": 3}')
    with pytest.raises(ArchError, match=r"arch file '.*bad.json': unknown StudentArch field\(s\) \['hiden_size'\]"):
        resolve(str(tmp_path / "bad.json"))
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(ArchError, match=r"arch file '.*dir.json' is not a file"):
        resolve(str(tmp_path / "dir.json"))
