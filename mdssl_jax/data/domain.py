"""Types shared by the data sources and the pipeline (NumPy only).

Synopsis::

  from mdssl_jax.data.domain import DomainData, StreamSpec
  dom.num_train, dom.is_streaming, dom.has_masks, dom.image_size

A loaded domain is a :class:`DomainData`: in memory (uint8 arrays at a
common square size) or streamed from TFDS (a :class:`StreamSpec`, no
arrays).
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Ways to bring images to config.data.image_size (see mdssl_jax.data.resize).
RESIZE_MODES = ("pad", "resize")


class DatasetNotFoundError(FileNotFoundError):
  """A TFDS dataset is not prepared in data_dir and download is off."""


@dataclasses.dataclass(frozen=True)
class StreamSpec:
  """Where and how a streaming (not in-memory) TFDS domain is read.

  Attributes:
    tfds_name: TFDS builder name (e.g. "imagenet2012").
    split: training split (TFDS split string, slicing allowed).
    eval_split: evaluation split.
    data_dir: TFDS data_dir (None: the TFDS default).
    image_key: image feature (decoded at run time from its encoded bytes).
    label_key: label feature.
    mask_key: optional saliency-mask feature (an image aligned with the
      image feature), or None.
    class_ids: original label ids kept, in new-label order (label
      class_ids[j] becomes j), or None for all classes.
    num_train: examples in ``split`` after the class subset.
    image_size: config.data.image_size (images smaller than this are
      zero-padded to it when ``resize`` is "pad", as in memory).
    resize: "pad" or "resize".
    shard: (s, S): read only input shard s of S of ``split``
      (``tfds.even_splits``), or None for the whole split.
  """
  tfds_name: str
  split: str
  eval_split: str
  data_dir: str | None
  image_key: str
  label_key: str
  mask_key: str | None
  class_ids: tuple[int, ...] | None
  num_train: int
  image_size: int
  resize: str = "pad"
  shard: tuple[int, int] | None = None


@dataclasses.dataclass
class DomainData:
  """One labelled domain: in memory (arrays) or streamed from TFDS (stream).

  In-memory domains hold arrays resized to a common square size; streaming
  domains (``stream`` set) hold no arrays (all four are None): the training
  pipeline reads and decodes them on the fly and ``make_eval_arrays`` reads
  capped evaluation subsets. Use ``num_train`` for the train-set size in
  both cases.

  Attributes:
    name: display name.
    train_images: [N, S, S, 3] uint8 (None when streaming).
    train_labels: [N] int32 in [0, num_classes) (None when streaming).
    test_images: [M, S, S, 3] uint8 (None when streaming).
    test_labels: [M] int32 (None when streaming).
    num_classes: number of classes (after any class subset).
    train_masks: optional [N, S, S] float32 saliency masks in [0, 1],
      aligned with train_images by index.
    stream: StreamSpec of a streaming domain, else None.
    eval_train_images: the labelled split evaluators train on (kNN bank,
      probes) when it differs from the pretraining split, else None (use
      train_images): a ``fraction`` or a ``mix`` keeps its whole dataset
      here, because a fraction limits pretraining, not the evaluation
      protocol (``config.eval.train_split``).
    eval_train_labels: labels of eval_train_images (None with it).
    total_train: training examples over all input shards when this is
      one process's shard (``data.shards``), else None (= num_train).
  """
  name: str
  train_images: np.ndarray | None
  train_labels: np.ndarray | None
  test_images: np.ndarray | None
  test_labels: np.ndarray | None
  num_classes: int
  train_masks: np.ndarray | None = None
  stream: StreamSpec | None = None
  eval_train_images: np.ndarray | None = None
  eval_train_labels: np.ndarray | None = None
  total_train: int | None = None

  def __post_init__(self):
    if self.stream is not None:
      self._check_stream()
    else:
      self._check_arrays()

  def _check_stream(self) -> None:
    arrays = [k for k in ("train_images", "train_labels", "test_images",
                          "test_labels", "train_masks", "eval_train_images")
              if getattr(self, k) is not None]
    if arrays:
      raise ValueError(f"Domain {self.name!r}: a streaming domain holds no "
                       f"arrays, got {arrays}.")
    if self.stream.num_train < 1:
      raise ValueError(f"Domain {self.name!r}: streaming split "
                       f"{self.stream.split!r} has no examples.")

  def _check_arrays(self) -> None:
    for split in ("train", "test"):
      images = getattr(self, f"{split}_images")
      labels = getattr(self, f"{split}_labels")
      if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"Domain {self.name!r}: {split}_images must be [N, S, S, 3] uint8, "
            f"got {images.shape} {images.dtype}.")
      if labels.shape != (len(images),):
        raise ValueError(
            f"Domain {self.name!r}: {split}_labels must have shape "
            f"({len(images)},), got {labels.shape}.")
    if (self.eval_train_images is None) != (self.eval_train_labels is None):
      raise ValueError(f"Domain {self.name!r}: eval_train_images and "
                       "eval_train_labels go together.")
    if self.eval_train_images is not None and (
        self.eval_train_labels.shape != (len(self.eval_train_images),)):
      raise ValueError(f"Domain {self.name!r}: eval_train_labels must have "
                       f"shape ({len(self.eval_train_images)},).")
    if self.train_masks is not None and (
        self.train_masks.shape != self.train_images.shape[:3]):
      raise ValueError(
          f"Domain {self.name!r}: train_masks must have shape "
          f"{self.train_images.shape[:3]}, got {self.train_masks.shape}.")

  @property
  def image_size(self) -> int:
    """Side S of the stored images (config.data.image_size when streaming)."""
    if self.stream is not None:
      return self.stream.image_size
    return int(self.train_images.shape[1])

  @property
  def global_num_train(self) -> int:
    """Training examples over every input shard (N of the budget)."""
    return self.num_train if self.total_train is None else self.total_train

  @property
  def is_streaming(self) -> bool:
    return self.stream is not None

  @property
  def num_train(self) -> int:
    """Number of training examples (after class subset and max_train)."""
    if self.stream is not None:
      return self.stream.num_train
    return int(len(self.train_labels))

  @property
  def has_masks(self) -> bool:
    """Whether saliency masks exist (arrays, or a streamed mask feature)."""
    if self.stream is not None:
      return self.stream.mask_key is not None
    return self.train_masks is not None


def check_memory(name: str, count: int, size: int, max_gb: float,
                 extra_bytes_per_image: int = 0) -> None:
  """Raises if `count` uint8 images at size × size exceed max_gb GiB.

  Args:
    name: domain display name (for the message).
    count: number of images.
    size: image side S.
    max_gb: config.data.max_in_memory_gb.
    extra_bytes_per_image: e.g. 4·S² for a float32 saliency mask.

  Raises:
    ValueError: naming the three ways to make the domain fit.
  """
  need = count * (size * size * 3 + extra_bytes_per_image)
  if need > max_gb * 2 ** 30:
    raise ValueError(
        f"Domain {name!r}: {count} images at {size}x{size} need "
        f"{need / 2 ** 30:.2f} GiB in memory, more than "
        f"config.data.max_in_memory_gb={max_gb}. Set max_train/max_test on "
        "the domain, lower config.data.image_size, or raise "
        "config.data.max_in_memory_gb.")
