"""GLUE fine-tuning and evaluation of a student (or of the teacher).

The GLUE TSVs (Wang et al. 2019) are read as the GLUE distribution lays them out
(``<glue_dir>/<task dir>/{train,dev,test}.tsv``; CoLA's labelled files have no
header). A student is fine-tuned with a BERT-style head on the pooled ``[CLS]``
vector, ``dense -> tanh -> dropout -> linear`` over ``last_hidden_state[:, 0]``,
trained with AdamW (linear warm-up from 0 then linear decay, decoupled weight
decay off biases and norms, global-norm clipping: the optimizer distillation
uses, `autodistill.distill.optim.make_optimizer`) and evaluated on the dev split with
each task's standard metrics:

=======  ==============================  ========================
task     metrics                         primary
=======  ==============================  ========================
CoLA     matthews_correlation            matthews_correlation
SST-2    accuracy                        accuracy
MRPC     f1, accuracy                    f1
QQP      f1, accuracy                    f1
STS-B    pearson, spearmanr              pearson
MNLI     accuracy (dev_matched)          accuracy
QNLI     accuracy                        accuracy
RTE      accuracy                        accuracy
WNLI     accuracy                        accuracy
=======  ==============================  ========================

Metrics are plain numpy/scipy (`accuracy`, `f1_binary`, `matthews_corrcoef`,
`pearson`, `spearman`), matching scikit-learn / scipy definitions.

Runs are deterministic for a given ``seed`` on one machine: the seed fixes the
head initialisation, the order of the training examples and the dropout masks.

Typical use (the MiniLM teacher reaches about 0.85 SST-2 dev accuracy after this
150-step budget, about 5 minutes on 2 CPU cores; see ``benchmarks/bench_glue.py``)::

    arch, params, _ = load_hf_folder(folder)
    result = finetune_glue(arch, params, folder / "vocab.txt", "sst2", "../shared/data/glue",
                           steps=150, batch_size=32, learning_rate=1e-4, seq_len=64, seed=0,
                           group_by_length=True, min_pad_len=16)
    result.metrics  # {'accuracy': 0.845...}
"""
from __future__ import annotations

import csv
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
import optax

from autodistill.arch import StudentArch
from autodistill.distill.optim import make_optimizer
from autodistill.errors import DistillError, choices_message

logger = logging.getLogger(__name__)

__all__ = [
    "GLUE_TASKS",
    "GlueExample",
    "GlueHead",
    "GlueResult",
    "GlueTaskSpec",
    "accuracy",
    "compute_metrics",
    "f1_binary",
    "finetune_examples",
    "finetune_glue",
    "glue_task",
    "load_glue_task",
    "matthews_corrcoef",
    "pearson",
    "spearman",
]


# --------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class GlueTaskSpec:
    """Where a GLUE task lives and how to read and score it.

    ``splits`` maps a split name to its file inside ``<glue_dir>/<dir_name>``.
    ``text_columns`` (one or two) and ``label_column`` are header names; for files
    without a header (CoLA train/dev) the columns are named by ``headerless_columns``.
    ``label_names`` lists the raw label strings in class-id order (empty for
    regression, ``num_labels == 1``). ``metrics`` are the reported metric names and
    ``primary_metric`` the one that ranks runs.
    """

    name: str
    dir_name: str
    splits: Mapping[str, str]
    text_columns: tuple[str, ...]
    label_column: str
    label_names: tuple[str, ...]
    metrics: tuple[str, ...]
    eval_split: str = "dev"
    headerless_splits: frozenset[str] = frozenset()
    headerless_columns: tuple[str, ...] = ()

    @property
    def num_labels(self) -> int:
        """Number of head outputs: the class count, or 1 for regression."""
        return len(self.label_names) if self.label_names else 1

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2


_STD_SPLITS = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}

#: name -> spec of every GLUE task this module can read (the shared data holds CoLA, SST-2,
#: RTE, STS-B, WNLI and QNLI dev/test).
GLUE_TASKS: dict[str, GlueTaskSpec] = {
    "cola": GlueTaskSpec(
        "cola", "CoLA", _STD_SPLITS, ("sentence",), "label", ("0", "1"), ("matthews_correlation",),
        headerless_splits=frozenset({"train", "dev"}),
        headerless_columns=("source", "label", "original_label", "sentence"),
    ),
    "sst2": GlueTaskSpec("sst2", "SST-2", _STD_SPLITS, ("sentence",), "label", ("0", "1"), ("accuracy",)),
    "mrpc": GlueTaskSpec("mrpc", "MRPC", _STD_SPLITS, ("#1 String", "#2 String"), "Quality", ("0", "1"),
                         ("f1", "accuracy")),
    "qqp": GlueTaskSpec("qqp", "QQP", _STD_SPLITS, ("question1", "question2"), "is_duplicate", ("0", "1"),
                        ("f1", "accuracy")),
    "stsb": GlueTaskSpec("stsb", "STS-B", _STD_SPLITS, ("sentence1", "sentence2"), "score", (),
                         ("pearson", "spearmanr")),
    "mnli": GlueTaskSpec(
        "mnli", "MNLI",
        {"train": "train.tsv", "dev_matched": "dev_matched.tsv", "dev_mismatched": "dev_mismatched.tsv",
         "test_matched": "test_matched.tsv", "test_mismatched": "test_mismatched.tsv"},
        ("sentence1", "sentence2"), "gold_label", ("contradiction", "entailment", "neutral"), ("accuracy",),
        eval_split="dev_matched",
    ),
    "qnli": GlueTaskSpec("qnli", "QNLI", _STD_SPLITS, ("question", "sentence"), "label",
                         ("entailment", "not_entailment"), ("accuracy",)),
    "rte": GlueTaskSpec("rte", "RTE", _STD_SPLITS, ("sentence1", "sentence2"), "label",
                        ("entailment", "not_entailment"), ("accuracy",)),
    "wnli": GlueTaskSpec("wnli", "WNLI", _STD_SPLITS, ("sentence1", "sentence2"), "label", ("0", "1"),
                         ("accuracy",)),
}

_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli"}


def glue_task(task: str | GlueTaskSpec) -> GlueTaskSpec:
    """The spec of ``task``: a `GLUE_TASKS` key or a GLUE folder name (``"SST-2"``), any case."""
    if isinstance(task, GlueTaskSpec):
        return task
    key = str(task).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in GLUE_TASKS:
        raise DistillError(choices_message("GLUE task", task, GLUE_TASKS))
    return GLUE_TASKS[key]


@dataclass(frozen=True)
class GlueExample:
    """One GLUE row: the text(s) and the label (class id, float score, or None on test splits)."""

    guid: str
    text_a: str
    text_b: str | None
    label: int | float | None


def _open_tsv_rows(path: Path) -> list[list[str]]:
    # GLUE TSVs are unquoted: a `"` is text (csv.QUOTE_NONE), and some fields are long.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def load_glue_task(glue_dir: str | os.PathLike, task: str | GlueTaskSpec, split: str,
                   max_examples: int | None = None) -> list[GlueExample]:
    """Read ``split`` of ``task`` from ``glue_dir`` (the folder holding ``SST-2/``, ``RTE/``...).

    Returns the first ``max_examples`` rows (all when None) as `GlueExample`s with
    labels mapped to class ids (``spec.label_names`` order) or to float scores
    (STS-B); test splits have ``label=None``. Rows too short for the needed
    columns are skipped with a warning (as the GLUE reference loaders do for QQP).
    Raises `DistillError` for an unknown task or split, a missing file, a missing
    column or an unknown label.
    """
    spec = glue_task(task)
    if split not in spec.splits:
        raise DistillError(choices_message(f"split for GLUE task {spec.name!r}", split, spec.splits))
    if max_examples is not None and (isinstance(max_examples, bool) or int(max_examples) < 0):
        raise DistillError(f"max_examples must be a non-negative integer or None, got {max_examples!r}")
    task_dir = Path(glue_dir) / spec.dir_name
    path = task_dir / spec.splits[split]
    if not path.is_file():
        if not Path(glue_dir).is_dir():
            raise DistillError(f"GLUE folder {glue_dir} does not exist")
        have = sorted(s for s, fname in spec.splits.items() if (task_dir / fname).is_file())
        raise DistillError(
            f"GLUE task {spec.name!r} has no {split!r} split: {path} is missing; "
            f"splits present: {', '.join(have) if have else 'none (no ' + str(task_dir) + ')'}"
        )
    rows = _open_tsv_rows(path)
    if split in spec.headerless_splits:
        header = list(spec.headerless_columns)
        body = rows
    else:
        if not rows:
            raise DistillError(f"{path} is empty")
        header, body = [c.strip() for c in rows[0]], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    missing = [c for c in spec.text_columns if c not in col]
    if missing:
        raise DistillError(f"{path}: header {header} lacks text column(s) {missing}")
    text_idx = [col[c] for c in spec.text_columns]
    label_idx = col.get(spec.label_column)  # absent on test splits
    id_idx = col.get("index")
    needed = max(text_idx + ([label_idx] if label_idx is not None else []))
    label_ids = {name: i for i, name in enumerate(spec.label_names)}

    out: list[GlueExample] = []
    skipped = 0
    for lineno, row in enumerate(body, start=1 if split in spec.headerless_splits else 2):
        if max_examples is not None and len(out) >= int(max_examples):
            break
        if len(row) <= needed:
            skipped += 1
            continue
        label: int | float | None = None
        if label_idx is not None:
            raw = row[label_idx].strip()
            if spec.is_regression:
                try:
                    label = float(raw)
                except ValueError:
                    raise DistillError(f"{path}:{lineno}: score {raw!r} is not a number") from None
            else:
                if raw not in label_ids:
                    raise DistillError(f"{path}:{lineno}: {choices_message('label', raw, spec.label_names)}")
                label = label_ids[raw]
        guid = f"{split}-{row[id_idx] if id_idx is not None and id_idx < len(row) else lineno}"
        text_b = row[text_idx[1]].strip() if spec.is_pair else None
        out.append(GlueExample(guid, row[text_idx[0]].strip(), text_b, label))
    if skipped:
        logger.warning("%s: skipped %d malformed row(s) with fewer than %d fields", path, skipped, needed + 1)
    if not out and max_examples != 0:
        raise DistillError(f"{path} holds no usable rows")
    return out


# --------------------------------------------------------------------------- metrics
def _pair(preds: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(preds), np.asarray(labels)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(f"predictions {p.shape} and labels {y.shape} must be equal 1-D shapes")
    if p.size == 0:
        raise ValueError("cannot score an empty prediction set")
    return p, y


def accuracy(preds: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Fraction of ``preds == labels``; both ``(N,)``."""
    p, y = _pair(preds, labels)
    return float(np.mean(p == y))


def f1_binary(preds: npt.ArrayLike, labels: npt.ArrayLike, positive: int = 1) -> float:
    """F1 of the ``positive`` class: ``2 tp / (2 tp + fp + fn)`` (0 when there are no positives at all)."""
    p, y = _pair(preds, labels)
    tp = int(np.sum((p == positive) & (y == positive)))
    fp = int(np.sum((p == positive) & (y != positive)))
    fn = int(np.sum((p != positive) & (y == positive)))
    return 0.0 if tp == 0 else 2.0 * tp / (2.0 * tp + fp + fn)


def matthews_corrcoef(preds: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Matthews correlation (multi-class Gorodkin form, as scikit-learn); 0 when undefined."""
    p, y = _pair(preds, labels)
    classes, inv = np.unique(np.concatenate([y, p]), return_inverse=True)
    k = len(classes)
    yi, pi = inv[: len(y)], inv[len(y):]
    conf = np.zeros((k, k), dtype=np.float64)
    np.add.at(conf, (yi, pi), 1.0)
    t_sum, p_sum = conf.sum(axis=1), conf.sum(axis=0)
    n, correct = conf.sum(), np.trace(conf)
    cov_yp = correct * n - np.dot(t_sum, p_sum)
    cov_pp = n * n - np.dot(p_sum, p_sum)
    cov_yy = n * n - np.dot(t_sum, t_sum)
    if cov_pp == 0 or cov_yy == 0:
        return 0.0
    return float(cov_yp / math.sqrt(cov_yy * cov_pp))


def pearson(preds: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Pearson's r; NaN when either side is constant."""
    p, y = _pair(preds, labels)
    p, y = p.astype(np.float64), y.astype(np.float64)
    dp, dy = p - p.mean(), y - y.mean()
    denom = math.sqrt(float(np.dot(dp, dp)) * float(np.dot(dy, dy)))
    if denom == 0.0:
        return float("nan")
    return float(np.clip(np.dot(dp, dy) / denom, -1.0, 1.0))


def spearman(preds: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Spearman's rho: Pearson's r of average ranks (ties share their mean rank), as scipy."""
    from scipy.stats import rankdata

    p, y = _pair(preds, labels)
    return pearson(rankdata(p), rankdata(y))


_METRIC_FNS: dict[str, Callable[[Any, Any], float]] = {
    "accuracy": accuracy,
    "f1": f1_binary,
    "matthews_correlation": matthews_corrcoef,
    "pearson": pearson,
    "spearmanr": spearman,
}


def compute_metrics(task: str | GlueTaskSpec, predictions: npt.ArrayLike, labels: npt.ArrayLike) -> dict[str, float]:
    """The task's standard metrics: ``predictions`` are class ids ``(N,)`` or scores ``(N,)`` for STS-B."""
    spec = glue_task(task)
    return {name: _METRIC_FNS[name](predictions, labels) for name in spec.metrics}


# --------------------------------------------------------------------------- tokenizer
@dataclass(frozen=True)
class _Encoded:
    """Tokenised examples, ``[CLS] A [SEP] (B [SEP])`` truncated to the sequence length, not padded."""

    ids: tuple[np.ndarray, ...]  # each (len_i,) int32
    type_ids: tuple[np.ndarray, ...]  # each (len_i,) int32: 0 for [CLS] A [SEP], 1 for B [SEP]
    pad_id: int


def _pair_lengths(n_a: int, n_b: int, max_len: int) -> tuple[int, int]:
    """Lengths kept of a pair under ``tokenizers``' ``longest_first`` truncation to ``max_len`` tokens."""
    if n_a + n_b <= max_len:
        return n_a, n_b
    swap = n_a > n_b
    short, long = (n_b, n_a) if swap else (n_a, n_b)
    long = short if short > max_len else max(short, max_len - short)
    if short + long > max_len:
        short = max_len // 2
        long = short + max_len % 2
    return (long, short) if swap else (short, long)


def _encode(tokenizer: Any, examples: Sequence[GlueExample], seq_len: int) -> _Encoded:
    """BERT inputs of ``examples`` with `autodistill.distill.data.WordPieceTokenizer` ``tokenizer``."""
    pair = bool(examples) and examples[0].text_b is not None
    a = tokenizer.encode([e.text_a for e in examples])
    b = tokenizer.encode([e.text_b or "" for e in examples]) if pair else [None] * len(a)
    cls, sep = np.array([tokenizer.cls_id], np.int32), np.array([tokenizer.sep_id], np.int32)
    ids, types = [], []
    for x, y in zip(a, b):
        if y is None:
            x = x[:max(seq_len - 2, 0)]
            seq = np.concatenate([cls, x, sep])
            ids.append(seq[:seq_len])
            types.append(np.zeros(len(ids[-1]), np.int32))
        else:
            na, nb = _pair_lengths(len(x), len(y), max(seq_len - 3, 0))
            first = np.concatenate([cls, x[:na], sep])
            seq = np.concatenate([first, y[:nb], sep])[:seq_len]
            ids.append(seq)
            types.append((np.arange(len(seq)) >= len(first)).astype(np.int32))
    return _Encoded(tuple(ids), tuple(types), int(tokenizer.pad_id))


def _bucket(length: int, seq_len: int, min_len: int = 8) -> int:
    """Pad length for a batch whose longest row is ``length``: a power of two >= ``min_len``, at most ``seq_len``."""
    return min(seq_len, max(min_len, 1 << max(0, length - 1).bit_length()))


def _collate(enc: _Encoded, idx: Sequence[int] | np.ndarray, rows: int, seq_len: int,
             min_len: int = 8) -> dict[str, np.ndarray]:
    """``rows`` padded rows from examples ``idx`` (extra rows are all padding): ids/types/mask ``(rows, S)``."""
    s = _bucket(max(len(enc.ids[i]) for i in idx), seq_len, min_len)
    ids = np.full((rows, s), enc.pad_id, np.int32)
    types = np.zeros((rows, s), np.int32)
    mask = np.zeros((rows, s), np.int32)
    for r, i in enumerate(idx):
        n = len(enc.ids[i])
        ids[r, :n], types[r, :n], mask[r, :n] = enc.ids[i], enc.type_ids[i], 1
    mask[len(idx):, 0] = 1  # padding rows attend to one token so that softmax stays finite
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


# --------------------------------------------------------------------------- model
class GlueHead(nn.Module):
    """BERT's pooler and classifier: ``h[:, 0] -> dense(H) -> tanh -> dropout -> dense(num_labels)``.

    Input ``last_hidden_state`` ``(B, S, H)``; output logits ``(B, num_labels)``.
    """

    hidden_size: int
    num_labels: int
    dropout_rate: float = 0.1

    @nn.compact
    def __call__(self, last_hidden_state: jax.Array, deterministic: bool = True) -> jax.Array:
        init = nn.initializers.normal(0.02)
        pooled = jnp.tanh(nn.Dense(self.hidden_size, kernel_init=init, name="pooler")(last_hidden_state[:, 0]))
        pooled = nn.Dropout(self.dropout_rate)(pooled, deterministic=deterministic)
        return nn.Dense(self.num_labels, kernel_init=init, name="classifier")(pooled)


@dataclass(frozen=True)
class GlueResult:
    """One fine-tune-and-evaluate run.

    ``metrics`` are the task's standard metrics on ``eval_split`` (fractions, not
    percent); ``wall_time_s`` covers tokenisation, compilation, training and evaluation.
    """

    task: str
    metrics: dict[str, float]
    train_steps: int
    wall_time_s: float
    eval_split: str = "dev"
    num_train_examples: int = 0
    num_eval_examples: int = 0
    final_train_loss: float = float("nan")
    train_time_s: float = 0.0
    eval_time_s: float = 0.0
    params: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def score(self) -> float:
        """The task's primary metric."""
        return self.metrics[glue_task(self.task).primary_metric]


def _group_by_length(order: np.ndarray, lengths: Sequence[int], batch_size: int, rng: np.random.Generator,
                     batches_per_group: int = 64) -> np.ndarray:
    """Reorder ``order`` (N,) so that each batch holds examples of similar length (same multiset per group)."""
    lens = np.asarray(lengths)
    group = batch_size * batches_per_group
    out: list[np.ndarray] = []
    for start in range(0, len(order), group):
        chunk = order[start:start + group]
        chunk = chunk[np.argsort(-lens[chunk], kind="stable")]
        batches = [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        out.extend(batches[j] for j in rng.permutation(len(batches)))
    return np.concatenate(out)


def _check_positive(name: str, value: Any, kind: type = int) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not value > 0 or (kind is int and int(value) != value) or not math.isfinite(float(value)):
        raise DistillError(f"{name} must be a positive {'integer' if kind is int else 'number'}, got {value!r}")


def finetune_examples(arch: StudentArch, params: Mapping[str, Any], vocab_path: str | os.PathLike,
                      task: str | GlueTaskSpec, train_examples: Sequence[GlueExample],
                      eval_examples: Sequence[GlueExample], *, steps: int, batch_size: int, learning_rate: float,
                      seq_len: int, seed: int, warmup_ratio: float = 0.1, weight_decay: float = 0.01,
                      dropout_rate: float = 0.1, max_grad_norm: float = 1.0, eval_batch_size: int | None = None,
                      lowercase: bool | None = None, group_by_length: bool = False, min_pad_len: int = 8,
                      log_every: int = 50, return_params: bool = False, eval_split: str = "dev") -> GlueResult:
    """Fine-tune ``params`` (a `StudentModel` tree for ``arch``; an MLM head is dropped) on ``train_examples``
    for ``steps`` AdamW steps of ``batch_size`` rows and score ``eval_examples`` with the task's metrics.

    Batches cycle through seeded per-epoch permutations of the training set; each batch
    is padded to a power-of-two length in ``[min_pad_len, seq_len]`` (so a handful of
    shapes compile). With ``group_by_length`` each run of 64 batches of the permutation
    is sorted by token count before being cut into batches, and the batches are then
    shuffled (as ``transformers``' ``group_by_length``): far less padding on CPU, at the
    cost of length-homogeneous batches. The learning rate warms up linearly over
    ``warmup_ratio * steps`` and decays linearly to 0.
    """
    from autodistill.models import StudentModel

    t0 = time.perf_counter()
    spec = glue_task(task)
    for name, v in (("steps", steps), ("batch_size", batch_size), ("seq_len", seq_len),
                    ("min_pad_len", min_pad_len)):
        _check_positive(name, v)
    _check_positive("learning_rate", learning_rate, float)
    if not 0.0 <= warmup_ratio <= 1.0:
        raise DistillError(f"warmup_ratio must be in [0, 1], got {warmup_ratio!r}")
    if not 0.0 <= dropout_rate < 1.0:
        raise DistillError(f"dropout_rate must be in [0, 1), got {dropout_rate!r}")
    if seq_len > arch.max_position_embeddings:
        raise DistillError(f"seq_len={seq_len} exceeds the student's max_position_embeddings="
                           f"{arch.max_position_embeddings}")
    if spec.is_pair and arch.type_vocab_size < 2:
        raise DistillError(f"{spec.name} takes sentence pairs (token types 0 and 1) but the student's "
                           f"type_vocab_size is {arch.type_vocab_size}")
    if not train_examples:
        raise DistillError(f"no training examples for {spec.name}")
    if not eval_examples:
        raise DistillError(f"no evaluation examples for {spec.name}")
    for where, exs in (("training", train_examples), ("evaluation", eval_examples)):
        if any(e.label is None for e in exs):
            raise DistillError(f"{spec.name} {where} examples must be labelled (test splits have no labels)")
        if spec.is_pair != (exs[0].text_b is not None):
            raise DistillError(f"{spec.name} takes {'sentence pairs' if spec.is_pair else 'single sentences'}; "
                               f"the {where} examples do not match")
    if not spec.is_regression:
        seen = {e.label for e in (*train_examples, *eval_examples) if e.label is not None}
        bad = sorted(seen - set(range(spec.num_labels)))
        if bad:
            raise DistillError(f"{spec.name} labels must be class ids 0..{spec.num_labels - 1}; got {bad}")
    eval_batch_size = int(eval_batch_size or max(int(batch_size), 32))

    from autodistill.distill.data import WordPieceTokenizer

    tokenizer = WordPieceTokenizer(vocab_path, lowercase=lowercase)
    if tokenizer.vocab_size > arch.vocab_size:
        raise DistillError(f"{vocab_path} has {tokenizer.vocab_size} tokens but the student's vocab_size is "
                           f"{arch.vocab_size}")
    eval_enc = _encode(tokenizer, eval_examples, int(seq_len))
    label_dtype = np.float32 if spec.is_regression else np.int32
    eval_labels = np.asarray([e.label for e in eval_examples], label_dtype)

    encoder = StudentModel(arch=arch, dtype=jnp.float32, mlm_head=False)
    head = GlueHead(arch.hidden_size, spec.num_labels, dropout_rate)
    rng = jax.random.PRNGKey(int(seed))
    head_rng, dropout_rng = jax.random.split(rng)
    head_params = head.init(head_rng, jnp.zeros((1, 1, arch.hidden_size), jnp.float32))["params"]
    enc_params = {k: v for k, v in params.items() if k != "cls"}
    state = {"encoder": jax.tree_util.tree_map(jnp.asarray, enc_params), "head": head_params}

    steps = int(steps)
    warmup = int(round(warmup_ratio * steps))
    tx = make_optimizer("adamw", learning_rate, warmup, steps, weight_decay=weight_decay, clip_norm=max_grad_norm,
                        schedule="linear", warmup_from_zero=True)
    opt_state = tx.init(state)

    def logits_fn(p, batch, deterministic, drop_rng):
        out = encoder.apply({"params": p["encoder"]}, batch["input_ids"], token_type_ids=batch["token_type_ids"],
                            attention_mask=batch["attention_mask"])
        return head.apply({"params": p["head"]}, out.last_hidden_state, deterministic=deterministic,
                          rngs=None if deterministic else {"dropout": drop_rng})

    def loss_fn(p, batch, labels, drop_rng):
        logits = logits_fn(p, batch, dropout_rate == 0.0, drop_rng)
        if spec.is_regression:
            return jnp.mean(jnp.square(logits[:, 0] - labels))
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

    @jax.jit
    def train_step(p, o, batch, labels, step):
        loss, grads = jax.value_and_grad(loss_fn)(p, batch, labels, jax.random.fold_in(dropout_rng, step))
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, loss

    @jax.jit
    def predict(p, batch):
        logits = logits_fn(p, batch, True, None)
        return logits[:, 0] if spec.is_regression else jnp.argmax(logits, axis=-1)

    # Training order: seeded permutations, one per epoch, concatenated.
    order_rng = np.random.default_rng(int(seed))
    n_train, bs = len(train_examples), int(batch_size)
    need = steps * bs
    order = np.concatenate([order_rng.permutation(n_train) for _ in range(-(-need // n_train))])[:need]
    # Tokenise only the examples the run will see; `order` then indexes that subset.
    used = np.unique(order)
    order = np.searchsorted(used, order)
    train_enc = _encode(tokenizer, [train_examples[i] for i in used], int(seq_len))
    train_labels = np.asarray([train_examples[i].label for i in used], label_dtype)
    if group_by_length:
        order = _group_by_length(order, [len(x) for x in train_enc.ids], bs, order_rng)

    logger.info("%s: fine-tuning %s for %d steps (batch %d, lr %g, seq %d) on %d examples",
                spec.name, arch.short_name(), steps, bs, learning_rate, seq_len, n_train)
    t_train = time.perf_counter()
    loss = jnp.asarray(float("nan"))
    recent: list[jax.Array] = []
    for step in range(steps):
        idx = order[step * bs:(step + 1) * bs]
        batch = _collate(train_enc, idx, bs, int(seq_len), int(min_pad_len))
        state, opt_state, loss = train_step(state, opt_state, batch, train_labels[idx], step)
        if log_every:
            recent.append(loss)
        if log_every and ((step + 1) % int(log_every) == 0 or step + 1 == steps):
            mean_loss = float(np.mean([float(x) for x in recent]))
            recent = []
            if not math.isfinite(mean_loss):
                raise DistillError(f"{spec.name}: training loss became {mean_loss} at step {step + 1}")
            logger.info("%s step %d/%d loss %.4f (%.1f s)", spec.name, step + 1, steps, mean_loss,
                        time.perf_counter() - t_train)
    final_loss = float(loss)
    if not math.isfinite(final_loss):
        raise DistillError(f"{spec.name}: training loss is {final_loss} after {steps} steps")
    train_time = time.perf_counter() - t_train

    # Evaluation: length-sorted batches (fewer padded tokens), padded to a fixed batch size.
    t_eval = time.perf_counter()
    by_len = np.argsort([len(x) for x in eval_enc.ids], kind="stable")
    preds = np.empty(len(eval_examples), label_dtype)
    for start in range(0, len(by_len), eval_batch_size):
        idx = by_len[start:start + eval_batch_size]
        out = np.asarray(predict(state, _collate(eval_enc, idx, eval_batch_size, int(seq_len), int(min_pad_len))))
        preds[idx] = out[:len(idx)]
    metrics = compute_metrics(spec, preds, eval_labels)
    eval_time = time.perf_counter() - t_eval
    wall = time.perf_counter() - t0
    logger.info("%s: %s after %d steps (train %.1f s, eval %.1f s)", spec.name,
                ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()), steps, train_time, eval_time)
    return GlueResult(
        task=spec.name, metrics=metrics, train_steps=steps, wall_time_s=wall, eval_split=eval_split,
        num_train_examples=n_train, num_eval_examples=len(eval_examples), final_train_loss=final_loss,
        train_time_s=train_time, eval_time_s=eval_time,
        params=jax.device_get(state) if return_params else None,
    )


def finetune_glue(arch: StudentArch, params: Mapping[str, Any], vocab_path: str | os.PathLike,
                  task: str | GlueTaskSpec, glue_dir: str | os.PathLike, *, steps: int, batch_size: int,
                  learning_rate: float, seq_len: int, seed: int, max_train_examples: int | None = None,
                  max_eval_examples: int | None = None, eval_split: str | None = None,
                  **kwargs: Any) -> GlueResult:
    """Fine-tune ``params`` on ``task``'s train split from ``glue_dir`` and evaluate on its dev split.

    ``max_train_examples`` / ``max_eval_examples`` take the first rows of each split
    (all by default). Other keyword arguments go to `finetune_examples`
    (``warmup_ratio``, ``weight_decay``, ``dropout_rate``, ``eval_batch_size``...).
    """
    spec = glue_task(task)
    eval_split = eval_split or spec.eval_split
    train = load_glue_task(glue_dir, spec, "train", max_train_examples)
    dev = load_glue_task(glue_dir, spec, eval_split, max_eval_examples)
    return finetune_examples(arch, params, vocab_path, spec, train, dev, steps=steps, batch_size=batch_size,
                             learning_rate=learning_rate, seq_len=seq_len, seed=seed, eval_split=eval_split,
                             **kwargs)
