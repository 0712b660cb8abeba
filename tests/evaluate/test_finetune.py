"""Fine-tuning: the restored encoder is bit-equal to the pretrained one before the first update,
the frozen warm-up freezes it, checkpoints stay under DIR/finetune/<name>/, ViT layer-wise lr
decay scales each layer's update, `ssl-jax eval --protocol finetune` writes eval.json, and (slow)
fine-tuning a pretrained encoder beats the same from random init on digits."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ssl_jax import cli, models
from ssl_jax.evaluate import finetune
from ssl_jax.train.workdir import restore_run
from ssl_jax.train.checkpoint import Checkpointer

FAST = {"steps": 2, "batch_size": 64, "checkpoint_every": 1}


def _equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_restores_pretrained_weights_bit_equal_and_keeps_its_own_checkpoints(tiny_workdir):
  pre_steps = Checkpointer(os.path.join(tiny_workdir, "checkpoints")).all_steps()
  acc, (initial, final, _) = finetune.finetune_run(
      tiny_workdir, overrides={**FAST, "frozen_steps": 2, "name": "frozen"}, return_state=True)
  run = restore_run(tiny_workdir, (8, 8, 1))
  # Before the first update: exactly the pretrained encoder (parameters and BN statistics).
  _equal(initial.params["encoder"], run.trained["params"]["encoder"])
  _equal(initial.batch_stats["encoder"], run.trained["batch_stats"]["encoder"])
  # Two frozen warm-up steps: the encoder's weights did not move, the new head did.
  _equal(final.params["encoder"], run.trained["params"]["encoder"])
  assert not np.allclose(final.params["head"]["kernel"], initial.params["head"]["kernel"])
  assert int(final.step) == 2 and 0.0 <= acc <= 1.0
  run_dir = os.path.join(tiny_workdir, "finetune", "frozen")
  assert Checkpointer(os.path.join(run_dir, "checkpoints")).all_steps() == [2]  # keeps 1
  assert os.path.exists(os.path.join(run_dir, "metrics.jsonl"))
  # Pretraining's checkpoints are untouched: its auto-resume only reads DIR/checkpoints.
  assert Checkpointer(os.path.join(tiny_workdir, "checkpoints")).all_steps() == pre_steps
  # The random-init baseline starts from the weights pretraining started from.
  _, (base, _, _) = finetune.finetune_run(
      tiny_workdir, source="random_init", overrides={**FAST, "steps": 1, "name": "frozen"},
      return_state=True)
  _equal(base.params["encoder"], run.initial["params"]["encoder"])
  assert os.path.isdir(os.path.join(tiny_workdir, "finetune", "frozen_random_init"))
  with pytest.raises(ValueError, match="another config"):  # resuming with another recipe
    finetune.finetune_run(tiny_workdir, overrides={**FAST, "lr": 0.5, "name": "frozen"})


def test_layer_decay_scales_each_vit_layer():
  enc = models.build_encoder("vit_micro", rngs=nnx.Rngs(0))
  _, p = nnx.split(enc, nnx.Param)
  params = {"encoder": nnx.to_pure_dict(p),
            "head": {"kernel": jnp.zeros((32, 3)), "bias": jnp.zeros(3)}}
  ft = finetune._finetune_config(  # pylint: disable=protected-access
      _config_with_encoder("vit_micro"), {"layer_decay": 0.5, "weight_decay": 0.0,
                                          "warmup_steps": 0, "steps": 10})
  tx, scales = finetune.build_optimizer(params, ft, encoder="vit_micro", total_steps=10)
  # depth 2: embeddings (layer 0) 0.5^3, blocks 0.5^2 and 0.5^1, final norm 0.5^0, head 1.
  assert scales == {"default": 1.0, "encoder_000": 0.125, "encoder_001": 0.25,
                    "encoder_002": 0.5, "encoder_003": 1.0}
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  size = lambda u: float(jnp.abs(u).max())
  lr = ft.lr
  np.testing.assert_allclose(size(updates["head"]["kernel"]), lr, rtol=1e-3)
  np.testing.assert_allclose(size(updates["encoder"]["pos_embed"]), lr * 0.125, rtol=1e-3)
  np.testing.assert_allclose(size(updates["encoder"]["blocks"][0]["attn"]["qkv"]["kernel"])
                             if "attn" in updates["encoder"]["blocks"][0] else
                             size(jax.tree.leaves(updates["encoder"]["blocks"][0])[0]),
                             lr * 0.25, rtol=1e-3)
  np.testing.assert_allclose(size(jax.tree.leaves(updates["encoder"]["blocks"][1])[0]),
                             lr * 0.5, rtol=1e-3)
  np.testing.assert_allclose(size(updates["encoder"]["norm"]["scale"]), lr, rtol=1e-3)
  with pytest.raises(ValueError, match="ViT encoders only"):
    finetune.build_optimizer({"encoder": {"w": jnp.ones((2, 2))}, "head": {}}, ft,
                             encoder="cnn_digits", total_steps=10)


def _config_with_encoder(encoder):
  from ssl_jax import config as config_lib
  return config_lib.load_config(None, [("encoder", encoder)])


def test_bad_finetune_settings_are_refused(tiny_workdir):
  with pytest.raises(ValueError, match="Unknown fine-tuning key 'stepz'"):
    finetune.finetune_run(tiny_workdir, overrides={"stepz": 3})
  with pytest.raises(ValueError, match="frozen_steps"):
    finetune.finetune_run(tiny_workdir, overrides={"steps": 3, "frozen_steps": 5})
  with pytest.raises(ValueError, match="source="):
    finetune.finetune_run(tiny_workdir, source="raw")


def test_cli_eval_protocol_finetune_merges_into_eval_json(tiny_workdir, capsys):
  path = os.path.join(tiny_workdir, "config.json")
  with open(path, encoding="utf-8") as f:
    config = json.load(f)
  config["eval"]["finetune"].update(FAST, name="cli")  # eval.* may change between runs
  with open(path, "w", encoding="utf-8") as f:
    json.dump(config, f)
  earlier = {"knn": {"ssl": {"1": 0.5, "1_std": 0.1}}}
  with open(os.path.join(tiny_workdir, "eval.json"), "w", encoding="utf-8") as f:
    json.dump(earlier, f)
  assert cli.main(["eval", "--workdir", tiny_workdir, "--protocol", "finetune"]) == 0
  with open(os.path.join(tiny_workdir, "eval.json"), encoding="utf-8") as f:
    results = json.load(f)
  assert results["knn"] == earlier["knn"]  # kept
  assert set(results["finetune"]) == {"ssl", "random_init"}
  for row in results["finetune"].values():
    assert set(row) == {"all"} and 0.0 <= row["all"] <= 1.0
  assert "finetune" in capsys.readouterr().out
  assert cli.main(["eval", "--workdir", tiny_workdir, "--protocol", "finetune",
                   "--dataset", "tfds:mnist"]) == cli.EXIT_BAD_INPUT


@pytest.mark.slow
def test_finetuning_the_pretrained_encoder_beats_random_init_on_digits(tmp_path):
  """A 150-step SimCLR run on digits (one device), then the same fine-tuning recipe (5 labels per
  class, 20 frozen warm-up steps) from its weights and from the weights it started from, on two
  paired label draws (same labels, head init and data order for both sources)."""
  from ssl_jax import config as config_lib
  from ssl_jax.train.loop import pretrain
  config = config_lib.load_config(None, [
      ("total_steps", "150"), ("batch_size", "128"), ("quiet", "True"),
      ("log.tensorboard", "False"), ("eval.online_probe", "off")])
  devices = jax.devices()[:1]
  pretrain(config, str(tmp_path), devices=devices)
  recipe = {"steps": 60, "batch_size": 50, "budget": "5", "frozen_steps": 20}
  gaps = []
  for draw in (0, 1):
    accs = [finetune.finetune_run(str(tmp_path), source=source, draw=draw, devices=devices,
                                  overrides={**recipe, "name": f"draw{draw}"})
            for source in ("ssl", "random_init")]
    print("draw", draw, "fine-tuned from ssl / random init:", accs)
    gaps.append(accs[0] - accs[1])
  assert min(gaps) > 0 and np.mean(gaps) > 0.015, gaps  # measured: +3.7 and +2.0 points


def test_weight_decay_reaches_the_encoder_and_head_weights_only():
  # Regression: the earlier per-layer AdamW passed decay_mask through optax.inject_hyperparams,
  # which took the mask for a schedule (False), so no weight decay applied at all.
  params = {"encoder": {"w": jnp.ones((2, 2)), "b": jnp.ones(2)},
            "head": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}}
  ft = finetune._finetune_config(  # pylint: disable=protected-access
      _config_with_encoder("cnn_digits"), {"weight_decay": 0.5, "warmup_steps": 0, "steps": 10})
  tx, scales = finetune.build_optimizer(params, ft, encoder="cnn_digits", total_steps=10)
  assert scales == {"default": 1.0, "encoder_000": 1.0}
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  np.testing.assert_allclose(updates["encoder"]["w"], -ft.lr * 0.5, rtol=1e-6)
  np.testing.assert_allclose(updates["head"]["kernel"], -ft.lr * 0.5, rtol=1e-6)
  assert not np.any(updates["encoder"]["b"]) and not np.any(updates["head"]["bias"])
