"""Tests for ssl_jax.data.text: packed rows, sentence pairs, and text batches from make_iterator."""

import json
import pickle

import numpy as np
import pytest

from ssl_jax.data.iterator import make_iterator
from ssl_jax.data.text import (PackedTextSource, SentencePairSource, TextCorpus, documents_sha256,
                               load_corpus, load_text_source, split_sentences)
from ssl_jax.data.tokenizer import make_tokenizer

T = 32


def _corpus(docs, name="toy", split="train"):
  return TextCorpus(name, split, list(docs), documents_sha256(docs), sum(map(len, docs)))


@pytest.fixture(scope="module")
def tok():
  return make_tokenizer("bytes")


@pytest.fixture(scope="module")
def bpe():
  return make_tokenizer("bpe:400", corpus=load_corpus("pydoc", "train").documents)


@pytest.fixture(scope="module")
def toy():
  # Lengths (bytes) chosen around T: short ones, one whose framed length is exactly T, one
  # framed T + 1, one longer than 2 T, an empty one (skipped) and non-ASCII text.
  docs = ["a", "short doc", "x" * (T - 2), "y" * (T - 1), "", "z" * (2 * T + 5), "naïve 🙂 end",
          "b" * 10, "c" * 25, "d"]
  return _corpus(docs)


def _check_packing(src, corpus, tokenizer, style):
  first, last = ((tokenizer.cls_id, tokenizer.sep_id) if style == "bert"
                 else (tokenizer.bos_id, tokenizer.eos_id))
  arrays = src.arrays()
  tokens, seg, pos, docs = (arrays["tokens"], arrays["segment_ids"], arrays["positions"],
                            src.document_ids)
  n, t = tokens.shape
  assert t == src.seq_len and len(src) == n and arrays["label"].shape == (n,)
  assert tokens.dtype == seg.dtype == pos.dtype == np.int32
  real = seg > 0
  assert src.num_tokens == real.sum()
  assert (tokens[~real] == tokenizer.pad_id).all() and (pos[~real] == 0).all()
  assert (docs[~real] == -1).all() and (docs[real] >= 0).all()
  for r in range(n):
    k = real[r].sum()
    assert real[r, :k].all() and not real[r, k:].any()  # padding only at the end
    assert seg[r, 0] == 1 and (np.diff(seg[r, :k]) >= 0).all() and (np.diff(seg[r, :k]) <= 1).all()
    for s in range(1, seg[r].max() + 1):
      piece = seg[r] == s
      np.testing.assert_array_equal(pos[r, piece], np.arange(piece.sum()))  # restart at 0
      assert len(set(docs[r, piece].tolist())) == 1  # a piece is one document's
  # No token lost or duplicated: row-major real tokens of each document = its framed tokens.
  flat_docs, flat_tokens = docs[real], tokens[real]
  for i, text in enumerate(corpus.documents):
    got = flat_tokens[flat_docs == i]
    if not text:
      assert got.size == 0
      continue
    np.testing.assert_array_equal(got, np.concatenate([[first], tokenizer.encode(text), [last]]))
  assert src.num_bytes == sum(len(d.encode()) for d in corpus.documents)


@pytest.mark.parametrize("style", ["bert", "gpt"])
def test_packing_toy(toy, tok, style):
  src = PackedTextSource(toy, tok, seq_len=T, style=style)
  _check_packing(src, toy, tok, style)
  assert src.num_documents == 9 and (src.name, src.split, src.style) == ("toy", "train", style)
  # Next-fit greedy in corpus order: "a" and "short doc" share row 0; the exact-T doc fills row 1;
  # the T + 1 doc is cut into a full row and a 1-token piece; the next document's first chunk (T
  # tokens) does not fit after it, so it starts a row and its 7-token remainder is packed.
  np.testing.assert_array_equal(src.document_ids[0, :14], [0] * 3 + [1] * 11)
  assert (src.document_ids[1] == 2).all() and (src.document_ids[2] == 3).all()
  np.testing.assert_array_equal(src.document_ids[3], [3] + [-1] * (T - 1))
  assert (src.document_ids[4:6] == 5).all()
  np.testing.assert_array_equal(src.document_ids[6, :8], [5] * 7 + [6])
  ex = src[0]
  assert set(ex) == {"tokens", "segment_ids", "positions", "label"}
  assert ex["label"].shape == () and ex["label"].dtype == np.int32
  assert src.example_shapes == {"tokens": (T,), "segment_ids": (T,), "positions": (T,),
                                "label": ()}
  for i, ex in enumerate(src.__getitems__([2, 0, -1])):
    np.testing.assert_array_equal(ex["tokens"], src[[2, 0, -1][i]]["tokens"])
  with pytest.raises(IndexError):
    src[len(src)]


def test_one_document_per_row(toy, tok):
  src = PackedTextSource(toy, tok, seq_len=T, pack=False)
  docs = [i for i, d in enumerate(toy.documents) if d]
  assert len(src) == len(docs) and (src.arrays()["segment_ids"].max(axis=1) == 1).all()
  for row, i in enumerate(docs):
    framed = np.concatenate([[tok.cls_id], tok.encode(toy.documents[i]), [tok.sep_id]])[:T]
    ex = src[row]
    np.testing.assert_array_equal(ex["tokens"][:len(framed)], framed)
    assert (ex["segment_ids"][len(framed):] == 0).all() and (src.document_ids[row] != -1).sum() \
        == len(framed)


def test_packing_real_corpora(tok, bpe):
  for tokenizer in (tok, bpe):
    corpus = load_corpus("pydoc", "validation")
    src = PackedTextSource(corpus, tokenizer, seq_len=64)
    _check_packing(src, corpus, tokenizer, "bert")
    assert src.num_tokens > 0.9 * len(src) * 64  # long documents pack densely
  src = load_text_source("pydoc", "validation", tokenizer=bpe, seq_len=64, style="gpt")
  assert src.num_tokens < 0.6 * src.num_bytes  # BPE compresses


def test_packing_is_deterministic_and_picklable(toy, tok, bpe):
  a = PackedTextSource(toy, bpe, seq_len=T)
  b = pickle.loads(pickle.dumps(a))
  for key in a.arrays():
    np.testing.assert_array_equal(a.arrays()[key], b.arrays()[key])
  np.testing.assert_array_equal(b.tokenizer.encode("naïve"), bpe.encode("naïve"))
  c = PackedTextSource(toy, bpe, seq_len=T)
  np.testing.assert_array_equal(a.arrays()["tokens"], c.arrays()["tokens"])


@pytest.fixture(scope="module")
def text_source(tok):
  docs = [f"Document number {i}. " + "w" * (i % 7) for i in range(60)]
  return PackedTextSource(_corpus(docs), tok, seq_len=16)


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_iterator_batches(text_source):
  it = make_iterator(text_source, global_batch_size=8, seed=0, process_index=0, process_count=1)
  for batch in _take(it, 3):
    assert set(batch) == {"tokens", "segment_ids", "positions", "label", "index"}
    assert batch["tokens"].shape == (8, 16) and batch["tokens"].dtype == np.int32
    assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32
    for k, i in enumerate(batch["index"]):
      for key in ("tokens", "segment_ids", "positions"):
        np.testing.assert_array_equal(batch[key][k], text_source[i][key])


def test_iterator_resume_and_hosts(text_source):
  n_steps = 2 * (len(text_source) // 8) + 1  # crosses epoch boundaries
  it = make_iterator(text_source, global_batch_size=8, seed=7, process_index=0, process_count=1)
  _take(it, 3)
  state = json.loads(json.dumps(it.get_state()))
  expected = _take(it, n_steps)
  fresh = make_iterator(text_source, global_batch_size=8, seed=7, process_index=0,
                        process_count=1)
  fresh.set_state(state)
  for a, b in zip(_take(fresh, n_steps), expected):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  hosts = []
  for p in range(2):
    host = make_iterator(text_source, global_batch_size=8, seed=7, process_index=p,
                         process_count=2)
    host.set_state(state)
    hosts.append(_take(host, n_steps))
  for step in range(n_steps):
    for key in expected[step]:
      assert hosts[0][step][key].shape[0] == 4
      np.testing.assert_array_equal(
          np.concatenate([hosts[0][step][key], hosts[1][step][key]]), expected[step][key])


def test_split_sentences():
  text = ("Call f(x), e.g. with x = 1. It returns None! Does it? Yes (see Mr. Smith).\n"
          "The end is near.  \"Quoted sentence.\" [Bracket] follows.\n\n\nnew paragraph here\n"
          "continues; no period\n\nsingle letter A. Initial stays. 3 more.")
  assert split_sentences(text) == [
      "Call f(x), e.g. with x = 1.", "It returns None!", "Does it?",
      "Yes (see Mr. Smith).", "The end is near.", "\"Quoted sentence.\"", "[Bracket] follows.",
      "new paragraph here\ncontinues; no period", "single letter A. Initial stays.", "3 more."]
  assert split_sentences("") == [] and split_sentences("  \n\n ") == []


@pytest.fixture(scope="module")
def pairs(tok):
  corpus = load_corpus("pydoc", "train")
  return corpus, SentencePairSource(corpus, tok, seq_len=128, seed=0)


def test_pairs_layout(pairs, tok):
  _, src = pairs
  arrays = src.arrays()
  tokens, types, seg, pos = (arrays[k] for k in ("tokens", "type_ids", "segment_ids",
                                                 "positions"))
  assert src.example_shapes == {"tokens": (128,), "type_ids": (128,), "segment_ids": (128,),
                                "positions": (128,), "is_next": (), "label": ()}
  for r in range(len(src)):
    length = seg[r].sum()
    assert 5 <= length <= 128 and (seg[r, :length] == 1).all() and (seg[r, length:] == 0).all()
    seps = np.flatnonzero(tokens[r] == tok.sep_id)
    assert tokens[r, 0] == tok.cls_id and len(seps) == 2 and seps[1] == length - 1
    np.testing.assert_array_equal(types[r, :seps[0] + 1], 0)
    np.testing.assert_array_equal(types[r, seps[0] + 1:length], 1)
    assert (types[r, length:] == 0).all() and (tokens[r, length:] == tok.pad_id).all()
    np.testing.assert_array_equal(pos[r, :length], np.arange(length))
    assert seps[0] > 1 and seps[1] > seps[0] + 1  # A and B non-empty
    assert not np.isin(tokens[r, 1:seps[0]], tok.special_ids).any()


def test_pairs_statistics_and_next_sentences(pairs, tok):
  corpus, src = pairs
  is_next = src.arrays()["is_next"]
  assert len(src) > 1000 and abs(is_next.mean() - 0.5) < 0.05
  for r in range(len(src)):
    doc_a, a0, a1, doc_b, b0, b1 = src.pairs[r]
    ex = src[r]
    seps = np.flatnonzero(ex["tokens"] == tok.sep_id)
    a_bytes = (ex["tokens"][1:seps[0]] - 7).astype(np.uint8).tobytes()
    b_bytes = (ex["tokens"][seps[0] + 1:seps[1]] - 7).astype(np.uint8).tobytes()
    sents = src.sentences
    # A is truncated from its front, B from its back.
    assert " ".join(sents[doc_a][a0:a1]).encode().endswith(a_bytes)
    assert " ".join(sents[doc_b][b0:b1]).encode().startswith(b_bytes)
    if ex["is_next"] == 1:
      assert doc_a == doc_b and b0 == a1
      assert a_bytes + b" " + b_bytes in " ".join(sents[doc_a]).encode()
    else:
      assert doc_a != doc_b
  # Other seeds: other pairs, still balanced.
  other = SentencePairSource(corpus, tok, seq_len=128, seed=1)
  assert abs(other.arrays()["is_next"].mean() - 0.5) < 0.05
  assert not np.array_equal(other.pairs[:50], src.pairs[:50])
  again = SentencePairSource(corpus, tok, seq_len=128, seed=0)
  np.testing.assert_array_equal(again.arrays()["tokens"], src.arrays()["tokens"])


def test_dupe_factor_adds_passes_with_new_pairs(pairs, tok):
  """BERT's dupe_factor: the first pass is the one-pass source; later passes draw new split
  points and negatives, so most added pairs are new."""
  corpus, one = pairs
  three = SentencePairSource(corpus, tok, seq_len=128, seed=0, dupe_factor=3)
  assert three.dupe_factor == 3 and 2.7 * len(one) < len(three) < 3.3 * len(one)
  np.testing.assert_array_equal(three.pairs[:len(one)], one.pairs)
  np.testing.assert_array_equal(three.arrays()["tokens"][:len(one)], one.arrays()["tokens"])
  distinct = {row.tobytes() for row in three.arrays()["tokens"]}
  assert len(distinct) > 2.2 * len(one)  # measured 3,912 of 4,758 (short documents repeat)
  assert abs(three.arrays()["is_next"].mean() - 0.5) < 0.03
  for bad in (0, 1.5, True):
    with pytest.raises(ValueError, match="dupe_factor must be an integer >= 1"):
      SentencePairSource(corpus, tok, seq_len=128, dupe_factor=bad)


def test_pairs_through_iterator_and_pickle(pairs):
  _, src = pairs
  batch = next(make_iterator(src, global_batch_size=16, seed=0, process_index=0,
                             process_count=1))
  assert set(batch) == {"tokens", "type_ids", "segment_ids", "positions", "is_next", "label",
                        "index"}
  assert batch["is_next"].shape == (16,) and batch["type_ids"].shape == (16, 128)
  clone = pickle.loads(pickle.dumps(src))
  np.testing.assert_array_equal(clone[5]["tokens"], src[5]["tokens"])


def test_load_text_source(tok):
  src = load_text_source("pydoc", "test", tokenizer=tok, seq_len=48, style="gpt")
  assert isinstance(src, PackedTextSource) and src.style == "gpt" and src.split == "test"
  assert src.corpus_sha256 == load_corpus("pydoc", "test").sha256
  pairs = load_text_source("pydoc", "validation", tokenizer=tok, seq_len=64, pairs=True)
  assert isinstance(pairs, SentencePairSource) and len(pairs) > 10


def test_errors(toy, tok):
  with pytest.raises(ValueError, match="unknown packing style 't5'; valid styles: bert, gpt"):
    PackedTextSource(toy, tok, seq_len=T, style="t5")
  with pytest.raises(ValueError, match="seq_len must be an int >= 2, got 1"):
    PackedTextSource(toy, tok, seq_len=1)
  with pytest.raises(ValueError, match="seq_len must be an int >= 8"):
    SentencePairSource(toy, tok, seq_len=4)
  with pytest.raises(ValueError, match="no documents to pack"):
    PackedTextSource(_corpus(["", ""]), tok, seq_len=T)
  with pytest.raises(ValueError, match="at least 2 non-empty documents"):
    SentencePairSource(_corpus(["One. Two."]), tok, seq_len=T)
  with pytest.raises(ValueError, match="no document has 2 sentences"):
    SentencePairSource(_corpus(["One", "Two"]), tok, seq_len=T)
  with pytest.raises(ValueError, match="unknown text corpus"):
    load_text_source("nope", "train", tokenizer=tok, seq_len=T)
