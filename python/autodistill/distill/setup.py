"""`prepare_distillation`: the teacher (with an MLM head) and the data every distillation command starts from.

One call loads a teacher folder (the default MiniLM teacher for None), reads the corpus (the embedded
one for None) and an optional held-out corpus, tokenizes and packs them with the teacher's vocab, and
fits the teacher an MLM head on the frozen teacher when it has none (cached under ``cache_dir``, so a
second call reads it). NumPy only at import; JAX loads when the head is fitted.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from autodistill.distill.data import DataConfig, DistillData, build_data, default_corpus, read_corpus
from autodistill.distill.teacher import HeadFitConfig, Teacher, default_cache_dir, ensure_mlm_head, load_teacher

logger = logging.getLogger(__name__)

__all__ = ["DistillSetup", "prepare_distillation"]


@dataclass(frozen=True)
class DistillSetup:
    """What `prepare_distillation` returns: the teacher with an MLM head, its data, and the cache folder
    its fitted head lives in (where teacher caches go too)."""

    teacher: Teacher
    data: DistillData
    cache_dir: Path


def prepare_distillation(teacher: str | os.PathLike[str] | None = None, *,
                         corpus: Sequence[str | os.PathLike[str]] | None = None,
                         heldout: Sequence[str | os.PathLike[str]] | None = None,
                         data: DataConfig = DataConfig(), head: HeadFitConfig = HeadFitConfig(),
                         cache_dir: str | os.PathLike[str] | None = None) -> DistillSetup:
    """Load ``teacher``, build its data and make sure it has an MLM head.

    Args:
        teacher: a transformers BERT/MobileBERT folder; None: the default teacher (`load_teacher`).
        corpus: training text files or folders; None (or empty): the embedded corpus (`default_corpus`).
        heldout: held-out text files or folders; None (or empty): a fixed split of the corpus.
        data: how the text becomes sequences (`DataConfig`).
        head: the MLM-head fit for a teacher without one (`HeadFitConfig`).
        cache_dir: fitted heads (and teacher caches); None: `default_cache_dir`.

    A missing teacher, an unreadable or empty corpus, or a bad setting raises `DistillError` naming it.
    """
    bare = load_teacher(teacher)
    docs = read_corpus(corpus) if corpus else default_corpus()
    held = read_corpus(heldout) if heldout else None
    built = build_data(bare.tokenizer(), docs, data, heldout=held,
                       description="corpus" if corpus else "embedded corpus")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    return DistillSetup(ensure_mlm_head(bare, built, head, cache_dir=cache), built, cache)
