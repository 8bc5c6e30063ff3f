"""Hypothesis strategies for valid student architectures, and the tests' example budgets."""
from __future__ import annotations

from hypothesis import settings, strategies as st

from autodistill.arch import ACTIVATIONS, StudentArch


def examples(weight: float) -> int:
    """``weight`` x the loaded hypothesis profile's ``max_examples`` (at least 1): a test's budget,
    scaled by ``$AUTODISTILL_HYPOTHESIS`` (see ``conftest.py``; ``ci``, the default, gives 100 x weight)."""
    return max(1, round(weight * settings.default.max_examples))


@st.composite
def student_archs(draw, max_layers: int = 48, max_width: int = 2048) -> StudentArch:
    family = draw(st.sampled_from(["bert", "mobilebert"]))
    heads = draw(st.sampled_from([1, 2, 3, 4, 6, 8, 12, 16]))
    head_size = draw(st.integers(1, max(1, max_width // heads // 4)) .map(lambda x: x * 4) | st.integers(1, 96))
    attn_width = heads * head_size
    layers = draw(st.integers(1, max_layers))
    inter = draw(st.integers(1, 4 * max_width))
    act = draw(st.sampled_from(ACTIVATIONS))
    vocab = draw(st.integers(2, 50000))
    if family == "bert":
        return StudentArch(family="bert", num_hidden_layers=layers, hidden_size=attn_width,
                           embedding_size=attn_width, num_attention_heads=heads, intermediate_size=inter,
                           num_feedforward_networks=1, use_bottleneck=False, intra_bottleneck_size=attn_width,
                           use_bottleneck_attention=False, key_query_shared_bottleneck=False, trigram_input=False,
                           normalization_type="layer_norm", hidden_act=act, vocab_size=vocab)
    use_bottleneck = draw(st.booleans())
    if use_bottleneck:
        hidden = draw(st.integers(1, max_width))
        mode = draw(st.sampled_from(["kq", "attn", "plain"]))
        if mode == "plain":
            hidden = attn_width
        bna, kq = mode == "attn", mode == "kq"
    else:
        hidden, bna, kq = attn_width, draw(st.booleans()), draw(st.booleans())
    return StudentArch(family="mobilebert", num_hidden_layers=layers, hidden_size=hidden,
                       embedding_size=draw(st.integers(1, max_width)), num_attention_heads=heads,
                       intermediate_size=inter, num_feedforward_networks=draw(st.integers(1, 6)),
                       use_bottleneck=use_bottleneck, intra_bottleneck_size=attn_width,
                       use_bottleneck_attention=bna, key_query_shared_bottleneck=kq,
                       trigram_input=draw(st.booleans()),
                       normalization_type=draw(st.sampled_from(["no_norm", "layer_norm"])), hidden_act=act,
                       vocab_size=vocab)
