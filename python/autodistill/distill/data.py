"""Distillation data: WordPiece tokenizer, corpora, packing, MLM masking, NSP pairs, held-out split.

* `WordPieceTokenizer` builds the ``tokenizers`` BERT pipeline (BertNormalizer,
  BertPreTokenizer, WordPiece) from a teacher's ``vocab.txt`` and checks it
  against the teacher's ``vocab_size`` and the BERT special tokens.
* A corpus is a tuple of `Document` (name, text): `read_corpus` reads any mix
  of text files and folders; `default_corpus` is embedded in every Python
  install (the language reference in ``pydoc_data.topics`` plus docstrings of a
  fixed list of standard-library modules), so the default job runs anywhere.
* `build_data` tokenizes (paragraphs, or sentences for NSP), packs documents
  into ``[CLS] ... [SEP]`` sequences of ``seq_len`` tokens (documents are
  streamed back to back, separated by ``[SEP]``; with NSP, BERT's sentence-pair
  recipe with 50% random next segments), splits off a fixed held-out set and
  returns `DistillData`.
* `DistillData.train_batch(i, batch_size, seed)` is a pure function of its
  arguments: the order is a per-epoch permutation drawn from ``seed`` and the
  masks of batch ``i`` come from ``(seed, i)``, so every trial of a search sees
  the same batches and a resumed run regenerates exactly the batches it missed.
  Held-out batches have fixed masks (``DataConfig.eval_seed``).

Masking is BERT's: 15% of the non-special tokens of a sequence (at most
``max_predictions``), of which 80% become ``[MASK]``, 10% a random non-special
token and 10% stay unchanged. Predictions are addressed by position
(``mlm_positions``) so that heads run on the masked positions only.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import logging
import os
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autodistill.errors import DistillError

logger = logging.getLogger(__name__)

__all__ = [
    "SPECIAL_TOKENS", "WordPieceTokenizer", "Document", "read_corpus", "default_corpus", "DataConfig",
    "PackedSequences", "MLMBatch", "DistillData", "build_data", "mask_sequences",
]

#: Tokens every BERT vocab must hold.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: File names skipped when a corpus folder is walked (metadata, not text).
_SKIP_NAMES = re.compile(r"^(readme|license|licence|provenance|sha256sums|copying)(\..*)?$", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_PARAGRAPH = re.compile(r"\n[ \t\r]*\n")
#: reStructuredText rules and underlines ("=====", "-----"): markup, not language; dropped.
_RULE_LINE = re.compile(r"^[ \t]*([=\-~^*#+_`.])\1{2,}[ \t]*$", re.MULTILINE)


# ============================================================================ tokenizer
class WordPieceTokenizer:
    """BERT WordPiece tokenization with the ``tokenizers`` library, from a ``vocab.txt``.

    ``lowercase=None`` reads ``do_lower_case`` from a ``tokenizer_config.json``
    beside the vocab, else guesses from the vocab (no upper-case token: uncased).
    ``expected_vocab_size`` (the teacher's ``vocab_size``) must equal the number
    of vocab lines.
    """

    def __init__(self, vocab_path: str | os.PathLike, lowercase: bool | None = None,
                 expected_vocab_size: int | None = None) -> None:
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

        path = Path(vocab_path)
        if not path.is_file():
            raise DistillError(f"vocab file {path} does not exist")
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as e:
            raise DistillError(f"vocab file {path} is not UTF-8 text: {e}") from None
        if lines and lines[-1] == "":
            lines.pop()
        vocab: dict[str, int] = {}
        for i, tok in enumerate(lines):
            vocab[tok.rstrip("\r")] = i
        self.path = path
        self.vocab_size = len(lines)
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise DistillError(f"vocab {path} lacks the BERT special token(s) {missing}; is it a WordPiece vocab.txt?")
        if expected_vocab_size is not None and expected_vocab_size != self.vocab_size:
            raise DistillError(
                f"vocab {path} has {self.vocab_size} tokens but the model has vocab_size={expected_vocab_size}; "
                "pass the vocab.txt the model was trained with")
        if lowercase is None:
            lowercase = _guess_lowercase(path, vocab)
        self.lowercase = bool(lowercase)
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (vocab[t] for t in SPECIAL_TOKENS)
        self._id_to_token = lines
        bracketed = np.array([t.startswith("[") and t.endswith("]") and len(t) > 2 for t in lines])
        #: Ids that never get masked and are never drawn as random replacements (``[PAD]``, ``[unused0]``...).
        self.special_ids = np.flatnonzero(bracketed).astype(np.int32)
        #: Ids drawn for the 10% random replacements.
        self.replacement_ids = np.flatnonzero(~bracketed).astype(np.int32)
        if self.replacement_ids.size == 0:
            raise DistillError(f"vocab {path} has no ordinary tokens")
        tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                    lowercase=self.lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        self._tok = tok
        self.fingerprint = hashlib.sha256(path.read_bytes() + bytes([self.lowercase])).hexdigest()[:16]

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of each text, without special tokens: a list of ``(n_i,)`` int32 arrays."""
        if not texts:
            return []
        encs = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in encs]

    def tokens(self, ids: Iterable[int]) -> list[str]:
        return [self._id_to_token[int(i)] for i in ids]

    def decode(self, ids: Iterable[int]) -> str:
        """Readable text of ids (``##`` pieces joined; specials kept)."""
        out = " ".join(self.tokens(ids))
        return out.replace(" ##", "")

    def __repr__(self) -> str:
        return f"WordPieceTokenizer({str(self.path)!r}, vocab_size={self.vocab_size}, lowercase={self.lowercase})"


def _guess_lowercase(path: Path, vocab: dict[str, int]) -> bool:
    cfg = path.parent / "tokenizer_config.json"
    if cfg.is_file():
        try:
            v = json.loads(cfg.read_text(encoding="utf-8")).get("do_lower_case")
            if isinstance(v, bool):
                return v
        except (ValueError, AttributeError):
            pass
    return not any(any(c.isupper() for c in t) for t in vocab if not (t.startswith("[") and t.endswith("]")))


# ============================================================================ corpora
@dataclass(frozen=True)
class Document:
    """One document of a corpus: a stable ``name`` (used for the held-out split) and its text."""

    name: str
    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise DistillError("a Document needs a non-empty name")
        if not isinstance(self.text, str):
            raise DistillError(f"Document {self.name!r}: text must be a str")


def _latin1_fallback(e: UnicodeError) -> tuple[str, int]:
    """Codec error handler: the five bytes Windows-1252 leaves undefined read as Latin-1."""
    assert isinstance(e, UnicodeDecodeError)
    return e.object[e.start:e.end].decode("latin-1"), e.end


def _decode_text(raw: bytes, path: Path) -> str:
    """``raw`` as UTF-8 (a byte-order mark dropped). A file that is not UTF-8 is read as Windows-1252 (Latin-1
    with its printable 0x80-0x9f; é stays é, never a replacement character) and a warning names it and its
    first byte that is not UTF-8."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        import codecs

        line = raw.count(b"\n", 0, e.start) + 1
        logger.warning("corpus file %s is not UTF-8 (byte offset %d, line %d, is 0x%02x): read as Windows-1252/"
                       "Latin-1; convert it to UTF-8 if it is in another encoding", path, e.start, line, raw[e.start])
        codecs.register_error("autodistill-latin1", _latin1_fallback)
        return raw.decode("cp1252", errors="autodistill-latin1")


def read_corpus(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> tuple[Document, ...]:
    """Documents of a set of text files and folders (one `Document` per file).

    Folders are walked recursively in sorted order; hidden files, binary files
    (a NUL byte in the first 8 KiB) and metadata files (README, LICENSE,
    PROVENANCE, SHA256SUMS...) are skipped. Text is read as UTF-8 (a byte-order
    mark dropped); a file that is not UTF-8 (a Latin-1 book, say: the shared
    corpora hold some) is read as Windows-1252/Latin-1 with a warning naming it
    and its first non-UTF-8 byte, so no character becomes a replacement mark.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    docs: list[Document] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.is_file()
                           and not any(part.startswith(".") for part in f.relative_to(path).parts)
                           and not _SKIP_NAMES.match(f.name))
            for f in files:
                raw = f.read_bytes()
                if b"\0" in raw[:8192]:
                    logger.info("skipping binary file %s", f)
                    continue
                docs.append(Document(str(f), _decode_text(raw, f)))
        elif path.is_file():
            raw = path.read_bytes()
            if b"\0" in raw[:8192]:
                raise DistillError(f"corpus file {path} is binary, not text")
            docs.append(Document(str(path), _decode_text(raw, path)))
        else:
            raise DistillError(f"corpus path {path} does not exist")
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise DistillError(f"no text found in corpus paths {[str(p) for p in paths]}")
    return tuple(docs)


#: Standard-library modules whose docstrings extend the default corpus (fixed list, sorted).
_DOC_MODULES = (
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "calendar", "cmath", "codecs", "collections",
    "concurrent.futures", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal",
    "difflib", "email.message", "enum", "fileinput", "fnmatch", "fractions", "ftplib", "functools", "getopt",
    "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html.parser", "http.client", "http.server", "imaplib",
    "inspect", "io", "ipaddress", "itertools", "json", "locale", "logging", "logging.handlers", "lzma", "mailbox",
    "math", "mimetypes", "multiprocessing", "numbers", "operator", "optparse", "os", "pathlib", "pickle",
    "pkgutil", "platform", "plistlib", "poplib", "pprint", "queue", "random", "re", "reprlib", "sched", "secrets",
    "selectors", "shelve", "shlex", "shutil", "signal", "smtplib", "socket", "socketserver", "sqlite3",
    "statistics", "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "time",
    "timeit", "tokenize", "traceback", "types", "typing", "unittest", "urllib.parse", "urllib.request", "uuid",
    "warnings", "weakref", "xml.dom.minidom", "xml.etree.ElementTree", "zipfile", "zlib",
)


def default_corpus(include_docstrings: bool = True) -> tuple[Document, ...]:
    """The embedded corpus: ``pydoc_data.topics`` (the language reference, ~0.5 MB) plus stdlib docstrings.

    One document per pydoc topic (``pydoc:<topic>``) and one per module
    (``doc:<module>``); deterministic for a given Python version.
    """
    try:
        from pydoc_data import topics
    except ImportError as e:  # pragma: no cover - every CPython ships it
        raise DistillError("pydoc_data.topics is missing from this Python; pass a corpus explicitly") from e
    docs = [Document(f"pydoc:{k}", v) for k, v in sorted(topics.topics.items()) if v.strip()]
    if include_docstrings:
        for name in _DOC_MODULES:
            text = _module_docstrings(name)
            if text:
                docs.append(Document(f"doc:{name}", text))
    return tuple(docs)


def _module_docstrings(modname: str) -> str:
    try:
        mod = importlib.import_module(modname)
    except Exception:  # noqa: BLE001 - an optional module (e.g. sqlite3 missing) only shrinks the corpus
        return ""
    parts: list[str] = []
    if mod.__doc__:
        parts.append(inspect.cleandoc(mod.__doc__))
    for attr in sorted(vars(mod)):
        if attr.startswith("_"):
            continue
        obj = vars(mod)[attr]
        if not (inspect.isclass(obj) or inspect.isfunction(obj)) or getattr(obj, "__module__", None) != mod.__name__:
            continue
        if obj.__doc__:
            parts.append(inspect.cleandoc(obj.__doc__))
        if inspect.isclass(obj):
            for mname in sorted(vars(obj)):
                meth = vars(obj)[mname]
                if not mname.startswith("_") and inspect.isfunction(meth) and meth.__doc__:
                    parts.append(inspect.cleandoc(meth.__doc__))
    return "\n\n".join(parts)


# ============================================================================ config and containers
@dataclass(frozen=True)
class DataConfig:
    """How a corpus becomes training and held-out sequences.

    ``max_predictions=0`` means ``round(seq_len * mask_prob) + 1`` (20 at 128,
    as BERT). ``heldout_fraction`` applies when no separate held-out corpus is
    given: whole documents are held out (by a hash of their name) when the
    corpus has enough of them, else sequences (by a hash of their tokens).
    ``max_train_sequences=0`` keeps all.
    """

    seq_len: int = 128
    mask_prob: float = 0.15
    max_predictions: int = 0
    nsp: bool = False
    heldout_fraction: float = 0.05
    max_heldout_sequences: int = 512
    max_train_sequences: int = 0
    eval_seed: int = 1234

    def __post_init__(self) -> None:
        if not isinstance(self.seq_len, int) or not 8 <= self.seq_len <= 4096:
            raise DistillError(f"seq_len={self.seq_len!r} is out of range; valid: 8..4096")
        if not 0.0 < self.mask_prob < 1.0:
            raise DistillError(f"mask_prob={self.mask_prob} must be in (0, 1)")
        if not isinstance(self.max_predictions, int) or not 0 <= self.max_predictions <= self.seq_len:
            raise DistillError(f"max_predictions={self.max_predictions!r} must be in 0..seq_len")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise DistillError(f"heldout_fraction={self.heldout_fraction} must be in [0, 1)")
        if self.max_heldout_sequences < 1 or self.max_train_sequences < 0:
            raise DistillError("max_heldout_sequences must be >= 1 and max_train_sequences >= 0")

    @property
    def predictions_per_seq(self) -> int:
        return self.max_predictions or min(self.seq_len - 2, int(round(self.seq_len * self.mask_prob)) + 1)


@dataclass(frozen=True, eq=False)
class PackedSequences:
    """Packed sequences: ``ids`` ``(N, S)`` int32 (``[CLS] ... [SEP]`` then ``[PAD]``), ``lengths`` ``(N,)``.

    ``token_type_ids`` ``(N, S)`` and ``nsp_labels`` ``(N,)`` (0 = B follows A,
    1 = random B, as transformers) are present only for NSP data.
    """

    ids: np.ndarray
    lengths: np.ndarray
    token_type_ids: np.ndarray | None = None
    nsp_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.ids.ndim != 2 or self.lengths.shape != (self.ids.shape[0],):
            raise DistillError(f"PackedSequences: ids {self.ids.shape} and lengths {self.lengths.shape} disagree")
        if (self.token_type_ids is None) != (self.nsp_labels is None):
            raise DistillError("PackedSequences: token_type_ids and nsp_labels come together")

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())


@dataclass(frozen=True, eq=False)
class MLMBatch:
    """One batch. Shapes: ``input_ids``/``token_type_ids``/``attention_mask`` ``(B, S)`` int32;
    ``mlm_positions``/``mlm_labels`` ``(B, P)`` int32 and ``mlm_weights`` ``(B, P)`` float32 (0 = no
    prediction); ``nsp_labels`` ``(B,)`` int32 or None; ``example_weights`` ``(B,)`` float32 (0 = padding row).
    """

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    mlm_positions: np.ndarray
    mlm_labels: np.ndarray
    mlm_weights: np.ndarray
    example_weights: np.ndarray
    nsp_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        b, s = self.input_ids.shape
        if self.mlm_positions.shape[0] != b or self.mlm_labels.shape != self.mlm_positions.shape:
            raise DistillError("MLMBatch: inconsistent shapes")

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def arrays(self) -> dict[str, np.ndarray]:
        """The batch as a dict of arrays (``nsp_labels`` only when present)."""
        d = {k: getattr(self, k) for k in ("input_ids", "token_type_ids", "attention_mask", "mlm_positions",
                                           "mlm_labels", "mlm_weights", "example_weights")}
        if self.nsp_labels is not None:
            d["nsp_labels"] = self.nsp_labels
        return d


# ============================================================================ masking
def mask_sequences(ids: np.ndarray, lengths: np.ndarray, rng: np.random.Generator, tok: WordPieceTokenizer,
                   mask_prob: float, max_predictions: int) -> tuple[np.ndarray, ...]:
    """BERT masking of ``ids`` ``(B, S)``: returns ``(input_ids, positions, labels, weights)``.

    ``positions``/``labels``/``weights`` are ``(B, max_predictions)``; unused
    slots have position 0, label 0 and weight 0.
    """
    b, s = ids.shape
    out = ids.copy()
    pos = np.zeros((b, max_predictions), np.int32)
    lab = np.zeros((b, max_predictions), np.int32)
    wts = np.zeros((b, max_predictions), np.float32)
    special = np.isin(ids, tok.special_ids)
    for r in range(b):
        cand = np.flatnonzero(~special[r, : int(lengths[r])])
        n = min(max_predictions, max(1, int(round(cand.size * mask_prob)))) if cand.size else 0
        if n == 0:
            continue
        chosen = np.sort(rng.choice(cand, size=n, replace=False))
        u = rng.random(n)
        repl = tok.replacement_ids[rng.integers(0, tok.replacement_ids.size, size=n)]
        orig = ids[r, chosen]
        out[r, chosen] = np.where(u < 0.8, tok.mask_id, np.where(u < 0.9, repl, orig))
        pos[r, :n], lab[r, :n], wts[r, :n] = chosen, orig, 1.0
    return out, pos, lab, wts


# ============================================================================ packing
def _paragraphs(text: str) -> list[str]:
    text = _RULE_LINE.sub("", text)
    return [p for p in (" ".join(x.split()) for x in _PARAGRAPH.split(text)) if p]


def _sentences(paragraph: str) -> list[str]:
    return [s for s in (x.strip() for x in _SENTENCE_END.split(paragraph)) if s]


def _tokenize_docs(tok: WordPieceTokenizer, docs: Sequence[Document], sentences: bool) -> list[list[np.ndarray]]:
    """Per document, its segments' token ids (paragraphs, or sentences when ``sentences``)."""
    seg_texts: list[str] = []
    owner: list[int] = []
    for d, doc in enumerate(docs):
        for para in _paragraphs(doc.text):
            for seg in (_sentences(para) if sentences else [para]):
                seg_texts.append(seg)
                owner.append(d)
    out: list[list[np.ndarray]] = [[] for _ in docs]
    for start in range(0, len(seg_texts), 4096):
        for d, ids in zip(owner[start:start + 4096], tok.encode(seg_texts[start:start + 4096])):
            if ids.size:
                out[d].append(ids)
    return out


def _pack_stream(docs: list[list[np.ndarray]], seq_len: int, tok: WordPieceTokenizer) -> PackedSequences:
    """Stream documents back to back (``[SEP]`` between documents) into ``[CLS] chunk [SEP]`` sequences."""
    pieces = []
    for segs in docs:
        if segs:
            pieces.extend(segs)
            pieces.append(np.array([tok.sep_id], np.int32))
    if not pieces:
        return PackedSequences(np.zeros((0, seq_len), np.int32), np.zeros((0,), np.int32))
    stream = np.concatenate(pieces)[:-1]  # no separator after the last document
    cap = seq_len - 2
    n = -(-stream.size // cap)
    ids = np.full((n, seq_len), tok.pad_id, np.int32)
    lengths = np.zeros((n,), np.int32)
    for i in range(n):
        chunk = stream[i * cap:(i + 1) * cap]
        if chunk.size and chunk[0] == tok.sep_id:
            chunk = chunk[1:]
        ids[i, 0] = tok.cls_id
        ids[i, 1:1 + chunk.size] = chunk
        ids[i, 1 + chunk.size] = tok.sep_id
        lengths[i] = chunk.size + 2
    keep = lengths > 2
    return PackedSequences(ids[keep], lengths[keep])


def _pack_nsp(docs: list[list[np.ndarray]], seq_len: int, tok: WordPieceTokenizer,
              rng: np.random.Generator) -> PackedSequences:
    """BERT's sentence-pair instances: ``[CLS] A [SEP] B [SEP]``; B is the true continuation or (50%) random.

    A chunk of one sentence longer than the budget is cut in two at a random token.
    """
    max_tokens = seq_len - 3
    rows: list[tuple[np.ndarray, np.ndarray, int]] = []
    nonempty = [d for d, s in enumerate(docs) if s]
    for d, sents in enumerate(docs):
        i, chunk, cur = 0, [], 0
        while i < len(sents):
            chunk.append(sents[i])
            cur += sents[i].size
            if i == len(sents) - 1 or cur >= max_tokens:
                if len(chunk) >= 2:
                    a_end = int(rng.integers(1, len(chunk)))
                    a, rest = np.concatenate(chunk[:a_end]), np.concatenate(chunk[a_end:])
                else:  # one long sentence: cut it in two
                    a_end = 1
                    cut = int(rng.integers(1, chunk[0].size)) if chunk[0].size >= 2 else chunk[0].size
                    a, rest = chunk[0][:cut], chunk[0][cut:]
                others = [o for o in nonempty if o != d] or [d]
                if rest.size == 0 or rng.random() < 0.5:
                    label = 1
                    o = others[int(rng.integers(0, len(others)))]
                    start = int(rng.integers(0, len(docs[o])))
                    b_parts, blen = [], 0
                    for s in docs[o][start:]:
                        b_parts.append(s)
                        blen += s.size
                        if blen >= max_tokens - a.size:
                            break
                    b = np.concatenate(b_parts)
                    i -= len(chunk) - a_end  # the unused sentences start the next instance
                else:
                    label = 0
                    b = rest
                a, b = _truncate_pair(a, b, max_tokens)
                if a.size and b.size:
                    rows.append((a, b, label))
                chunk, cur = [], 0
            i += 1
    n = len(rows)
    ids = np.full((n, seq_len), tok.pad_id, np.int32)
    tt = np.zeros((n, seq_len), np.int32)
    lengths = np.zeros((n,), np.int32)
    labels = np.zeros((n,), np.int32)
    for r, (a, b, label) in enumerate(rows):
        seq = np.concatenate([[tok.cls_id], a, [tok.sep_id], b, [tok.sep_id]]).astype(np.int32)
        ids[r, :seq.size] = seq
        tt[r, a.size + 2:seq.size] = 1
        lengths[r] = seq.size
        labels[r] = label
    return PackedSequences(ids, lengths, tt, labels)


def _truncate_pair(a: np.ndarray, b: np.ndarray, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    while a.size + b.size > max_tokens:
        if a.size > b.size:
            a = a[:-1]
        else:
            b = b[:-1]
    return a, b


def _select(p: PackedSequences, keep: np.ndarray) -> PackedSequences:
    return PackedSequences(p.ids[keep], p.lengths[keep],
                           None if p.token_type_ids is None else p.token_type_ids[keep],
                           None if p.nsp_labels is None else p.nsp_labels[keep])


def _concat(a: PackedSequences, b: PackedSequences) -> PackedSequences:
    tt = None if a.token_type_ids is None else np.concatenate([a.token_type_ids, b.token_type_ids])
    nl = None if a.nsp_labels is None else np.concatenate([a.nsp_labels, b.nsp_labels])
    return PackedSequences(np.concatenate([a.ids, b.ids]), np.concatenate([a.lengths, b.lengths]), tt, nl)


def _hash_fraction(key: bytes) -> float:
    return (zlib.crc32(key) & 0xFFFFFFFF) / 2 ** 32


# ============================================================================ the data set
class DistillData:
    """Tokenized, packed training and held-out sequences plus their batching.

    Build with `build_data`. ``train`` and ``heldout`` are `PackedSequences`;
    ``fingerprint`` identifies the content (used by caches).
    """

    def __init__(self, tokenizer: WordPieceTokenizer, config: DataConfig, train: PackedSequences,
                 heldout: PackedSequences, description: str = "") -> None:
        if len(train) == 0:
            raise DistillError("the training corpus produced no sequences")
        if len(heldout) == 0:
            raise DistillError("the held-out split is empty; give a held-out corpus or raise heldout_fraction")
        self.tokenizer = tokenizer
        self.config = config
        self.train = train
        self.heldout = heldout
        self.description = description
        h = hashlib.sha256()
        h.update(tokenizer.fingerprint.encode())
        h.update(json.dumps({k: v for k, v in config.__dict__.items() if k != "max_heldout_sequences"},
                            sort_keys=True).encode())
        for arr in (train.ids, train.lengths, train.token_type_ids, train.nsp_labels):
            if arr is not None:
                h.update(np.ascontiguousarray(arr).tobytes())
        #: Identifies what training batches hold (teacher-output and MLM-head caches depend on nothing else).
        self.train_fingerprint = h.hexdigest()[:16]
        h.update(json.dumps(config.__dict__, sort_keys=True).encode())
        for arr in (heldout.ids, heldout.lengths, heldout.token_type_ids, heldout.nsp_labels):
            if arr is not None:
                h.update(np.ascontiguousarray(arr).tobytes())
        #: Identifies the whole data set (training and held-out).
        self.fingerprint = h.hexdigest()[:16]
        self._perms: dict[tuple[int, int], np.ndarray] = {}
        self._heldout_cache: dict[int, list[MLMBatch]] = {}

    @property
    def seq_len(self) -> int:
        return self.config.seq_len

    @property
    def nsp(self) -> bool:
        return self.train.nsp_labels is not None

    def __repr__(self) -> str:
        return (f"DistillData({self.description or 'corpus'}: {len(self.train)} train / {len(self.heldout)} held-out "
                f"sequences of {self.seq_len}, {self.train.num_tokens} train tokens, nsp={self.nsp})")

    # ------------------------------------------------------------------ batches
    def _perm(self, seed: int, epoch: int) -> np.ndarray:
        key = (seed, epoch)
        if key not in self._perms:
            if len(self._perms) > 64:
                self._perms.clear()
            self._perms[key] = np.random.default_rng([seed, epoch, 0x5EED]).permutation(len(self.train))
        return self._perms[key]

    def train_indices(self, index: int, batch_size: int, seed: int) -> np.ndarray:
        """Sequence indices of training batch ``index``: ``(batch_size,)``; epochs are seeded permutations."""
        n = len(self.train)
        pos = np.arange(index * batch_size, (index + 1) * batch_size, dtype=np.int64)
        out = np.empty(batch_size, np.int64)
        for e in np.unique(pos // n):
            sel = pos // n == e
            out[sel] = self._perm(seed, int(e))[pos[sel] % n]
        return out

    def train_batch(self, index: int, batch_size: int, seed: int = 0) -> MLMBatch:
        """Training batch ``index`` (0-based) of the order drawn from ``seed``; a pure function of its arguments."""
        if index < 0 or batch_size < 1:
            raise DistillError(f"bad batch request index={index} batch_size={batch_size}")
        idx = self.train_indices(index, batch_size, seed)
        rng = np.random.default_rng([seed, index, 0x4D4C4D])
        return self._make_batch(self.train, idx, rng)

    def heldout_batches(self, batch_size: int) -> list[MLMBatch]:
        """Every held-out sequence once, with masks fixed by ``config.eval_seed``.

        The last batch is padded with zero-weight rows, so every batch has ``batch_size`` rows.
        """
        if batch_size not in self._heldout_cache:
            n = len(self.heldout)
            rng = np.random.default_rng([self.config.eval_seed, 0xE7A1])
            batches = []
            for start in range(0, n, batch_size):
                idx = np.arange(start, min(start + batch_size, n))
                real = idx.size
                idx = np.concatenate([idx, np.full(batch_size - real, idx[0])])
                b = self._make_batch(self.heldout, idx, rng)
                if real < batch_size:
                    w = b.example_weights.copy()
                    w[real:] = 0.0
                    mw = b.mlm_weights.copy()
                    mw[real:] = 0.0
                    b = MLMBatch(b.input_ids, b.token_type_ids, b.attention_mask, b.mlm_positions, b.mlm_labels,
                                 mw, w, b.nsp_labels)
                batches.append(b)
            self._heldout_cache[batch_size] = batches
        return self._heldout_cache[batch_size]

    def _make_batch(self, p: PackedSequences, idx: np.ndarray, rng: np.random.Generator) -> MLMBatch:
        ids = p.ids[idx]
        lengths = p.lengths[idx]
        cfg = self.config
        inp, pos, lab, wts = mask_sequences(ids, lengths, rng, self.tokenizer, cfg.mask_prob, cfg.predictions_per_seq)
        mask = (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.int32)
        tt = (p.token_type_ids[idx] if p.token_type_ids is not None else np.zeros_like(ids)).astype(np.int32)
        nsp = p.nsp_labels[idx].astype(np.int32) if p.nsp_labels is not None else None
        return MLMBatch(inp, tt, mask, pos, lab, wts, np.ones(ids.shape[0], np.float32), nsp)

    # ------------------------------------------------------------------ baselines
    def chance_accuracy(self) -> float:
        """Accuracy of a uniform guess over the vocab: ``1 / vocab_size``."""
        return 1.0 / self.tokenizer.vocab_size

    def unigram_accuracy(self, batch_size: int = 32) -> float:
        """Held-out MLM accuracy of always predicting the most frequent training token (a trivial baseline)."""
        ids = self.train.ids
        mask = ~np.isin(ids, self.tokenizer.special_ids)
        counts = np.bincount(ids[mask], minlength=self.tokenizer.vocab_size)
        top = int(np.argmax(counts))
        hit = tot = 0.0
        for b in self.heldout_batches(batch_size):
            hit += float(((b.mlm_labels == top) * b.mlm_weights).sum())
            tot += float(b.mlm_weights.sum())
        return hit / max(tot, 1.0)


def build_data(tokenizer: WordPieceTokenizer, corpus: Sequence[Document], config: DataConfig = DataConfig(),
               heldout: Sequence[Document] | None = None, description: str = "") -> DistillData:
    """Tokenize, pack and split ``corpus`` (held-out = ``heldout`` documents when given).

    Deterministic: the same inputs give the same `DistillData.fingerprint`.
    """
    if not corpus:
        raise DistillError("the corpus is empty")
    cfg = config
    split_rng = np.random.default_rng([cfg.eval_seed, 0x9A1E])

    def pack(docs: Sequence[Document], rng: np.random.Generator) -> PackedSequences:
        toks = _tokenize_docs(tokenizer, docs, sentences=cfg.nsp)
        if cfg.nsp:
            return _pack_nsp(toks, cfg.seq_len, tokenizer, rng)
        return _pack_stream(toks, cfg.seq_len, tokenizer)

    if heldout is not None:
        train = pack(corpus, split_rng)
        held = pack(heldout, np.random.default_rng([cfg.eval_seed, 0x4E1D]))
    elif len(corpus) * cfg.heldout_fraction >= 2:
        is_held = np.array([_hash_fraction(d.name.encode()) < cfg.heldout_fraction for d in corpus])
        if is_held.all() or not is_held.any():  # pathological hash draw: hold out the last document
            is_held = np.zeros(len(corpus), bool)
            is_held[-1] = True
        train = pack([d for d, h in zip(corpus, is_held) if not h], split_rng)
        held = pack([d for d, h in zip(corpus, is_held) if h], np.random.default_rng([cfg.eval_seed, 0x4E1D]))
    else:
        every = pack(corpus, split_rng)
        frac = np.array([_hash_fraction(every.ids[i, :every.lengths[i]].tobytes()) for i in range(len(every))])
        is_held = frac < cfg.heldout_fraction
        if len(every) > 1 and not is_held.any():
            is_held[np.argmin(frac)] = True
        train, held = _select(every, ~is_held), _select(every, is_held)
    if len(held) > cfg.max_heldout_sequences:
        held = _select(held, np.linspace(0, len(held) - 1, cfg.max_heldout_sequences).round().astype(np.int64))
    if cfg.max_train_sequences and len(train) > cfg.max_train_sequences:
        train = _select(train, np.arange(cfg.max_train_sequences))
    data = DistillData(tokenizer, cfg, train, held, description)
    logger.info("%r", data)
    return data
