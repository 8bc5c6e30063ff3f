"""Search spaces: TOML parsing and validation, presets, vectorized enumeration and constraints."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from autodistill.arch import FEATURE_NAMES, StudentArch
from autodistill.costmodel import CostModel
from autodistill.errors import ArchError, ConfigError, ProfileError, SearchError
from autodistill.hardware import load_profile
from autodistill.space import (
    CandidatePool,
    build_pool,
    list_spaces,
    load_space,
    memory_bytes_batch,
    num_parameters_batch,
    space_from_dict,
    valid_mask,
)

COL = {n: i for i, n in enumerate(FEATURE_NAMES)}


def small_space(**over) -> dict:
    d = {
        "name": "small",
        "base": "mobilebert",
        "fields": {
            "num_hidden_layers": {"min": 2, "max": 8, "step": 2},
            "hidden_size": {"choices": [128, 256, 512]},
            "intra_bottleneck_size": [64, 128],
            "num_attention_heads": [1, 2, 4],
        },
        "objective": {"profile": "tpu_v4i", "batch": 1, "seq": 128},
    }
    d.update(over)
    return d


@pytest.fixture(scope="module")
def minilm_pool() -> CandidatePool:
    return build_pool(load_space("minilm"))


# ------------------------------------------------------------------ presets
def test_presets_listed_and_loadable():
    names = list_spaces()
    assert {"mobilebert", "minilm"} <= set(names)
    mb = load_space("mobilebert")
    assert set(mb.field_names) == {"num_hidden_layers", "hidden_size", "intra_bottleneck_size",
                                   "num_attention_heads", "intermediate_size", "num_feedforward_networks"}
    assert mb.base == "mobilebert"
    assert load_space(mb.source).to_dict() == mb.to_dict()  # by path too


def test_mobilebert_preset_pool_is_large_and_fast():
    space = load_space("mobilebert")
    t0 = time.perf_counter()
    pool = build_pool(space)
    dt = time.perf_counter() - t0
    assert len(pool) >= 100_000
    assert not pool.sampled
    assert dt < 10.0  # typically ~0.2 s; generous for a loaded CI box
    # every constraint of the preset holds on the whole pool
    assert pool.num_parameters.max() <= space.constraints.max_parameters
    lc = space.constraints.latency[0]
    lat = CostModel(load_profile(lc.profile)).estimate_batch(pool.features, lc.batch, lc.seq)
    assert lat.max() <= lc.max_latency_s
    assert np.all(pool.features[:, COL["intra_bottleneck_size"]] <= pool.features[:, COL["hidden_size"]])


def test_minilm_preset_ties_embedding_to_hidden(minilm_pool):
    f = minilm_pool.features
    assert np.array_equal(f[:, COL["embedding_size"]], f[:, COL["hidden_size"]])
    assert np.all(f[:, COL["family"]] == 0)  # bert
    a = minilm_pool.arch(len(minilm_pool) // 2)
    assert a.family == "bert" and a.embedding_size == a.hidden_size


def test_importing_space_does_not_import_torch():
    code = ("import sys, autodistill.space, autodistill.search.store, autodistill.search.runner, "
            "autodistill.search.baselines, autodistill.cli.search; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------ pool maths
def test_vectorized_checks_match_studentarch():
    rng = np.random.default_rng(0)
    n = 400
    base = StudentArch().features()
    rows = np.repeat(base[None], n, axis=0)
    rows[:, COL["family"]] = rng.integers(0, 2, n)
    rows[:, COL["num_hidden_layers"]] = rng.integers(1, 13, n)
    rows[:, COL["hidden_size"]] = rng.choice([96, 128, 256, 384], n)
    rows[:, COL["embedding_size"]] = np.where(rng.random(n) < 0.5, rows[:, COL["hidden_size"]], 128)
    rows[:, COL["intra_bottleneck_size"]] = rng.choice([64, 96, 128], n)
    rows[:, COL["num_attention_heads"]] = rng.choice([1, 2, 3, 4, 5, 8, 12], n)
    rows[:, COL["intermediate_size"]] = rng.choice([128, 512, 1536], n)
    rows[:, COL["num_feedforward_networks"]] = rng.integers(1, 5, n)
    for c in ("use_bottleneck", "use_bottleneck_attention", "key_query_shared_bottleneck", "trigram_input",
              "normalization_type"):
        rows[:, COL[c]] = rng.integers(0, 2, n)
    mask = valid_mask(rows)
    base_kw = StudentArch().to_dict()
    params = num_parameters_batch(rows, base_kw)
    n_valid = 0
    for i in range(n):
        try:
            a = StudentArch.from_features(rows[i])
        except ArchError:
            assert not mask[i], rows[i]
            continue
        n_valid += 1
        assert mask[i], a
        assert int(params[i]) == a.num_parameters()
    assert 20 < n_valid < n  # both branches exercised


def test_memory_formula_counts_weights_and_activations():
    a = StudentArch()
    f = a.features()[None]
    p = np.array([float(a.num_parameters())])
    m1 = memory_bytes_batch(f, p, batch=1, seq=128, dtype_bytes=2)[0]
    m8 = memory_bytes_batch(f, p, batch=8, seq=128, dtype_bytes=2)[0]
    assert m1 > 2 * a.num_parameters()
    assert m8 > m1


def test_pool_round_trips_and_encoding(minilm_pool):
    pool = minilm_pool
    for i in (0, 7, len(pool) - 1):
        a = pool.arch(i)
        assert np.array_equal(a.features(), pool.features[i])
        assert pool.index_of(a) == i
        assert a.num_parameters() == int(pool.num_parameters[i])
    assert pool.index_of(StudentArch()) is None  # a MobileBERT is not in the MiniLM space
    assert np.all(np.diff(pool.codes) > 0)
    E = pool.encoded
    assert E.shape == (len(pool), len(pool.encoding_names)) and pool.encoding_names[-1] == "log_latency_s"
    assert E.min() >= 0 and E.max() <= 1
    lo, hi = pool.log_latency_bounds
    assert np.allclose(lo + E[:, -1] * (hi - lo), np.log(pool.latency_s))


def test_shape_features_in_the_encoding():
    space = load_space("mobilebert")
    pool = build_pool(space, max_candidates=3000)
    names = pool.encoding_names
    assert {"log2_head_size", "log2_ffn_width", "log2_bottleneck_ratio"} <= set(names)
    hs = pool.features[:, COL["intra_bottleneck_size"]] / pool.features[:, COL["num_attention_heads"]]
    j = names.index("log2_head_size")
    assert np.corrcoef(pool.encoded[:, j], np.log2(hs))[0, 1] > 0.999999
    plain = build_pool(space, max_candidates=3000, shape_features=False)
    assert not any(n.startswith("log2_") for n in plain.encoding_names)
    # a copy of a searched field is not added twice: with heads fixed, head size is just the width
    d = {"name": "w", "base": "mobilebert", "fields": {"intra_bottleneck_size": [64, 128, 256]},
         "objective": {"profile": "tpu_v4i"}}
    assert "log2_head_size" not in build_pool(space_from_dict(d)).encoding_names


def test_sampling_when_the_product_is_large():
    space = load_space("mobilebert")
    p1 = build_pool(space, max_candidates=5000, seed=3)
    p2 = build_pool(space, max_candidates=5000, seed=3)
    p3 = build_pool(space, max_candidates=5000, seed=4)
    assert p1.sampled and p1.stats["sampled"] == 5000
    assert len(p1) <= 5000 and np.array_equal(p1.codes, p2.codes)
    assert not np.array_equal(p1.codes, p3.codes)


# ------------------------------------------------------------------ constraints
def test_relations_and_budgets_filter():
    d = small_space()
    d["constraints"] = {"relations": ["intra_bottleneck_size <= hidden_size", "head_size >= 32"],
                        "max_parameters": 12_000_000,
                        "latency": [{"profile": "tpu_v4i", "batch": 1, "seq": 128, "max_latency_s": 1.2e-4}],
                        "memory": [{"max_bytes": 1e8, "batch": 1, "seq": 128, "dtype_bytes": 2}]}
    pool = build_pool(space_from_dict(d))
    f = pool.features
    t = f[:, COL["intra_bottleneck_size"]]
    assert np.all(t <= f[:, COL["hidden_size"]])
    assert np.all(t / f[:, COL["num_attention_heads"]] >= 32)
    assert pool.num_parameters.max() <= 12_000_000
    lat = CostModel(load_profile("tpu_v4i")).estimate_batch(f, 1, 128)
    assert lat.max() <= 1.2e-4
    assert memory_bytes_batch(f, pool.num_parameters, 1, 128, 2).max() <= 1e8
    counts = list(pool.stats.values())
    assert counts[1:] == sorted(counts[1:], reverse=True)  # each filter only removes


def test_memory_budget_defaults_to_profile_hbm():
    d = small_space()
    d["constraints"] = {"memory": [{"profile": "tpu_v4i", "batch": 1, "seq": 128}]}
    pool = build_pool(space_from_dict(d))
    assert any("memory" in k for k in pool.stats)


def test_infeasible_space_names_the_filter():
    d = small_space()
    d["constraints"] = {"max_parameters": 10}
    with pytest.raises(SearchError, match="num_parameters <= 10"):
        build_pool(space_from_dict(d))


def test_ties_with_scale():
    d = small_space()
    d["tied"] = {"intermediate_size": {"field": "hidden_size", "scale": 2}}
    pool = build_pool(space_from_dict(d))
    f = pool.features
    assert np.array_equal(f[:, COL["intermediate_size"]], 2 * f[:, COL["hidden_size"]])


# ------------------------------------------------------------------ invalid spaces
@pytest.mark.parametrize("mutate, match", [
    (lambda d: d["fields"].update(hiden_size=[1, 2]), "valid choices:.*hidden_size"),
    (lambda d: d.update(bogus=1), r"unknown key\(s\) \['bogus'\]"),
    (lambda d: d["fields"].update(num_hidden_layers={"min": 8, "max": 2}), "min=8 > max=2"),
    (lambda d: d["fields"].update(num_hidden_layers={"min": 1, "max": 4, "step": 0}), "step=0"),
    (lambda d: d["fields"].update(hidden_act=["relu", "swish"]), "valid choices:.*gelu"),
    (lambda d: d["fields"].update(hidden_act={"min": 1, "max": 2}), "ranges only apply to integer fields"),
    (lambda d: d["fields"].update(hidden_size=[128, 128]), "duplicate"),
    (lambda d: d["fields"].update(hidden_size=[]), "at least one value"),
    (lambda d: d["fields"].update(hidden_size=[0]), "out of range"),
    (lambda d: d.update(fixed={"hidden_size": 128}), "both searched"),
    (lambda d: d.update(fixed={"colour": "red"}), "StudentArch field"),
    (lambda d: d.update(tied={"embedding_size": "nope"}), "valid choices"),
    (lambda d: d.update(tied={"hidden_size": "intermediate_size"}), "tied and also searched"),
    (lambda d: d.update(tied={"embedding_size": {"field": "hidden_size", "scale": 0.3}}), "non-integer"),
    (lambda d: d.update(base="gpt-5"), "base architecture"),
    (lambda d: d.update(constraints={"relations": ["hidden_size <=> 3"]}), "form 'a OP b'"),
    (lambda d: d.update(constraints={"relations": ["width <= 3"]}), "valid choices"),
    (lambda d: d.update(constraints={"max_parameters": -1}), "positive"),
    (lambda d: d.update(constraints={"latency": [{"profile": "tpu_v4i", "max_latency_s": 0}]}), "positive"),
    (lambda d: d.update(constraints={"latency": [{"profile": "tpu_v4i"}]}), "max_latency_s"),
    (lambda d: d.update(constraints={"latency": [{"profile": "tpu_v4i", "max_latency_s": 1, "bs": 2}]}),
     r"unknown key\(s\) \['bs'\]"),
    (lambda d: d.update(constraints={"memory": [{"batch": 1}]}), "max_bytes"),
    (lambda d: d.update(objective={"batch": 0}), "batch=0"),
    (lambda d: d.update(fields={}), r"\[fields\]"),
])
def test_invalid_spaces_get_clear_errors(mutate, match):
    d = small_space()
    mutate(d)
    with pytest.raises(ConfigError, match=match):
        space_from_dict(d)


def test_unknown_profile_fails_at_load_with_choices():
    d = small_space()
    d["constraints"] = {"latency": [{"profile": "tpu_v9", "max_latency_s": 1e-3}]}
    with pytest.raises(ProfileError, match="tpu_v9.*valid choices:.*tpu_v4i"):
        space_from_dict(d)


def test_unknown_space_name_lists_presets(tmp_path: Path):
    with pytest.raises(ConfigError, match="valid choices:.*minilm.*mobilebert"):
        load_space("resnet")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_space(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_space(tmp_path / "missing.toml")


def test_toml_file_and_arch_of(tmp_path: Path):
    p = tmp_path / "s.toml"
    p.write_text("""
name = "tiny"
base = "mobilebert"
[fields]
num_hidden_layers = [2, 4]
hidden_size = { min = 256, max = 512, step = 256 }
[tied]
intermediate_size = { field = "hidden_size", scale = 2 }
[constraints]
max_parameters = 40_000_000
""")
    s = load_space(p)
    assert s.size == 4
    a = s.arch_of({"num_hidden_layers": 4, "hidden_size": 512})
    assert a.intermediate_size == 1024 and a.num_hidden_layers == 4
    with pytest.raises(ConfigError, match="missing"):
        s.arch_of({"num_hidden_layers": 4})
    pool = build_pool(s, "tpu_v4i")
    assert len(pool) == 4 and pool.profile == "tpu_v4i"
    assert build_pool(s).latency_s is None  # no objective profile anywhere
