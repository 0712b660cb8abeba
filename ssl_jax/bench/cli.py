"""``ssl-jax bench``: options and entry point (no JAX import until it runs)."""

from __future__ import annotations

from ssl_jax.bench import SUITES


def add_arguments(p) -> None:
  """The ``ssl-jax bench`` options (on an ``argparse`` parser)."""
  p.add_argument("--suite", default=None, choices=SUITES,
                 help="vs-pytorch: ResNet-18 SimCLR and ViT-Tiny/4 MoCo v3 vs PyTorch; methods: "
                 "every registered method; config: --config as given")
  p.add_argument("--out", default=None, help="JSON-lines file to append the records to")
  p.add_argument("--config", default=None,
                 help="config file[:arg] for --suite config (default: SimCLR on digits)")
  p.add_argument("--batch-size", default="64", help="comma-separated global batch sizes")
  p.add_argument("--parallel", default="shard_map",
                 help="comma-separated parallel modes: shard_map,pmap,gspmd")
  p.add_argument("--dtype", default=None, choices=("float32", "bfloat16"),
                 help="compute dtype (default: float32 on CPU, bfloat16 on GPU/TPU)")
  p.add_argument("--steps", type=int, default=10, help="steps per timed window")
  p.add_argument("--repeats", type=int, default=5, help="timed windows (median reported)")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
  p.add_argument("--data", default="auto", choices=("auto", "real", "synthetic"))
  p.add_argument("--encoder", default=None, help="methods suite: override the encoder")
  p.add_argument("--methods", default=None, help="methods suite: comma-separated subset")
  p.add_argument("--models", default=None, help="vs-pytorch suite: comma-separated subset")
  p.add_argument("--no-pytorch", action="store_true", help="skip the PyTorch reference")
  p.add_argument("--no-pipeline", action="store_true", help="skip the input-pipeline benchmark")
  p.add_argument("--no-xla-cost", action="store_true",
                 help="skip the ahead-of-time compile for XLA's cost/memory analysis")
  p.add_argument("--torch-compile", action="store_true",
                 help="also time the PyTorch step under torch.compile")
  p.add_argument("--workers", type=int, default=None,
                 help="Grain worker processes for the input-pipeline benchmark")
  p.add_argument("--note", default="", help="free text stored with the run")
  p.add_argument("--table", action="store_true", help="print the Markdown table of --out")
  p.add_argument("--render", default=None, metavar="README",
                 help="regenerate the tables of README from the *.jsonl next to it in results/")


def main_from_args(args, overrides=()) -> int:
  """Runs ``ssl-jax bench`` with parsed :func:`add_arguments` options and ``--config.KEY=V``
  ``overrides`` (``config`` suite only)."""
  # pylint: disable=import-outside-toplevel
  import jax

  from ssl_jax import config as config_lib
  from ssl_jax.bench import table
  from ssl_jax.bench.suite import run_suite
  if args.render:
    table.update_readme(args.render)
    print(f"Regenerated the tables of {args.render}")
    return 0
  if args.suite is None:
    if args.table and args.out:
      print(table.markdown(table.read_jsonl([args.out])))
      return 0
    raise ValueError("ssl-jax bench needs --suite (or --render README, or --table --out FILE).")
  if not args.out:
    raise ValueError("ssl-jax bench --suite needs --out FILE.jsonl.")
  split = lambda s: [x for x in (s or "").split(",") if x]
  try:
    batch_sizes = [int(b) for b in split(args.batch_size)]
  except ValueError as e:
    raise ValueError(f"--batch-size must be comma-separated integers, got {args.batch_size!r}.") \
        from e
  dtype = args.dtype or ("float32" if jax.default_backend() == "cpu" else "bfloat16")
  if overrides and args.suite != "config":
    raise ValueError("--config.KEY=VALUE overrides apply to --suite config only.")
  config = config_lib.load_config(args.config, list(overrides)) if args.suite == "config" else None
  run_suite(args.suite, args.out, batch_sizes=batch_sizes, parallel=split(args.parallel),
            dtype=dtype, steps=args.steps, repeats=args.repeats, warmup=args.warmup,
            data=args.data, encoder=args.encoder, methods=split(args.methods) or None,
            models=split(args.models) or None, config=config, pytorch=not args.no_pytorch,
            pipeline=not args.no_pipeline, xla_cost=not args.no_xla_cost, note=args.note,
            torch_compile=args.torch_compile, workers=args.workers)
  if args.table:
    print(table.markdown(table.read_jsonl([args.out])))
  return 0
