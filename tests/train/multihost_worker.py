"""One process of the 2-process localhost test (run by test_multihost.py, not by pytest)."""

import json
import os
import sys


def main(process_id: int, num_processes: int, port: int, out: str, cache: str) -> None:
  os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  os.environ["JAX_PLATFORMS"] = "cpu"
  import jax

  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=f"localhost:{port}",
                             num_processes=num_processes, process_id=process_id)
  import numpy as np

  from ssl_jax import config as config_lib
  from ssl_jax.data.iterator import make_iterator
  from ssl_jax.train.loop import build, example_batch, load_train_source

  config = config_lib.load_config(None, [
      ("encoder_kwargs", "{'widths': (8, 16), 'strides': (1, 2), 'fc_features': 16}"),
      ("batch_size", "32"), ("total_steps", "2")])
  source = load_train_source(config)
  _, engine, _ = build(config, len(source))
  state = engine.init_state(jax.random.key(0), example_batch(32, source.image_shape))
  it = make_iterator(source, global_batch_size=32, seed=0)
  seen = []
  for _ in range(2):
    local = next(it)
    seen.append(local["index"].tolist())
    state, metrics = engine.step(state, engine.put_batch(local))
  params = jax.tree.map(lambda x: np.asarray(jax.experimental.multihost_utils.process_allgather(
      x, tiled=True)) if not x.is_fully_addressable else np.asarray(x), state.params)
  flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(params)])
  with open(out, "w") as f:
    json.dump({"process_index": jax.process_index(), "process_count": jax.process_count(),
               "devices": jax.device_count(), "local_devices": jax.local_device_count(),
               "indices": seen, "loss": float(metrics["loss"]),
               "epoch": [int(i) for s in range(it.steps_per_epoch) for i in it.batch_indices(s)],
               "params": flat.tolist()}, f)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
