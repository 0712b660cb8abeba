"""Evaluation of a language-method workdir: held-out LM scores, the docstring task, retrieval.

``evaluate_text_workdir(workdir)`` restores the pretrained networks (and the same architecture at
the run's initialization, the ``random_init`` baseline) and writes ``DIR/eval.json``:

* ``val_perplexity``: ``exp`` of the mean cross-entropy of the run's objective on the corpus's
  ``config.test_split`` rows (``validation`` in the text recipes), computed as one sum over one
  count across all rows. Masked LM (``mlm``, ``nsp``): the masked tokens of a fixed mask (the
  same 15% / 80-10-10 draw for every checkpoint); causal LM (``clm``): every next-token target.
  ``val_accuracy``: the share of those targets predicted exactly.
* ``unigram_perplexity``: the same targets scored by the add-one smoothed unigram distribution of
  the training split in the same tokenization: the bar a language model must clear.
* ``bits_per_byte``: the objective's cross-entropy in bits per UTF-8 byte of text,
  ``sum(nats) / ln 2 / bytes``. Causal LM: over every target of the split and its
  ``num_bytes`` (the end-of-document predictions included, as GPT-2's evaluations count them).
  Masked LM: the mean over masked tokens times the split's (non-special) tokens per byte, i.e.
  the cost per byte of predicting a token from its two-sided context; comparable across
  tokenizers, not with a causal model's. Not reported for sentence pairs (``nsp``), whose rows
  hold truncated sentence runs.
* ``docstring_task``: the downstream task of :func:`ssl_jax.data.docstring_task` (a standard-library
  docstring -> its top-level package, names removed; the task's test docstrings are never in the
  pretraining corpora). Features are the encoder's mean-pooled last hidden states of the docstring
  (framed as in pretraining, truncated to ``config.text.seq_len``); a linear probe with the
  few-label protocol of the design notes (``config.eval.budgets``, ``num_draws`` draws) on the
  task's train split, scored on its test split, for ``ssl`` and ``random_init``.
  ``docstring_task_knn``: the same with the weighted kNN.
* ``retrieval_recall_at_1`` (and ``..._random_init``): each test docstring's first half must find
  its own second half among all second halves by cosine similarity of the features (SimCSE's
  evaluation here).
* Causal LM: a few samples generated from validation prompts (key-value cache, temperature and
  top-k of the method's config) are printed and written to ``DIR/samples.txt``.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax import methods
from ssl_jax.evaluate.features import fixed_size_batches, map_in_batches
from ssl_jax.evaluate.fewshot import evaluate_features
from ssl_jax.evaluate.table import format_table
from ssl_jax.losses.text import causal_targets, token_cross_entropy
from ssl_jax.methods import text_common
from ssl_jax.train.workdir import restore_run, write_json_atomic

MLM_METHODS = ("mlm", "nsp")
CAUSAL_METHODS = ("clm",)
EVAL_MASK_SEED = 1234  # the fixed validation mask of masked-LM perplexity


def frame_texts(texts, tokenizer, *, seq_len: int, style: str) -> dict[str, np.ndarray]:
  """Texts -> ``{"tokens", "segment_ids", "positions"}`` ``[N, seq_len]``: one text per row,
  framed (``[CLS] .. [SEP]`` or ``[BOS] .. [EOS]``), truncated, padded."""
  first, last = ((tokenizer.cls_id, tokenizer.sep_id) if style == "bert"
                 else (tokenizer.bos_id, tokenizer.eos_id))
  n = len(texts)
  tokens = np.full((n, seq_len), tokenizer.pad_id, np.int32)
  segment_ids = np.zeros((n, seq_len), np.int32)
  for i, ids in enumerate(tokenizer.encode_batch(list(texts))):
    row = np.concatenate([[first], ids, [last]])[:seq_len]
    tokens[i, :len(row)] = row
    segment_ids[i, :len(row)] = 1
  positions = np.broadcast_to(np.arange(seq_len, dtype=np.int32), (n, seq_len)).copy()
  return {"tokens": tokens, "segment_ids": segment_ids, "positions": positions}


def features_fn(method):
  """``fn(weights, batch) -> [B, D]``: ``method.features`` of ``weights`` (``{"params",
  "batch_stats", "method_state"}``), jitted once for every set of weights and texts of a shape."""
  return jax.jit(lambda w, x: method.features(w["params"], w["batch_stats"], w["method_state"], x))


def text_features(fn, weights, arrays, *, batch_size: int) -> np.ndarray:
  """``fn(weights, batch)`` (:func:`features_fn`) over every row of ``arrays``, in fixed-size
  batches (one compilation)."""
  return map_in_batches(lambda x: fn(weights, x), arrays, batch_size=batch_size)


def lm_scores(config, params, source, unigram_log_probs: np.ndarray, *,
              batch_size: int) -> dict[str, float]:
  """Sums of the objective's cross-entropy, the unigram cross-entropy and correct predictions
  over ``source``'s rows, and their count (see the module docstring)."""
  tokenizer = text_common.tokenizer_for(config)
  module = methods.get_module(config.method)
  unigram = jnp.asarray(unigram_log_probs, jnp.float32)
  if config.method in MLM_METHODS:
    from ssl_jax.methods import mlm  # pylint: disable=g-import-not-at-top
    nets = mlm.build_networks(config, tokenizer, nsp=config.method == "nsp")
  else:
    nets = module.build_networks(config, tokenizer)

  @jax.jit
  def sums(params, batch, real):
    model = nets.bind(params, {})
    batch = dict(batch)
    weights_row = (jnp.arange(batch["tokens"].shape[0]) < real).astype(jnp.float32)[:, None]
    if config.method in MLM_METHODS:
      inputs, labels, mask = mlm.mask_batch(config, tokenizer, batch,
                                            jax.random.key(EVAL_MASK_SEED))
      hidden = model.encoder(inputs, segment_ids=batch["segment_ids"],
                             positions=batch["positions"], type_ids=batch.get("type_ids"))
      # All masked positions are scored here (no max_predictions cut).
      logits = model.mlm_head(hidden, model.encoder)
      targets, weights = labels, mask.astype(jnp.float32)
    else:
      tokens = batch["tokens"]
      logits = model.encoder.logits(model.encoder(tokens, segment_ids=batch["segment_ids"],
                                                  positions=batch["positions"]))[:, :-1]
      targets = tokens[:, 1:]
      weights = causal_targets(tokens, segment_ids=batch["segment_ids"])
    weights = weights * weights_row
    ce = token_cross_entropy(logits, targets)
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    return (jnp.sum(ce * weights), jnp.sum(-unigram[targets] * weights),
            jnp.sum(correct * weights), jnp.sum(weights))

  arrays = source.arrays()
  if config.method in MLM_METHODS:
    arrays["index"] = np.arange(len(source), dtype=np.int32)  # keys of the fixed mask
  keep = [k for k in arrays if k != "label"]
  total = np.zeros(4)
  for chunk, real in fixed_size_batches({k: arrays[k] for k in keep}, batch_size):
    total += np.asarray(jax.device_get(sums(params, chunk, real)), np.float64)
  ce, uni, correct, count = total
  if count == 0:
    raise ValueError(f"{source!r} has no target to score.")
  return {"ce_sum": ce, "unigram_sum": uni, "correct": correct, "count": count}


def _recall_at_1(first: np.ndarray, second: np.ndarray) -> float:
  a = first / np.maximum(np.linalg.norm(first, axis=1, keepdims=True), 1e-12)
  b = second / np.maximum(np.linalg.norm(second, axis=1, keepdims=True), 1e-12)
  return float(np.mean(np.argmax(a @ b.T, axis=1) == np.arange(len(a))))


def evaluate_text(workdir: str, config, *, dataset: str | None, step: int | None, protocols,
                  print_table: bool) -> tuple[dict, dict]:
  """``(results, {})``: the text modality's evaluation (:mod:`ssl_jax.modalities.text`) of
  ``workdir`` for :func:`ssl_jax.evaluate.runner.evaluate_workdir`, which takes no other dataset
  and no protocol (the module docstring's scores are all computed)."""
  if dataset not in (None, config.dataset) or protocols not in (None, "all"):
    raise ValueError(f"{config.method} is a language method: its evaluation (perplexity, the "
                     "docstring task, retrieval) takes no --dataset or --protocol.")
  return evaluate_text_workdir(workdir, config=config, step=step, print_table=print_table), {}


def evaluate_text_workdir(workdir: str, *, config, step: int | None = None,
                          print_table: bool = True, docstring_task: bool = True) -> dict:
  """Evaluates a language method's workdir (module docstring); writes ``DIR/eval.json``.

  ``docstring_task=False`` skips the docstring-task probes (the slowest part), keeping the
  language-model scores and the retrieval."""
  from ssl_jax import data  # pylint: disable=g-import-not-at-top
  from ssl_jax.train.loop import load_train_source  # pylint: disable=g-import-not-at-top

  run = restore_run(workdir, None, step=step, config=config)
  tokenizer = text_common.tokenizer_for(config)
  style = methods.get_module(config.method).DATA["style"]
  bs = config.eval.batch_size
  results: dict = {}
  if config.method in MLM_METHODS + CAUSAL_METHODS:
    train_source = load_train_source(config)
    unigram = text_common.unigram_log_probs(train_source, tokenizer.vocab_size)
    val = load_train_source(config, split=config.test_split)
    s = lm_scores(config, run.trained["params"], val, unigram, batch_size=bs)
    mean_nats = s["ce_sum"] / s["count"]
    results["val_perplexity"] = math.exp(mean_nats)
    results["unigram_perplexity"] = math.exp(s["unigram_sum"] / s["count"])
    results["val_accuracy"] = s["correct"] / s["count"]
    if not hasattr(val, "num_bytes"):
      pass  # sentence pairs (nsp) hold truncated sentence runs: no byte count to divide by
    elif config.method in CAUSAL_METHODS:
      results["bits_per_byte"] = s["ce_sum"] / math.log(2) / val.num_bytes
    else:
      arrays = val.arrays()
      real = arrays["tokens"][arrays["segment_ids"] > 0]
      plain_tokens = int(np.sum(~np.isin(real, tokenizer.special_ids)))
      results["bits_per_byte"] = mean_nats / math.log(2) * plain_tokens / val.num_bytes

  # The docstring task and retrieval, for the pretrained encoder and the same at random init.
  first, second = data.docstring_halves("test")
  texts = {"first": first, "second": second}
  if docstring_task:
    train_x, train_y, classes = data.docstring_task("train")
    test_x, test_y, _ = data.docstring_task("test")
    texts.update(train=train_x, test=test_x)
  framed = {name: frame_texts(t, tokenizer, seq_len=config.text.seq_len, style=style)
            for name, t in texts.items()}
  sources = {}
  features = features_fn(run.method)
  for source, weights in (("ssl", run.trained), ("random_init", run.initial)):
    feats = {name: text_features(features, weights, arrays, batch_size=bs)
             for name, arrays in framed.items()}
    suffix = "" if source == "ssl" else "_random_init"
    results[f"retrieval_recall_at_1{suffix}"] = _recall_at_1(feats["first"], feats["second"])
    if docstring_task:
      sources[source] = (feats["train"], feats["test"])
  if docstring_task:
    probes = evaluate_features(sources, train_y, test_y, num_classes=len(classes),
                               budgets=tuple(config.eval.budgets), protocols=("linear", "knn"),
                               num_draws=config.eval.num_draws, knn_k=config.eval.knn_k,
                               knn_temperature=config.eval.knn_temperature)
    results["docstring_task"] = probes["linear"]
    results["docstring_task_knn"] = probes["knn"]

  if config.method in CAUSAL_METHODS and config.method_kwargs.sample_tokens:
    module = methods.get_module(config.method)
    results_samples = module.samples(config, run.trained["params"], run.trained["batch_stats"],
                                     module.prompts_of(val))
    if jax.process_index() == 0:
      with open(os.path.join(workdir, "samples.txt"), "w", encoding="utf-8") as f:
        f.write("\n\n".join(results_samples) + "\n")
    if print_table:
      print("Samples (prompt | continuation):")
      for sample in results_samples:
        print("  " + sample.replace("\n", "\\n"))

  if jax.process_index() == 0:
    write_json_atomic(os.path.join(workdir, "eval.json"), results)
  if print_table:
    task = (f"; docstring task: {len(train_y)} train / {len(test_y)} test docstrings, "
            f"{len(classes)} packages" if docstring_task else "")
    print(f"Evaluation of {workdir} (step {run.step}): {config.method} on {config.dataset}{task}")
    print(format_table(results))
    print(f"Wrote {os.path.join(workdir, 'eval.json')}")
  return results
