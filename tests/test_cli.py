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


def test_hugepage_env_adds_the_tunable_once():
  base = {"PATH": "/bin"}
  env = cli.hugepage_env(base)
  assert sys.platform.startswith("linux")
  assert env == {"PATH": "/bin", "GLIBC_TUNABLES": cli.HUGEPAGE_TUNABLE}
  assert cli.hugepage_env(env) is None  # already set: no second restart
  kept = cli.hugepage_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
  assert kept["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{cli.HUGEPAGE_TUNABLE}"
  # A value the user chose (even off) and the opt-out are left alone.
  assert cli.hugepage_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
  assert cli.hugepage_env(dict(base, SSL_JAX_HUGEPAGES="0")) is None


def test_reexec_with_hugepages_restarts_the_process_once_with_the_tunable():
  # The child runs its code twice (before and after execve) in one PID. The second time it
  # started with the tunable, while os.environ, which child processes inherit, holds the user's
  # value again; the arguments are unchanged.
  code = ("import os, sys; from ssl_jax import cli; print('start', os.getpid(), flush=True); "
          "cli.reexec_with_hugepages(); print(os.getpid(), cli.process_glibc_tunables(), "
          "os.environ.get('GLIBC_TUNABLES'), "
          "sorted(k for k in os.environ if k.startswith(('SSL_JAX_HUGE', 'SSL_JAX_GLIBC'))), "
          "sys.argv[1:])")
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "SSL_JAX_HUGEPAGES")}
  run = lambda env: subprocess.run([sys.executable, "-c", code, "a", "b"], env=env, text=True,
                                   capture_output=True, check=True, timeout=120).stdout.split("\n")
  lines = run(dict(env, GLIBC_TUNABLES="glibc.malloc.arena_max=4"))
  assert lines[0] == lines[1] and lines[0].startswith("start ")  # printed again after execve
  pid = lines[0].split()[1]
  assert lines[2] == (f"{pid} glibc.malloc.arena_max=4:{cli.HUGEPAGE_TUNABLE} "
                      "glibc.malloc.arena_max=4 [] ['a', 'b']")
  lines = run(env)  # no tunables of the user's: none for child processes either
  assert lines[2] == f"{lines[0].split()[1]} {cli.HUGEPAGE_TUNABLE} None [] ['a', 'b']"
  lines = run(dict(env, SSL_JAX_HUGEPAGES="0"))  # opted out: no restart
  assert lines[0].startswith("start")
  assert lines[1].endswith(" None ['SSL_JAX_HUGEPAGES'] ['a', 'b']")


def test_help_is_plain_text_and_lists_every_command(capsys):
  import pytest  # pylint: disable=import-outside-toplevel
  with pytest.raises(SystemExit) as exited:
    cli.main(["--help"])
  assert exited.value.code == 0
  out = capsys.readouterr().out
  assert "``" not in out and ":func:" not in out and ":mod:" not in out
  with pytest.raises(SystemExit):
    cli.main(["nosuch"])  # argparse's error lists the commands it knows
  err = capsys.readouterr().err
  commands = err.split("choose from ")[1].replace("'", "").replace(")", "").split(", ")
  assert {"pretrain", "eval", "report", "compare", "bench"} <= {c.strip() for c in commands}
  for command in commands:
    assert f"    {command.strip()} " in out, command  # listed with its one-line help
