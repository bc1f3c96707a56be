"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package: 70,000 labelled 28×28 product photos."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from .. import config


CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def available(folder: str | os.PathLike | None = None) -> bool:
    """True when the data set files are installed (in ``folder``, default :func:`jiansuo.config.fashion_mnist_dir`)."""
    folder = Path(folder or config.fashion_mnist_dir())
    return all((folder / f).is_file() for pair in _FILES.values() for f in pair)


def load(split: str = "train", folder: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels uint8 (N,)) of the ``train`` (60,000) or ``test`` (10,000) split."""
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    img_file, lab_file = (Path(folder or config.fashion_mnist_dir()) / f for f in _FILES[split])
    if not img_file.is_file():
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {folder}: install it with `apt-get install dataset-fashion-mnist`"
        )
    images = _read_idx(img_file)
    labels = _read_idx(lab_file)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{img_file} and {lab_file} disagree on the number of items")
    return images, labels


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def query_sample(labels: np.ndarray, per_class: int = 100, seed: int = 0) -> np.ndarray:
    """A fixed, seeded sample of ``per_class`` indices of each class (the benchmark's queries)."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))
