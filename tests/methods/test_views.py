"""Views as configuration: splitting a batch's views into global and local ones
(:func:`ssl_jax.methods.common.global_local_views`), a method's ``VIEWS`` checked before
training, and preprocessing views of two sizes (multi-crop) without concatenating them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.methods import common
from ssl_jax.train.preprocess import make_view_preprocess

LOCAL = "random_resized_crop(size=4, scale=(0.2, 0.5))|normalize(mean=0.5, std=0.5)"


def _batch(**sizes):
  return {"views": {name: jnp.full((3, s, s, 1), float(s)) for name, s in sizes.items()}}


def test_global_local_split_by_size_in_name_order():
  batch = _batch(z=8, b=4, a=8, c=4, d=4)
  glob, loc = common.global_local_views(batch, min_global=2, min_local=3)
  assert [v.shape[1] for v in glob] == [8, 8] and [v.shape[1] for v in loc] == [4, 4, 4]
  assert common.split_views({k: v.shape for k, v in batch["views"].items()}) == (
      ["a", "z"], ["b", "c", "d"])
  a, z = common.two_views(_batch(z=8, a=8))
  assert a.shape == z.shape == (3, 8, 8, 1)


@pytest.mark.parametrize("sizes, kwargs, message", [
    ({"a": 8}, {}, "at least 2 global"),
    ({"a": 8, "b": 8}, {"min_local": 2}, "at least 2 local"),
])
def test_global_local_views_errors(sizes, kwargs, message):
  with pytest.raises(ValueError, match=message) as e:
    common.global_local_views(_batch(**sizes), **kwargs)
  assert "--config.views.<name>" in str(e.value)


def test_two_views_refuses_a_local_or_third_view():
  with pytest.raises(ValueError, match="exactly 0 local"):
    common.two_views(_batch(a=8, b=8, c=4))
  with pytest.raises(ValueError, match="exactly 2 global"):
    common.two_views(_batch(a=8, b=8, c=8))


def test_check_views_refuses_a_two_view_recipe_for_multi_crop():
  shapes = {"a": (2, 8, 8, 1), "b": (2, 8, 8, 1)}
  common.check_views(shapes, {"global": 2, "local": 0})
  with pytest.raises(ValueError, match=r"multicrop needs at least 2 local.*--config\.views\."):
    common.check_views(shapes, {"global": 2, "local": (2, None)}, method="multicrop")


def test_preprocess_makes_views_of_two_sizes_separately():
  views = {"a": "", "b": "flip_lr(p=1.0)", "c": LOCAL, "d": LOCAL}
  pre = jax.jit(make_view_preprocess(views))
  images = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8, 1)
  out = pre({"image": images, "index": np.arange(2, dtype=np.int32), "label": np.zeros(2)},
            jax.random.key(0))
  assert {k: v.shape for k, v in out["views"].items()} == {
      "a": (2, 8, 8, 1), "b": (2, 8, 8, 1), "c": (2, 4, 4, 1), "d": (2, 4, 4, 1)}
  np.testing.assert_allclose(out["views"]["a"], images / 255.0)
  assert not np.allclose(out["views"]["c"], out["views"]["d"])  # own key per view


def test_engine_refuses_views_the_method_does_not_take_before_training(make_config):
  """SimCLR (two global views) with a third, smaller view added from the command line: refused
  when the engine initializes the state, before any step, naming --config.views."""
  from ssl_jax.train.loop import build, example_batch
  config = make_config(**{"views.c": LOCAL})
  assert sorted(config.views) == ["a", "b", "c"]
  _, engine, _ = build(config, 1000, devices=jax.devices()[:1])
  with pytest.raises(ValueError, match=r"simclr needs exactly 0 local.*--config\.views\."):
    engine.init_state(jax.random.key(0), example_batch(64, (8, 8, 1)))


def test_check_views_refuses_views_of_one_group_with_different_shapes():
  """Views of one group are encoded as one concatenated batch: local crops of two sizes, or two
  global views of different channel counts, are refused naming each view's key and shape."""
  locals_differ = {"a": (4, 8, 8, 1), "b": (4, 8, 8, 1), "c": (4, 4, 4, 1), "d": (4, 6, 6, 1)}
  with pytest.raises(ValueError, match=r"multicrop's local views must all have the same output "
                     r"shape .*--config.views.c: \(4, 4, 1\), --config.views.d: \(6, 6, 1\)"):
    common.check_views(locals_differ, {"global": 2, "local": (2, None)}, method="multicrop")
  channels_differ = {"a": (4, 8, 8, 1), "b": (4, 8, 8, 3)}
  with pytest.raises(ValueError, match=r"global views .*--config.views.a: \(8, 8, 1\), "
                     r"--config.views.b: \(8, 8, 3\)"):
    common.check_views(channels_differ)
  common.check_views({"a": (4, 8, 8, 1), "b": (4, 8, 8, 1), "c": (4, 4, 4, 1), "d": (4, 4, 4, 1)},
                     {"global": 2, "local": (2, None)})  # one shape per group: accepted
