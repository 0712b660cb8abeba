"""Tests for ssl_jax.data.tokenizer: bytes, trained BPE / WordPiece, file loading, specials."""

import json
import pickle

import numpy as np
import pytest

from ssl_jax.data.tokenizer import SPECIAL_TOKENS, make_tokenizer

UNICODE = ["", "a", "héllo wörld", "日本語のテキスト",
           "emoji 🙂👍🏽 and\tTABS\n\nnew  lines", "\x00\x7f control",
           "e\u0301 combining", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 outside the BMP"]
PROSE = ("Return the value of the attribute, if it exists. Otherwise raise an error.\n"
         "The object's __dict__ is used when the name is not found.")


@pytest.fixture(scope="module")
def pydoc_texts():
  from pydoc_data.topics import topics

  return [topics[k] for k in sorted(topics)]


@pytest.fixture(scope="module")
def bpe(pydoc_texts):
  return make_tokenizer("bpe:600", corpus=pydoc_texts)


@pytest.fixture(scope="module")
def wordpiece(pydoc_texts):
  return make_tokenizer("wordpiece:800", corpus=pydoc_texts)


def _specials_are_0_to_6(tok):
  ids = [tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id, tok.bos_id, tok.eos_id]
  assert ids == list(range(7))
  np.testing.assert_array_equal(tok.special_ids, np.arange(7))
  assert tok.special_ids.dtype == np.int32


def test_bytes_round_trip_any_unicode():
  tok = make_tokenizer()
  assert (tok.spec, tok.vocab_size) == ("bytes", 263)
  _specials_are_0_to_6(tok)
  for text in UNICODE:
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and ids.shape == (len(text.encode("utf-8")),)
    assert ids.size == 0 or (ids.min() >= 7 and ids.max() < 263)
    assert tok.decode(ids) == text
    framed = np.concatenate([[tok.cls_id], ids, [tok.sep_id, tok.pad_id, tok.pad_id]])
    assert tok.decode(framed) == text  # specials dropped
  assert [a.tolist() for a in tok.encode_batch(UNICODE)] == [tok.encode(t).tolist()
                                                             for t in UNICODE]
  # An invalid UTF-8 byte sequence decodes with replacement characters.
  assert tok.decode([7 + 0xff, 7 + ord("a")]) == "\ufffda"


def test_bytes_word_starts():
  tok = make_tokenizer("bytes")
  ids = tok.encode("ab  c\nde")
  np.testing.assert_array_equal(tok.word_starts(ids), [1, 0, 0, 0, 1, 0, 1, 0])
  framed = np.concatenate([[tok.cls_id], tok.encode("x y"), [tok.sep_id], tok.encode("z")])
  # Specials are words of their own; the token after a special starts a word.
  np.testing.assert_array_equal(tok.word_starts(framed), [1, 1, 0, 1, 1, 1])
  assert tok.word_starts(np.stack([ids, ids])).shape == (2, 8)
  assert tok.is_special(framed).tolist() == [True, False, False, False, True, False]


def test_bpe_round_trip_specials_and_determinism(bpe, pydoc_texts):
  assert bpe.spec == "bpe:600" and bpe.vocab_size == 600
  _specials_are_0_to_6(bpe)
  assert [bpe.tokenizer.id_to_token(i) for i in range(7)] == list(SPECIAL_TOKENS)
  for text in [PROSE, *UNICODE]:  # byte-level: exact for any text
    ids = bpe.encode(text)
    assert ids.dtype == np.int32 and (ids.size == 0 or ids.min() >= 7)
    assert bpe.decode(ids) == text
  assert len(bpe.encode(PROSE)) < len(PROSE.encode()) / 2  # it learned merges
  # Special-token strings in the text are ordinary text, never special ids.
  assert not bpe.is_special(bpe.encode("[MASK] [CLS]")).any()
  again = make_tokenizer("bpe:600", corpus=pydoc_texts)
  assert again.tokenizer.to_str() == bpe.tokenizer.to_str()


def test_bpe_word_starts(bpe):
  ids = bpe.encode("Return the value\n  of x")
  pieces = [bpe.tokenizer.id_to_token(int(i)) for i in ids]
  starts = bpe.word_starts(ids)
  assert starts[0]
  for k in range(1, len(ids)):
    after_space = pieces[k - 1][-1] in "ĠĊ"
    whitespace_only = set(pieces[k]) <= set("ĠĊ")
    assert starts[k] == ((pieces[k].startswith("Ġ") or after_space) and not whitespace_only), (
        pieces, k)
  words = np.cumsum(starts)
  assert words[-1] == 5  # Return / the / value / of / x


def test_wordpiece_round_trip_and_determinism(wordpiece, pydoc_texts):
  assert wordpiece.spec == "wordpiece:800" and wordpiece.vocab_size <= 800
  _specials_are_0_to_6(wordpiece)
  text = "Return the value of the attribute, if it exists. Otherwise, raise an error."
  ids = wordpiece.encode(text)
  assert wordpiece.unk_id not in ids.tolist()
  assert wordpiece.decode(ids) == text
  assert wordpiece.decode(wordpiece.encode("Cased   Words\nkept")) == "Cased Words kept"
  # tokenizers' own WordPieceTrainer numbers tokens in hash-map order; ours must not.
  for _ in range(2):
    again = make_tokenizer("wordpiece:800", corpus=pydoc_texts)
    assert again.tokenizer.to_str() == wordpiece.tokenizer.to_str()
  pieces = [wordpiece.tokenizer.id_to_token(int(i)) for i in ids]
  assert any(p.startswith("##") for p in pieces)
  np.testing.assert_array_equal(wordpiece.word_starts(ids), [not p.startswith("##")
                                                             for p in pieces])


def test_save_and_load_file(bpe, wordpiece, tmp_path):
  for tok in (bpe, wordpiece, make_tokenizer("bytes")):
    path = tmp_path / f"{tok.spec.replace(':', '_')}.json"
    tok.save(str(path))
    loaded = make_tokenizer(f"file:{path}")
    assert loaded.spec == f"file:{path}" and loaded.vocab_size == tok.vocab_size
    _specials_are_0_to_6(loaded)
    for text in (PROSE, "naïve 🙂"):
      np.testing.assert_array_equal(loaded.encode(text), tok.encode(text))
      assert loaded.decode(loaded.encode(text)) == tok.decode(tok.encode(text))
    ids = tok.encode(PROSE)
    np.testing.assert_array_equal(loaded.word_starts(ids), tok.word_starts(ids))


def test_pickle_keeps_the_tokenizer(bpe):
  clone = pickle.loads(pickle.dumps(bpe))
  np.testing.assert_array_equal(clone.encode(PROSE), bpe.encode(PROSE))
  assert clone.mask_id == bpe.mask_id and clone.spec == bpe.spec
  np.testing.assert_array_equal(clone.encode("[MASK]"), bpe.encode("[MASK]"))
  assert not clone.is_special(clone.encode("[MASK]")).any()


def _word_level_file(path, tokens):
  from tokenizers import Tokenizer, models, pre_tokenizers

  tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token=tokens[1]))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.add_special_tokens([t for t in tokens if t.startswith(("<", "["))])
  tok.save(str(path))
  return f"file:{path}"


def test_file_with_roberta_spellings(tmp_path):
  spec = _word_level_file(tmp_path / "roberta.json",
                          ["<s>", "<pad>", "</s>", "<unk>", "hello", "world", "<mask>"])
  tok = make_tokenizer(spec)
  assert (tok.cls_id, tok.bos_id, tok.pad_id, tok.sep_id, tok.eos_id, tok.unk_id,
          tok.mask_id) == (0, 0, 1, 2, 2, 3, 6)
  np.testing.assert_array_equal(tok.special_ids, [0, 1, 2, 3, 6])
  np.testing.assert_array_equal(tok.encode("hello world"), [4, 5])
  assert tok.word_starts(tok.encode("hello world")).all()  # word-level: every token


def test_file_missing_mask_is_a_clear_error(tmp_path):
  spec = _word_level_file(tmp_path / "nomask.json",
                          ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello"])
  with pytest.raises(ValueError, match=r"no special token for \['mask'\].*\[MASK\]"):
    make_tokenizer(spec)


def test_errors(tmp_path):
  with pytest.raises(ValueError, match=r"unknown tokenizer spec 'sentencepiece'.*bytes, "
                                       r"bpe:<vocab_size>, wordpiece:<vocab_size>, file:<path>"):
    make_tokenizer("sentencepiece")
  with pytest.raises(ValueError, match="vocab_size must be an int > 263"):
    make_tokenizer("bpe:100", corpus=["text"])
  with pytest.raises(ValueError, match="vocab_size must be an int > 7, got 'big'"):
    make_tokenizer("wordpiece:big", corpus=["text"])
  with pytest.raises(ValueError, match="pass corpus="):
    make_tokenizer("bpe:1000")
  with pytest.raises(ValueError, match="corpus is empty"):
    make_tokenizer("wordpiece:1000", corpus=["", ""])
  with pytest.raises(FileNotFoundError, match="no such file"):
    make_tokenizer(f"file:{tmp_path / 'missing.json'}")
  bad = tmp_path / "bad.json"
  bad.write_text("not json")
  with pytest.raises(ValueError, match="is not JSON"):
    make_tokenizer(f"file:{bad}")
  bad.write_text(json.dumps({"some": "dict"}))
  with pytest.raises(ValueError, match="not a `tokenizers` JSON file"):
    make_tokenizer(f"file:{bad}")
