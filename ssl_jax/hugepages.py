"""glibc's huge-page malloc tunable for this process: restart with it, tell what is in effect.

The bottom layer (standard library only): the command line (:mod:`ssl_jax.cli`, which
re-exports these names) calls :func:`reexec_with_hugepages` first thing, and the benchmark
harness (:mod:`ssl_jax.bench.harness`) records :func:`process_glibc_tunables` with each
measurement, without either importing the other.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping

# glibc's malloc hands every freed block above 32 MiB back to the kernel, and XLA:CPU mallocs its
# whole temporary buffer (382 MiB for the BERT-tiny MLM step at batch 64) on every execution, so
# every step page-faults that buffer in again, 4 KiB at a time: ~97k faults a step. With this
# tunable (glibc >= 2.35, read once at process start) malloc asks for transparent huge pages and
# the faults come 2 MiB at a time. Measured on the 2-vCPU AMD EPYC, whole train steps: BERT-tiny
# MLM 327 -> 227 ms, ViT-Tiny/4 MoCo v3 3280 -> 2762 ms, ResNet-18 SimCLR 4801 -> 4379 ms
# (benchmarks/README.md); PyTorch gained nothing from it.
HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1"


def hugepage_env(environ: Mapping[str, str]) -> dict[str, str] | None:
  """``environ`` with :data:`HUGEPAGE_TUNABLE` added to ``GLIBC_TUNABLES``, or None when there
  is nothing to add: not Linux, the tunable already set (to any value), or
  ``SSL_JAX_HUGEPAGES=0``."""
  if not sys.platform.startswith("linux") or environ.get("SSL_JAX_HUGEPAGES", "1") == "0":
    return None
  tunables = environ.get("GLIBC_TUNABLES", "")
  if "glibc.malloc.hugetlb=" in tunables:
    return None
  env = dict(environ)
  env["GLIBC_TUNABLES"] = f"{tunables}:{HUGEPAGE_TUNABLE}" if tunables else HUGEPAGE_TUNABLE
  return env


_TUNABLES_BEFORE = "SSL_JAX_GLIBC_TUNABLES_BEFORE"  # the user's value, for child processes
_restarted_with: str | None = None  # GLIBC_TUNABLES of this process, once restarted


def reexec_with_hugepages() -> None:
  """Restarts this process (``os.execve``: same PID, interpreter and arguments) with
  :func:`hugepage_env`'s environment, when it returns one; otherwise returns.

  Call it first thing in a program's entry point, before JAX starts: nothing done before the
  call survives it. ``SSL_JAX_HUGEPAGES=0`` turns it off. If the restart fails, the process goes
  on as it is. In the restarted process the call puts the user's own ``GLIBC_TUNABLES`` back into
  ``os.environ`` (glibc has read the tunable by then), so child processes (Grain workers, the
  PyTorch side of ``ssl-jax bench``) start as they would have without ssl_jax;
  :func:`process_glibc_tunables` tells what this process runs with.
  """
  global _restarted_with
  if _TUNABLES_BEFORE in os.environ:  # the restarted process
    _restarted_with = os.environ.get("GLIBC_TUNABLES", "")
    before = os.environ.pop(_TUNABLES_BEFORE)
    if before:
      os.environ["GLIBC_TUNABLES"] = before
    else:
      os.environ.pop("GLIBC_TUNABLES", None)
    return
  env = hugepage_env(os.environ)
  if env is None or not sys.executable or not getattr(sys, "orig_argv", None):
    return
  env[_TUNABLES_BEFORE] = os.environ.get("GLIBC_TUNABLES", "")
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, sys.orig_argv, env)
  except OSError:
    return


def process_glibc_tunables() -> str:
  """``GLIBC_TUNABLES`` as glibc read it when this process started (``""`` when unset): after
  :func:`reexec_with_hugepages` restarted the process, the value it restarted with (``os.environ``
  holds the user's again), else ``os.environ``'s."""
  if _restarted_with is not None:
    return _restarted_with
  return os.environ.get("GLIBC_TUNABLES", "")
