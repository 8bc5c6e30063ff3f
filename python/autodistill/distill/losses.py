"""Distillation losses and the forward helpers they use (pure JAX functions, jit-friendly).

Shapes: ``B`` batch, ``S`` sequence, ``P`` predictions per sequence (masked
positions), ``V`` vocab, ``k`` teacher top-k, ``H`` hidden width, ``A`` heads.

Losses (all scalars, averaged over the real tokens / predictions):

* `feature_mse`: MobileBERT's feature-map transfer, mean squared error between
  the (projected) student block output and the mapped teacher block output.
* `attention_kl`: MobileBERT's attention transfer, KL(teacher || student) of the
  attention distributions per query row, per head when head counts agree and
  of the head-averaged distributions when they differ.
* `mlm_loss`: cross-entropy of the student's MLM logits at masked positions.
* `kd_loss`: cross-entropy against the teacher's distribution at the masked
  positions, given as the teacher's top-k logits (renormalized over the top-k;
  exact when ``k == V``), with temperature ``T`` and the usual ``T**2`` factor.
* `nsp_loss`: next-sentence cross-entropy.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from autodistill.arch import StudentArch

__all__ = [
    "attention_bias", "dense_2d", "gather_positions", "encode", "encode_stage", "mlm_logits", "feature_mse",
    "attention_kl", "mlm_loss", "kd_loss", "mlm_and_kd_loss", "nsp_loss", "masked_mean",
]

_LOG_FLOOR = 1e-12


# ============================================================================ forward helpers
def _dense_as_2d(next_fun, args, kwargs, context):
    """Flax method interceptor: ``nn.Dense`` on ``(..., in)`` inputs runs as one ``(N, in)`` matmul.

    Same numbers; XLA's CPU backend compiles the backward of a 2-D matmul into
    library calls, while the 3-D ``dot_general`` backward gets transposed copies
    and a slower kernel.
    """
    import flax.linen as nn

    if (context.method_name == "__call__" and isinstance(context.module, nn.Dense) and args
            and getattr(args[0], "ndim", 0) > 2):
        x = args[0]
        y = next_fun(x.reshape(-1, x.shape[-1]), *args[1:], **kwargs)
        return y.reshape(x.shape[:-1] + y.shape[-1:])
    return next_fun(*args, **kwargs)


def dense_2d():
    """Context manager: inside it, `StudentModel` dense layers run as 2-D matmuls (see `_dense_as_2d`)."""
    import flax.linen as nn

    return nn.intercept_methods(_dense_as_2d)


def attention_bias(attention_mask: jax.Array) -> jax.Array:
    """``(B, S)`` 1/0 mask -> ``(B, 1, 1, S)`` additive bias (0 or ``finfo(float32).min``), as `StudentModel`."""
    keep = attention_mask.astype(bool)[:, None, None, :]
    return jnp.where(keep, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)


def gather_positions(h: jax.Array, positions: jax.Array) -> jax.Array:
    """``h`` ``(B, S, H)`` at ``positions`` ``(B, P)`` -> ``(B, P, H)``."""
    return jnp.take_along_axis(h, positions[..., None].astype(jnp.int32), axis=1)


def encode(arch: StudentArch, params: Mapping[str, Any], input_ids: jax.Array, token_type_ids: jax.Array,
           attention_mask: jax.Array, *, dtype: Any = jnp.float32, attentions: bool = True):
    """Run the encoder of ``arch`` (no MLM head): an `EncoderOutput` with hidden states and attentions.

    ``params`` may carry a ``'cls'`` subtree; it is ignored here (see `mlm_logits`).
    """
    from autodistill.models import StudentModel

    model = StudentModel(arch=arch, dtype=dtype, mlm_head=False)
    with dense_2d():
        return model.apply({"params": params}, input_ids, token_type_ids=token_type_ids,
                           attention_mask=attention_mask, output_hidden_states=True, output_attentions=attentions)


def encode_stage(arch: StudentArch, params: Mapping[str, Any], input_ids: jax.Array, token_type_ids: jax.Array,
                 attention_mask: jax.Array, stage: jax.Array | int, *, freeze_lower: bool = True,
                 dtype: Any = jnp.float32) -> tuple[jax.Array, jax.Array]:
    """Encoder output of block ``stage`` and its attention probabilities, for layer-wise transfer.

    ``stage`` is a Python int (static: only blocks ``0..stage`` are traced, one
    compilation per stage, the fastest step) or a traced int32 (one compilation
    for every stage). Blocks above ``stage`` are skipped; with
    ``freeze_lower`` the blocks below it (and the embeddings unless ``stage == 0``)
    run without gradients. Traced, each block is a ``lax.switch``, so at run time only
    the taken branch executes, forward and backward: a step of stage ``l`` costs
    ``l + 1`` block forwards and the backward of the trainable blocks, not the
    whole model. Returns ``(h (B, S, H), probs (B, A, S, S))``.
    """
    with dense_2d():
        return _encode_stage(arch, params, input_ids, token_type_ids, attention_mask, stage, freeze_lower, dtype)


def _encode_stage(arch, params, input_ids, token_type_ids, attention_mask, stage, freeze_lower, dtype):
    from autodistill.models.encoder import Embeddings, Layer

    b, s = input_ids.shape
    pos = jnp.arange(s, dtype=jnp.int32)[None, :]
    h = Embeddings(arch, dtype).apply({"params": params["embeddings"]}, input_ids, token_type_ids, pos)
    bias = attention_bias(attention_mask)
    layer = Layer(arch, dtype)
    if isinstance(stage, int):  # static stage: only blocks 0..stage are traced, no branches
        if not 0 <= stage < arch.num_hidden_layers:
            raise ValueError(f"stage={stage} outside 0..{arch.num_hidden_layers - 1}")
        if freeze_lower and stage > 0:
            h = jax.lax.stop_gradient(h)
        for i in range(stage):
            p_i = params["encoder"][f"layer_{i}"]
            if freeze_lower:
                h, _ = layer.apply({"params": jax.lax.stop_gradient(p_i)}, h, bias)
                h = jax.lax.stop_gradient(h)
            else:
                h, _ = layer.apply({"params": p_i}, h, bias)
        h, probs = layer.apply({"params": params["encoder"][f"layer_{stage}"]}, h, bias)
        return h, probs.astype(dtype)
    if freeze_lower:
        h = jax.lax.cond(stage == 0, lambda x: x, jax.lax.stop_gradient, h)
    zeros = jnp.zeros((b, arch.num_attention_heads, s, s), dtype)
    att = zeros
    for i in range(arch.num_hidden_layers):
        p_i = params["encoder"][f"layer_{i}"]

        def frozen(x, p_i=p_i):
            out, _ = layer.apply({"params": jax.lax.stop_gradient(p_i)}, jax.lax.stop_gradient(x), bias)
            return jax.lax.stop_gradient(out), zeros

        def trained(x, p_i=p_i, i=i):
            if freeze_lower and i > 0:
                # everything below a trained block i > 0 is frozen: no gradient w.r.t. its input
                x = jax.lax.stop_gradient(x)
            out, probs = layer.apply({"params": p_i}, x, bias)
            return out, probs.astype(dtype)

        def below(x, p_i=p_i):  # trainable, but not the block whose attention is transferred
            out, _ = layer.apply({"params": p_i}, x, bias)
            return out, zeros

        def skipped(x):
            return x, zeros

        idx = jnp.where(i == stage, 1, jnp.where(i > stage, 2, 0 if freeze_lower else 3))
        h, probs = jax.lax.switch(idx, (frozen, trained, skipped, below), h)
        att = att + probs
    return h, att


def mlm_logits(arch: StudentArch, params: Mapping[str, Any], h: jax.Array, positions: jax.Array, *,
               dtype: Any = jnp.float32) -> jax.Array:
    """MLM logits at the masked positions only: ``h`` ``(B, S, H)``, ``positions`` ``(B, P)`` -> ``(B, P, V)``."""
    from autodistill.models.encoder import OnlyMLMHead

    hp = gather_positions(h, positions)
    b, p = positions.shape
    emb = params["embeddings"]["word_embeddings"]["embedding"]
    logits = OnlyMLMHead(arch, dtype).apply({"params": params["cls"]}, hp.reshape(b * p, -1), emb)  # 2-D: see dense_2d
    return logits.reshape(b, p, -1).astype(jnp.float32)


# ============================================================================ losses
def masked_mean(x: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted mean of ``x`` (weights broadcast to ``x``); 0 when all weights are 0."""
    w = jnp.broadcast_to(weights, x.shape).astype(jnp.float32)
    return jnp.sum(x.astype(jnp.float32) * w) / jnp.maximum(jnp.sum(w), 1.0)


def feature_mse(student: jax.Array, teacher: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """Mean squared error over real tokens and features: ``(B, S, H)`` each (already in the teacher's width)."""
    err = jnp.mean(jnp.square(student.astype(jnp.float32) - teacher.astype(jnp.float32)), axis=-1)
    return masked_mean(err, attention_mask)


def attention_kl(teacher_probs: jax.Array, student_probs: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """KL(teacher || student) of attention rows, averaged over heads and real query positions.

    ``teacher_probs`` ``(B, At, S, S)``, ``student_probs`` ``(B, As, S, S)``; when
    ``At != As`` both are averaged over heads first.
    """
    pt = teacher_probs.astype(jnp.float32)
    ps = student_probs.astype(jnp.float32)
    if pt.shape[1] != ps.shape[1]:
        pt = jnp.mean(pt, axis=1, keepdims=True)
        ps = jnp.mean(ps, axis=1, keepdims=True)
    kl = jnp.sum(jax.scipy.special.xlogy(pt, pt) - jax.scipy.special.xlogy(pt, jnp.maximum(ps, _LOG_FLOOR)), axis=-1)
    return masked_mean(jnp.mean(kl, axis=1), attention_mask)


def mlm_loss(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cross-entropy and the number of correct argmax predictions: ``logits`` ``(B, P, V)``.

    Returns ``(mean loss over weighted predictions, correct count)``.
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    correct = jnp.sum((jnp.argmax(logits, axis=-1) == labels) * weights)
    return masked_mean(nll, weights), correct


def kd_loss(student_logits: jax.Array, teacher_topk_logits: jax.Array, teacher_topk_ids: jax.Array,
            weights: jax.Array, temperature: float = 1.0) -> jax.Array:
    """Cross-entropy of the student against the teacher's top-k distribution (times ``T**2``).

    ``student_logits`` ``(B, P, V)``; ``teacher_topk_*`` ``(B, P, k)``. Equal to
    the KL divergence up to the teacher's entropy (a constant).
    """
    t = float(temperature)
    pt = jax.nn.softmax(teacher_topk_logits.astype(jnp.float32) / t, axis=-1)
    logps = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t, axis=-1)
    picked = jnp.take_along_axis(logps, teacher_topk_ids.astype(jnp.int32), axis=-1)
    return masked_mean(-jnp.sum(pt * picked, axis=-1), weights) * (t * t)


def mlm_and_kd_loss(logits: jax.Array, labels: jax.Array, weights: jax.Array, teacher_topk_logits: jax.Array,
                    teacher_topk_ids: jax.Array, temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """`mlm_loss` and `kd_loss` together, sharing one log-softmax over the vocab when ``temperature == 1``.

    Returns ``(mlm, kd)`` scalars.
    """
    if float(temperature) != 1.0:
        return mlm_loss(logits, labels, weights)[0], kd_loss(logits, teacher_topk_logits, teacher_topk_ids, weights,
                                                             temperature)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    pt = jax.nn.softmax(teacher_topk_logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, teacher_topk_ids.astype(jnp.int32), axis=-1)
    return masked_mean(nll, weights), masked_mean(-jnp.sum(pt * picked, axis=-1), weights)


def nsp_loss(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Next-sentence cross-entropy ``(B, 2)`` vs ``(B,)`` and the correct count."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return masked_mean(nll, weights), jnp.sum((jnp.argmax(logits, -1) == labels) * weights)
