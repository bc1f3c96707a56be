"""Storing photos safely: every stored image is decoded and re-encoded, under a name we choose.

Uploaded and downloaded bytes are hostile until proven otherwise. Nothing is written as it came:
:func:`jiansuo.images.load_image` decodes it (rejecting non-images, truncated files and
decompression bombs), and the pixels are written again as a fresh JPEG without metadata (no
EXIF location leaks, no polyglot files). File names are never taken from the user: product
photos are named by the hash of their content (so identical photos are stored once), query
photos by a random token.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from PIL import Image

from jiansuo.atomic import atomic_write
from jiansuo.images import ImageError, load_image

#: Stored product photos are at most this many pixels on their longer side.
MAX_SIDE = 1024
#: Query photos are only looked at and embedded: smaller is enough.
QUERY_MAX_SIDE = 640
JPEG_QUALITY = 90

_TOKEN = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class StoredPhoto:
    """A product photo on disk: ``file`` is its path under MEDIA_ROOT (and its search-index id)."""

    file: str
    sha256: str
    width: int
    height: int


def encode_jpeg(img: Image.Image, max_side: int = MAX_SIDE) -> bytes:
    """Shrink ``img`` (RGB) to ``max_side`` and encode it as a metadata-free JPEG."""
    if max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return buf.getvalue()


def product_photo_path(digest: str) -> str:
    """Where the photo with content hash ``digest`` is stored, relative to MEDIA_ROOT."""
    return f"products/{digest[:2]}/{digest[2:4]}/{digest}.jpg"


def store_product_photo(data: bytes) -> StoredPhoto:
    """Validate and store photo bytes once per distinct content; raises ImageError for a bad image.

    Identical bytes map to the same file, so a second call with them only reads the stored size.
    """
    digest = hashlib.sha256(data).hexdigest()
    rel = product_photo_path(digest)
    full = Path(settings.MEDIA_ROOT) / rel
    if full.is_file():
        try:
            with Image.open(full) as existing:
                return StoredPhoto(rel, digest, *existing.size)
        except OSError:
            pass  # damaged on disk: write it again below
    img = load_image(data)
    encoded = encode_jpeg(img)
    atomic_write(full, encoded)
    with Image.open(io.BytesIO(encoded)) as stored:
        width, height = stored.size
    return StoredPhoto(rel, digest, width, height)


def delete_product_photo(file: str) -> None:
    """Remove a stored product photo (no error when it is already gone)."""
    if not file.startswith("products/") or ".." in file:
        raise ValueError(f"not a product photo path: {file!r}")
    (Path(settings.MEDIA_ROOT) / file).unlink(missing_ok=True)


# ------------------------------------------------------------------ query photos


def save_query_photo(img: Image.Image) -> str:
    """Store a decoded query photo privately; returns the random token that names it."""
    token = secrets.token_hex(16)
    atomic_write(_query_dir() / f"{token}.jpg", encode_jpeg(img, QUERY_MAX_SIDE))
    _purge_old_queries()
    return token


def network_tag() -> str:
    """A short tag of the network the site embeds with (its extractor's whole description: model,
    preprocessing, precision, quantisation): vectors made by another cannot be searched against the store."""
    from .search import get_extractor

    return hashlib.sha256(json.dumps(get_extractor().describe(), sort_keys=True).encode()).hexdigest()[:12]


def vector_file(folder: Path, token: str) -> Path:
    """Where query ``token``'s vector made by the site's network is kept in ``folder``."""
    return folder / f"{token}-{network_tag()}.npy"


def vector_files(folder: Path, token: str) -> list[Path]:
    """Every vector kept for query ``token`` in ``folder``, whatever network made it."""
    return list(folder.glob(f"{token}-*.npy"))


def query_cache_key(token: str, part: str = "") -> str:
    """The cache key of query ``token``'s vector (``part``: of one box of its photo, see .lens), made by
    the site's network (:func:`network_tag`)."""
    return f"jiansuo:query:{network_tag()}:{token}{part}"


def save_query_vector(token: str, vector: np.ndarray) -> None:
    """Keep the query's vector beside its photo, so its results never need the photo embedded again."""
    atomic_write(vector_file(_query_dir(), token), lambda fh: np.save(fh, np.asarray(vector, dtype=np.float32)))


def query_vector(token: str) -> np.ndarray | None:
    """The vector the site's network made for query photo ``token``, or None (malformed or expired
    token, or saved by another network: embed the photo again)."""
    if not _TOKEN.match(token or ""):
        return None
    try:
        return np.load(vector_file(_query_dir(), token), allow_pickle=False)
    except (OSError, ValueError):
        return None


def query_photo_path(token: str) -> Path | None:
    """The stored query photo for ``token``, or None when the token is malformed or expired."""
    if not _TOKEN.match(token or ""):
        return None
    path = _query_dir() / f"{token}.jpg"
    return path if path.is_file() else None


def _query_dir() -> Path:
    return Path(settings.JIANSUO_QUERY_DIR)


def _purge_old_queries() -> None:
    """Delete query photos older than the configured lifetime (checked at most once a minute)."""
    global _last_purge
    now = time.time()
    if now - _last_purge < 60:
        return
    _last_purge = now
    cutoff = now - settings.JIANSUO_QUERY_TTL_SECONDS
    for f in _query_dir().iterdir() if _query_dir().is_dir() else ():
        try:
            if f.stat().st_mtime < cutoff:
                f.unlink()
        except OSError:
            pass  # another process removed it first


_last_purge = 0.0


# ------------------------------------------------------------------ for the accounts and history apps


def query_files(token: str) -> list[Path]:
    """The files kept for query ``token`` (its photo, its vector) that exist."""
    if not _TOKEN.match(token or ""):
        return []
    return [p for p in (_query_dir() / f"{token}.jpg", *vector_files(_query_dir(), token)) if p.is_file()]


def restore_query(token: str, photo: bytes, vector: np.ndarray | None) -> None:
    """Store a query this module kept earlier (its encoded photo, its vector) again under ``token``
    (a past search reopened after the query files were purged)."""
    if not _TOKEN.match(token or ""):
        raise ValueError(f"not a query token: {token!r}")
    atomic_write(_query_dir() / f"{token}.jpg", photo)
    if vector is not None:
        save_query_vector(token, vector)


__all__ = [
    "ImageError", "StoredPhoto", "delete_product_photo", "encode_jpeg", "product_photo_path",
    "query_files", "query_photo_path", "query_vector", "restore_query", "save_query_photo", "save_query_vector",
    "store_product_photo",
]
