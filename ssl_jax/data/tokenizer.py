"""Tokenizers for the language objectives: bytes (default), trained BPE / WordPiece, a user's file.

Every tokenizer is a :class:`Tokenizer`: ``encode`` (text -> int32 ids, no special tokens added),
``decode`` (ids -> text, special tokens dropped), ``word_starts`` (for whole-word masking), the ids
of the special tokens and ``save``. Build one with :func:`make_tokenizer` from a spec string:

* ``"bytes"`` (the default): the UTF-8 bytes of the text. Ids 0..6 are :data:`SPECIAL_TOKENS`
  (``[PAD]`` is 0) and byte ``b`` is id ``7 + b`` (vocabulary 263). Needs no vocabulary, no
  training and no download, and round-trips any Unicode text exactly. Written here rather than
  with the ``tokenizers`` library because it is a one-line mapping that must be exact, and the
  library's byte-level pieces remap bytes to printable characters and merge them.
* ``"bpe:<vocab_size>"``: byte-level BPE (GPT-2 / RoBERTa style: ``ByteLevel`` pre-tokenizer
  without a prefix space, ``ByteLevel`` decoder; every byte is in the initial alphabet, so no
  text is unknown and decoding is exact), trained with the ``tokenizers`` library on ``corpus``.
* ``"wordpiece:<vocab_size>"``: WordPiece (BERT style: ``BertNormalizer`` without lowercasing,
  i.e. a *cased* vocabulary; ``BertPreTokenizer``, which splits on whitespace and punctuation;
  ``##`` continuation prefix; ``WordPiece`` decoder), trained with ``tokenizers`` on ``corpus``.
  Decoding gives the words separated by single spaces (whitespace layout is not kept).
* ``"file:<path>"``: a ``tokenizers`` JSON file (e.g. a ``tokenizer.json`` of a Hugging Face
  model, or one saved by :meth:`Tokenizer.save`). Special tokens are found by their usual
  spellings (see :data:`SPECIAL_SPELLINGS`); ``[CLS]`` and ``[BOS]`` stand in for each other, as
  do ``[SEP]`` and ``[EOS]`` (RoBERTa's ``<s>`` / ``</s>`` are both). Missing ``[PAD]``, ``[UNK]``,
  ``[MASK]`` or both of a ``[CLS]``/``[BOS]`` or ``[SEP]``/``[EOS]`` pair is a ``ValueError``
  naming them.

Special-token strings inside a text (a literal ``[MASK]`` or ``<s>``) are encoded as ordinary text,
never as special ids, for every kind (``encode_special_tokens`` of the ``tokenizers`` library is
set): only the code that frames and masks sequences puts special ids in them.

For ``bytes``, ``bpe`` and ``wordpiece`` the special tokens are ids 0..6 in the order of
:data:`SPECIAL_TOKENS`. Training is deterministic (the same corpus gives the same vocabulary);
``min_frequency`` is 2, so a tiny corpus can give fewer tokens than ``vocab_size``.

Whole-word masking (:meth:`Tokenizer.word_starts`): a token starts a word if it is the first one,
follows a special token, or is a special token itself (each special token is its own "word");
otherwise, per kind: bytes: a non-whitespace byte after a whitespace byte; WordPiece: a token
that does not start with ``##``; byte-level BPE: a token starting with ``Ġ`` (an encoded space)
or following a token that ends in whitespace (e.g. a newline ``Ċ``), except whitespace-only
tokens, which stay with the word before them; SentencePiece-style files (``Metaspace``): a token
starting with ``▁``. For a file of another kind, every token starts a word.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Sequence

import numpy as np

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]")
"""Special tokens of the ``bytes``, ``bpe`` and ``wordpiece`` tokenizers: ids 0..6 in this order."""

_ROLES = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")

SPECIAL_SPELLINGS = {
    "pad": ("[PAD]", "<pad>", "<|pad|>", "<|padding|>", "<PAD>"),
    "unk": ("[UNK]", "<unk>", "<|unk|>", "<UNK>"),
    "cls": ("[CLS]", "<cls>", "<s>", "<CLS>"),
    "sep": ("[SEP]", "<sep>", "</s>", "<SEP>"),
    "mask": ("[MASK]", "<mask>", "<|mask|>", "<MASK>"),
    "bos": ("[BOS]", "<bos>", "<s>", "<|startoftext|>", "<|begin_of_text|>", "<|endoftext|>",
            "<BOS>"),
    "eos": ("[EOS]", "<eos>", "</s>", "<|endoftext|>", "<|end_of_text|>", "<EOS>"),
}
"""Spellings searched (in order) for each special-token role of a ``file:`` tokenizer."""

_SPECS = ("bytes", "bpe:<vocab_size>", "wordpiece:<vocab_size>", "file:<path>")
_NUM_SPECIAL = len(SPECIAL_TOKENS)
_BYTES_FORMAT = "ssl_jax.bytes_tokenizer"
_WS_BYTES = np.zeros(256, bool)
_WS_BYTES[[9, 10, 11, 12, 13, 32]] = True
# Byte-level BPE shows these bytes as these characters (GPT-2's bytes_to_unicode).
_BYTE_LEVEL_SPACE = {"Ġ", "Ċ", "ĉ", "č", "ċ", "Č"}


class Tokenizer:
  """Base class: text <-> int32 ids with consistent special tokens (see the module docstring).

  Attributes:
    spec: The spec it was made from (``"bytes"``, ``"bpe:4096"``, ``"file:/path.json"``, ...).
    vocab_size: Number of ids (every id is in ``[0, vocab_size)``).
    pad_id, unk_id, cls_id, sep_id, mask_id, bos_id, eos_id: Special-token ids.
    special_ids: int32 ``[S]``, sorted, every special-token id (never masked, never drawn as a
      random replacement token).
  """

  spec: str
  vocab_size: int
  pad_id: int
  unk_id: int
  cls_id: int
  sep_id: int
  mask_id: int
  bos_id: int
  eos_id: int
  special_ids: np.ndarray

  def encode(self, text: str) -> np.ndarray:
    """Returns the int32 ids ``[L]`` of ``text`` (no special tokens added)."""
    raise NotImplementedError

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    """Encodes several texts; returns one int32 array per text."""
    return [self.encode(t) for t in texts]

  def decode(self, ids: Any) -> str:
    """Returns the text of ``ids`` (any int sequence), special tokens dropped."""
    raise NotImplementedError

  def _word_starts_plain(self, ids: np.ndarray) -> np.ndarray:
    raise NotImplementedError

  def word_starts(self, ids: Any) -> np.ndarray:
    """Whether each token starts a word (see the module docstring for the rule per kind).

    Args:
      ids: int ``[..., L]`` token ids (may contain special tokens and padding).

    Returns:
      bool ``[..., L]``.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1:
      return np.stack([self.word_starts(row) for row in ids.reshape(-1, ids.shape[-1])]).reshape(
          ids.shape)
    if ids.size == 0:
      return np.zeros(0, bool)
    special = np.isin(ids, self.special_ids)
    starts = self._word_starts_plain(ids)
    starts[0] = True
    starts[1:] |= special[:-1]
    return starts | special

  def is_special(self, ids: Any) -> np.ndarray:
    """bool mask of special-token ids, same shape as ``ids``."""
    return np.isin(np.asarray(ids), self.special_ids)

  def save(self, path: str) -> None:
    """Writes the tokenizer to ``path`` (JSON; ``make_tokenizer("file:<path>")`` reads it)."""
    raise NotImplementedError

  def _set_specials(self, ids: dict[str, int], extra: Iterable[int] = ()) -> None:
    for role in _ROLES:
      setattr(self, f"{role}_id", int(ids[role]))
    self.special_ids = np.unique(np.asarray([*ids.values(), *extra], np.int32)).astype(np.int32)

  def __repr__(self) -> str:
    return f"{type(self).__name__}(spec={self.spec!r}, vocab_size={self.vocab_size})"


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes: id ``7 + b`` for byte ``b``, ids 0..6 the :data:`SPECIAL_TOKENS`."""

  def __init__(self, spec: str = "bytes"):
    self.spec = spec
    self.vocab_size = _NUM_SPECIAL + 256
    self._set_specials({role: i for i, role in enumerate(_ROLES)})

  def encode(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) + _NUM_SPECIAL

  def decode(self, ids: Any) -> str:
    ids = np.asarray(ids, np.int64).reshape(-1)
    ids = ids[(ids >= _NUM_SPECIAL) & (ids < self.vocab_size)] - _NUM_SPECIAL
    return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

  def _word_starts_plain(self, ids: np.ndarray) -> np.ndarray:
    byte = np.clip(ids.astype(np.int64) - _NUM_SPECIAL, 0, 255)
    space = _WS_BYTES[byte] & (ids >= _NUM_SPECIAL)
    starts = ~space
    starts[1:] &= space[:-1]
    return starts

  def save(self, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
      json.dump({"format": _BYTES_FORMAT, "version": 1, "special_tokens": list(SPECIAL_TOKENS)},
                f, indent=2)


class HFTokenizer(Tokenizer):
  """A ``tokenizers.Tokenizer`` (BPE, WordPiece or a user's file) with our special-token roles.

  Args:
    tokenizer: The ``tokenizers.Tokenizer``.
    spec: Its spec string.
    special_ids: Id of each role in ``("pad", "unk", "cls", "sep", "mask", "bos", "eos")``.
  """

  def __init__(self, tokenizer: Any, spec: str, special_ids: dict[str, int]):
    self.tokenizer = tokenizer
    # Special-token strings inside a text ("[MASK]" in a docstring) are plain text, as for bytes:
    # only the code that frames and masks sequences puts special ids in them.
    tokenizer.encode_special_tokens = True
    self.spec = spec
    self.vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))
    added = [i for i, tok in tokenizer.get_added_tokens_decoder().items() if tok.special]
    self._set_specials(special_ids, added)
    self._build_word_start_table()

  def _build_word_start_table(self) -> None:
    tok = self.tokenizer
    config = json.loads(tok.to_str())
    model = config.get("model") or {}
    kinds = json.dumps([config.get("pre_tokenizer"), config.get("decoder")])
    pieces = [tok.id_to_token(i) or "" for i in range(self.vocab_size)]
    if model.get("type") == "WordPiece":
      prefix = model.get("continuing_subword_prefix") or "##"
      self.word_style = "wordpiece"
      self._starts = np.asarray([not p.startswith(prefix) for p in pieces], bool)
      self._ends_space = np.zeros(self.vocab_size, bool)
    elif '"ByteLevel"' in kinds:
      self.word_style = "byte_level"
      self._starts = np.asarray([p[:1] == "Ġ" for p in pieces], bool)
      space_only = np.asarray([bool(p) and set(p) <= _BYTE_LEVEL_SPACE for p in pieces], bool)
      self._starts &= ~space_only
      self._not_start = space_only
      self._ends_space = np.asarray([p[-1:] in _BYTE_LEVEL_SPACE for p in pieces], bool)
    elif '"Metaspace"' in kinds:
      self.word_style = "metaspace"
      self._starts = np.asarray([p[:1] == "▁" for p in pieces], bool)
      self._ends_space = np.zeros(self.vocab_size, bool)
    else:
      self.word_style = "every_token"
      self._starts = np.ones(self.vocab_size, bool)
      self._ends_space = np.zeros(self.vocab_size, bool)

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self.tokenizer.encode(text, add_special_tokens=False).ids, np.int32)

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [np.asarray(e.ids, np.int32) for e in encodings]

  def decode(self, ids: Any) -> str:
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    return self.tokenizer.decode(ids, skip_special_tokens=True)

  def _word_starts_plain(self, ids: np.ndarray) -> np.ndarray:
    ids = np.clip(ids, 0, self.vocab_size - 1)
    starts = self._starts[ids].copy()
    if self.word_style == "byte_level":
      starts[1:] |= self._ends_space[ids[:-1]] & ~self._not_start[ids[1:]]
    return starts

  def save(self, path: str) -> None:
    self.tokenizer.save(path)

  def __getstate__(self) -> dict[str, Any]:
    state = dict(self.__dict__)
    state["tokenizer"] = self.tokenizer.to_str()
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    from tokenizers import Tokenizer as _HF  # pylint: disable=import-outside-toplevel

    state = dict(state)
    state["tokenizer"] = _HF.from_str(state["tokenizer"])
    state["tokenizer"].encode_special_tokens = True
    self.__dict__.update(state)


def _vocab_size(spec: str, rest: str) -> int:
  try:
    size = int(rest)
  except ValueError:
    size = -1
  if size <= _NUM_SPECIAL + 256 and spec.startswith("bpe"):
    raise ValueError(f"tokenizer {spec!r}: vocab_size must be an int > {_NUM_SPECIAL + 256} "
                     f"(the specials and the 256 bytes), got {rest!r}")
  if size <= _NUM_SPECIAL:
    raise ValueError(f"tokenizer {spec!r}: vocab_size must be an int > {_NUM_SPECIAL}, got "
                     f"{rest!r}")
  return size


def _train(kind: str, spec: str, vocab_size: int, corpus: Iterable[str] | None) -> HFTokenizer:
  from tokenizers import Tokenizer as _HF  # pylint: disable=import-outside-toplevel
  # pylint: disable-next=import-outside-toplevel
  from tokenizers import decoders, models, pre_tokenizers, trainers

  if corpus is None:
    raise ValueError(f"tokenizer {spec!r} is trained on a corpus: pass corpus= (an iterable of "
                     f"strings, e.g. load_corpus('pydoc', 'train').documents)")
  texts = [t for t in corpus if t]
  if not texts:
    raise ValueError(f"tokenizer {spec!r}: the training corpus is empty")
  if kind == "wordpiece":
    return _train_wordpiece(spec, vocab_size, texts)
  tok = _HF(models.BPE(unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                special_tokens=list(SPECIAL_TOKENS),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
  ids = {role: tok.token_to_id(t) for role, t in zip(_ROLES, SPECIAL_TOKENS)}
  assert list(ids.values()) == list(range(_NUM_SPECIAL)), ids
  return HFTokenizer(tok, spec, ids)


_CONT_OFFSET = 0xF0000  # Supplementary Private Use Area-A: room for every BMP character.


def _train_wordpiece(spec: str, vocab_size: int, texts: list[str]) -> HFTokenizer:
  """Trains a WordPiece vocabulary deterministically (see below), returns the BERT-style tokenizer.

  ``tokenizers``' own ``WordPieceTrainer`` is not deterministic (seen in 0.23): it numbers the
  ``##x`` continuation characters in hash-map order, ties between equally frequent merges are
  broken by those numbers, so two trainings on the same corpus give different ids and sometimes
  different vocabularies. It is a BPE trainer underneath (WordPiece vocabularies are learned with
  BPE merges, then used with WordPiece's greedy longest-match). So this trains the library's
  (deterministic: alphabet sorted by code point, ties broken by ids) ``BpeTrainer`` on the
  BERT-normalized, BERT-pre-tokenized words in which every character but a word's first is
  shifted into a private-use plane (marking "continuation"), then maps each learned token back:
  a token that starts with a shifted character becomes ``##`` + its unshifted text. Characters
  outside the Basic Multilingual Plane are not shifted (they are rare; such a character inside a
  word is then learned as if it began one).
  """
  from tokenizers import Tokenizer as _HF  # pylint: disable=import-outside-toplevel
  # pylint: disable-next=import-outside-toplevel
  from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

  normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                          strip_accents=False, lowercase=False)
  pre_tokenizer = pre_tokenizers.BertPreTokenizer()

  def shift(word: str) -> str:
    return word[0] + "".join(chr(_CONT_OFFSET + ord(c)) if ord(c) < 0x10000 else c
                             for c in word[1:])

  def shifted_words(text: str) -> str:
    words = pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
    return " ".join(shift(w) for w, _ in words)

  bpe = _HF(models.BPE(unk_token="[UNK]"))
  bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                special_tokens=list(SPECIAL_TOKENS))
  bpe.train_from_iterator((shifted_words(t) for t in texts), trainer=trainer, length=len(texts))

  def unshift(token: str) -> str:
    plain = "".join(chr(ord(c) - _CONT_OFFSET) if ord(c) >= _CONT_OFFSET else c for c in token)
    return "##" + plain if ord(token[0]) >= _CONT_OFFSET else plain

  learned = sorted(bpe.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
  vocab: dict[str, int] = {}
  for token, _ in learned:
    vocab.setdefault(token if token in SPECIAL_TOKENS else unshift(token), len(vocab))
  tok = _HF(models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##"))
  tok.normalizer = normalizer
  tok.pre_tokenizer = pre_tokenizer
  tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
  tok.add_special_tokens(list(SPECIAL_TOKENS))
  ids = {role: tok.token_to_id(t) for role, t in zip(_ROLES, SPECIAL_TOKENS)}
  assert list(ids.values()) == list(range(_NUM_SPECIAL)), ids
  return HFTokenizer(tok, spec, ids)


def _from_file(spec: str, path: str) -> Tokenizer:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"tokenizer {spec!r}: no such file {path}")
  with open(path, encoding="utf-8") as f:
    try:
      config = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"tokenizer {spec!r}: {path} is not JSON ({e}); expected a `tokenizers` "
                       f"tokenizer.json") from e
  if isinstance(config, dict) and config.get("format") == _BYTES_FORMAT:
    return ByteTokenizer(spec)
  from tokenizers import Tokenizer as _HF  # pylint: disable=import-outside-toplevel

  try:
    tok = _HF.from_file(path)
  except Exception as e:  # pylint: disable=broad-except  # tokenizers raises a bare Exception.
    raise ValueError(f"tokenizer {spec!r}: {path} is not a `tokenizers` JSON file: {e}") from e
  vocab = tok.get_vocab(with_added_tokens=True)
  found: dict[str, int] = {}
  for role, spellings in SPECIAL_SPELLINGS.items():
    for s in spellings:
      if s in vocab:
        found[role] = int(vocab[s])
        break
  for a, b in (("cls", "bos"), ("sep", "eos")):
    if a in found or b in found:
      found.setdefault(a, found.get(b, -1))
      found.setdefault(b, found[a])
  missing = [r for r in _ROLES if r not in found]
  if missing:
    tried = "; ".join(f"{r}: {' '.join(SPECIAL_SPELLINGS[r])}" for r in missing)
    raise ValueError(f"tokenizer {spec!r}: {path} has no special token for {missing} (tried "
                     f"{tried}); add them, e.g. tok.add_special_tokens([...]) with the "
                     f"`tokenizers` library, and save the file again")
  return HFTokenizer(tok, spec, found)


def make_tokenizer(spec: str = "bytes", *, corpus: Iterable[str] | None = None) -> Tokenizer:
  """Returns the tokenizer named by ``spec`` (see the module docstring).

  Args:
    spec: ``"bytes"``, ``"bpe:<vocab_size>"``, ``"wordpiece:<vocab_size>"`` or ``"file:<path>"``.
    corpus: Training texts (``bpe`` and ``wordpiece`` only; required for them).

  Returns:
    A :class:`Tokenizer`.

  Raises:
    ValueError: unknown spec, bad vocabulary size, missing corpus, a file without the needed
      special tokens.
    FileNotFoundError: ``file:`` with a missing file.

  >>> tok = make_tokenizer("bytes")
  >>> tok.vocab_size, tok.pad_id, tok.mask_id, tok.encode("hé").tolist()
  (263, 0, 4, [111, 202, 176])
  >>> tok.decode([tok.cls_id, 111, 202, 176, tok.sep_id])
  'hé'
  """
  if not isinstance(spec, str):
    raise ValueError(f"tokenizer spec must be a string, got {spec!r}; valid forms: "
                     f"{', '.join(_SPECS)}")
  kind, sep, rest = spec.partition(":")
  if spec == "bytes":
    return ByteTokenizer()
  if sep and kind in ("bpe", "wordpiece"):
    return _train(kind, spec, _vocab_size(spec, rest), corpus)
  if sep and kind == "file" and rest:
    return _from_file(spec, os.path.expanduser(rest))
  raise ValueError(f"unknown tokenizer spec {spec!r}; valid forms: {', '.join(_SPECS)}")

