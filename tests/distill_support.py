"""Shared tiny fixtures of the distillation tests (no tests here).

A tiny random BERT teacher (2 layers x 32 wide, vocab of the most frequent
words of the embedded corpus plus characters), a small `DistillData` from the
embedded corpus, and tiny students. Everything runs in seconds.
"""
from __future__ import annotations

import collections
import functools
import re
from pathlib import Path

from autodistill.arch import StudentArch

SEQ_LEN = 32


@functools.lru_cache(maxsize=1)
def tiny_docs():
    from autodistill.distill.data import default_corpus

    return default_corpus(include_docstrings=False)[:24]


@functools.lru_cache(maxsize=1)
def tiny_words() -> tuple[str, ...]:
    counts = collections.Counter(w for d in tiny_docs() for w in re.findall(r"[a-z]+", d.text.lower()))
    return tuple(sorted(w for w, _ in counts.most_common(300)))


def make_teacher_folder(path: Path, *, mlm_head: bool = True, family: str = "bert", seed: int = 0) -> Path:
    from autodistill.distill.teacher import write_random_teacher

    return write_random_teacher(path, tiny_words(), layers=2, hidden=32, heads=2, intermediate=64, family=family,
                                mlm_head=mlm_head, max_position_embeddings=64, seed=seed)


def make_data(teacher, *, nsp: bool = False, seq_len: int = SEQ_LEN):
    from autodistill.distill.data import DataConfig, build_data

    return build_data(teacher.tokenizer(), tiny_docs(), DataConfig(seq_len=seq_len, nsp=nsp, max_heldout_sequences=32,
                                                                   heldout_fraction=0.1))


def tiny_student(vocab_size: int, layers: int = 2, hidden: int = 16, heads: int = 2,
                 family: str = "bert") -> StudentArch:
    if family == "bert":
        return StudentArch(family="bert", num_hidden_layers=layers, hidden_size=hidden, embedding_size=hidden,
                           num_attention_heads=heads, intermediate_size=2 * hidden, num_feedforward_networks=1,
                           use_bottleneck=False, intra_bottleneck_size=hidden, key_query_shared_bottleneck=False,
                           trigram_input=False, normalization_type="layer_norm", hidden_act="gelu",
                           vocab_size=vocab_size, max_position_embeddings=64)
    return StudentArch(num_hidden_layers=layers, hidden_size=hidden, embedding_size=8, num_attention_heads=heads,
                       intermediate_size=16, num_feedforward_networks=2, intra_bottleneck_size=8,
                       vocab_size=vocab_size, max_position_embeddings=64)


def flash_config(**kw):
    from autodistill.distill.flash import FlashConfig

    base = dict(kt_steps=6, pd_steps=4, batch_size=4, warmup_steps=1, eval_batch_size=16, fast_compile=True)
    base.update(kw)
    return FlashConfig(**base)
