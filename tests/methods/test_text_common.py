"""Shared text-method helpers: ``gather_positions`` against a NumPy stable argsort."""

import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.methods.text_common import gather_positions


@pytest.mark.parametrize("count", [1, 5, 12, 20])
def test_gather_positions_takes_the_first_set_positions_in_order(count):
  rng = np.random.default_rng(0)
  mask = rng.random((6, 12)) < 0.3
  mask[0] = False  # no set position
  mask[1] = True  # more set positions than count
  x = rng.normal(size=(6, 12, 3)).astype(np.float32)
  picked, valid, order = gather_positions(jnp.asarray(x), jnp.asarray(mask), count)
  want = np.argsort(~mask, axis=1, kind="stable")[:, :count]
  np.testing.assert_array_equal(order, want)
  np.testing.assert_array_equal(valid, np.take_along_axis(mask, want, axis=1))
  np.testing.assert_array_equal(picked, np.take_along_axis(x, want[..., None], axis=1))
  assert valid.shape == (6, min(count, 12))
  assert not valid[0].any() and valid[1].all()
