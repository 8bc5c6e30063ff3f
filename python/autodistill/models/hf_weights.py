"""Weights between the Flax `StudentModel` and Hugging Face ``transformers`` checkpoints.

Names: the Flax tree mirrors transformers' module tree (see `encoder`), so each
HF tensor maps to one Flax leaf:

====================================================  ==========================================
HF (``MobileBertForMaskedLM`` / ``BertForMaskedLM``)     Flax ``params``
====================================================  ==========================================
``{prefix}.embeddings.word_embeddings.weight``        ``embeddings/word_embeddings/embedding``
``{prefix}.encoder.layer.3.attention.self.query.weight``  ``encoder/layer_3/attention/self/query/kernel`` (transposed)
``{prefix}.encoder.layer.3.ffn.0.output.LayerNorm.weight``  ``encoder/layer_3/ffn_0/output/LayerNorm/scale``
``cls.predictions.bias``                              ``cls/predictions/bias``
``cls.predictions.dense.weight`` (MobileBERT)         ``cls/predictions/dense`` (transposed)
====================================================  ==========================================

``{prefix}`` is ``bert`` or ``mobilebert`` (the ``base_model_prefix``); inputs may
omit it. ``cls.predictions.decoder.weight``/``.bias`` are tied to the word
embeddings and ``cls.predictions.bias`` in both families: `params_to_hf` emits them
(so ``load_state_dict(strict=True)`` works), `save_hf_folder` leaves them out as
transformers' own ``save_pretrained`` does, and `params_from_hf` checks that a
checkpoint which carries them really is tied.

The pooler: the Flax model has none, so exports carry no ``pooler.*`` weights.
Loading an export with ``AutoModelForMaskedLM`` needs none (``*ForMaskedLM`` builds
no pooler); ``AutoModel`` (``BertModel``/``MobileBertModel``, which build one)
initialises the pooler randomly and says so. Pooler weights in an input
checkpoint are ignored.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from autodistill.arch import ACTIVATIONS, StudentArch
from autodistill.errors import ArchError, DistillError, choices_message

logger = logging.getLogger(__name__)

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "arch_from_hf_config",
    "hf_config_for",
    "hf_names",
    "load_hf_folder",
    "params_from_hf",
    "params_to_hf",
    "save_hf_folder",
]

#: ``config.json`` ``model_type`` values `load_hf_folder` understands.
SUPPORTED_MODEL_TYPES = ("bert", "mobilebert")
_PREFIX = {"bert": "bert", "mobilebert": "mobilebert"}
_ARCHITECTURES = {
    ("bert", True): "BertForMaskedLM", ("bert", False): "BertModel",
    ("mobilebert", True): "MobileBertForMaskedLM", ("mobilebert", False): "MobileBertModel",
}
_TIED = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")
_HEAD_PROBE = "cls.predictions.transform.dense.weight"
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
_ACT_ALIASES = {"swish": "silu"}  # transformers' ACT2FN: "swish" is nn.SiLU


# ----------------------------------------------------------------------------- name table
def _linear(hf: str, path: tuple[str, ...]) -> Iterator[tuple[str, tuple[str, ...], bool]]:
    yield f"{hf}.weight", path + ("kernel",), True
    yield f"{hf}.bias", path + ("bias",), False


def _norm(hf: str, path: tuple[str, ...]) -> Iterator[tuple[str, tuple[str, ...], bool]]:
    yield f"{hf}.weight", path + ("scale",), False
    yield f"{hf}.bias", path + ("bias",), False


def hf_names(arch: StudentArch, mlm_head: bool = True) -> list[tuple[str, tuple[str, ...], bool]]:
    """The name table: ``(hf_name, flax_path, transposed)`` per tensor.

    Base-model names come without the ``bert.``/``mobilebert.`` prefix; head names
    start with ``cls.``; the tied decoder names are not listed.
    """
    a = arch
    out: list[tuple[str, tuple[str, ...], bool]] = []
    emb = ("embeddings",)
    for table in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        out.append((f"embeddings.{table}.weight", emb + (table, "embedding"), False))
    if a.family == "mobilebert":
        out += _linear("embeddings.embedding_transformation", emb + ("embedding_transformation",))
    out += _norm("embeddings.LayerNorm", emb + ("LayerNorm",))
    for i in range(a.num_hidden_layers):
        hf, fx = f"encoder.layer.{i}", ("encoder", f"layer_{i}")
        for proj in ("query", "key", "value"):
            out += _linear(f"{hf}.attention.self.{proj}", fx + ("attention", "self", proj))
        out += _linear(f"{hf}.attention.output.dense", fx + ("attention", "output", "dense"))
        out += _norm(f"{hf}.attention.output.LayerNorm", fx + ("attention", "output", "LayerNorm"))
        if a.use_bottleneck:
            shared = ("input", "attention") if a.key_query_shared_bottleneck else ("input",)
            for part in shared:
                out += _linear(f"{hf}.bottleneck.{part}.dense", fx + ("bottleneck", part, "dense"))
                out += _norm(f"{hf}.bottleneck.{part}.LayerNorm", fx + ("bottleneck", part, "LayerNorm"))
        for j in range(a.num_feedforward_networks - 1):
            out += _linear(f"{hf}.ffn.{j}.intermediate.dense", fx + (f"ffn_{j}", "intermediate", "dense"))
            out += _linear(f"{hf}.ffn.{j}.output.dense", fx + (f"ffn_{j}", "output", "dense"))
            out += _norm(f"{hf}.ffn.{j}.output.LayerNorm", fx + (f"ffn_{j}", "output", "LayerNorm"))
        out += _linear(f"{hf}.intermediate.dense", fx + ("intermediate", "dense"))
        out += _linear(f"{hf}.output.dense", fx + ("output", "dense"))
        out += _norm(f"{hf}.output.LayerNorm", fx + ("output", "LayerNorm"))
        if a.use_bottleneck:
            out += _linear(f"{hf}.output.bottleneck.dense", fx + ("output", "bottleneck", "dense"))
            out += _norm(f"{hf}.output.bottleneck.LayerNorm", fx + ("output", "bottleneck", "LayerNorm"))
    if mlm_head:
        p = ("cls", "predictions")
        out += _linear("cls.predictions.transform.dense", p + ("transform", "dense"))
        out += _norm("cls.predictions.transform.LayerNorm", p + ("transform", "LayerNorm"))
        out.append(("cls.predictions.bias", p + ("bias",), False))
        if a.family == "mobilebert":
            out.append(("cls.predictions.dense.weight", p + ("dense",), True))
    return out


def _flax_shapes(arch: StudentArch, mlm_head: bool) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Leaf path -> shape of the Flax params, without allocating them."""
    import jax
    import jax.numpy as jnp

    from autodistill.models.encoder import StudentModel

    model = StudentModel(arch=arch, mlm_head=mlm_head)
    ids = jax.ShapeDtypeStruct((1, min(4, arch.max_position_embeddings)), jnp.int32)
    tree = jax.eval_shape(lambda i: model.init(jax.random.PRNGKey(0), i), ids)["params"]
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        flat[tuple(k.key for k in path)] = tuple(leaf.shape)
    return flat


# ----------------------------------------------------------------------------- HF -> Flax
def _to_numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):  # a torch tensor
        v = v.detach().cpu()
        if str(v.dtype) == "torch.bfloat16":
            v = v.float()
        v = v.numpy()
    arr = np.asarray(v)
    if arr.dtype.kind == "f" or arr.dtype.name == "bfloat16":
        arr = arr.astype(np.float32)
    return arr


def _strip(state_dict: Mapping[str, Any], arch: StudentArch) -> dict[str, Any]:
    prefix = _PREFIX[arch.family] + "."
    out: dict[str, Any] = {}
    for k, v in state_dict.items():
        if k.startswith(prefix):
            k = k[len(prefix):]
        # TF-era checkpoints name LayerNorm parameters gamma/beta.
        if k.endswith(".gamma"):
            k = k[: -len("gamma")] + "weight"
        elif k.endswith(".beta"):
            k = k[: -len("beta")] + "bias"
        out[k] = v
    return out


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def params_from_hf(arch: StudentArch, state_dict: Mapping[str, Any], mlm_head: bool | None = None) -> dict:
    """Flax params for ``StudentModel(arch, mlm_head=...)`` from a transformers state dict.

    ``state_dict`` maps HF names (with or without the ``bert.``/``mobilebert.``
    prefix) to arrays (numpy, torch or jax). ``mlm_head``: ``None`` takes the head
    when the checkpoint has one (the result then has a ``'cls'`` subtree), ``True``
    requires it, ``False`` drops it. Pooler / NSP weights are ignored; any other
    unused ``embeddings.*``/``encoder.*`` tensor, a missing tensor, or a shape that
    does not match ``arch`` raises `DistillError`.
    """
    import jax.numpy as jnp

    if not isinstance(arch, StudentArch):
        raise ArchError(f"params_from_hf needs a StudentArch, got {type(arch).__name__}")
    sd = _strip(state_dict, arch)
    has_head = _HEAD_PROBE in sd
    if mlm_head is None:
        mlm_head = has_head
    elif mlm_head and not has_head:
        raise DistillError(f"the checkpoint has no MLM head ({_HEAD_PROBE} is missing); pass mlm_head=False")
    if mlm_head and "cls.predictions.bias" not in sd and "cls.predictions.decoder.bias" in sd:
        sd["cls.predictions.bias"] = sd["cls.predictions.decoder.bias"]

    table = hf_names(arch, mlm_head)
    shapes = _flax_shapes(arch, mlm_head)
    missing = [hf for hf, _, _ in table if hf not in sd]
    if missing:
        other = "mobilebert" if arch.family == "bert" else "bert"
        hint = ""
        if not any(k.startswith("embeddings.") for k in sd) and any(k.startswith(other + ".") for k in sd):
            hint = f" (the checkpoint looks like family {other!r}, the arch is {arch.family!r})"
        shown = ", ".join(missing[:8]) + (f", ... ({len(missing)} in all)" if len(missing) > 8 else "")
        raise DistillError(f"checkpoint is missing weights for {arch.short_name()}{hint}: {shown}")

    params: dict = {}
    for hf, path, transposed in table:
        arr = _to_numpy(sd[hf])
        want = shapes[path]
        hf_want = tuple(reversed(want)) if transposed else want
        if arr.shape != hf_want:
            raise DistillError(
                f"shape mismatch for {hf}: checkpoint has {arr.shape}, {arch.short_name()} needs {hf_want}")
        _set(params, path, jnp.asarray(arr.T if transposed else arr))

    used = {hf for hf, _, _ in table}
    unexpected = sorted(k for k in sd if k not in used and k not in _BUFFERS
                        and (k.startswith("embeddings.") or k.startswith("encoder.")))
    if unexpected:
        shown = ", ".join(unexpected[:8]) + (f", ... ({len(unexpected)} in all)" if len(unexpected) > 8 else "")
        raise DistillError(f"checkpoint has weights that {arch.short_name()} does not use "
                           f"(the arch does not match the checkpoint): {shown}")
    if mlm_head:
        _check_tied(sd, params, arch)
    return params


def _check_tied(sd: Mapping[str, Any], params: dict, arch: StudentArch) -> None:
    pred = params["cls"]["predictions"]
    for hf, ref, what in (
        ("cls.predictions.decoder.weight", params["embeddings"]["word_embeddings"]["embedding"], "word embeddings"),
        ("cls.predictions.decoder.bias", pred["bias"], "cls.predictions.bias"),
    ):
        if hf in sd:
            arr = _to_numpy(sd[hf])
            if arr.shape != tuple(ref.shape) or not np.array_equal(arr, np.asarray(ref)):
                raise DistillError(
                    f"{hf} is not tied to the {what}; StudentModel ties them (as transformers does with "
                    f"tie_word_embeddings=True), so this untied checkpoint cannot be represented")


# ----------------------------------------------------------------------------- Flax -> HF
def _get(tree: Mapping, path: tuple[str, ...]) -> Any:
    node: Any = tree
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            raise DistillError(f"params have no leaf {'/'.join(path)}; were they made for another arch?")
        node = node[key]
    return node


def params_to_hf(arch: StudentArch, params: Mapping) -> dict[str, np.ndarray]:
    """A transformers state dict (``*ForMaskedLM`` names, float32 numpy) from Flax params.

    The MLM head is exported when ``params`` has one (``'cls'``), including the
    tied ``cls.predictions.decoder.weight``/``.bias`` copies the torch state dict
    carries. No pooler (see the module docstring).
    """
    if not isinstance(arch, StudentArch):
        raise ArchError(f"params_to_hf needs a StudentArch, got {type(arch).__name__}")
    mlm_head = "cls" in params
    prefix = _PREFIX[arch.family] + "."
    out: dict[str, np.ndarray] = {}
    for hf, path, transposed in hf_names(arch, mlm_head):
        arr = np.asarray(_get(params, path), dtype=np.float32)
        name = hf if hf.startswith("cls.") else prefix + hf
        out[name] = np.ascontiguousarray(arr.T if transposed else arr)
    if mlm_head:
        out["cls.predictions.decoder.weight"] = out[prefix + "embeddings.word_embeddings.weight"].copy()
        out["cls.predictions.decoder.bias"] = out["cls.predictions.bias"].copy()
    return out


# ----------------------------------------------------------------------------- configs
def arch_from_hf_config(cfg: Mapping[str, Any]) -> StudentArch:
    """The `StudentArch` of a transformers ``config.json`` dict (model_type bert or mobilebert)."""
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise DistillError(choices_message("model_type", model_type, SUPPORTED_MODEL_TYPES))
    eps = float(cfg.get("layer_norm_eps", 1e-12))
    if not math.isclose(eps, 1e-12, rel_tol=1e-6):
        raise DistillError(f"layer_norm_eps={eps} is not supported; StudentModel implements 1e-12 "
                           "(the default of both BertConfig and MobileBertConfig)")
    act = cfg.get("hidden_act", "gelu" if model_type == "bert" else "relu")
    if not isinstance(act, str):
        raise DistillError(f"hidden_act must be a string; got {act!r}")
    act = _ACT_ALIASES.get(act, act)
    if act not in ACTIVATIONS:
        raise DistillError(choices_message("hidden_act", act, ACTIVATIONS))
    try:
        if model_type == "bert":
            if cfg.get("position_embedding_type", "absolute") != "absolute":
                raise DistillError(f"position_embedding_type={cfg['position_embedding_type']!r} is not "
                                   "supported; valid choices: absolute")
            if cfg.get("is_decoder", False) or cfg.get("add_cross_attention", False):
                raise DistillError("decoder BERT configs (is_decoder / add_cross_attention) are not supported")
            h = int(cfg.get("hidden_size", 768))
            return StudentArch(
                family="bert", num_hidden_layers=int(cfg.get("num_hidden_layers", 12)), hidden_size=h,
                embedding_size=h, num_attention_heads=int(cfg.get("num_attention_heads", 12)),
                intermediate_size=int(cfg.get("intermediate_size", 3072)), num_feedforward_networks=1,
                use_bottleneck=False, intra_bottleneck_size=h, use_bottleneck_attention=False,
                key_query_shared_bottleneck=False, trigram_input=False, normalization_type="layer_norm",
                hidden_act=act, vocab_size=int(cfg.get("vocab_size", 30522)),
                max_position_embeddings=int(cfg.get("max_position_embeddings", 512)),
                type_vocab_size=int(cfg.get("type_vocab_size", 2)),
            )
        d = StudentArch()  # MobileBertConfig's defaults are StudentArch's
        kw: dict[str, Any] = {}
        for name in ("num_hidden_layers", "hidden_size", "embedding_size", "num_attention_heads",
                     "intermediate_size", "num_feedforward_networks", "intra_bottleneck_size", "vocab_size",
                     "max_position_embeddings", "type_vocab_size"):
            kw[name] = int(cfg.get(name, getattr(d, name)))
        for name in ("use_bottleneck", "use_bottleneck_attention", "key_query_shared_bottleneck", "trigram_input",
                     "classifier_activation"):
            kw[name] = bool(cfg.get(name, getattr(d, name)))
        return StudentArch(family="mobilebert", normalization_type=cfg.get("normalization_type", "no_norm"),
                           hidden_act=act, **kw)
    except (TypeError, ValueError) as e:  # ArchError is a ValueError
        raise DistillError(f"config.json does not describe a valid {model_type} student: {e}") from e


def hf_config_for(arch: StudentArch, mlm_head: bool = True) -> dict[str, Any]:
    """The ``config.json`` dict transformers needs for ``arch``."""
    cfg = dict(arch.hf_config_dict())
    cfg.update(
        architectures=[_ARCHITECTURES[(arch.family, mlm_head)]], model_type=arch.family,
        layer_norm_eps=1e-12, pad_token_id=0, tie_word_embeddings=True,
    )
    if arch.family == "bert":
        cfg["position_embedding_type"] = "absolute"
    return cfg


# ----------------------------------------------------------------------------- folders
def _load_state_dict(folder: Path) -> dict[str, np.ndarray]:
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    torch_bin = folder / "pytorch_model.bin"
    if single.is_file():
        return _read_safetensors(single)
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as e:
            raise DistillError(f"{index} is not a valid safetensors index: {e}") from e
        sd: dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            if not (folder / shard).is_file():
                raise DistillError(f"{index} names shard {shard}, which is missing from {folder}")
            sd.update(_read_safetensors(folder / shard))
        return sd
    if torch_bin.is_file():
        try:
            import torch
        except ImportError as e:
            raise DistillError(f"{torch_bin} needs torch to read; install torch or convert it to safetensors") from e
        obj = torch.load(torch_bin, map_location="cpu", weights_only=True)
        return {k: _to_numpy(v) for k, v in obj.items()}
    raise DistillError(f"no weights in {folder}: expected model.safetensors, model.safetensors.index.json "
                       "or pytorch_model.bin")


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError

    try:
        from safetensors.numpy import load_file

        return {k: _to_numpy(v) for k, v in load_file(str(path)).items()}
    except (TypeError, ValueError, SafetensorError):
        pass  # e.g. bfloat16 tensors, which plain numpy cannot hold: read through JAX
    try:
        from safetensors.flax import load_file as load_flax

        return {k: _to_numpy(v) for k, v in load_flax(str(path)).items()}
    except (TypeError, ValueError, SafetensorError) as e:
        raise DistillError(f"cannot read {path}: {e}") from e


def load_hf_folder(path: str | os.PathLike) -> tuple[StudentArch, dict, bool]:
    """Read a transformers model folder: ``(arch, params, has_mlm_head)``.

    Needs ``config.json`` (model_type ``bert`` or ``mobilebert``) and
    ``model.safetensors`` (or a sharded index, or ``pytorch_model.bin``, which
    needs torch). Never touches the network.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DistillError(f"no model folder at {folder}")
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise DistillError(f"{folder} has no config.json; is it a transformers model folder?")
    try:
        cfg = json.loads(cfg_path.read_text())
    except ValueError as e:
        raise DistillError(f"{cfg_path} is not valid JSON: {e}") from e
    if not isinstance(cfg, dict):
        raise DistillError(f"{cfg_path} must hold a JSON object")
    arch = arch_from_hf_config(cfg)
    sd = _load_state_dict(folder)
    try:
        params = params_from_hf(arch, sd)
    except DistillError as e:
        raise DistillError(f"{folder}: {e}") from e
    return arch, params, "cls" in params


#: The files an export folder holds; a folder with anything else is never replaced.
EXPORT_FILES = frozenset({"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"})


def _check_replaceable(dest: Path, arch: StudentArch) -> None:
    if not dest.is_dir():
        return
    names = {p.name for p in dest.iterdir()}
    if not names:
        return
    extra = sorted(names - EXPORT_FILES)
    if extra:
        raise DistillError(f"{dest} exists and is not an export folder (it holds {', '.join(extra[:5])}"
                           f"{', ...' if len(extra) > 5 else ''}); nothing was written. Choose another output folder")
    try:
        cfg = json.loads((dest / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cfg = None
    if cfg not in (hf_config_for(arch, True), hf_config_for(arch, False)):
        raise DistillError(f"{dest} holds an export of another model; nothing was written. Choose another output "
                           "folder, or remove that one")


def save_hf_folder(arch: StudentArch, params: Mapping, path: str | os.PathLike,
                   vocab_path: str | os.PathLike | None = None) -> Path:
    """Write ``params`` as a transformers model folder that ``from_pretrained`` loads.

    Writes ``config.json``, ``model.safetensors`` (tied decoder weights left out,
    as ``save_pretrained`` does) and ``vocab.txt`` when ``vocab_path`` is given.
    The folder is built next to ``path`` and renamed into place, so a reader
    never sees a half-written model. An existing folder at ``path`` is replaced only when it is
    empty or an earlier export of the same student (`EXPORT_FILES` only, the same config);
    anything else raises `DistillError` and is left as it was. Returns the folder path.
    """
    from safetensors.numpy import save_file

    dest = Path(path)
    if dest.exists() and not dest.is_dir():
        raise DistillError(f"{dest} exists and is not a folder")
    _check_replaceable(dest, arch)
    if vocab_path is not None and not Path(vocab_path).is_file():
        raise DistillError(f"vocab file {vocab_path} does not exist")
    sd = params_to_hf(arch, params)
    mlm_head = "cls" in params
    for k in _TIED:
        sd.pop(k, None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        (tmp / "config.json").write_text(json.dumps(hf_config_for(arch, mlm_head), indent=2, sort_keys=True) + "\n")
        save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if vocab_path is not None:
            shutil.copyfile(vocab_path, tmp / "vocab.txt")
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, old / dest.name)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
