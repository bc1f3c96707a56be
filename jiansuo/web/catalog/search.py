"""The search backend: the one place the site embeds images and searches the catalogue.

Views, the API, the admin, the import command and the indexing workers only call
:func:`get_backend` and the methods of :class:`SearchBackend`. The database chooses the backend:

- SQLite (the embedded default): :class:`IndexBackend`, the core's on-disk
  :class:`jiansuo.index.Index` (vectors in files, filters applied as a mask from the database);
- PostgreSQL: :class:`~jiansuo.web.catalog.pgsearch.PgVectorBackend`, vectors and hash codes in a
  pgvector table, where a search is one SQL query that also applies the filters.

The model is loaded once per process (:func:`jiansuo.features.cached_extractor`), not per request.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from django.conf import settings
from django.core.signals import setting_changed
from django.db import connection
from django.db.models import Q, QuerySet
from PIL import Image

from jiansuo.features import Extractor, cached_extractor
from jiansuo.index import Index, ItemInfo
from jiansuo.pipeline import embed_files
from jiansuo.search import search_index

from .models import Product, ProductImage

# SQLite accepts a limited number of parameters per query: look photos up in chunks.
_CHUNK = 500


@dataclass(frozen=True)
class Filters:
    """What a search is restricted to; ``None`` means no restriction."""

    category: str | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None

    def q(self, prefix: str = "") -> Q:
        """The filters as a condition on products (``prefix`` reaches them from another model, e.g. ``product__``)."""
        cond = Q()
        if self.category:
            cond &= Q(**{f"{prefix}category": self.category})
        if self.min_price is not None:
            cond &= Q(**{f"{prefix}price__gte": self.min_price})
        if self.max_price is not None:
            cond &= Q(**{f"{prefix}price__lte": self.max_price})
        return cond

    def apply(self, products: QuerySet[Product]) -> QuerySet[Product]:
        """``products`` restricted to these filters."""
        return products.filter(self.q())

    @property
    def active(self) -> bool:
        return bool(self.category) or self.min_price is not None or self.max_price is not None


@dataclass(frozen=True)
class ProductHit:
    """A product found by a search: its best-matching photo and that photo's cosine similarity."""

    product: Product
    score: float
    image: str


class SearchBackend:
    """What every backend does; subclasses store the vectors and search them.

    Photo ids are paths under MEDIA_ROOT (``ProductImage.file``).
    """

    def __init__(self, model: str, weights: str | None = None):
        self.extractor: Extractor = cached_extractor(model, weights=weights)

    # -------------------------------------------------------------- embedding

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Feature vectors (n, dim) of decoded RGB images."""
        return self.extractor.embed_images(list(images))

    def embed_files(self, files: Sequence[tuple[Path, str]], *, progress: bool = False,
                    skipped: list[tuple[str, str]] | None = None) -> Iterator[tuple[list[ItemInfo], np.ndarray]]:
        """Batches of (infos, vectors) for (path, photo id) pairs, decoding in parallel with inference."""
        return embed_files(self.extractor, files, progress=progress, skipped=skipped)

    # -------------------------------------------------------------- the stored vectors

    def add(self, infos: Sequence[ItemInfo], vectors: np.ndarray) -> None:
        """Store the vectors of these photos (replacing any stored under the same ids)."""
        raise NotImplementedError

    def remove(self, photo_ids: Iterable[str]) -> int:
        """Forget these photos; returns how many were stored."""
        raise NotImplementedError

    def photo_ids(self) -> set[str]:
        """Ids of every photo that has a stored vector."""
        raise NotImplementedError

    def indexed(self, photo_ids: Iterable[str]) -> set[str]:
        """Those of ``photo_ids`` that have a stored vector."""
        raise NotImplementedError

    def vector_of(self, photo_id: str) -> np.ndarray | None:
        """The stored vector of one photo, or None when it has none (yet)."""
        raise NotImplementedError

    def maintain(self) -> None:
        """Bring derived data up to date (called by a full ``sync_index``); nothing by default."""

    def close(self) -> None:
        """Release what the backend holds open."""

    # -------------------------------------------------------------- searching

    def search(self, vector: np.ndarray, k: int, filters: Filters = Filters(), *,
               exclude: Product | None = None) -> list[ProductHit]:
        """The ``k`` products most similar to ``vector`` among those matching ``filters``, best first.

        A product with several photos counts once, with its best photo's score.
        """
        raise NotImplementedError

    def similar(self, product: Product, k: int, filters: Filters = Filters()) -> tuple[list[ProductHit], bool]:
        """(hits, indexed): products that look like ``product`` (itself excluded), by its first
        indexed photo; ``indexed`` is False while none of its photos has a vector."""
        for image in product.images.all():
            vector = self.vector_of(image.file)
            if vector is not None:
                return self.search(vector, k, filters, exclude=product), True
        return [], False


class IndexBackend(SearchBackend):
    """Embedded backend: the core index folder at ``settings.JIANSUO_INDEX_PATH``.

    Several processes may write it (the index has a cross-process write lock), but only on one
    machine: for indexing spread over machines, use PostgreSQL.
    """

    def __init__(self, index_path: str | Path, model: str, weights: str | None = None):
        super().__init__(model, weights)
        self.index = Index.open_or_create(index_path, self.extractor.describe())

    def add(self, infos: Sequence[ItemInfo], vectors: np.ndarray) -> None:
        self.index.add(vectors, infos)

    def remove(self, photo_ids: Iterable[str]) -> int:
        return self.index.remove(photo_ids)

    def photo_ids(self) -> set[str]:
        return set(self.index.items())

    def indexed(self, photo_ids: Iterable[str]) -> set[str]:
        return {pid for pid in photo_ids if pid in self.index}

    def vector_of(self, photo_id: str) -> np.ndarray | None:
        if photo_id not in self.index:
            return None
        return self.index.get_vectors([photo_id])[0]

    def close(self) -> None:
        self.index.close()

    def search(self, vector: np.ndarray, k: int, filters: Filters = Filters(), *,
               exclude: Product | None = None) -> list[ProductHit]:
        products = filters.apply(Product.objects.all())
        if exclude is not None:
            products = products.exclude(pk=exclude.pk)
        ids, _matrix = self.index.vectors()
        if not ids or k <= 0:
            return []
        allowed = None
        if filters.active or exclude is not None:
            keep = set(ProductImage.objects.filter(product__in=products).values_list("file", flat=True))
            allowed = np.fromiter((i in keep for i in ids), dtype=bool, count=len(ids))
            if not allowed.any():
                return []
        searchable = int(allowed.sum()) if allowed is not None else len(ids)
        # Several photos may belong to one product (and one photo to several products), so ask
        # for more photos than products and widen until there are enough or nothing is left.
        want = min(searchable, 2 * k + 8)
        while True:
            result = search_index(self.index, np.asarray(vector, dtype=np.float32)[None, :], k=want,
                                  allowed=allowed)[0]
            hits = _products_for(result.hits, products)
            if len(hits) >= k or want >= searchable:
                return hits[:k]
            want = min(searchable, want * 4)


def _products_for(photo_hits, products: QuerySet[Product]) -> list[ProductHit]:
    """Turn photo hits (best first) into product hits, one per product, best first."""
    score_of = {h.id: h.score for h in photo_hits}
    rows: list[ProductImage] = []
    keys = list(score_of)
    for start in range(0, len(keys), _CHUNK):
        rows.extend(ProductImage.objects.filter(file__in=keys[start:start + _CHUNK], product__in=products)
                    .select_related("product"))
    best: dict[int, ProductHit] = {}
    for row in rows:
        score = score_of[row.file]
        current = best.get(row.product_id)
        if current is None or score > current.score:
            best[row.product_id] = ProductHit(row.product, score, row.file)
    return sorted(best.values(), key=lambda h: (-h.score, h.product.item_id))


# ------------------------------------------------------------------ one backend per process

_backend: SearchBackend | None = None
_backend_lock = threading.Lock()


def get_backend() -> SearchBackend:
    """The process's search backend, created on first use (loads the model, opens the index).

    PostgreSQL gets the pgvector backend; any other database the embedded index folder.
    """
    global _backend
    with _backend_lock:
        if _backend is None:
            if connection.vendor == "postgresql":
                from .pgsearch import PgVectorBackend

                _backend = PgVectorBackend(settings.JIANSUO_MODEL, settings.JIANSUO_MODEL_WEIGHTS)
            else:
                _backend = IndexBackend(settings.JIANSUO_INDEX_PATH, settings.JIANSUO_MODEL,
                                        settings.JIANSUO_MODEL_WEIGHTS)
        return _backend


def reset_backend() -> None:
    """Forget the process's backend (the next call creates it again)."""
    global _backend
    with _backend_lock:
        if _backend is not None:
            _backend.close()
        _backend = None


def _on_setting_changed(setting: str, **_kwargs) -> None:
    if setting in ("JIANSUO_INDEX_PATH", "JIANSUO_MODEL", "JIANSUO_MODEL_WEIGHTS"):
        reset_backend()


setting_changed.connect(_on_setting_changed)
