"""Tokenizer, corpora, packing, masking, NSP pairs, held-out split and batch determinism."""
from __future__ import annotations

import numpy as np
import pytest

from autodistill.distill.data import (
    SPECIAL_TOKENS,
    DataConfig,
    Document,
    WordPieceTokenizer,
    build_data,
    default_corpus,
    mask_sequences,
    read_corpus,
)
from autodistill.errors import DistillError

from distill_support import make_teacher_folder, tiny_docs


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    folder = make_teacher_folder(tmp_path_factory.mktemp("teacher"))
    return WordPieceTokenizer(folder / "vocab.txt")


@pytest.fixture(scope="module")
def data(tok):
    return build_data(tok, tiny_docs(), DataConfig(seq_len=32, max_heldout_sequences=32, heldout_fraction=0.1))


def test_tokenizer_matches_bert_rules(tok) -> None:
    assert tok.lowercase
    ids = tok.encode(["The Function, returns None!"])[0]
    toks = tok.tokens(ids)
    assert toks[:3] == ["the", "function", ","] and toks[-1] == "!"
    assert tok.mask_id == 4 and tok.pad_id == 0
    assert set(tok.special_ids.tolist()) >= {0, 1, 2, 3, 4}
    assert not np.isin(tok.replacement_ids, tok.special_ids).any()


def test_tokenizer_agrees_with_transformers(tok) -> None:
    transformers = pytest.importorskip("transformers")
    ref = transformers.BertTokenizer(str(tok.path), do_lower_case=True)
    text = "Hello, world: the quick brown fox jumps over 13 lazy dogs; co-operate isn't hard."
    assert tok.encode([text])[0].tolist() == ref.encode(text, add_special_tokens=False)


def test_vocab_errors(tmp_path) -> None:
    with pytest.raises(DistillError, match="does not exist"):
        WordPieceTokenizer(tmp_path / "nope.txt")
    bad = tmp_path / "vocab.txt"
    bad.write_text("a\nb\nc\n")
    with pytest.raises(DistillError, match="special token"):
        WordPieceTokenizer(bad)
    good = tmp_path / "v2.txt"
    good.write_text("\n".join(list(SPECIAL_TOKENS) + ["a", "b"]) + "\n")
    with pytest.raises(DistillError, match="vocab_size=100"):
        WordPieceTokenizer(good, expected_vocab_size=100)
    assert WordPieceTokenizer(good, expected_vocab_size=7).vocab_size == 7


def test_read_corpus_files_and_folders(tmp_path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("One two.\n\nThree four.")
    (tmp_path / "d" / "README").write_text("metadata")
    (tmp_path / "d" / "bin.dat").write_bytes(b"\0\1\2")
    (tmp_path / "b.txt").write_text("Five six.")
    docs = read_corpus([tmp_path / "d", tmp_path / "b.txt"])
    assert [d.name.rsplit("/", 1)[-1] for d in docs] == ["a.txt", "b.txt"]
    with pytest.raises(DistillError, match="does not exist"):
        read_corpus([tmp_path / "missing"])
    with pytest.raises(DistillError, match="binary"):
        read_corpus([tmp_path / "d" / "bin.dat"])


def test_default_corpus_is_embedded() -> None:
    docs = default_corpus()
    assert len(docs) > 100 and sum(len(d.text) for d in docs) > 400_000
    assert any(d.name == "pydoc:assignment" for d in docs) and any(d.name.startswith("doc:") for d in docs)
    assert [d.name for d in docs] == [d.name for d in default_corpus()]


def test_packing_shapes_and_specials(data, tok) -> None:
    tr = data.train
    assert tr.ids.shape[1] == 32 and len(tr) > 100 and len(data.heldout) > 0
    assert (tr.ids[:, 0] == tok.cls_id).all()
    assert (tr.ids[np.arange(len(tr)), tr.lengths - 1] == tok.sep_id).all()
    pad_region = np.arange(32)[None, :] >= tr.lengths[:, None]
    assert (tr.ids[pad_region] == tok.pad_id).all()
    assert (tr.lengths[:-1] == 32).mean() > 0.9  # packed: almost every sequence is full


def test_heldout_split_is_fixed_and_disjoint(tok, data) -> None:
    again = build_data(tok, tiny_docs(), data.config)
    assert again.fingerprint == data.fingerprint
    held = {r.tobytes() for r in data.heldout.ids}
    assert not held & {r.tobytes() for r in data.train.ids}


def test_masking_80_10_10(tok) -> None:
    rng = np.random.default_rng(0)
    ids = rng.choice(tok.replacement_ids, size=(400, 64)).astype(np.int32)
    ids[:, 0], ids[:, -1] = tok.cls_id, tok.sep_id
    lengths = np.full(400, 64, np.int32)
    inp, pos, lab, w = mask_sequences(ids, lengths, rng, tok, 0.15, 12)
    n = w.sum()
    assert abs(n / (400 * 62) - 0.15) < 0.02
    chosen = inp[np.arange(400)[:, None], pos][w > 0]
    orig = lab[w > 0]
    assert abs((chosen == tok.mask_id).mean() - 0.8) < 0.03
    assert abs((chosen == orig).mean() - 0.1) < 0.03
    assert (pos[w > 0] > 0).all() and (pos[w > 0] < 63).all()  # never [CLS]/[SEP]
    unmasked = np.ones_like(ids, bool)
    unmasked[np.arange(400)[:, None], pos] = False
    assert (inp[unmasked] == ids[unmasked]).all()


def test_batches_are_deterministic_and_seeded(data) -> None:
    a, b = data.train_batch(5, 8, seed=3), data.train_batch(5, 8, seed=3)
    for k, v in a.arrays().items():
        np.testing.assert_array_equal(v, b.arrays()[k])
    c = data.train_batch(5, 8, seed=4)
    assert not np.array_equal(a.input_ids, c.input_ids)
    n = len(data.train)
    # one epoch visits every sequence once
    seen = np.concatenate([data.train_indices(i, 8, 0) for i in range(n // 8)])
    assert len(set(seen.tolist())) == len(seen)
    h1, h2 = data.heldout_batches(16), data.heldout_batches(16)
    assert h1 is h2 and all(b.input_ids.shape == (16, 32) for b in h1)
    assert sum(float(b.example_weights.sum()) for b in h1) == len(data.heldout)


def test_nsp_pairs(tok) -> None:
    d = build_data(tok, tiny_docs(), DataConfig(seq_len=32, nsp=True, max_heldout_sequences=32, heldout_fraction=0.1))
    assert d.nsp and 0.3 < d.train.nsp_labels.mean() < 0.7
    b = d.train_batch(0, 8)
    assert b.nsp_labels.shape == (8,)
    for r in range(8):
        row, tt = d.train.ids[d.train_indices(0, 8, 0)[r]], b.token_type_ids[r]
        seps = np.flatnonzero(row == tok.sep_id)
        assert len(seps) >= 2 and (tt[: seps[0] + 1] == 0).all() and (tt[seps[0] + 1: seps[1] + 1] == 1).all()


def test_separate_heldout_corpus(tok) -> None:
    docs = tiny_docs()
    d = build_data(tok, docs[:20], DataConfig(seq_len=32), heldout=docs[20:])
    assert len(d.heldout) > 0
    with pytest.raises(DistillError):
        build_data(tok, [], DataConfig())
    with pytest.raises(DistillError, match="seq_len"):
        DataConfig(seq_len=4)
    assert Document("x", "y").name == "x"


def test_baselines(data) -> None:
    assert data.chance_accuracy() == 1.0 / data.tokenizer.vocab_size
    assert 0.0 < data.unigram_accuracy() < 0.2


@pytest.mark.shared_data
def test_shared_corpora_tokenize(shared_data, tok) -> None:
    docs = read_corpus([shared_data / "nltk_inaugural"])
    assert len(docs) > 50
    d = build_data(tok, docs[:10], DataConfig(seq_len=64), heldout=read_corpus([shared_data / "tinyshakespeare"]))
    assert len(d.train) > 50 and len(d.heldout) > 50
