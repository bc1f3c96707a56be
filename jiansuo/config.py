"""Every environment variable the core reads, in one place (the site's own are in :mod:`jiansuo.web.settings`).

=========================  ===============================================================  ==========================
variable                   meaning                                                          default
=========================  ===============================================================  ==========================
JIANSUO_CACHE              folder for exported models (ONNX files and their checksums)      ``$XDG_CACHE_HOME/jiansuo``
JIANSUO_THREADS            threads per ONNX Runtime session (0: one per core)               0
JIANSUO_MAX_PIXELS         largest image decoded, in pixels (bigger: a decompression bomb)  64,000,000
JIANSUO_ANN_THRESHOLD      ``--mode auto`` searches the ANN graph from this many images     see :mod:`jiansuo.search.auto`
JIANSUO_VGG16_WEIGHTS      the VGG16 weights file (Keras ``.h5`` or torchvision ``.pth``)   none
JIANSUO_PG_TABLE           the vector table of a PostgreSQL store (``--index postgresql://…``)  ``jiansuo_vectors``
JIANSUO_FASHION_MNIST      Fashion-MNIST folder (Debian's ``dataset-fashion-mnist``)        ``/usr/share/datasets/fashion-mnist``
=========================  ===============================================================  ==========================

Values are read when asked for, not at import, so a test or a server can set them first.
"""

from __future__ import annotations

import os
from pathlib import Path


class ConfigError(ValueError):
    """An environment variable has a value that cannot be used."""


def _int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}")
    return value


def cache_dir() -> Path:
    """Where exported models are cached: $JIANSUO_CACHE, else $XDG_CACHE_HOME/jiansuo, else ~/.cache/jiansuo."""
    env = os.environ.get("JIANSUO_CACHE", "").strip()
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jiansuo"


def threads() -> int:
    """Threads an ONNX Runtime session may use: $JIANSUO_THREADS, else one per core."""
    return _int("JIANSUO_THREADS", 0) or (os.cpu_count() or 1)


def max_pixels() -> int:
    """Largest image (width × height) :func:`jiansuo.images.load_image` decodes."""
    return _int("JIANSUO_MAX_PIXELS", 64_000_000, minimum=1)


def ann_threshold() -> int | None:
    """$JIANSUO_ANN_THRESHOLD when set (the auto policy's own defaults apply otherwise)."""
    value = _int("JIANSUO_ANN_THRESHOLD", -1)
    return None if value < 0 else value


def vgg16_weights() -> str | None:
    """$JIANSUO_VGG16_WEIGHTS, the VGG16 weights file, or None."""
    return os.environ.get("JIANSUO_VGG16_WEIGHTS", "").strip() or None


def pg_table() -> str:
    """The table of a PostgreSQL vector store: $JIANSUO_PG_TABLE (the site reads the same variable)."""
    return os.environ.get("JIANSUO_PG_TABLE", "").strip() or "jiansuo_vectors"


def fashion_mnist_dir() -> Path:
    """Where Debian's ``dataset-fashion-mnist`` installs its files."""
    return Path(os.environ.get("JIANSUO_FASHION_MNIST", "").strip() or "/usr/share/datasets/fashion-mnist")
