"""Flax students: the `StudentArch` encoders and their Hugging Face weights.

Importing this package imports JAX and Flax (not torch).

>>> model = StudentModel(arch=arch, dtype=jnp.float32, mlm_head=True)
>>> params = init_params(model, jax.random.PRNGKey(0))
>>> out = model.apply({"params": params}, input_ids, attention_mask=mask, output_hidden_states=True)
"""
from __future__ import annotations

from autodistill.models.encoder import EncoderOutput, StudentModel, init_params
from autodistill.models.hf_weights import (
    SUPPORTED_MODEL_TYPES,
    arch_from_hf_config,
    hf_config_for,
    hf_names,
    load_hf_folder,
    params_from_hf,
    params_to_hf,
    save_hf_folder,
)

__all__ = [
    "EncoderOutput",
    "StudentModel",
    "SUPPORTED_MODEL_TYPES",
    "arch_from_hf_config",
    "hf_config_for",
    "hf_names",
    "init_params",
    "load_hf_folder",
    "params_from_hf",
    "params_to_hf",
    "save_hf_folder",
]
