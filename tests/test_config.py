"""Configs: defaults, files with arguments, overrides, method switching, validation."""

import json

import pytest

from ssl_jax import config as config_lib


def test_default_has_the_top_level_keys():
  c = config_lib.load_config()
  for key in ("method", "dataset", "encoder", "batch_size", "total_steps", "seed", "parallel"):
    assert key in c
  assert c.checkpoint.every_steps >= 0
  assert c.method == "simclr" and c.dataset == "digits"
  assert c.method_kwargs.temperature > 0  # filled from the method's defaults


def test_overrides_typed_and_nested():
  c = config_lib.load_config(None, config_lib.parse_overrides(
      ["--config.optimizer.lr=0.05", "--config.batch_size", "128", "--config.encoder=resnet_tiny",
       "--config.eval.budgets=(1, 'all')", "--config.total_steps=7",
       "--config.method_kwargs.temperature=0.2"]))
  assert c.optimizer.lr == 0.05 and c.batch_size == 128 and c.encoder == "resnet_tiny"
  assert c.eval.budgets == (1, "all") and c.total_steps == 7
  assert c.method_kwargs.temperature == 0.2


@pytest.mark.parametrize("override, message", [
    ("--config.optimzer.lr=1", "Unknown config key 'optimzer'.*optimizer"),
    ("--config.optimizer.lrr=1", "Unknown config key 'optimizer.lrr'.*lr_scaling"),
    ("--config.batch_size=big", "Bad value for config.batch_size"),
    ("--config.batch_size=0", "batch_size must be a positive integer"),
    ("--config.batch_size=-4", "batch_size must be a positive integer"),
    ("--config.parallel=ddp", "parallel='ddp' is not valid; choose one of: shard_map, pmap, gspmd"),
    ("--config.method=simclrr", "method='simclrr' is not valid; choose one of: .*simclr"),
    ("--config.optimizer.name=adam", "optimizer.name='adam' is not valid.*adamw"),
    ("--config.method_kwargs.temprature=0.1", "Unknown config key 'method_kwargs.temprature'"),
    ("--config.optimizer.schedule=cos", "optimizer.schedule='cos' is not valid.*tri_stage"),
    ("--config.optimizer.schedule=tri_stage", "final_lr_fraction in"),
    ("--config.optimizer.tri_stage=(0.5, 0.5, 0.5)", "tri_stage must be three fractions"),
    ("--config.optimizer.weight_decay_end=-1.0", "weight_decay_end must be >= 0"),
    ("--config.optimizer.groups.head.lr=2", "Unknown config key 'optimizer.groups.head.lr'"),
    ("--config.optimizer.groups.head.lr_mult=2", "groups.head.pattern is missing"),
    ("--config.optimizer.groups.head.pattern=(", "groups.head.pattern='\\(' is not a regular"),
])

def test_bad_values_are_refused_with_the_valid_choices(override, message):
  with pytest.raises(ValueError, match=message):
    config_lib.load_config(None, config_lib.parse_overrides([override]))


def test_optimizer_groups_from_the_command_line():
  c = config_lib.load_config(None, config_lib.parse_overrides(
      ["--config.optimizer.groups.head.pattern=^projector/",
       "--config.optimizer.groups.head.frozen_until_epoch=2", "--config.optimizer.schedule=linear",
       "--config.optimizer.weight_decay_end=0.4"]))
  assert c.optimizer.groups.head.to_dict() == {
      "pattern": "^projector/", "lr_mult": 1.0, "wd_mult": 1.0, "frozen_until_step": 0,
      "frozen_until_epoch": 2.0}
  assert c.optimizer.schedule == "linear" and c.optimizer.weight_decay_end == 0.4

def test_bad_argument_shapes():
  with pytest.raises(ValueError, match="--config.key=value"):
    config_lib.parse_overrides(["--lr=1"])
  with pytest.raises(ValueError, match="has no value"):
    config_lib.parse_overrides(["--config.lr"])
  with pytest.raises(FileNotFoundError):
    config_lib.load_config("no/such/config.py")


def test_config_file_with_argument(tmp_path):
  path = tmp_path / "my_config.py"
  path.write_text(
      "from ssl_jax.config import default_config\n"
      "def get_config(arg=None):\n"
      "  c = default_config()\n"
      "  c.method_kwargs.temperature = 0.3\n"
      "  c.batch_size = 64 if arg == 'runlocal' else 512\n"
      "  return c\n")
  assert config_lib.load_config(f"{path}:runlocal").batch_size == 64
  c = config_lib.load_config(str(path))
  assert c.batch_size == 512 and c.method_kwargs.temperature == 0.3
  bad = tmp_path / "bad.py"
  bad.write_text("from ssl_jax.config import default_config\n"
                 "def get_config():\n  c = default_config()\n  c.method_kwargs.nope = 1\n"
                 "  return c\n")
  with pytest.raises(ValueError, match="nope is not a hyperparameter of simclr"):
    config_lib.load_config(str(bad))


def test_resolved_config_is_json_and_locked():
  c = config_lib.load_config()
  d = config_lib.to_dict(c)
  assert json.loads(json.dumps(d)) == d
  with pytest.raises(AttributeError):
    c.new_key = 1


def test_state_affecting_diff_ignores_run_control_keys():
  a = config_lib.to_dict(config_lib.load_config())
  b = config_lib.to_dict(config_lib.load_config(None, [("log.every_steps", "5"),
                                                       ("checkpoint.every_steps", "3")]))
  assert config_lib.state_affecting_diff(a, b) == []
  c = config_lib.to_dict(config_lib.load_config(None, [("optimizer.lr", "0.7")]))
  assert config_lib.state_affecting_diff(a, c) == ["optimizer.lr: 0.002 -> 0.7"]


def test_views_accept_new_keys_from_the_command_line():
  """``config.views`` is the one block whose keys overrides may add (multi-crop views)."""
  local = "random_resized_crop(size=6, scale=(0.2, 0.5))|normalize(mean=0.5, std=0.5)"
  config = config_lib.load_config(None, [("views.c", local), ("views.d", local),
                                         ("views.a", "normalize(mean=0.5, std=0.5)")])
  assert sorted(config.views) == ["a", "b", "c", "d"]
  assert config.views.c == local and config.views.a == "normalize(mean=0.5, std=0.5)"
  with pytest.raises(ValueError, match="Unknown config key 'optimizer.nope'"):
    config_lib.load_config(None, [("optimizer.nope", "1")])
  with pytest.raises(ValueError, match="Unknown config key 'views.c'"):
    config_lib.load_config(None, [("views.c.x", "1")])


def test_encoder_kwargs_overrides_are_checked_against_the_encoder():
  from ssl_jax.config import load_config
  config = load_config(None, [("encoder_kwargs.in_channels", "3"), ("data.color", "rgb")])
  assert config.encoder_kwargs.in_channels == 3 and config.data.color == "rgb"
  with pytest.raises(ValueError, match=r"encoder_kwargs.depht is not an argument of encoder "
                                       r"'cnn_digits'; valid keys: .*widths"):
    load_config(None, [("encoder_kwargs.depht", "3")])
  with pytest.raises(ValueError, match="config.data.color='cmyk' is not valid"):
    load_config(None, [("data.color", "cmyk")])
