"""Text sources for the language objectives: packed token rows and BERT sentence pairs.

Both are Grain random-access sources (``len``, ``__getitem__``, ``__getitems__``; picklable, so
Grain worker processes can read them) that :func:`ssl_jax.data.make_iterator` batches, shards per
process and checkpoints exactly as image sources. Everything is computed once, when the source is
built, on the host, deterministically.

:class:`PackedTextSource` (MLM, causal LM, SimCSE): every document is tokenized once and framed
(``style="bert"``: ``[CLS] doc [SEP]``; ``"gpt"``: ``[BOS] doc [EOS]``). A framed document longer
than ``seq_len`` is cut into consecutive chunks of ``seq_len`` tokens (only its first chunk starts
with ``[CLS]`` / ``[BOS]`` and only its last ends with ``[SEP]`` / ``[EOS]``), each a "piece".
Pieces are packed greedily in corpus order (next fit: a piece goes into the current row if it fits
in the room left, else it starts a new row; the rest of a row is padding, id ``pad_id``). So no
token is lost or repeated, no row is longer than ``seq_len``, and a full-length chunk fills a row
alone. Example ``i`` is row ``i``::

  {"tokens": int32 [T], "segment_ids": int32 [T], "positions": int32 [T], "label": int32 []}

``segment_ids`` numbers the pieces of the row 1, 2, ... (0 on padding): attention and prediction
must stay within a segment. ``positions`` restart at 0 for each piece (0 on padding). ``label`` is
always 0 (the engine's batches keep a label; text pretraining has none).

:class:`SentencePairSource` (BERT next-sentence prediction): documents are split into sentences
(:func:`split_sentences`) and pairs are built once, as BERT's ``create_pretraining_data`` does
(static pairs, one pass over the corpus, seeded). Each example::

  {"tokens": [CLS] A [SEP] B [SEP] <pad>...,
   "type_ids": 0 on [CLS] A [SEP] and padding, 1 on B [SEP],
   "segment_ids": 1 on real tokens, 0 on padding, "positions": 0, 1, ... (0 on padding),
   "is_next": int32 [] (1: B is the text after A), "label": int32 [] 0}
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from ssl_jax.data.corpora import (DEFAULT_MIN_PER_CLASS, DOCSTRING_TASK_PACKAGES,
                                  MIN_DOCSTRING_CHARS, MIN_HALVES_WORDS, SPLITS, TEXT_CORPORA,
                                  TextCorpus, docstring_halves, docstring_task,
                                  docstring_task_names, docstring_task_sources, documents_sha256,
                                  load_corpus, split_of)
from ssl_jax.data.sources import check_index
from ssl_jax.data.tokenizer import Tokenizer

__all__ = [
    "DEFAULT_MIN_PER_CLASS", "DOCSTRING_TASK_PACKAGES", "MIN_DOCSTRING_CHARS", "MIN_HALVES_WORDS",
    "PackedTextSource", "SPLITS", "STYLES", "SentencePairSource", "TEXT_CORPORA", "TextCorpus",
    "docstring_halves", "docstring_task", "docstring_task_names", "docstring_task_sources",
    "documents_sha256", "load_corpus", "load_text_source", "split_of", "split_sentences",
]

STYLES = ("bert", "gpt")
Example = dict[str, np.ndarray]


def _check_seq_len(seq_len: Any, minimum: int) -> int:
  if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < minimum:
    raise ValueError(f"seq_len must be an int >= {minimum}, got {seq_len!r}")
  return int(seq_len)


class _RowSource:
  """Shared random-access plumbing over precomputed ``[N, T]`` arrays."""

  name: str
  split: str
  seq_len: int
  _arrays: dict[str, np.ndarray]
  num_classes = None

  def __len__(self) -> int:
    return int(next(iter(self._arrays.values())).shape[0])

  def _index(self, index: Any) -> int:
    return check_index(index, self)

  def __getitem__(self, index: int) -> Example:
    i = self._index(index)
    example = {k: v[i].copy() for k, v in self._arrays.items()}
    example["label"] = np.asarray(0, np.int32)
    return example

  def __getitems__(self, indices: Sequence[int]) -> list[Example]:
    return [self[i] for i in indices]

  @property
  def example_shapes(self) -> dict[str, tuple[int, ...]]:
    """Shape of each field of one example (``{"tokens": (T,), ..., "label": ()}``)."""
    shapes = {k: tuple(v.shape[1:]) for k, v in self._arrays.items()}
    shapes["label"] = ()
    return shapes

  def arrays(self) -> dict[str, np.ndarray]:
    """Every example at once: ``{field: [N, ...]}`` (read-only views; ``label`` zeros)."""
    out = dict(self._arrays)
    out["label"] = np.zeros(len(self), np.int32)
    return out


class PackedTextSource(_RowSource):
  """Documents tokenized, framed and packed into rows of ``seq_len`` tokens (module docstring).

  Args:
    corpus: The documents (:func:`load_corpus`).
    tokenizer: The tokenizer.
    seq_len: Row length ``T`` (>= 2).
    style: ``"bert"`` (``[CLS] doc [SEP]``) or ``"gpt"`` (``[BOS] doc [EOS]``).
    pack: False puts each document alone in its row, truncated to its first ``T`` framed tokens
      (for sentence-level objectives such as SimCSE, where a row is one example).

  Attributes:
    name, split: The corpus's.
    seq_len: ``T``.
    style: The framing.
    tokenizer: The tokenizer.
    num_tokens: Real (non-padding) tokens over all rows, framing tokens included.
    num_bytes: UTF-8 bytes of the packed documents (for bits per byte).
    num_documents: Documents packed (empty ones are skipped).
    num_classes: ``None`` (no labels).
    document_ids: int32 ``[N, T]``: the corpus index of each token's document (-1 on padding).
    corpus_sha256: The corpus split's hash.
  """

  def __init__(self, corpus: TextCorpus, tokenizer: Tokenizer, *, seq_len: int,
               style: str = "bert", pack: bool = True):
    if style not in STYLES:
      raise ValueError(f"unknown packing style {style!r}; valid styles: {', '.join(STYLES)}")
    self.seq_len = t = _check_seq_len(seq_len, 2)
    self.name, self.split = corpus.name, corpus.split
    self.style = style
    self.tokenizer = tokenizer
    self.corpus_sha256 = corpus.sha256
    first, last = ((tokenizer.cls_id, tokenizer.sep_id) if style == "bert"
                   else (tokenizer.bos_id, tokenizer.eos_id))
    docs = [(i, d) for i, d in enumerate(corpus.documents) if d]
    if not docs:
      raise ValueError(f"{corpus.name}:{corpus.split}: no documents to pack")
    encoded = tokenizer.encode_batch([d for _, d in docs])
    self.num_documents = len(docs)
    self.num_bytes = sum(len(d.encode("utf-8")) for _, d in docs)
    # Pieces: (doc index, framed token array) chunks of at most T tokens.
    pieces: list[tuple[int, np.ndarray]] = []
    for (doc_index, _), ids in zip(docs, encoded):
      framed = np.concatenate([[first], ids, [last]]).astype(np.int32)
      pieces.extend((doc_index, framed[s:s + t]) for s in range(0, len(framed), t))
    if not pack:  # one document per row, truncated to T (sentence-level objectives: SimCSE)
      pieces = [p for i, p in enumerate(pieces) if i == 0 or pieces[i - 1][0] != p[0]]
    rows: list[list[tuple[int, np.ndarray]]] = []
    room = 0
    for piece in pieces:
      if len(piece[1]) > room or not pack:
        rows.append([])
        room = t
      rows[-1].append(piece)
      room -= len(piece[1])
    n = len(rows)
    tokens = np.full((n, t), tokenizer.pad_id, np.int32)
    segment_ids = np.zeros((n, t), np.int32)
    positions = np.zeros((n, t), np.int32)
    document_ids = np.full((n, t), -1, np.int32)
    for r, row in enumerate(rows):
      start = 0
      for s, (doc_index, ids) in enumerate(row, 1):
        end = start + len(ids)
        tokens[r, start:end] = ids
        segment_ids[r, start:end] = s
        positions[r, start:end] = np.arange(len(ids))
        document_ids[r, start:end] = doc_index
        start = end
    self._arrays = {"tokens": tokens, "segment_ids": segment_ids, "positions": positions}
    self.document_ids = document_ids
    self.num_tokens = int((segment_ids > 0).sum())

  def __repr__(self) -> str:
    return (f"PackedTextSource(name={self.name!r}, split={self.split!r}, num_rows={len(self)}, "
            f"seq_len={self.seq_len}, style={self.style!r}, tokenizer={self.tokenizer.spec!r}, "
            f"num_tokens={self.num_tokens})")


# Sentence ends: ., ! or ? (optionally followed by one closing quote / bracket), then whitespace,
# then an upper-case letter, a digit or an opening quote / bracket; or a blank line.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])"
                           r"|\n[ \t\r\f\v]*\n\s*")
_ABBREVIATIONS = frozenset({"e.g.", "i.e.", "etc.", "vs.", "cf.", "mr.", "mrs.", "dr.", "no.",
                            "st.", "fig.", "approx.", "resp.", "al."})


def split_sentences(text: str) -> list[str]:
  """Splits ``text`` into sentences with a simple rule (no model, no download).

  A sentence ends at a blank line, or after ``.``, ``!`` or ``?`` (and one closing quote or
  bracket) followed by whitespace and an upper-case letter, digit or opening quote or bracket,
  unless the word before is a common abbreviation (``e.g.``, ``i.e.``, ``etc.``, ``vs.``, ``cf.``,
  ``Mr.``, ...) or a single letter (an initial). Sentences are stripped; empty ones dropped.

  >>> split_sentences("It works, e.g. here. Then stop!  3 more? Yes\\n\\nNew para")
  ['It works, e.g. here.', 'Then stop!', '3 more?', 'Yes', 'New para']
  """
  sentences, start = [], 0
  for m in _SENTENCE_END.finditer(text):
    before = text[start:m.start()].rstrip("\"')]")
    last_word = before.rsplit(None, 1)[-1].lower() if before.split() else ""
    if "\n\n" not in text[m.start():m.end()].replace(" ", "").replace("\t", "") and (
        last_word in _ABBREVIATIONS or re.fullmatch(r"[a-z]\.", last_word)):
      continue
    sentences.append(text[start:m.start()])
    start = m.end()
  sentences.append(text[start:])
  return [s.strip() for s in sentences if s.strip()]


class SentencePairSource(_RowSource):
  """BERT next-sentence-prediction pairs, built once and statically (see the module docstring).

  Construction follows BERT's ``create_instances_from_document``, with ``dupe_factor`` passes over
  the corpus as BERT's ``create_pretraining_data.py`` makes (each pass draws new run lengths,
  split points and negatives from the same random stream, so a small corpus yields about
  ``dupe_factor`` times as many pairs, most of them new; with one pass a model memorizes its
  fixed negatives): walking through each document's sentences, a run of sentences is gathered
  until it reaches the target length (``seq_len - 3`` tokens; with probability 0.1 a random
  shorter target in ``[2, seq_len - 3]``, BERT's ``short_seq_prob``); A is its first ``k``
  sentences (``k`` uniform in ``[1, len(run) - 1]``). With probability 1/2, B is the rest of the
  run (``is_next = 1``); otherwise B is a run of sentences from a random sentence of a random other
  document (``is_next = 0``) and the unused rest of the run is put back for the next pair. A run of
  a single sentence is skipped as A (it has no next sentence within the target), so ``is_next`` is
  a fair coin per pair. A and B are encoded as their sentences joined by single spaces, then
  truncated to fit ``[CLS] A [SEP] B [SEP]`` in ``seq_len``, the longer one first, A from its
  front and B from its back, so that when ``is_next = 1`` the text of B still directly follows
  that of A.

  Args:
    corpus: The documents (needs at least 2 documents with text).
    tokenizer: The tokenizer.
    seq_len: ``T`` (>= 8).
    seed: Pair-construction seed.
    dupe_factor: Passes over the corpus (BERT: 10), >= 1.

  Attributes:
    pairs: int64 ``[N, 6]``: ``(doc_a, a_first, a_end, doc_b, b_first, b_end)`` sentence ranges
      (end exclusive) in ``sentences``, before truncation.
    sentences: The sentences of each corpus document (list of lists).
    num_tokens: Real tokens over all rows.
  """

  def __init__(self, corpus: TextCorpus, tokenizer: Tokenizer, *, seq_len: int, seed: int = 0,
               dupe_factor: int = 1):
    self.seq_len = t = _check_seq_len(seq_len, 8)
    if isinstance(dupe_factor, bool) or not isinstance(dupe_factor, int) or dupe_factor < 1:
      raise ValueError(f"dupe_factor must be an integer >= 1, got {dupe_factor!r}")
    self.dupe_factor = dupe_factor
    self.name, self.split = corpus.name, corpus.split
    self.tokenizer = tokenizer
    self.seed = int(seed)
    self.corpus_sha256 = corpus.sha256
    self.sentences = [split_sentences(d) for d in corpus.documents]
    flat = [s for sents in self.sentences for s in sents]
    lengths = iter(len(ids) + 1 for ids in tokenizer.encode_batch(flat))  # +1: joining blank
    sent_lens = [[next(lengths) for _ in sents] for sents in self.sentences]
    usable = [d for d, sents in enumerate(self.sentences) if sents]
    if len(usable) < 2:
      raise ValueError(f"{corpus.name}:{corpus.split}: sentence pairs need at least 2 non-empty "
                       f"documents, got {len(usable)}")
    rng = np.random.default_rng(self.seed)
    max_tokens = t - 3
    pairs = []
    for position, doc in [(p, d) for _ in range(dupe_factor) for p, d in enumerate(usable)]:
      sents, lens = self.sentences[doc], sent_lens[doc]
      target = int(rng.integers(2, max_tokens + 1)) if rng.random() < 0.1 else max_tokens
      i, run_start, run_len = 0, 0, 0
      while i < len(sents):
        run_len += lens[i]
        i += 1
        if i < len(sents) and run_len < target:
          continue
        run = (run_start, i)
        if run[1] - run[0] >= 2:
          a_end = int(rng.integers(run[0] + 1, run[1]))
          if rng.random() < 0.5:
            pairs.append((doc, run[0], a_end, doc, a_end, run[1], 1))
          else:
            j = int(rng.integers(len(usable) - 1))  # a uniformly random other document
            other = usable[j + (j >= position)]
            b_lens = sent_lens[other]
            b_first = int(rng.integers(len(b_lens)))
            b_end, room = b_first, target - sum(lens[run[0]:a_end])
            while b_end < len(b_lens) and (b_end == b_first or room > 0):
              room -= b_lens[b_end]
              b_end += 1
            pairs.append((doc, run[0], a_end, other, b_first, b_end, 0))
            i = a_end  # put the unused sentences back
        run_start, run_len = i, 0
        target = int(rng.integers(2, max_tokens + 1)) if rng.random() < 0.1 else max_tokens
    if not pairs:
      raise ValueError(f"{corpus.name}:{corpus.split}: no document has 2 sentences to pair")
    self.pairs = np.asarray([p[:6] for p in pairs], np.int64)
    texts_a = [" ".join(self.sentences[p[0]][p[1]:p[2]]) for p in pairs]
    texts_b = [" ".join(self.sentences[p[3]][p[4]:p[5]]) for p in pairs]
    enc_a = tokenizer.encode_batch(texts_a)
    enc_b = tokenizer.encode_batch(texts_b)
    n = len(pairs)
    tokens = np.full((n, t), tokenizer.pad_id, np.int32)
    type_ids = np.zeros((n, t), np.int32)
    segment_ids = np.zeros((n, t), np.int32)
    positions = np.zeros((n, t), np.int32)
    for r, (a, b) in enumerate(zip(enc_a, enc_b)):
      a, b = _truncate_pair(a, b, max_tokens)
      row = np.concatenate([[tokenizer.cls_id], a, [tokenizer.sep_id], b, [tokenizer.sep_id]])
      length = len(row)
      tokens[r, :length] = row
      type_ids[r, len(a) + 2:length] = 1
      segment_ids[r, :length] = 1
      positions[r, :length] = np.arange(length)
    self._arrays = {"tokens": tokens, "type_ids": type_ids, "segment_ids": segment_ids,
                    "positions": positions,
                    "is_next": np.asarray([p[6] for p in pairs], np.int32)}
    self.num_tokens = int(segment_ids.sum())

  def __repr__(self) -> str:
    return (f"SentencePairSource(name={self.name!r}, split={self.split!r}, num_pairs={len(self)}, "
            f"seq_len={self.seq_len}, dupe_factor={self.dupe_factor}, "
            f"tokenizer={self.tokenizer.spec!r})")


def _truncate_pair(a: np.ndarray, b: np.ndarray, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
  """Shortens the longer of A and B (A from the front, B from the back) until both fit."""
  la, lb = len(a), len(b)
  while la + lb > max_tokens:
    if la > lb:
      la -= 1
    else:
      lb -= 1
  return a[len(a) - la:], b[:lb]


def load_text_source(name: str, split: str, *, tokenizer: Tokenizer, seq_len: int,
                     style: str = "bert", pairs: bool = False, data_dir: str | None = None,
                     text_key: str = "text", seed: int = 0, pack: bool = True,
                     dupe_factor: int = 1) -> PackedTextSource | SentencePairSource:
  """Loads a corpus split and builds its packed (or sentence-pair) source.

  Args:
    name: Corpus name (:data:`TEXT_CORPORA`).
    split: Split name.
    tokenizer: The tokenizer.
    seq_len: Row length.
    style: Packing style, ``"bert"`` or ``"gpt"`` (ignored with ``pairs``).
    pairs: Build BERT sentence pairs (:class:`SentencePairSource`) instead of packed rows.
    data_dir: TFDS data directory (``tfds:`` only).
    text_key: TFDS text feature (``tfds:`` only).
    seed: Pair-construction seed (``pairs`` only).
    dupe_factor: Passes over the corpus building pairs (``pairs`` only; BERT: 10).
    pack: False: one document per row (see :class:`PackedTextSource`).

  Returns:
    A :class:`PackedTextSource` or :class:`SentencePairSource`.

  >>> from ssl_jax.data.tokenizer import make_tokenizer
  >>> src = load_text_source("pydoc", "validation", tokenizer=make_tokenizer(), seq_len=64)
  >>> src.example_shapes
  {'tokens': (64,), 'segment_ids': (64,), 'positions': (64,), 'label': ()}
  """
  corpus = load_corpus(name, split, data_dir=data_dir, text_key=text_key)
  if pairs:
    return SentencePairSource(corpus, tokenizer, seq_len=seq_len, seed=seed,
                              dupe_factor=dupe_factor)
  return PackedTextSource(corpus, tokenizer, seq_len=seq_len, style=style, pack=pack)
