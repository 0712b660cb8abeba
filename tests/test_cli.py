"""The ``ssl-jax`` command line's process-level options (the subcommands have their own tests)."""

import os
import subprocess
import sys

from ssl_jax import cli


def test_cpu_devices_sets_the_cpu_device_count_before_jax_starts():
  # A fresh process, as the command line runs: the option wins over the XLA flag the tests set.
  code = ("from ssl_jax import cli; cli.set_cpu_devices(3); import jax; "
          "print(jax.device_count(), jax.default_backend())")
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True, timeout=300).stdout
  assert out.split() == ["3", "cpu"]


def test_cpu_devices_rejects_bad_values_and_a_running_backend(tmp_path, capsys):
  assert cli.main(["bench", "--cpu-devices", "0", "--suite", "config",
                   "--out", str(tmp_path / "x.jsonl")]) == cli.EXIT_BAD_INPUT
  assert "--cpu-devices must be a positive integer, got 0" in capsys.readouterr().err
  # This test process already runs JAX (8 CPU devices): the count can no longer change, and the
  # command says so instead of running on a device count it was not asked for.
  import jax  # pylint: disable=import-outside-toplevel
  assert jax.device_count() == 8
  assert cli.main(["eval", "--workdir", str(tmp_path), "--cpu_devices", "2"]) == \
      cli.EXIT_BAD_INPUT
  assert "--cpu-devices 2 comes too late" in capsys.readouterr().err
  assert not list(tmp_path.iterdir())
