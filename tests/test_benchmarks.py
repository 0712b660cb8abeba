"""The benchmark harness (ssl_jax.bench, benchmarks/): fields, FLOPs, MFU, tables, CLI.

No timing assertions: speed is measured by ``ssl-jax bench``, not asserted in tests. The PyTorch
reference is exercised only where torch is installed (CI does not install the ``bench`` extra).
"""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax import lax

from ssl_jax import cli
from ssl_jax import models
from ssl_jax.bench import flops, harness, peak, table
from ssl_jax.models.conv import resolve_padding
from ssl_jax.models.heads import MLPHead
from ssl_jax.models.vit import VisionTransformer

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _load(name):
  path = os.path.join(ROOT, "benchmarks", f"{name}.py")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _xla_flops(fn, *args):
  return jax.jit(fn).lower(*args).compile().cost_analysis()["flops"]


def test_conv_flops_equal_xla_count_without_padding_taps():
  """XLA counts a convolution's multiply-adds that read real input; so does count_padding=False."""
  for k, s, pad, hw in [(3, 2, 1, (9, 7)), (7, 2, 3, (13, 13)), (4, 4, "VALID", (16, 16))]:
    conv = models.Conv(5, 6, k, s, padding=pad, use_bias=False, rngs=nnx.Rngs(0))
    x = jnp.ones((2, *hw, 5))
    got = _xla_flops(lambda x, w: lax.conv_general_dilated(  # pylint: disable=cell-var-from-loop
        x, w, (s, s), _conv_pads(conv, hw), dimension_numbers=("NHWC", "HWIO", "NHWC")),
                     x, conv.kernel[...])
    analytic, _ = flops.conv_flops(conv, hw, count_padding=False)
    assert got == pytest.approx(2 * analytic, rel=1e-6)
    full, _ = flops.conv_flops(conv, hw)
    assert full >= analytic


def _conv_pads(conv, hw):
  return resolve_padding(conv.padding, hw, conv.kernel_size, conv.strides)


@pytest.mark.parametrize("name", [pytest.param("resnet_tiny", marks=pytest.mark.slow),
                                  pytest.param("vit", marks=pytest.mark.slow), "cnn_small",
                                  "head"])
def test_network_flops_match_cost_analysis(name):
  """Analytic forward FLOPs vs XLA's cost analysis of the forward and of forward + backward.

  Tolerances: XLA also counts elementwise work (BatchNorm, LayerNorm, softmax, GELU), so its
  forward is 0-20% above the analytic matmul count on these tiny models; the backward lacks the
  first layer's input gradient, so forward + backward is within 15% of 3x the forward.
  """
  b, hw, cin = 2, (16, 16), 3
  if name == "resnet_tiny":
    net = models.build_encoder("resnet_tiny", rngs=nnx.Rngs(0))
  elif name == "vit":
    net = VisionTransformer(dim=64, depth=2, num_heads=2, patch_size=4, image_size=16,
                            rngs=nnx.Rngs(0))
  elif name == "cnn_small":
    net = models.build_encoder("cnn_small", rngs=nnx.Rngs(0), in_channels=3)
  else:
    net, hw, cin = MLPHead(64, 128, 32, num_layers=3, rngs=nnx.Rngs(0)), None, 64
  x = jnp.ones((b, *hw, cin)) if hw else jnp.ones((b, cin))
  graphdef, params, rest = nnx.split(net, nnx.Param, ...)
  fwd = lambda p, x: nnx.merge(graphdef, p, rest, copy=True)(x, train=True).sum()
  analytic = b * flops.network_forward_flops(net, hw, count_padding=False)
  assert 1.0 <= _xla_flops(fwd, params, x) / analytic <= 1.2
  assert 0.85 <= _xla_flops(jax.grad(fwd), params, x) / (3 * analytic) <= 1.15
  assert flops.network_forward_flops(net, hw) >= analytic / b


def test_resnet18_cifar_forward_flops_known_value():
  """ResNet-18 with the CIFAR stem at 32x32: 0.556 GMACs (the commonly quoted figure)."""
  net = nnx.eval_shape(lambda: models.build_encoder("resnet18", rngs=nnx.Rngs(0), stem="cifar"))
  assert flops.network_forward_flops(net, (32, 32)) == 2 * 555_417_600


def test_method_step_flops_counts_trained_3x_and_teachers_1x(make_config):
  simclr = flops.method_step_flops(make_config(), [(8, 8)] * 2)
  assert simclr["teacher_forward"] == 0
  assert simclr["model_flops"] == 3 * simclr["trained_forward"]
  enc = simclr["forward_per_example"]["encoder"]
  assert simclr["trained_forward"] == 2 * 64 * enc  # two views of every example
  byol = flops.method_step_flops(make_config(method="byol"), [(8, 8)] * 2, batch_size=4)
  per = byol["forward_per_example"]
  assert set(per) == {"encoder", "projector", "predictor", "teacher_encoder", "teacher_projector"}
  assert byol["teacher_forward"] == 2 * 4 * (per["encoder"] + per["projector"])
  assert byol["model_flops"] == 3 * byol["trained_forward"] + byol["teacher_forward"]
  moco = flops.method_step_flops(make_config(method="moco_v2"), [(8, 8)] * 2,
                                 batch_size=4)
  assert moco["trained_forward"] == moco["teacher_forward"]  # one query and one key pass


def test_method_step_flops_counts_each_view_at_its_own_size(make_config):
  """Multi-crop: 2 global views of 16x16 and 4 local crops of 8x8 cost the sum of the per-view
  counts; the teachers (BYOL) see the global views only."""
  config = make_config(method="byol")
  one = {hw: flops.method_step_flops(config, [hw], batch_size=4) for hw in ((16, 16), (8, 8))}
  assert one[(16, 16)]["trained_forward"] > one[(8, 8)]["trained_forward"]
  multi = flops.method_step_flops(config, [(16, 16)] * 2 + [(8, 8)] * 4, batch_size=4)
  assert multi["trained_forward"] == (2 * one[(16, 16)]["trained_forward"]
                                      + 4 * one[(8, 8)]["trained_forward"])
  assert multi["teacher_forward"] == 2 * one[(16, 16)]["teacher_forward"]
  assert multi["forward_per_view"]["encoder"] == (
      [one[(16, 16)]["forward_per_example"]["encoder"]] * 2
      + [one[(8, 8)]["forward_per_example"]["encoder"]] * 4)
  assert multi["model_flops"] == 3 * multi["trained_forward"] + multi["teacher_forward"]


@pytest.mark.parametrize("method", ["nsp", "clm", "simcse"])  # nsp covers mlm's formula too
def test_text_method_flops_match_xla_count_of_the_step(method):
  """The methods suite's config of each language method (``nsp``: the mlm_pydoc recipe switched
  to it), rows of 64 tokens: XLA's count of the compiled step (forward, backward, masking, loss,
  AdamW, summed over the 8 devices) is 1.0-1.2x the analytic model FLOPs (measured 1.09 for all
  four methods; without SimCSE's second pass it would be 2.2). The parts are checked exactly too:
  the causal LM's output layer is only 8% of its step here, within the ratio's tolerance."""
  # pylint: disable=import-outside-toplevel
  from ssl_jax.data import make_iterator
  from ssl_jax.methods import text_common
  from ssl_jax.train.loop import build, example_batch_for
  config = harness.methods_configs(batch_size=16, dtype="float32", encoder=None,
                                   names=[method])[method]
  config.text.seq_len = 64
  model = flops.method_step_flops(config, None)
  parts = model["forward_per_example"]
  vocab = text_common.tokenizer_for(config).vocab_size
  vocab_projection = 2 * 128 * vocab  # bert_tiny / gpt_tiny width
  expected_parts = {"nsp": {"encoder", "mlm_head", "pooler", "nsp_head"},
                    "clm": {"encoder", "lm_head"}, "simcse": {"encoder", "mlp"}}[method]
  assert set(parts) == expected_parts
  if method == "clm":
    assert parts["lm_head"] == 64 * vocab_projection
  assert model["trained_forward"] == 16 * (2 if method == "simcse" else 1) * sum(parts.values())
  source, _ = harness.bench_source(config)
  _, engine, _ = build(config, len(source))
  state = engine.init_state(jax.random.key(0), example_batch_for(config, source))
  iterator = make_iterator(source, global_batch_size=16, seed=0)
  batch = engine.put_batch(next(iterator))
  iterator.close()
  xla = harness._xla_cost(engine, state, batch)  # pylint: disable=protected-access
  ratio = xla["xla_flops_per_device"] * engine.num_devices / model["model_flops"]
  assert 1.0 <= ratio <= 1.2, ratio


def test_mfu_arithmetic_and_peak_table():
  assert peak.mfu(2e12, 0.5, 1e12, num_devices=2) == pytest.approx(2.0)
  assert peak.mfu(None, 0.5, 1e12) is None and peak.mfu(1e9, 0.5, None) is None
  assert peak.lookup_peak_flops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4e12)
  assert peak.lookup_peak_flops("NVIDIA H100 PCIe") == pytest.approx(756.5e12)
  assert peak.lookup_peak_flops("NVIDIA H200") == pytest.approx(989.4e12)
  assert peak.lookup_peak_flops("NVIDIA A100-SXM4-80GB") == pytest.approx(312e12)
  assert peak.lookup_peak_flops("TPU v5 lite") == pytest.approx(197e12)
  assert peak.lookup_peak_flops("TPU v5p") == pytest.approx(459e12)
  assert peak.lookup_peak_flops("TPU v4") == pytest.approx(275e12)
  assert peak.lookup_peak_flops("cpu") is None
  m = peak.measure_matmul_peak(n=128, repeats=1)
  assert m["peak_flops_per_s"] == max(m["xla_flops_per_s"], m["numpy_flops_per_s"]) > 0


def test_step_benchmark_reports_compile_time_apart_and_one_trace(make_config):
  config = make_config()
  record = _load("step").measure(config, steps=2, repeats=2)
  assert record["num_devices"] == 8 and record["traces"] == 1
  assert record["traces_after_aot"] == 1 and record["donation_warnings"] == 0
  assert record["compile_s"] >= 0 and record["step_ms_min"] <= record["step_ms"] <= record[
      "step_ms_max"]
  assert record["examples_per_s"] > 0 and record["framework"] == "ssl_jax"
  assert record["cpu_kernels"] == "eigen_convs"  # the config's, and what ran
  assert record["model_flops"] == flops.method_step_flops(config, [(8, 8)] * 2)["model_flops"]
  # The 8 CPU devices share the host's cores, whose matmul peak was measured: MFU divides by it
  # once (a GPU's datasheet peak is per device and would be multiplied by 8).
  assert record["peak_scope"] == "host"
  assert record["mfu"] == pytest.approx(
      record["model_flops"] / (record["step_ms"] / 1e3) / record["peak_flops_per_s"], rel=1e-2)
  # XLA's count covers augmentation, BatchNorm and the optimizer as well, per device.
  assert record["xla_flops"] == 8 * record["xla_flops_per_device"] > 0
  for key in ("device", "jax", "batch_size", "parallel", "compute_dtype", "peak_memory_bytes",
              "load_avg_1m_before", "config", "params"):
    assert key in record


def test_cli_bench_config_suite_writes_jsonl_and_table(tmp_path, capsys):
  out = tmp_path / "bench.jsonl"
  tiny = ["--config.encoder_kwargs={'widths': (8, 16), 'strides': (1, 2), 'fc_features': 16}",
          "--config.total_steps=10"]
  assert cli.main(["bench", "--suite", "config", "--out", str(out), "--batch-size", "64",
                   "--steps", "1", "--repeats", "2", "--warmup", "0", "--no-xla-cost", "--table",
                   *tiny]) == 0
  records = [json.loads(line) for line in out.read_text().splitlines()]
  kinds = [r["benchmark"] for r in records]
  assert kinds == ["run", "peak", "train_step", "input_pipeline"]
  step, pipe = records[2], records[3]
  assert step["parallel"] == "shard_map" and step["traces"] == 1 and step["batch_size"] == 64
  # The step pretraining runs: digits have labels, so the online probe ("auto") trains in it.
  assert step["config"]["online_probe"] == "auto" and step["online_probe_classes"] == 10
  assert pipe["input_bound_ratio"] > 0 and pipe["read_examples_per_s"] > 0
  assert pipe["augment_examples_per_s"] > 0 and pipe["data"] == "real"
  printed = capsys.readouterr().out
  assert "| simclr/cnn_digits | ssl_jax |" in printed and "end-to-end / staged" in printed


def test_cli_bench_rejects_bad_input(tmp_path, capsys):
  with pytest.raises(SystemExit):
    cli.main(["bench", "--suite", "nope", "--out", str(tmp_path / "x.jsonl")])
  assert cli.main(["bench", "--suite", "methods", "--out", str(tmp_path / "x.jsonl"),
                   "--methods", "no_such_method"]) == cli.EXIT_BAD_INPUT
  assert cli.main(["bench", "--suite", "config"]) == cli.EXIT_BAD_INPUT
  assert "needs --out" in capsys.readouterr().err


def _records():
  base = {"benchmark": "train_step", "batch_size": 64, "compute_dtype": "float32",
          "device": "cpu", "backend": "cpu", "num_devices": 1, "cpu_threads": 2,
          "parallel": "shard_map", "step_ms": 100.0, "step_ms_min": 90.0, "step_ms_max": 120.0,
          "compile_s": 3.0, "model_flops": 2e10, "mfu": 0.2, "traces": 1,
          "load_avg_1m_before": 1.0, "load_avg_1m_after": 1.5}
  jax_rec = dict(base, model="m", framework="ssl_jax", examples_per_s=640.0)
  torch_rec = dict(base, model="m", framework="pytorch", examples_per_s=320.0, compile_s=None)
  return [{"benchmark": "run", "date": "2026-11-22", "device": "cpu", "jax": "x"},
          {"benchmark": "peak", "device": "cpu", "cpu_threads": 2, "peak_flops_per_s": 1e11,
           "peak_source": "measured"}, jax_rec, torch_rec] + harness.ratio_records(
               [jax_rec, torch_rec])


def test_ratio_and_markdown_tables():
  records = _records()
  ratio = records[-1]
  assert ratio["benchmark"] == "ratio" and ratio["ratio"] == 2.0
  md = table.markdown(records)
  assert "| m | ssl_jax | cpu x1 (2 thr) | shard_map | 64 | float32 | 100.0 (90.0-120.0) | 640.0" \
      in md
  assert "| m | cpu | 64 | float32 | pytorch | 640.0 | 320.0 | **2.00** |" in md
  assert "| cpu (2 thr) | 100.0 | measured |" in md


def test_step_table_shows_the_environment_columns_only_when_set():
  records = _records()
  assert "XLA_FLAGS" not in table.markdown(records) and "GLIBC" not in table.markdown(records)
  records[2] = dict(records[2], glibc_tunables="glibc.malloc.hugetlb=1")
  records[3] = dict(records[3], xla_flags="--xla_foo")
  md = table.markdown(records)
  assert "| load 1m | XLA_FLAGS | GLIBC_TUNABLES |" in md
  assert "| 1.0/1.5 | - | `glibc.malloc.hugetlb=1` |" in md  # ssl_jax row
  assert "| 1.0/1.5 | `--xla_foo` | - |" in md  # pytorch row
  assert "cpu_kernels" not in md
  records[2]["cpu_kernels"] = "onednn_dots"
  assert "| 1.0/1.5 | - | `glibc.malloc.hugetlb=1` | `onednn_dots` |" in table.markdown(records)


def test_readme_regenerated_between_markers(tmp_path):
  results = tmp_path / "results"
  results.mkdir()
  with open(results / "a.jsonl", "w", encoding="utf-8") as f:
    for r in _records():
      f.write(json.dumps(r) + "\n")
  readme = tmp_path / "README.md"
  readme.write_text(f"# Title\n\nprose\n\n{table.BEGIN}\nold\n{table.END}\n\nmore prose\n")
  assert cli.main(["bench", "--render", str(readme)]) == 0
  text = readme.read_text()
  assert text.startswith("# Title\n\nprose\n") and text.endswith("\n\nmore prose\n")
  assert "old" not in text and "### `a.jsonl`" in text and "**2.00**" in text
  assert table.update_readme(str(readme)) == readme.read_text()  # idempotent
  readme.write_text("no markers")
  with pytest.raises(ValueError, match="markers"):
    table.update_readme(str(readme))


def test_vs_pytorch_configs_are_valid_and_mirror_specs():
  cfgs = harness.vs_pytorch_configs(batch_size=8, dtype="float32")
  assert set(cfgs) == {"resnet18_simclr", "vit_tiny4_moco_v3", "bert_tiny_mlm"}
  c, spec = cfgs["vit_tiny4_moco_v3"]
  assert c.encoder == "vit_tiny" and c.encoder_kwargs.patch_size == spec["patch_size"] == 4
  assert spec["proj"][2] == c.method_kwargs.proj_layers and spec["batch_size"] == 8
  c, spec = cfgs["resnet18_simclr"]
  assert c.encoder == "resnet18" and c.encoder_kwargs.stem == "cifar" and c.views.a == c.views.b
  # The reference trains no online probe, so neither does the JAX side of the comparison.
  assert all(c.eval.online_probe == "off" for c, _ in cfgs.values())


@pytest.mark.slow
def test_pytorch_reference_mirrors_parameter_counts(make_config):
  """Where torch is installed: the reference models have the JAX models' parameter counts."""
  pytest.importorskip("torch")
  for name, (c, spec) in harness.vs_pytorch_configs(batch_size=4, dtype="float32").items():
    (rec,) = harness.run_torch_reference(spec, steps=1, repeats=1, warmup=0, device="cpu",
                                         threads=1, config=c)
    assert rec["framework"] == "pytorch" and rec["examples_per_s"] > 0, rec
    from ssl_jax import methods
    params, _, _ = jax.eval_shape(
        lambda c=c: methods.make(c.method, c, total_steps=10).init(
            jax.random.key(0), None))
    assert rec["params"] == flops.param_count(params), name
