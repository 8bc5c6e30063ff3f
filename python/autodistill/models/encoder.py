"""Flax (linen) encoders for every `StudentArch`: MobileBERT (Sun et al. 2020) and BERT (Devlin et al. 2019).

The module tree and the parameter names mirror Hugging Face's ``MobileBertModel`` /
``BertModel`` one to one, so that `autodistill.models.hf_weights` maps weights by
name: ``embeddings/word_embeddings``, ``encoder/layer_3/attention/self/query``,
``encoder/layer_3/ffn_0/output/LayerNorm``, ``cls/predictions/transform/dense``...
Flax conventions inside a leaf: a linear layer holds ``kernel`` (= torch
``weight.T``) and ``bias``; an embedding holds ``embedding``; both norms
(LayerNorm and MobileBERT's NoNorm) hold ``scale`` and ``bias``.

Semantics follow ``transformers`` (``modeling_mobilebert.py``, ``modeling_bert.py``)
exactly, including its quirks:

* NoNorm is ``x * scale + bias`` (no statistics, no epsilon).
* MobileBERT's embedding LayerNorm and the block's ``output.LayerNorm`` are built
  without ``eps`` in transformers, so they use torch's default 1e-5; every other
  norm uses ``layer_norm_eps`` (1e-12). BERT uses 1e-12 everywhere.
* Trigram input concatenates [next token, token, previous token] embeddings
  (zero padded at the ends) before ``embedding_transformation``; the projection
  is applied only with trigram input or when ``embedding_size != hidden_size``
  (the layer and its parameters exist in every MobileBERT regardless).
* The stacked FFNs (``ffn_0 .. ffn_{n-2}``) run after attention and *before* the
  block's main ``intermediate``/``output`` FFN.
* With ``key_query_shared_bottleneck`` and ``use_bottleneck_attention`` both on,
  transformers builds ``bottleneck/attention`` but never uses it; it is kept here
  too (its parameters exist so that weights round-trip).
* The padding mask is an additive bias of ``finfo(dtype).min`` on padded keys.
* MLM head: BERT is transform (dense, act, LayerNorm) then ``h @ E.T + bias`` with
  the word embeddings ``E`` tied; MobileBERT is the same transform (always a
  LayerNorm) then ``h @ concat([E.T, dense.kernel.T]) + bias``.

There is no pooler (distillation and MLM do not use it) and no dropout (the
``deterministic`` argument is accepted for API symmetry and ignored).

Matmuls use JAX's default precision (on GPUs float32 matmuls may run as TF32;
wrap calls in ``jax.default_matmul_precision("highest")`` for bit-faithful
float32). ``dtype`` is the compute dtype; parameters are always float32, and
norms and the softmax are computed in float32.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from autodistill.arch import StudentArch
from autodistill.errors import ArchError, choices_message

__all__ = ["EncoderOutput", "StudentModel", "init_params", "ACTIVATIONS", "LAYER_NORM_EPS", "TORCH_DEFAULT_EPS"]

#: ``layer_norm_eps`` of both HF configs (the only value `StudentArch` models support).
LAYER_NORM_EPS = 1e-12
#: ``torch.nn.LayerNorm``'s default, used where transformers omits ``eps``.
TORCH_DEFAULT_EPS = 1e-5


def _gelu_new(x: jax.Array) -> jax.Array:
    # transformers' NewGELUActivation (the tanh approximation used by GPT-2 / Google BERT).
    return 0.5 * x * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * jnp.power(x, 3.0))))


#: ``hidden_act`` name -> function, as in ``transformers.activations.ACT2FN``.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # exact erf form
    "gelu_new": _gelu_new,
    "tanh": jnp.tanh,
    "silu": jax.nn.silu,
}


@struct.dataclass
class EncoderOutput:
    """What `StudentModel` returns.

    ``hidden_states`` (when asked) has ``num_hidden_layers + 1`` entries: the
    embedding output, then each block's output, each ``(B, S, hidden_size)``;
    these are the feature maps of MobileBERT-style layer-wise distillation.
    ``attentions`` holds each block's post-softmax probabilities ``(B, heads, S, S)``.
    ``logits`` is the MLM head's ``(B, S, vocab_size)`` output, ``None`` without a head.
    """

    last_hidden_state: jax.Array
    hidden_states: tuple[jax.Array, ...] | None = None
    attentions: tuple[jax.Array, ...] | None = None
    logits: jax.Array | None = None


class Norm(nn.Module):
    """LayerNorm (torch semantics: biased variance, eps inside the sqrt) or NoNorm."""

    kind: str  # "layer_norm" | "no_norm"
    eps: float = LAYER_NORM_EPS
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        if self.kind == "no_norm":
            return x * scale.astype(self.dtype) + bias.astype(self.dtype)
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias
        return y.astype(self.dtype)


def _dense(features: int, name: str, dtype: Any) -> nn.Dense:
    return nn.Dense(features, name=name, dtype=dtype, param_dtype=jnp.float32,
                    kernel_init=nn.initializers.normal(0.02))


def _embed(num: int, features: int, name: str) -> nn.Embed:
    return nn.Embed(num, features, name=name, param_dtype=jnp.float32, embedding_init=nn.initializers.normal(0.02))


class Embeddings(nn.Module):
    """``MobileBertEmbeddings`` / ``BertEmbeddings``."""

    arch: StudentArch
    dtype: Any = jnp.float32

    def setup(self) -> None:
        a = self.arch
        self.word_embeddings = _embed(a.vocab_size, a.embedding_size, "word_embeddings")
        self.position_embeddings = _embed(a.max_position_embeddings, a.hidden_size, "position_embeddings")
        self.token_type_embeddings = _embed(a.type_vocab_size, a.hidden_size, "token_type_embeddings")
        mobile = a.family == "mobilebert"
        if mobile:
            self.embedding_transformation = _dense(a.hidden_size, "embedding_transformation", self.dtype)
        # transformers builds MobileBERT's embedding LayerNorm without eps (torch default); BERT passes the config's.
        eps = TORCH_DEFAULT_EPS if mobile else LAYER_NORM_EPS
        self.LayerNorm = Norm(a.normalization_type, eps, self.dtype)

    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array, position_ids: jax.Array) -> jax.Array:
        a = self.arch
        x = jnp.take(self.word_embeddings.embedding, input_ids, axis=0).astype(self.dtype)
        if a.family == "mobilebert":
            if a.trigram_input:
                # [embedding of token i+1, of token i, of token i-1], zeros beyond the ends (MobileBERT paper, 3.1).
                nxt = jnp.pad(x[:, 1:], ((0, 0), (0, 1), (0, 0)))
                prv = jnp.pad(x[:, :-1], ((0, 0), (1, 0), (0, 0)))
                x = jnp.concatenate([nxt, x, prv], axis=-1)
            if a.trigram_input or a.embedding_size != a.hidden_size:
                x = self.embedding_transformation(x)
            elif self.is_initializing():
                self.embedding_transformation(x)  # unused but present in transformers: create its parameters
        pos = jnp.take(self.position_embeddings.embedding, position_ids, axis=0).astype(self.dtype)
        tok = jnp.take(self.token_type_embeddings.embedding, token_type_ids, axis=0).astype(self.dtype)
        if a.family == "mobilebert":
            x = x + pos + tok
        else:
            x = x + tok + pos  # BertEmbeddings' order (identical up to float rounding)
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    """``MobileBertSelfAttention`` / ``BertSelfAttention`` (eager attention)."""

    arch: StudentArch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, query_tensor, key_tensor, value_tensor, mask_bias):
        a = self.arch
        t, heads, d = a.true_hidden_size, a.num_attention_heads, a.head_size
        b, s = query_tensor.shape[:2]

        def split(x):  # (B, S, heads*d) -> (B, heads, S, d)
            return x.reshape(b, s, heads, d).transpose(0, 2, 1, 3)

        q = split(_dense(t, "query", self.dtype)(query_tensor))
        k = split(_dense(t, "key", self.dtype)(key_tensor))
        v = split(_dense(t, "value", self.dtype)(value_tensor))
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) * (d ** -0.5)
        scores = scores.astype(jnp.float32)
        if mask_bias is not None:
            scores = scores + mask_bias
        probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        ctx = jnp.einsum("bhqk,bhkd->bhqd", probs, v)
        return ctx.transpose(0, 2, 1, 3).reshape(b, s, t), probs


class SelfOutput(nn.Module):
    """``attention.output``: dense, residual add, norm (config eps)."""

    arch: StudentArch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, hidden_states, residual):
        a = self.arch
        h = _dense(a.true_hidden_size, "dense", self.dtype)(hidden_states)
        return Norm(a.normalization_type, LAYER_NORM_EPS, self.dtype, name="LayerNorm")(h + residual)


class Attention(nn.Module):
    arch: StudentArch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, query_tensor, key_tensor, value_tensor, layer_input, mask_bias):
        attention = SelfAttention(self.arch, self.dtype, name="self")
        ctx, probs = attention(query_tensor, key_tensor, value_tensor, mask_bias)
        return SelfOutput(self.arch, self.dtype, name="output")(ctx, layer_input), probs


class Intermediate(nn.Module):
    """dense to ``intermediate_size`` and the activation."""

    arch: StudentArch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        return ACTIVATIONS[self.arch.hidden_act](_dense(self.arch.intermediate_size, "dense", self.dtype)(x))


class FFNOutput(nn.Module):
    """Output of a stacked FFN: dense, residual, norm (config eps)."""

    arch: StudentArch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, residual):
        a = self.arch
        y = _dense(a.true_hidden_size, "dense", self.dtype)(x)
        return Norm(a.normalization_type, LAYER_NORM_EPS, self.dtype, name="LayerNorm")(y + residual)


class FFNLayer(nn.Module):
    """One of MobileBERT's extra stacked FFNs (``ffn.{j}``)."""

    arch: StudentArch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        inter = Intermediate(self.arch, self.dtype, name="intermediate")(x)
        return FFNOutput(self.arch, self.dtype, name="output")(inter, x)


class BottleneckLayer(nn.Module):
    """dense ``hidden_size -> intra_bottleneck_size`` then norm."""

    arch: StudentArch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        a = self.arch
        y = _dense(a.intra_bottleneck_size, "dense", self.dtype)(x)
        return Norm(a.normalization_type, LAYER_NORM_EPS, self.dtype, name="LayerNorm")(y)


class Bottleneck(nn.Module):
    """Returns (query, key, value, layer_input) as ``transformers``' ``Bottleneck`` does."""

    arch: StudentArch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, hidden_states):
        a = self.arch
        bottlenecked = BottleneckLayer(a, self.dtype, name="input")(hidden_states)
        shared = BottleneckLayer(a, self.dtype, name="attention") if a.key_query_shared_bottleneck else None
        if a.use_bottleneck_attention:
            if shared is not None and self.is_initializing():
                shared(hidden_states)  # built but unused by transformers in this combination
            return bottlenecked, bottlenecked, bottlenecked, bottlenecked
        if shared is not None:
            qk = shared(hidden_states)
            return qk, qk, hidden_states, bottlenecked
        return hidden_states, hidden_states, hidden_states, bottlenecked


class OutputBottleneck(nn.Module):
    """``output.bottleneck``: dense ``true_hidden -> hidden``, residual with the block input, norm."""

    arch: StudentArch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, residual):
        a = self.arch
        y = _dense(a.hidden_size, "dense", self.dtype)(x)
        return Norm(a.normalization_type, LAYER_NORM_EPS, self.dtype, name="LayerNorm")(y + residual)


class Layer(nn.Module):
    """One transformer block (``MobileBertLayer`` / ``BertLayer``)."""

    arch: StudentArch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, hidden_states, mask_bias):
        a = self.arch
        if a.use_bottleneck:
            q, k, v, layer_input = Bottleneck(a, self.dtype, name="bottleneck")(hidden_states)
        else:
            q = k = v = layer_input = hidden_states
        attention_output, probs = Attention(a, self.dtype, name="attention")(q, k, v, layer_input, mask_bias)
        for j in range(a.num_feedforward_networks - 1):  # the stacked FFNs come first
            attention_output = FFNLayer(a, self.dtype, name=f"ffn_{j}")(attention_output)
        inter = Intermediate(a, self.dtype, name="intermediate")(attention_output)
        return Output(a, self.dtype, name="output")(inter, attention_output, hidden_states), probs


class Output(nn.Module):
    """The block's main FFN output (``MobileBertOutput`` / ``BertOutput``).

    dense, residual with the attention output, norm; with a bottleneck, then the
    output bottleneck (``output/bottleneck``) back to ``hidden_size`` with the block
    input as residual.
    """

    arch: StudentArch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, intermediate, residual_1, residual_2):
        a = self.arch
        y = _dense(a.true_hidden_size, "dense", self.dtype)(intermediate)
        # MobileBertOutput builds its LayerNorm without eps (torch default 1e-5); BertOutput passes the config's.
        eps = TORCH_DEFAULT_EPS if a.family == "mobilebert" else LAYER_NORM_EPS
        y = Norm(a.normalization_type, eps, self.dtype, name="LayerNorm")(y + residual_1)
        if a.use_bottleneck:
            y = OutputBottleneck(a, self.dtype, name="bottleneck")(y, residual_2)
        return y


class PredictionHeadTransform(nn.Module):
    arch: StudentArch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        a = self.arch
        x = ACTIVATIONS[a.hidden_act](_dense(a.hidden_size, "dense", self.dtype)(x))
        return Norm("layer_norm", LAYER_NORM_EPS, self.dtype, name="LayerNorm")(x)


class LMPredictionHead(nn.Module):
    """``cls.predictions``: transform then the decoder tied to the word embeddings."""

    arch: StudentArch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, word_embeddings):
        a = self.arch
        x = PredictionHeadTransform(a, self.dtype, name="transform")(x)
        bias = self.param("bias", nn.initializers.zeros, (a.vocab_size,), jnp.float32)
        decoder = word_embeddings.astype(self.dtype).T  # (embedding_size, vocab)
        if a.family == "mobilebert":
            # HF `dense` is nn.Linear(vocab, hidden - embedding) used as a raw (hidden - embedding, vocab) matrix;
            # kept in flax layout: kernel = weight.T, shape (vocab, hidden - embedding).
            extra = self.param("dense", nn.initializers.normal(0.02), (a.vocab_size, a.hidden_size - a.embedding_size),
                               jnp.float32)
            decoder = jnp.concatenate([decoder, extra.astype(self.dtype).T], axis=0)  # (hidden, vocab)
        logits = jnp.matmul(x, decoder)
        return logits + bias.astype(self.dtype)


class StudentModel(nn.Module):
    """A `StudentArch` encoder (either family), optionally with its MLM head.

    ``model.apply({'params': params}, input_ids, token_type_ids=None, attention_mask=None,
    output_hidden_states=False, output_attentions=False)`` returns an `EncoderOutput`.
    ``attention_mask`` is ``(B, S)`` with 1 for real tokens and 0 for padding.
    """

    arch: StudentArch
    dtype: Any = jnp.float32
    mlm_head: bool = True

    def setup(self) -> None:
        if not isinstance(self.arch, StudentArch):
            raise ArchError(f"StudentModel needs a StudentArch, got {type(self.arch).__name__}")
        if self.arch.hidden_act not in ACTIVATIONS:
            raise ArchError(choices_message("hidden_act", self.arch.hidden_act, ACTIVATIONS))
        self.embeddings = Embeddings(self.arch, self.dtype)
        self.encoder = Encoder(self.arch, self.dtype)
        if self.mlm_head:
            self.cls = OnlyMLMHead(self.arch, self.dtype)

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, output_hidden_states: bool = False,
                 output_attentions: bool = False, position_ids=None, deterministic: bool = True) -> EncoderOutput:
        del deterministic  # no dropout
        input_ids = jnp.asarray(input_ids)
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, seq); got shape {input_ids.shape}")
        b, s = input_ids.shape
        if s > self.arch.max_position_embeddings:
            raise ValueError(f"sequence length {s} exceeds max_position_embeddings={self.arch.max_position_embeddings}")
        if token_type_ids is None:
            token_type_ids = jnp.zeros((b, s), jnp.int32)
        if position_ids is None:
            position_ids = jnp.arange(s, dtype=jnp.int32)[None, :]
        mask_bias = None
        if attention_mask is not None:
            keep = jnp.asarray(attention_mask).astype(bool)[:, None, None, :]  # (B, 1, 1, S) over keys
            mask_bias = jnp.where(keep, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)

        h = self.embeddings(input_ids, jnp.asarray(token_type_ids), jnp.asarray(position_ids))
        h, hidden, attentions = self.encoder(h, mask_bias)
        logits = self.cls(h, self.embeddings.word_embeddings.embedding) if self.mlm_head else None
        return EncoderOutput(
            last_hidden_state=h,
            hidden_states=hidden if output_hidden_states else None,
            attentions=attentions if output_attentions else None,
            logits=logits,
        )


class Encoder(nn.Module):
    """``encoder.layer.{i}`` as ``encoder/layer_{i}``."""

    arch: StudentArch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h, mask_bias):
        hidden, attentions = [h], []
        for i in range(self.arch.num_hidden_layers):
            h, probs = Layer(self.arch, self.dtype, name=f"layer_{i}")(h, mask_bias)
            hidden.append(h)
            attentions.append(probs)
        return h, tuple(hidden), tuple(attentions)


class OnlyMLMHead(nn.Module):
    """``cls`` holding ``predictions``."""

    arch: StudentArch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h, word_embeddings):
        return LMPredictionHead(self.arch, self.dtype, name="predictions")(h, word_embeddings)


def init_params(model: StudentModel, rng: jax.Array, batch: int = 1, seq: int = 16) -> dict:
    """Initialise ``model`` and return its ``'params'`` collection (a nested dict of arrays).

    BERT's recipe, as the module initialisers declare it: normal(0.02) kernels,
    embeddings and MobileBERT's extra decoder rows; zero biases; unit norm scales.
    The tree comes from ``jax.eval_shape(model.init)``; the normals come from one
    ``jax.random.normal`` draw split across the leaves, since compiling
    ``model.init``'s ~100 separate RNG calls takes XLA several seconds even for tiny
    models. Deterministic in ``rng``; not bit-identical to ``model.init(rng, ...)``.
    """
    seq = max(1, min(seq, model.arch.max_position_embeddings))
    ids = jax.ShapeDtypeStruct((batch, seq), jnp.int32)
    abstract = jax.eval_shape(lambda i: model.init(jax.random.PRNGKey(0), i), ids)["params"]
    flat, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    normal = [k for k, (path, _) in enumerate(flat) if path[-1].key not in ("bias", "scale")]
    total = sum(math.prod(flat[k][1].shape) for k in normal)
    draws = np.asarray(jax.random.normal(rng, (total,), jnp.float32)) * np.float32(0.02)
    leaves: list[jax.Array] = []
    offset = 0
    for path, leaf in flat:
        if path[-1].key == "bias":
            value = np.zeros(leaf.shape, leaf.dtype)
        elif path[-1].key == "scale":
            value = np.ones(leaf.shape, leaf.dtype)
        else:
            n = math.prod(leaf.shape)
            value = draws[offset:offset + n].reshape(leaf.shape).astype(leaf.dtype)
            offset += n
        leaves.append(jnp.asarray(value))
    return dict(jax.tree_util.tree_unflatten(treedef, leaves))
