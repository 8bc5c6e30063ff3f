"""Student architectures: the MobileBERT family, with plain BERT as a member.

`StudentArch` names its fields as Hugging Face's ``MobileBertConfig`` does, so
a student maps one to one onto a ``transformers`` config. Two families:

* ``"mobilebert"``: ``MobileBertModel`` (bottlenecks, stacked FFNs, trigram
  embedding input, NoNorm, ...). Plain BERT shapes are the no-bottleneck case.
* ``"bert"``: ``BertModel`` (no embedding projection, LayerNorm, one FFN).
  This is what BERT-base/large and the MiniLM teacher are.

The feature vector (`FEATURE_NAMES`, `StudentArch.features`) is the one layout
shared with the C++ cost model; the binding checks the names match.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from autodistill.errors import ArchError, choices_message

logger = logging.getLogger(__name__)

FAMILIES = ("bert", "mobilebert")
NORM_TYPES = ("no_norm", "layer_norm")
ACTIVATIONS = ("relu", "gelu", "gelu_new", "tanh", "silu")

#: Column order of the (n, F) feature array scored by the cost model.
FEATURE_NAMES: tuple[str, ...] = (
    "family",  # 0 = bert, 1 = mobilebert
    "num_hidden_layers",
    "hidden_size",
    "embedding_size",
    "num_attention_heads",
    "intermediate_size",
    "num_feedforward_networks",
    "use_bottleneck",
    "intra_bottleneck_size",
    "use_bottleneck_attention",
    "key_query_shared_bottleneck",
    "trigram_input",
    "normalization_type",  # 0 = no_norm, 1 = layer_norm
    "hidden_act",  # index into ACTIVATIONS
    "vocab_size",
)

#: Largest value accepted for any width, so that FLOP counts stay finite and exact.
MAX_DIM = 1 << 20
MAX_LAYERS = 4096


@dataclass(frozen=True)
class StudentArch:
    """A BERT-style encoder shape (MobileBertConfig names).

    ``true_hidden_size`` (the width inside a block) is ``intra_bottleneck_size``
    when ``use_bottleneck`` else ``hidden_size``; attention runs at that width,
    so ``num_attention_heads`` must divide it.
    """

    num_hidden_layers: int = 24
    hidden_size: int = 512
    embedding_size: int = 128
    num_attention_heads: int = 4
    intermediate_size: int = 512
    num_feedforward_networks: int = 4
    use_bottleneck: bool = True
    intra_bottleneck_size: int = 128
    use_bottleneck_attention: bool = False
    key_query_shared_bottleneck: bool = True
    trigram_input: bool = True
    normalization_type: str = "no_norm"
    hidden_act: str = "relu"
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    family: str = "mobilebert"
    classifier_activation: bool = True  # MobileBERT pooler has a dense layer

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ArchError(choices_message("family", self.family, FAMILIES))
        if self.normalization_type not in NORM_TYPES:
            raise ArchError(choices_message("normalization_type", self.normalization_type, NORM_TYPES))
        if self.hidden_act not in ACTIVATIONS:
            raise ArchError(choices_message("hidden_act", self.hidden_act, ACTIVATIONS))
        for name in ("use_bottleneck", "use_bottleneck_attention", "key_query_shared_bottleneck",
                     "trigram_input", "classifier_activation"):
            v = getattr(self, name)
            if not isinstance(v, (bool, np.bool_)):
                raise ArchError(f"{name} must be a bool, got {v!r}")
        for name, hi in (("num_hidden_layers", MAX_LAYERS), ("hidden_size", MAX_DIM),
                         ("embedding_size", MAX_DIM), ("num_attention_heads", MAX_DIM),
                         ("intermediate_size", MAX_DIM), ("num_feedforward_networks", 64),
                         ("intra_bottleneck_size", MAX_DIM), ("vocab_size", 1 << 24),
                         ("max_position_embeddings", 1 << 20), ("type_vocab_size", 1 << 10)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ArchError(f"{name} must be an integer, got {v!r}")
            if not 1 <= int(v) <= hi:
                raise ArchError(f"{name}={v} is out of range; valid: 1..{hi}")
        if self.true_hidden_size % self.num_attention_heads:
            raise ArchError(
                f"num_attention_heads={self.num_attention_heads} does not divide the attention width "
                f"{self.true_hidden_size} ({'intra_bottleneck_size' if self.use_bottleneck else 'hidden_size'}); "
                f"valid head counts: {_divisors(self.true_hidden_size)}"
            )
        if self.family == "bert":
            bad = {
                k: getattr(self, k)
                for k, ok in (("use_bottleneck", False), ("trigram_input", False),
                              ("num_feedforward_networks", 1), ("normalization_type", "layer_norm"))
                if getattr(self, k) != ok
            }
            if self.embedding_size != self.hidden_size:
                bad["embedding_size"] = self.embedding_size
            if bad:
                raise ArchError(
                    f"family='bert' (BertModel) needs no bottleneck, no trigram input, one FFN, layer_norm "
                    f"and embedding_size == hidden_size; got {bad}. Use family='mobilebert' for these."
                )
        if (self.use_bottleneck and not self.use_bottleneck_attention
                and not self.key_query_shared_bottleneck and self.intra_bottleneck_size != self.hidden_size):
            raise ArchError(
                "use_bottleneck without use_bottleneck_attention or key_query_shared_bottleneck feeds the "
                f"hidden_size={self.hidden_size} state to query/key layers of width "
                f"intra_bottleneck_size={self.intra_bottleneck_size}; enable one of the two or make them equal"
            )

    # ------------------------------------------------------------------ derived
    @property
    def true_hidden_size(self) -> int:
        """Width inside a block: the bottleneck width, or the hidden size."""
        return self.intra_bottleneck_size if self.use_bottleneck else self.hidden_size

    @property
    def head_size(self) -> int:
        return self.true_hidden_size // self.num_attention_heads

    @property
    def embedding_input_size(self) -> int:
        """Width entering the embedding projection (3x with trigram input)."""
        return self.embedding_size * (3 if self.trigram_input else 1)

    def num_parameters(self, *, pooler: bool = True, mlm_head: bool = False) -> int:
        """Exact parameter count of ``MobileBertModel``/``BertModel`` built from this config.

        ``mlm_head`` adds the untied parameters of the MLM head (the decoder weight
        is tied to the word embeddings in both families).
        """
        h, e, t, f = self.hidden_size, self.embedding_size, self.true_hidden_size, self.intermediate_size

        def linear(i: int, o: int) -> int:
            return i * o + o

        norm = 2  # LayerNorm and NoNorm both carry a weight and a bias per feature
        n = self.vocab_size * e + self.max_position_embeddings * h + self.type_vocab_size * h + norm * h
        if self.family == "mobilebert":
            n += linear(self.embedding_input_size, h)
        layer = 0
        v_in = t if self.use_bottleneck_attention else h
        if self.family == "bert":
            v_in = h
        layer += 2 * linear(t, t) + linear(v_in, t)  # query, key, value
        layer += linear(t, t) + norm * t  # attention output
        layer += self.num_feedforward_networks * (linear(t, f) + linear(f, t) + norm * t)
        if self.use_bottleneck:
            layer += linear(h, t) + norm * t  # bottleneck input
            if self.key_query_shared_bottleneck:
                layer += linear(h, t) + norm * t  # shared query/key bottleneck
            layer += linear(t, h) + norm * h  # output bottleneck
        n += self.num_hidden_layers * layer
        if pooler and (self.family == "bert" or self.classifier_activation):
            n += linear(h, h)
        if mlm_head:
            n += linear(h, h) + 2 * h + self.vocab_size  # transform + LayerNorm + decoder bias
            if self.family == "mobilebert":
                n += self.vocab_size * (h - e)  # extra dense rows beyond the tied embedding
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Forward matmul FLOPs per token at sequence length ``seq_len`` (2 per MAC; no MLM head)."""
        h, t, f = self.hidden_size, self.true_hidden_size, self.intermediate_size
        v_in = t if (self.use_bottleneck_attention and self.family == "mobilebert") else h
        per_layer = 2 * (2 * t * t + v_in * t + t * t + self.num_feedforward_networks * 2 * t * f)
        per_layer += 2 * 2 * seq_len * t  # scores + context
        if self.use_bottleneck:
            per_layer += 2 * (h * t * (2 if self.key_query_shared_bottleneck else 1) + t * h)
        emb = 2 * self.embedding_input_size * h if self.family == "mobilebert" else 0
        return float(self.num_hidden_layers * per_layer + emb)

    # --------------------------------------------------------------- encodings
    def features(self) -> np.ndarray:
        """The cost-model feature row, shape ``(len(FEATURE_NAMES),)`` float64."""
        return np.array([self._feature(name) for name in FEATURE_NAMES], dtype=np.float64)

    def _feature(self, name: str) -> float:
        if name == "family":
            return float(FAMILIES.index(self.family))
        if name == "normalization_type":
            return float(NORM_TYPES.index(self.normalization_type))
        if name == "hidden_act":
            return float(ACTIVATIONS.index(self.hidden_act))
        return float(getattr(self, name))

    @classmethod
    def from_features(cls, row: Any) -> StudentArch:
        """Inverse of `features` (fields not in the row take their defaults)."""
        row = np.asarray(row, dtype=np.float64)
        if row.shape != (len(FEATURE_NAMES),):
            raise ArchError(f"feature row has shape {row.shape}; expected ({len(FEATURE_NAMES)},)")
        kw: dict[str, Any] = {}
        for name, v in zip(FEATURE_NAMES, row):
            if not math.isfinite(v) or v != int(v):
                raise ArchError(f"feature {name}={v} is not an integer")
            iv = int(v)
            if name == "family":
                kw[name] = FAMILIES[iv] if 0 <= iv < len(FAMILIES) else iv
            elif name == "normalization_type":
                kw[name] = NORM_TYPES[iv] if 0 <= iv < len(NORM_TYPES) else iv
            elif name == "hidden_act":
                kw[name] = ACTIVATIONS[iv] if 0 <= iv < len(ACTIVATIONS) else iv
            elif name in _BOOL_FIELDS:
                kw[name] = bool(iv)
            else:
                kw[name] = iv
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StudentArch:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ArchError(f"unknown StudentArch field(s) {sorted(unknown)}; valid fields: {sorted(known)}")
        return cls(**dict(d))

    def replace(self, **changes: Any) -> StudentArch:
        return dataclasses.replace(self, **changes)

    def hf_config_dict(self) -> dict[str, Any]:
        """Keyword arguments for ``transformers.MobileBertConfig`` / ``BertConfig``."""
        common = dict(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, intermediate_size=self.intermediate_size,
            hidden_act=self.hidden_act, max_position_embeddings=self.max_position_embeddings,
            type_vocab_size=self.type_vocab_size,
        )
        if self.family == "bert":
            return common
        return dict(
            common, embedding_size=self.embedding_size, trigram_input=self.trigram_input,
            use_bottleneck=self.use_bottleneck, intra_bottleneck_size=self.intra_bottleneck_size,
            use_bottleneck_attention=self.use_bottleneck_attention,
            key_query_shared_bottleneck=self.key_query_shared_bottleneck,
            num_feedforward_networks=self.num_feedforward_networks,
            normalization_type=self.normalization_type, classifier_activation=self.classifier_activation,
            true_hidden_size=self.true_hidden_size,
        )

    def short_name(self) -> str:
        if self.family == "bert":
            return (f"bert-L{self.num_hidden_layers}-H{self.hidden_size}-A{self.num_attention_heads}"
                    f"-I{self.intermediate_size}")
        b = f"-B{self.intra_bottleneck_size}" if self.use_bottleneck else ""
        return (f"mobilebert-L{self.num_hidden_layers}-H{self.hidden_size}{b}-A{self.num_attention_heads}"
                f"-I{self.intermediate_size}x{self.num_feedforward_networks}")


_BOOL_FIELDS = frozenset({"use_bottleneck", "use_bottleneck_attention", "key_query_shared_bottleneck", "trigram_input"})


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, min(n, 64) + 1) if n % d == 0]


def _bert(layers: int, hidden: int, heads: int, inter: int, act: str = "gelu") -> StudentArch:
    return StudentArch(
        family="bert", num_hidden_layers=layers, hidden_size=hidden, embedding_size=hidden,
        num_attention_heads=heads, intermediate_size=inter, num_feedforward_networks=1, use_bottleneck=False,
        intra_bottleneck_size=hidden, key_query_shared_bottleneck=False, trigram_input=False,
        normalization_type="layer_norm", hidden_act=act,
    )


_REFERENCES: dict[str, StudentArch] = {
    # Devlin et al. 2019.
    "bert-base": _bert(12, 768, 12, 3072),
    "bert-large": _bert(24, 1024, 16, 4096),
    # Sun et al. 2020, Table 1: MobileBERT (MHA value input 512) and MobileBERT-TINY (MHA input 128 from
    # the bottleneck for query, key and value, 2 stacked FFNs; 15.1M parameters in the paper's count).
    "mobilebert": StudentArch(),
    "mobilebert-tiny": StudentArch(num_feedforward_networks=2, use_bottleneck_attention=True,
                                   key_query_shared_bottleneck=False),
    # Jiao et al. 2020 (TinyBERT-4: 4x312, FFN 1200; TinyBERT-6: BERT-base width, 6 layers).
    "tinybert-4": _bert(4, 312, 12, 1200),
    "tinybert-6": _bert(6, 768, 12, 3072),
    # Sanh et al. 2019: DistilBERT has BERT-base width and 6 layers (its own module names; BERT-shaped).
    "distilbert": _bert(6, 768, 12, 3072),
    # Wang et al. 2020, the all-MiniLM-L6-v2 teacher: 6 x 384, 12 heads, FFN 1536.
    "minilm-l6-h384": _bert(6, 384, 12, 1536),
}


def reference_names() -> tuple[str, ...]:
    """Names of the built-in reference architectures."""
    return tuple(_REFERENCES)


def reference_arch(name: str) -> StudentArch:
    """A built-in reference architecture by name (see `reference_names`)."""
    try:
        return _REFERENCES[name]
    except KeyError:
        raise ArchError(choices_message("reference architecture", name, _REFERENCES)) from None


#: MobileBERT's shape (bottlenecks, 4 stacked FFNs, trigram input, NoNorm, ReLU) at the MiniLM
#: teacher's scale: the baseline the default run's students must beat.
MOBILEBERT_SHAPED_BASELINE: Mapping[str, int] = MappingProxyType(dict(
    num_hidden_layers=6, hidden_size=384, embedding_size=128, intra_bottleneck_size=96, num_attention_heads=4,
    intermediate_size=384, num_feedforward_networks=4))

#: Names `resolve` knows beside the references. They are not references: ``autodistill archs`` and
#: ``autodistill table`` list published architectures only, and a search space's base is one of those.
_NAMED: dict[str, Mapping[str, Any]] = {"mobilebert-shaped": MOBILEBERT_SHAPED_BASELINE}


def resolve(spec: str | os.PathLike[str] | Mapping[str, Any] | StudentArch,
            vocab_size: int | None = None) -> StudentArch:
    """The one reading of an architecture spec, as every command and config takes it.

    ``spec`` is, tried in this order:

    * a `StudentArch` (returned as it is) or a mapping of `StudentArch` fields;
    * an inline JSON object of fields (a string starting with ``{``);
    * a path to a JSON file holding such an object (an existing file, or any name ending in ``.json``);
    * ``NAME:key=value,...``: a named architecture with fields replaced (``true``/``false`` are bools,
      integers are ints, anything else a string). For a BERT base, ``hidden_size`` also sets
      ``embedding_size`` and ``intra_bottleneck_size`` unless they are given, as BertModel ties them;
    * a name: a reference (`reference_names`) or ``"mobilebert-shaped"`` (`MOBILEBERT_SHAPED_BASELINE`).

    ``vocab_size``, when given, replaces the architecture's vocabulary size (a student takes its
    teacher's). Every bad spec raises `ArchError` naming it.
    """
    if isinstance(spec, StudentArch):
        arch = spec
    elif isinstance(spec, Mapping):
        arch = StudentArch.from_dict(spec)
    elif isinstance(spec, (str, os.PathLike)):
        arch = _resolve_text(os.fspath(spec))
    else:
        raise ArchError(f"arch spec {spec!r} must be a name, a JSON file or object, NAME:key=value,... "
                        f"or a mapping of StudentArch fields")
    if vocab_size is not None and arch.vocab_size != vocab_size:
        arch = arch.replace(vocab_size=vocab_size)
    return arch


def _resolve_text(spec: str) -> StudentArch:
    spec = spec.strip()
    if spec.startswith("{"):
        try:
            fields = json.loads(spec)
        except json.JSONDecodeError as e:
            raise ArchError(f"student {spec[:200]!r} is not valid JSON: {e}") from None
        except ValueError as e:  # a number of thousands of digits
            raise ArchError(f"student {spec[:60]!r}...: {str(e).split(';')[0][:200]}") from None
        return StudentArch.from_dict(fields)  # JSON text starting with "{" is an object
    if spec.endswith(".json") or Path(spec).is_file():
        return _arch_file(spec)
    if ":" in spec:  # no name holds one
        return _override(spec)
    return _named(spec)


def _arch_file(spec: str) -> StudentArch:
    from autodistill.fileio import read_json

    data = read_json(spec, what="arch file", error=ArchError)
    if data is None:
        raise ArchError(f"arch file {spec!r} does not exist")
    if not isinstance(data, dict):
        raise ArchError(f"arch file {spec!r} must hold a JSON object of StudentArch fields")
    try:
        return StudentArch.from_dict(data)
    except ArchError as e:
        raise ArchError(f"arch file {spec!r}: {e}") from None


def _named(name: str) -> StudentArch:
    if name in _NAMED:
        return StudentArch(**_NAMED[name])
    if name not in _REFERENCES:
        raise ArchError(choices_message("reference architecture", name, _REFERENCES)
                        + f" (or {', '.join(_NAMED)}, a JSON file or object, or NAME:key=value,...)")
    return _REFERENCES[name]


def _override(spec: str) -> StudentArch:
    base_name, _, rest = spec.partition(":")
    arch = _named(base_name.strip())
    changes: dict[str, Any] = {}
    for item in rest.split(","):
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise ArchError(f"student {spec!r}: override {item!r} is not key=value")
        changes[key.strip()] = _parse_value(value.strip())
    known = {f.name for f in dataclasses.fields(StudentArch)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ArchError(f"student {spec!r}: unknown StudentArch field(s) {unknown}; valid fields: {sorted(known)}")
    if arch.family == "bert" and "hidden_size" in changes:
        for k in ("embedding_size", "intra_bottleneck_size"):
            changes.setdefault(k, changes["hidden_size"])
    try:
        return arch.replace(**changes)
    except ArchError as e:
        raise ArchError(f"student {spec!r}: {e}") from None


def _parse_value(v: str) -> Any:
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(v)
    except ValueError:
        return v
