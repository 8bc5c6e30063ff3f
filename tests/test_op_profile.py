"""benchmarks/op_profile.py: its thunk-to-op mapping on a real compiled student (names change with JAX)."""
import importlib.util
import json
import os
from pathlib import Path

import pytest

from autodistill.arch import StudentArch

pytest.importorskip("jax")
pytest.importorskip("flax")
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "op_profile.py"


def _module():
    spec = importlib.util.spec_from_file_location("op_profile", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_model_op_names() -> None:
    m = _module().model_op
    pre = "jit(forward)/StudentModel/"
    assert m(pre + "embeddings/embedding_transformation/dot_general", "ynn_fusion.3") == "embedding_transformation"
    assert m(pre + "encoder/layer_3/ffn_1/intermediate/dense/dot_general", "ynn_fusion") == "ffn_stacked_intermediate"
    assert m(pre + "encoder/layer_0/output/bottleneck/dense/add", "add_fusion") == "output_bottleneck"
    assert m(pre + "encoder/layer_0/output/dense/dot_general", "ynn_fusion.9") == "output"
    assert m(pre + "encoder/layer_2/attention/self/exp", "subtract_exponential_fusion") == "softmax"
    assert m(pre + "encoder/layer_2/attention/self/dot_general", "ynn_fusion.4") == "attention"
    assert m("", "copy.1") == "other"


def test_a_traced_student_maps_its_time_to_the_models_ops(tmp_path, capsys) -> None:
    arch = StudentArch(family="mobilebert", num_hidden_layers=1, hidden_size=64, embedding_size=32,
                       num_attention_heads=2, intermediate_size=64, num_feedforward_networks=2, use_bottleneck=True,
                       intra_bottleneck_size=32, vocab_size=100)
    before = os.sched_getaffinity(0)
    f = tmp_path / "a.json"
    f.write_text(json.dumps(arch.to_dict()))
    assert _module().main(["--arch", str(f), "--shape", "2x16", "--calls", "5", "--profile", "cpu_local"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    got = out["measured_us"]
    for op in ("embedding_transformation", "bottleneck_input", "query", "value", "attention", "softmax",
               "ffn_stacked_intermediate", "intermediate", "output_bottleneck"):
        assert got.get(op, 0) > 0, op
    assert got.get("other", 0) < 0.5 * sum(got.values())  # most of the time lands on a model op
    assert out["wall_us"] > 0 and out["estimate_us"] > 0
    assert os.sched_getaffinity(0) == before  # the pin to one core is undone
