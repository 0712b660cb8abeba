"""A pretraining process for the kill/preemption tests (run as a script, not collected).

  python worker.py WORKDIR TOTAL_STEPS [--stall-commit-at STEP] [--config.KEY=VALUE ...]

Runs the tiny digits config through the CLI (so exit codes are the real ones). With
``--stall-commit-at``, Orbax's commit (the rename of the temporary step directory) of that step
hangs, so a test can SIGKILL the process while the step is uncommitted.
"""

import asyncio
import os
import sys


def main(argv):
  workdir, total, rest = argv[0], argv[1], list(argv[2:])
  stall = None
  if "--stall-commit-at" in rest:
    i = rest.index("--stall-commit-at")
    stall = int(rest[i + 1])
    del rest[i:i + 2]
  os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  import jax
  if os.environ.get("SSL_JAX_TEST_CACHE"):
    jax.config.update("jax_compilation_cache_dir", os.environ["SSL_JAX_TEST_CACHE"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  if stall is not None:
    from orbax.checkpoint._src.path import atomicity

    original = atomicity.AtomicRenameTemporaryPath.finalize

    async def stalled(self):
      if self._final_path.name == str(stall):
        print(f"STALLING commit of step {stall}", flush=True)
        await asyncio.sleep(3600)
      return await original(self)

    atomicity.AtomicRenameTemporaryPath.finalize = stalled
  from ssl_jax import cli

  overrides = {
      "encoder_kwargs": "{'widths': (8, 16), 'strides': (1, 2), 'fc_features': 16}",
      "batch_size": "64", "total_steps": total, "log.every_steps": "1",
      "log.tensorboard": "False", "checkpoint.every_steps": "5",
  }
  args = ["pretrain", "--workdir", workdir, "--no-eval", "--quiet"]
  args += [f"--config.{k}={v}" for k, v in overrides.items()] + rest
  sys.exit(cli.main(args))


if __name__ == "__main__":
  main(sys.argv[1:])
