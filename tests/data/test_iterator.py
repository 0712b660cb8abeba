"""Tests for ssl_jax.data.iterator: epoch orders, host sharding, checkpointing, workers."""

import json

import numpy as np
import pytest

from ssl_jax.data.iterator import make_iterator
from ssl_jax.data.sources import ArraySource, load_source

N = 50  # examples; with global batch 8: 6 batches per epoch, 2 examples dropped per epoch


@pytest.fixture(scope="module")
def source():
  """Example i has label i % 7 and an image whose pixels all equal i."""
  images = np.broadcast_to(np.arange(N, dtype=np.uint8)[:, None, None, None], (N, 3, 2, 1))
  return ArraySource(np.ascontiguousarray(images), np.arange(N) % 7, name="toy", split="train",
                     num_classes=7)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _indices(batches):
  return [b["index"].tolist() for b in batches]


def test_batches_shapes_and_content(source):
  it = make_iterator(source, global_batch_size=8, seed=0, process_index=0, process_count=1)
  assert (it.steps_per_epoch, it.local_batch_size, it.num_steps) == (6, 8, None)
  for batch in _take(it, 14):  # crosses two epoch boundaries
    assert set(batch) == {"image", "label", "index"}
    assert batch["image"].shape == (8, 3, 2, 1) and batch["image"].dtype == np.uint8
    assert batch["label"].dtype == np.int32 and batch["index"].dtype == np.int32
    # The batch holds the examples its indices name.
    np.testing.assert_array_equal(batch["image"][:, 0, 0, 0], batch["index"])
    np.testing.assert_array_equal(batch["label"], batch["index"] % 7)
  assert it.step == 14 and it.epoch == 2


def test_epochs_are_reshuffled_permutations(source):
  it = make_iterator(source, global_batch_size=8, seed=3, process_index=0, process_count=1)
  epochs = [np.concatenate([b["index"] for b in _take(it, 6)]) for _ in range(3)]
  for e in epochs:
    assert len(set(e.tolist())) == 48 and e.min() >= 0 and e.max() < N  # distinct, drop 2
  assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
  # Deterministic in the seed, different across seeds.
  again = make_iterator(source, global_batch_size=8, seed=3, process_index=0, process_count=1)
  np.testing.assert_array_equal(np.concatenate([b["index"] for b in _take(again, 6)]), epochs[0])
  other = make_iterator(source, global_batch_size=8, seed=4, process_index=0, process_count=1)
  other_epoch0 = np.concatenate([b["index"] for b in _take(other, 6)])
  assert not np.array_equal(other_epoch0, epochs[0])
  # Seeds s and s+1 do not share epoch orders shifted by one (Grain's seed + epoch rule would).
  assert not np.array_equal(other_epoch0, epochs[1])


def test_covers_every_example_when_batch_divides(source):
  it = make_iterator(source, global_batch_size=10, seed=1, process_index=0, process_count=1)
  epoch = np.concatenate([b["index"] for b in _take(it, 5)])
  assert sorted(epoch.tolist()) == list(range(N))


def test_no_shuffle_and_finite_epochs(source):
  it = make_iterator(source, global_batch_size=8, seed=0, shuffle=False, num_epochs=2,
                     process_index=0, process_count=1)
  batches = list(it)
  assert len(batches) == 12 == it.num_steps
  assert _indices(batches)[:2] == [list(range(8)), list(range(8, 16))]
  assert _indices(batches)[6] == list(range(8))  # epoch 2 restarts; 48, 49 are dropped
  with pytest.raises(StopIteration):
    next(it)


@pytest.mark.parametrize("process_count", [2, 4])
def test_hosts_compose_into_the_single_host_batch(source, process_count):
  one = _take(make_iterator(source, global_batch_size=8, seed=5, process_index=0,
                            process_count=1), 13)
  hosts = [_take(make_iterator(source, global_batch_size=8, seed=5, process_index=p,
                               process_count=process_count), 13)
           for p in range(process_count)]
  for step in range(13):
    for key in ("image", "label", "index"):
      assert hosts[0][step][key].shape[0] == 8 // process_count
      np.testing.assert_array_equal(
          np.concatenate([hosts[p][step][key] for p in range(process_count)]), one[step][key])
  # Per epoch, the hosts' shards are disjoint and together the whole (non-dropped) epoch.
  for epoch in range(2):
    shards = [set(np.concatenate([b["index"] for b in hosts[p][6 * epoch:6 * epoch + 6]]).tolist())
              for p in range(process_count)]
    assert sum(len(s) for s in shards) == len(set().union(*shards)) == 48


def test_checkpoint_resume_gives_the_same_batches(source):
  it = make_iterator(source, global_batch_size=8, seed=11, process_index=0, process_count=1)
  _take(it, 7)
  state = json.loads(json.dumps(it.get_state()))  # JSON round trip
  expected = _take(it, 5)  # crosses the epoch boundary at step 12
  fresh = make_iterator(source, global_batch_size=8, seed=11, process_index=0, process_count=1)
  fresh.set_state(state)
  assert fresh.step == 7
  for a, b in zip(_take(fresh, 5), expected):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  # Resuming with another host count reads the slices of the same global batches.
  halves = []
  for p in range(2):
    host = make_iterator(source, global_batch_size=8, seed=11, process_index=p, process_count=2)
    host.set_state(state)
    halves.append(_take(host, 5))
  for step in range(5):
    np.testing.assert_array_equal(
        np.concatenate([halves[0][step]["index"], halves[1][step]["index"]]),
        expected[step]["index"])


def test_set_state_mid_iteration_and_mismatch(source):
  it = make_iterator(source, global_batch_size=8, seed=2, process_index=0, process_count=1)
  first = _take(it, 3)
  it.set_state({**it.get_state(), "step": 1})
  np.testing.assert_array_equal(next(it)["index"], first[1]["index"])
  for key, value in (("seed", 3), ("global_batch_size", 16), ("shuffle", False)):
    with pytest.raises(ValueError, match=f"does not match.*{key}="):
      it.set_state({**it.get_state(), key: value})
  with pytest.raises(ValueError, match="not a BatchIterator state"):
    it.set_state({"step": 3})


def test_argument_errors(source):
  with pytest.raises(ValueError, match="multiple of the process count 3"):
    make_iterator(source, global_batch_size=8, seed=0, process_index=0, process_count=3)
  with pytest.raises(ValueError, match=r"has 50 examples, fewer than one global batch of 64 "
                                       r"\(16 per process x 4 processes\)"):
    make_iterator(source, global_batch_size=64, seed=0, process_index=1, process_count=4)
  with pytest.raises(ValueError, match="process_index < process_count"):
    make_iterator(source, global_batch_size=8, seed=0, process_index=2, process_count=2)
  with pytest.raises(ValueError, match="seed must be a non-negative int"):
    make_iterator(source, global_batch_size=8, seed=-1)


def test_defaults_to_jax_process(source):
  it = make_iterator(source, global_batch_size=8, seed=0)
  assert (it.process_index, it.process_count) == (0, 1)


def test_worker_processes_give_the_same_batches():
  """Grain worker processes (spawned; they re-import ssl_jax) change nothing but speed."""
  digits = load_source("digits", "train")
  expected = _take(make_iterator(digits, global_batch_size=64, seed=0, process_index=0,
                                 process_count=1), 6)
  with make_iterator(digits, global_batch_size=64, seed=0, process_index=0, process_count=1,
                     worker_count=2) as it:
    got = _take(it, 6)
    state = it.get_state()
  for a, b in zip(got, expected):
    for key in a:
      np.testing.assert_array_equal(np.asarray(a[key]), b[key])
  assert state["step"] == 6
