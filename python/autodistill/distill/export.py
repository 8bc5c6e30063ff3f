"""Export a student to a Hugging Face folder and check that ``transformers`` reproduces it.

`export_student` writes a ``BertForMaskedLM`` / ``MobileBertForMaskedLM`` folder
(``config.json``, ``model.safetensors``; ``vocab.txt`` and
``tokenizer_config.json`` when a vocab is given) through
`autodistill.models.save_hf_folder`, then (``verify=True``) `verify_export`
loads it with ``transformers`` (PyTorch, offline) and compares its logits with
the Flax model's on random padded inputs: the largest absolute difference
must be at most ``atol`` (1e-4).
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from autodistill.arch import StudentArch
from autodistill.errors import DistillError

logger = logging.getLogger(__name__)

__all__ = ["export_student", "verify_export"]


def export_student(arch: StudentArch, params: Mapping[str, Any], out_dir: str | os.PathLike, *,
                   vocab_path: str | os.PathLike | None = None, lowercase: bool | None = None, verify: bool = True,
                   atol: float = 1e-4) -> Path:
    """Write ``params`` of ``arch`` as a ``transformers`` folder; returns the folder.

    With ``verify`` the export is loaded back with ``transformers`` and its
    logits checked against Flax to ``atol`` (`DistillError` otherwise).
    """
    from autodistill.models import save_hf_folder

    folder = save_hf_folder(arch, params, out_dir, vocab_path=vocab_path)
    if vocab_path is not None:
        if lowercase is None:
            from autodistill.distill.data import WordPieceTokenizer

            lowercase = WordPieceTokenizer(vocab_path).lowercase
        tok_cls = "BertTokenizer" if arch.family == "bert" else "MobileBertTokenizer"
        (folder / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": tok_cls, "do_lower_case": bool(lowercase),
            "model_max_length": arch.max_position_embeddings, "unk_token": "[UNK]", "sep_token": "[SEP]",
            "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}, indent=2) + "\n")
    if verify:
        diff = verify_export(folder, arch, params, atol=atol)
        logger.info("exported %s to %s (transformers max |logit diff| %.2e)", arch.short_name(), folder, diff)
    return folder


def verify_export(folder: str | os.PathLike, arch: StudentArch, params: Mapping[str, Any], *, atol: float = 1e-4,
                  batch: int = 2, seq: int = 24, seed: int = 0) -> float:
    """Largest |transformers - Flax| over the logits (or last hidden states without a head); raises past ``atol``.

    Inputs: random token ids, random segment ids and a padded second row.
    """
    try:
        import torch
        import transformers
    except ImportError as e:
        raise DistillError(f"verifying an export needs torch and transformers: {e}") from None
    import jax.numpy as jnp

    from autodistill.models import StudentModel

    head = "cls" in params
    from autodistill.distill.stablehlo import fixed_inputs

    ids, types, mask = (x.astype(np.int64) for x in fixed_inputs(arch, batch, seq, seed))
    auto = transformers.AutoModelForMaskedLM if head else transformers.AutoModel
    try:
        model = auto.from_pretrained(str(folder), local_files_only=True).eval()
    except Exception as e:  # noqa: BLE001 - transformers raises many types; report them as one
        raise DistillError(f"transformers cannot load the export {folder}: {e}") from e
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(types),
                    attention_mask=torch.from_numpy(mask))
    ref = (out.logits if head else out.last_hidden_state).float().numpy()
    flax_out = StudentModel(arch=arch, dtype=jnp.float32, mlm_head=head).apply(
        {"params": params}, jnp.asarray(ids, jnp.int32), token_type_ids=jnp.asarray(types, jnp.int32),
        attention_mask=jnp.asarray(mask, jnp.int32))
    got = np.asarray(flax_out.logits if head else flax_out.last_hidden_state)
    if got.shape != ref.shape:
        raise DistillError(f"export check: transformers output {ref.shape} vs Flax {got.shape}")
    keep = mask.astype(bool)
    diff = float(np.max(np.abs(got[keep] - ref[keep])))
    if not diff <= atol:
        raise DistillError(f"export check failed: transformers and Flax {'logits' if head else 'hidden states'} "
                           f"differ by {diff:.3g} > {atol:g} for {arch.short_name()} in {folder}")
    return diff
