"""Tiny TFDS builders for the data tests, written as ArrayRecord without TensorFlow.

TFDS finds a builder's code directory from its module; a class defined in a test module (whose
name under pytest's importlib mode starts with a namespace package) breaks that lookup, so the
builders live in this package, imported as the top-level module ``tfds_builders`` (see
``conftest.py``, which also keeps pytest from importing it a second time under another name, which
would register the datasets twice).

Examples are a pure function of ``(split, id)`` (:func:`expected_image`, :func:`expected_label`), so
tests can check every decoded value.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

SPLIT_SIZES = {"train": 20, "test": 8}
IMAGE_HW = (6, 5)
CLASS_NAMES = ("ant", "bee", "cow")


def expected_image(split: str, idx: int, channels: int) -> np.ndarray:
  """The uint8 [6, 5, channels] image of example ``idx`` of ``split``."""
  rng = np.random.default_rng([list(SPLIT_SIZES).index(split), idx])
  return rng.integers(0, 256, (*IMAGE_HW, channels), dtype=np.uint8)


def expected_label(idx: int) -> int:
  """The label of example ``idx`` (any split)."""
  return idx % len(CLASS_NAMES)


class SslJaxTinyImages(tfds.core.GeneratorBasedBuilder):
  """Random 6x5 images (``Image`` feature, encoded from PIL), an ``id`` and a ``ClassLabel``."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="rgb", description="3 channels"),
      tfds.core.BuilderConfig(name="gray", description="1 channel"),
  ]

  @property
  def channels(self) -> int:
    return 1 if self.builder_config.name == "gray" else 3

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(*IMAGE_HW, self.channels)),
        "id": tfds.features.Scalar(dtype=np.int64),
        "label": tfds.features.ClassLabel(names=CLASS_NAMES),
    }))

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager
    return {split: self._generate_examples(split) for split in SPLIT_SIZES}

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
    for idx in range(SPLIT_SIZES[split]):
      image = expected_image(split, idx, self.channels)
      pil = PIL.Image.fromarray(image[..., 0] if self.channels == 1 else image)
      yield idx, {"image": pil, "id": idx, "label": expected_label(idx)}


class SslJaxTinyTensors(tfds.core.GeneratorBasedBuilder):
  """2-D uint8 ``Tensor`` images under ``pixels`` and a 2-class ``ClassLabel`` under ``target``."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "pixels": tfds.features.Tensor(shape=(4, 4), dtype=np.uint8),
        "target": tfds.features.ClassLabel(num_classes=2),
    }))

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager
    return {"train": self._generate_examples(12)}

  def _generate_examples(self, n: int) -> Iterator[tuple[int, dict]]:
    for idx in range(n):
      yield idx, {"pixels": np.full((4, 4), 10 * idx, np.uint8), "target": idx % 2}


def prepare(data_dir: str) -> None:
  """Writes every builder (and config) above into ``data_dir`` as ArrayRecord."""
  for config in ("rgb", "gray"):
    SslJaxTinyImages(config=config, data_dir=data_dir,
                     file_format="array_record").download_and_prepare()
  SslJaxTinyTensors(data_dir=data_dir, file_format="array_record").download_and_prepare()


# ----------------------------------------------------------------------- text (corpus tests)

TEXT_SPLIT_SIZES = {"train": 12, "test": 4}
_WORDS = ("alpha", "beta", "gamma", "délta", "ε", "naïve", "日本", "zeta", "🙂", "omega")


def expected_text(split: str, idx: int) -> str:
  """The text of example ``idx`` of ``split`` of ``ssl_jax_tiny_text`` (non-ASCII words too)."""
  words = [_WORDS[(idx * 7 + k * 3 + len(split)) % len(_WORDS)] for k in range(3 + idx % 5)]
  return f"{split} document {idx}: " + " ".join(words) + "."


class SslJaxTinyText(tfds.core.GeneratorBasedBuilder):
  """Short multilingual sentences under ``text`` (a ``Text`` feature) and an integer ``id``."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "text": tfds.features.Text(),
        "id": tfds.features.Scalar(dtype=np.int64),
    }))

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager
    return {split: self._generate_examples(split) for split in TEXT_SPLIT_SIZES}

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
    for idx in range(TEXT_SPLIT_SIZES[split]):
      yield idx, {"text": expected_text(split, idx), "id": idx}


def prepare_text(data_dir: str) -> None:
  """Writes :class:`SslJaxTinyText` into ``data_dir`` as ArrayRecord."""
  SslJaxTinyText(data_dir=data_dir, file_format="array_record").download_and_prepare()
