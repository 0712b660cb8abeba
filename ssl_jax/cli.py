"""``ssl-jax``: the command line (thin: parse, load config, call train / evaluate).

  ssl-jax pretrain [--config FILE[:ARG]] [--workdir DIR] [--overwrite] [--quiet] [--config.KEY=V]
  ssl-jax eval --workdir DIR [--dataset NAME] [--protocol knn|linear|fewshot|finetune|all]
               [--step N] [--config.KEY=V]
  ssl-jax report --workdir DIR [--projection pca|tsne] [--config.KEY=V]
  ssl-jax compare DIR [DIR ...] [--names A,B,...]
  ssl-jax bench --suite vs-pytorch|methods|config --out FILE.jsonl [--batch-size 64] [...]

``pretrain`` with no arguments runs the default: SimCLR on ``digits``, then evaluates it.
Multi-host (one process per host): pass ``--coordinator_address HOST:PORT --num_processes N
--process_id I`` (or ``--distributed`` on a TPU pod / SLURM, where JAX finds them itself).

On Linux the command restarts itself once at start-up with glibc's huge-page malloc tunable (see
:func:`ssl_jax.hugepages.reexec_with_hugepages`, re-exported here with the rest of that module's
public names; ``SSL_JAX_HUGEPAGES=0`` turns that off).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

# Re-exported: entry points (benchmarks/cpu_probe.py, the README) call them as ``cli.<name>``;
# they live below every other layer so that ssl_jax.bench can use them without importing cli.
# pylint: disable=unused-import
from ssl_jax.hugepages import (HUGEPAGE_TUNABLE, hugepage_env, process_glibc_tunables,  # noqa: F401
                               reexec_with_hugepages)
# pylint: enable=unused-import

DEFAULT_WORKDIR = os.path.join("runs", "{method}_{dataset}")
# Exit codes: 0 done, 2 bad input (config, dataset, workdir, corrupt checkpoint), 3 too many
# non-finite steps, 143 (128 + SIGTERM) preempted after saving a checkpoint, 130 (128 + SIGINT)
# stopped by Ctrl-C after saving a checkpoint: rerun to resume.
EXIT_BAD_INPUT, EXIT_NONFINITE, EXIT_PREEMPTED, EXIT_INTERRUPTED = 2, 3, 143, 130


# ``--help``'s text: plain (the module docstring is reStructuredText for the API docs). argparse
# lists the commands from the parser itself.
_DESCRIPTION = """Self-supervised learning in JAX: pretrain, evaluate, report, compare, benchmark.

`ssl-jax pretrain` with no arguments runs the default: SimCLR on digits, then evaluates it.
Multi-host (one process per host): pass --coordinator_address HOST:PORT --num_processes N
--process_id I (or --distributed on a TPU pod / SLURM, where JAX finds them itself).
On Linux the command restarts itself once at start-up with glibc's huge-page malloc tunable
(SSL_JAX_HUGEPAGES=0 turns that off)."""


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="ssl-jax", description=_DESCRIPTION,
                                   epilog="`ssl-jax COMMAND --help` shows a command's options.",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True, title="commands")

  p = sub.add_parser("pretrain", help="pretrain (or resume), then evaluate",
                     description="Overrides: --config.KEY=VALUE for any key of the config, e.g. "
                     "--config.optimizer.lr=0.3 --config.method=byol.")
  p.add_argument("--config", default=None,
                 help="config file (experiments/*.py[:arg]); default: SimCLR on digits")
  p.add_argument("--workdir", default=None,
                 help=f"run directory (default: {DEFAULT_WORKDIR.format(method='<method>', dataset='<dataset>')})")
  p.add_argument("--overwrite", action="store_true",
                 help="delete an earlier run's checkpoints and outputs in the workdir first")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  p.add_argument("--no-eval", action="store_true", help="skip the evaluation at the end")
  _cpu_devices_arg(p)
  _distributed_args(p)

  eval_overrides = ("Overrides: --config.KEY=VALUE over the run's config.json, for the keys "
                    "evaluation uses (eval.*, eval_preprocess, log.*, cpu_kernels, data.*, "
                    "data_dir, train_split, test_split), e.g. --config.eval.finetune.steps=50 "
                    "--config.data.image_size=8; pretraining keys are refused.")
  e = sub.add_parser("eval", help="evaluate a workdir's checkpoint (kNN and linear probe)",
                     description=eval_overrides)
  e.add_argument("--workdir", required=True)
  e.add_argument("--dataset", default=None,
                 help="evaluate on another dataset (transfer): writes eval_<dataset>.json")
  e.add_argument("--protocol", default=None,
                 choices=("knn", "linear", "fewshot", "finetune", "all"),
                 help="knn / linear: that probe at every budget of config.eval.budgets; fewshot: "
                 "both probes at the few-label budgets only; finetune: fine-tune the encoder "
                 "(config.eval.finetune) into DIR/finetune/<name>/; all: knn, linear and "
                 "finetune (default: config.eval.protocols, the kNN and linear probes)")
  e.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  _cpu_devices_arg(e)
  _distributed_args(e)

  r = sub.add_parser("report", help="figures and a Markdown summary of a workdir in DIR/report/",
                     description=eval_overrides)
  r.add_argument("--workdir", required=True)
  r.add_argument("--projection", default=None, choices=("pca", "tsne"),
                 help="2-D projection of the test-set features (default: config.eval."
                 "report_projection)")
  r.add_argument("--no-embedding", action="store_true",
                 help="skip the embedding figure (no checkpoint is read)")

  c = sub.add_parser("compare", help="a Markdown table of several workdirs' eval.json",
                     description="One row per workdir (named by its method's display name, e.g. MoCo v2, "
                     "unless --names), then "
                     "the random-init and raw-pixel baselines, which must be the same for all.")
  c.add_argument("workdirs", nargs="+")
  c.add_argument("--names", default=None, help="comma-separated row names, one per workdir")

  b = sub.add_parser("bench", help="benchmarks: step throughput, MFU, input pipeline, vs PyTorch",
                     description="See ssl_jax/bench and benchmarks/README.md.")
  from ssl_jax.bench import cli as bench_cli  # pylint: disable=g-import-not-at-top
  bench_cli.add_arguments(b)
  _cpu_devices_arg(b)
  return parser


def _compare(workdirs, names) -> str:
  import json  # pylint: disable=g-import-not-at-top

  from ssl_jax import methods  # pylint: disable=g-import-not-at-top
  from ssl_jax.evaluate.table import compare_markdown  # pylint: disable=g-import-not-at-top
  names = names.split(",") if names else None
  if names is not None and len(names) != len(workdirs):
    raise ValueError(f"--names has {len(names)} names for {len(workdirs)} workdirs.")
  runs = {}
  for i, workdir in enumerate(workdirs):
    with open(os.path.join(workdir, "eval.json"), encoding="utf-8") as f:
      results = json.load(f)
    if names is None:
      with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        name = json.load(f)["method"]
      if name in methods.METHODS:
        name = methods.display_name(name)
    else:
      name = names[i]
    if name in runs:
      raise ValueError(f"two workdirs are named {name!r}; give --names.")
    runs[name] = results
  return compare_markdown(runs)


def _report(workdir, projection, *, embedding: bool, overrides=()) -> None:
  import jax  # pylint: disable=g-import-not-at-top

  from ssl_jax.evaluate.report import write_report  # pylint: disable=g-import-not-at-top
  from ssl_jax.evaluate.runner import eval_config  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"{workdir} is not a directory: give a pretraining workdir.")
  config = eval_config(workdir, overrides)
  ev = config.eval
  if jax.process_index() == 0:
    summary = write_report(workdir, projection=projection or ev.get("report_projection", "pca"),
                           max_points=ev.get("report_max_points", 2000), embedding=embedding,
                           config=config)
    print(f"Report: {summary} (figures in {os.path.dirname(summary)})")


def _cpu_devices_arg(p: argparse.ArgumentParser) -> None:
  p.add_argument("--cpu-devices", "--cpu_devices", dest="cpu_devices", type=int, default=None,
                 metavar="N", help="on the CPU backend, run N JAX devices (data parallel over the "
                 "host's cores; the batch must divide by N). On a 2-vCPU AMD EPYC, 2 devices ran "
                 "the ResNet-18 SimCLR step 1.35x faster than 1; on a Xeon, no faster: "
                 "benchmarks/README.md")


def set_cpu_devices(n: int | None) -> None:
  """``jax_num_cpu_devices = n`` (before any JAX computation initializes the CPU backend); None
  leaves JAX's default. Raises ValueError for ``n < 1`` or once JAX has started."""
  if n is None:
    return
  if n < 1:
    raise ValueError(f"--cpu-devices must be a positive integer, got {n}.")
  import jax  # pylint: disable=g-import-not-at-top
  try:
    jax.config.update("jax_num_cpu_devices", n)
  except RuntimeError as e:  # JAX already started its backends in this process
    raise ValueError(f"--cpu-devices {n} comes too late: JAX already runs in this process "
                     f"({e}).") from e


def _distributed_args(p: argparse.ArgumentParser) -> None:
  g = p.add_argument_group("multi-host")
  g.add_argument("--distributed", action="store_true",
                 help="call jax.distributed.initialize() with the cluster's auto-detected settings")
  g.add_argument("--coordinator_address", default=None)
  g.add_argument("--num_processes", type=int, default=None)
  g.add_argument("--process_id", type=int, default=None)


def _init_distributed(args) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  if args.coordinator_address or args.num_processes:
    jax.distributed.initialize(coordinator_address=args.coordinator_address,
                               num_processes=args.num_processes, process_id=args.process_id)
  elif args.distributed:
    jax.distributed.initialize()


def main(argv=None) -> int:
  if argv is None:  # the program's entry point (not a call from Python code)
    reexec_with_hugepages()
  argv = list(sys.argv[1:] if argv is None else argv)
  args, rest = _parser().parse_known_args(argv)
  from ssl_jax import config as config_lib  # pylint: disable=g-import-not-at-top

  try:
    takes_overrides = args.command in ("pretrain", "bench", "eval", "report")
    overrides = config_lib.parse_overrides(rest) if takes_overrides else []
    if not takes_overrides and rest:
      raise ValueError(f"Unrecognized arguments: {' '.join(rest)}")
    if args.command == "compare":
      print(_compare(args.workdirs, args.names))
      return 0
    set_cpu_devices(getattr(args, "cpu_devices", None))
    if args.command == "bench":
      from ssl_jax.bench import cli as bench_cli  # pylint: disable=g-import-not-at-top
      return bench_cli.main_from_args(args, overrides)
    if args.command == "report":
      _report(args.workdir, args.projection, embedding=not args.no_embedding,
              overrides=overrides)
      return 0
    _init_distributed(args)
    if args.command == "pretrain":
      if args.quiet:
        overrides.append(("quiet", "True"))
      config = config_lib.load_config(args.config, overrides)
      workdir = args.workdir or DEFAULT_WORKDIR.format(
          method=config.method, dataset=config.dataset.replace(":", "_").replace("/", "_"))
      from ssl_jax.train.loop import pretrain  # pylint: disable=g-import-not-at-top
      pretrain(config, workdir, overwrite=args.overwrite)
      if config.eval.at_end and not args.no_eval:
        from ssl_jax.evaluate.runner import evaluate_workdir  # pylint: disable=g-import-not-at-top
        evaluate_workdir(workdir)
        if config.eval.report:
          _report(workdir, None, embedding=True)
    else:
      from ssl_jax.evaluate.runner import evaluate_workdir  # pylint: disable=g-import-not-at-top
      evaluate_workdir(args.workdir, dataset=args.dataset, step=args.step,
                       protocols=args.protocol, overrides=overrides)
  except (ValueError, FileNotFoundError) as e:
    print(f"ssl-jax: error: {e}", file=sys.stderr)
    return EXIT_BAD_INPUT
  except RuntimeError as e:
    from ssl_jax.train.loop import NonFiniteError, Preempted  # pylint: disable=g-import-not-at-top
    if isinstance(e, Preempted):
      print(f"ssl-jax: {e}", file=sys.stderr)
      return EXIT_INTERRUPTED if e.signum == signal.SIGINT else EXIT_PREEMPTED
    if not isinstance(e, NonFiniteError):
      raise
    print(f"ssl-jax: error: {e}", file=sys.stderr)
    return EXIT_NONFINITE
  return 0


if __name__ == "__main__":
  sys.exit(main())
