"""The site's searches: the catalogue's photo vectors (a core :class:`~jiansuo.search.VectorStore`) seen as products.

The store holds one vector per photo file; products are the site's own. Two things only the site
knows are written here, once each: which photos a search may return (the category and price
filters, :func:`allowed_photos`) and how photo hits become product hits (:func:`products_for`).
Everything else is the core's, so the site and the CLI search the same way: the store runs the
search (``auto``: exact for a small catalogue, its ANN index for a large one), and a query photo is
embedded by :func:`jiansuo.pipeline.embed_query`.

The database chooses the store: with PostgreSQL the vectors live in a pgvector table of the same
database (:class:`~jiansuo.search.pgvector.PgVectorStore`, shared by every web process and indexing
worker on every machine, filters applied inside the search's SQL); with any other database, in the
index folder at ``JIANSUO_INDEX_PATH`` (:class:`~jiansuo.search.folder.FolderStore`, filters applied
as a row mask kept in memory per catalogue version).

The model and the store are opened once per process, not per request.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

import numpy as np
from django.conf import settings
from django.core.signals import setting_changed
from django.db import connection
from django.db.models import Q

from jiansuo.autobox import catalogue_scores, suggest_box
from jiansuo.features import Extractor, cached_extractor
from jiansuo.features.batching import BatchingExtractor
from jiansuo.images import Box
from jiansuo.pipeline import decode_for, embed_query
from jiansuo.search import Allowed, Hit, SqlRows, VectorStore
from jiansuo.search.ranking import rank

from .models import CatalogVersion, Product, ProductImage

# SQLite accepts a limited number of parameters per query: look photos up in chunks.
_CHUNK = 500


@dataclass(frozen=True)
class Filters:
    """What a search is restricted to; ``None`` means no restriction."""

    category: str | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None

    def q(self, prefix: str = "") -> Q:
        """The filters as a condition on products (``prefix`` reaches them from another model, e.g. ``product__``).

        Hidden products never pass, filtered or not."""
        cond = Q(**{f"{prefix}hidden": False})
        if self.category:
            cond &= Q(**{f"{prefix}category": self.category})
        if self.min_price is not None:
            cond &= Q(**{f"{prefix}price__gte": self.min_price})
        if self.max_price is not None:
            cond &= Q(**{f"{prefix}price__lte": self.max_price})
        return cond

    @property
    def active(self) -> bool:
        return bool(self.category) or self.min_price is not None or self.max_price is not None

    def matches(self, product: Product) -> bool:
        """Whether ``product`` passes the filters (what :meth:`q` selects, checked on one product)."""
        return (not product.hidden and (not self.category or product.category == self.category)
                and (self.min_price is None or product.price >= self.min_price)
                and (self.max_price is None or product.price <= self.max_price))


@dataclass(frozen=True)
class ProductHit:
    """A product found by a search: its best-matching photo and that photo's cosine similarity."""

    product: Product
    score: float
    image: str


# ------------------------------------------------------------------ the model and the store, once per process

_lock = threading.Lock()
_store: VectorStore | None = None
_batcher_lock = threading.Lock()
_batcher: BatchingExtractor | None = None


def get_extractor() -> Extractor:
    """The site's feature extractor (``JIANSUO_MODEL``), loaded once per process.

    With ``JIANSUO_EMBED_BATCH`` above 1, query photos embedded at the same time by the process's
    request threads share one network call (:class:`~jiansuo.features.batching.BatchingExtractor`).
    """
    global _batcher
    base = cached_extractor(settings.JIANSUO_MODEL, weights=settings.JIANSUO_MODEL_WEIGHTS,
                            precision=settings.JIANSUO_PRECISION)
    if settings.JIANSUO_EMBED_BATCH <= 1:
        return base
    with _batcher_lock:
        if _batcher is None or _batcher.extractor is not base:
            _batcher = BatchingExtractor(base, max_batch=settings.JIANSUO_EMBED_BATCH,
                                         wait_ms=settings.JIANSUO_EMBED_WAIT_MS)
        return _batcher


def warm_up() -> None:
    """Load the model and open the store (and its ANN graph) before the first request needs them."""
    store = get_store()
    if len(store):
        store.search(np.zeros((1, store.dim), dtype=np.float32), 1, mode=settings.JIANSUO_SEARCH_MODE)


def get_store() -> VectorStore:
    """The catalogue's vector store, opened (and created if missing) on first use.

    Raises :class:`jiansuo.index.IndexError_` when it holds vectors of another model or preprocessing
    (``sync_index --rebuild`` re-embeds the catalogue).
    """
    global _store
    with _lock:
        if _store is None:
            _store = open_site_store(get_extractor().describe())
        return _store


def open_site_store(model: dict, *, check: bool = True) -> VectorStore:
    """A new handle on the site's store (see :func:`get_store`), created for ``model`` when missing."""
    if connection.vendor == "postgresql":
        from jiansuo.search.pgvector import PgVectorStore

        return PgVectorStore.open(_django_connection, model=model, table=settings.JIANSUO_PG_TABLE, check=check)
    from jiansuo.search.folder import FolderStore

    return FolderStore.open(settings.JIANSUO_INDEX_PATH, model=model, check=check)


def reset_store() -> None:
    """Forget the process's store (the next call opens it again)."""
    global _store
    with _lock:
        if _store is not None:
            _store.close()
        _store = None
        _filter_tables.clear()


def _django_connection():
    """This thread's live psycopg connection, so the store takes part in Django's transactions."""
    connection.ensure_connection()
    return connection.connection


def _on_setting_changed(setting: str, **_kwargs) -> None:
    if setting in ("JIANSUO_INDEX_PATH", "JIANSUO_MODEL", "JIANSUO_MODEL_WEIGHTS", "JIANSUO_PG_TABLE",
                   "JIANSUO_PRECISION"):
        reset_store()


setting_changed.connect(_on_setting_changed)


def embed(source, box: Box | None = None) -> np.ndarray:
    """The feature vector of one query photo (bytes, a path or a decoded image), or of its part
    ``box``, as the CLI computes it."""
    return embed_query(get_extractor(), source, box=box)


def auto_box(source, whole: np.ndarray | None = None) -> Box | None:
    """The part of a query photo (bytes or a path) that matches the catalogue best, or None when the
    photo is best searched whole (:func:`jiansuo.autobox.suggest_box`, as the CLI's ``--auto-box``);
    ``whole``: the photo's own vector, when the caller has it."""
    extractor = get_extractor()
    return suggest_box(extractor, decode_for(extractor, source), catalogue_scores(get_store()), whole=whole)


# ------------------------------------------------------------------ searching


def search_products(vector: np.ndarray, k: int, filters: Filters = Filters(), *,
                    exclude: Product | None = None, min_score: float | None = None,
                    intent: str = "both", verify_photo: bytes | None = None) -> list[ProductHit]:
    """The ``k`` products most similar to ``vector`` among those matching ``filters``, ranked for
    ``intent`` as the CLI ranks (:func:`jiansuo.search.ranking.rank`: by default the product itself
    first, then products like it).

    A product with several photos counts once, with its best photo's score. With ``min_score``,
    only products scoring at least that (cosine similarity) are returned. With ``verify_photo`` (the
    query photo's bytes), the first results are checked against its pixels and the one it is a copy
    of goes first (:func:`jiansuo.search.verify.copy_first`, as ``jiansuo search --verify``).
    """
    if k <= 0:
        return []
    verify = None
    if verify_photo is not None:
        from jiansuo.features.local import extract
        from jiansuo.search.verify import copy_first

        photo, stored = extract(verify_photo), _stored_features(str(settings.MEDIA_ROOT))

        def verify(n: int, hits: list[Hit]) -> list[Hit]:
            return copy_first(hits, photo, stored)

    store = get_store()
    allowed = allowed_photos(store, filters, exclude)
    options = {name: value for name, value in (("ef", settings.JIANSUO_SEARCH_EF),
                                                ("candidates", settings.JIANSUO_SEARCH_CANDIDATES)) if value}
    query = np.asarray(vector, dtype=np.float32)[None, :]
    # Several photos may belong to one product (and one photo to several products): ask for more
    # photos than products, and more again while the photos found name too few products.
    want = 2 * k + 8
    while True:
        result = rank(store, query, want, intent=intent, mode=settings.JIANSUO_SEARCH_MODE, allowed=allowed,
                      min_score=min_score, verify=verify, **options)[0]
        hits = products_for(result.hits, filters, exclude)
        if len(hits) >= k or len(result.hits) < want:
            return hits[:k]
        want *= 4


@lru_cache(maxsize=4)
def _stored_features(media_root: str):
    """Local features of stored photos, read under ``media_root`` and kept for the process: a photo's
    file is named by its content, so its features never go stale."""
    from jiansuo.search.verify import file_features

    return file_features(media_root)


def similar_products(product: Product, k: int, filters: Filters = Filters(), *,
                     min_score: float | None = None) -> tuple[list[ProductHit], bool]:
    """(hits, indexed): products that look like ``product`` (itself excluded), by its first indexed
    photo; ``indexed`` is False while none of its photos has a vector yet."""
    store = get_store()
    files = [image.file for image in product.images.all()]
    indexed = store.contains(files)
    for file in files:
        if file in indexed:
            return search_products(store.get([file])[0], k, filters, exclude=product, min_score=min_score), True
    return [], False


def close_matches(hits: list[ProductHit]) -> tuple[list[ProductHit], int]:
    """(the hits a page shows, how many it hides): those scoring at least ``JIANSUO_MIN_SIMILARITY``
    are close matches; the others are not worth a shopper's look."""
    close = [h for h in hits if h.score >= settings.JIANSUO_MIN_SIMILARITY]
    return close, len(hits) - len(close)


def match_level(score: float) -> str:
    """How alike a result is, in words a shopper gets: ``very_similar`` (from ``JIANSUO_VERY_SIMILAR``),
    ``similar`` (from ``JIANSUO_MIN_SIMILARITY``) or ``weak`` (below: the pages hide it)."""
    if score >= settings.JIANSUO_VERY_SIMILAR:
        return "very_similar"
    if score >= settings.JIANSUO_MIN_SIMILARITY:
        return "similar"
    return "weak"


def products_for(photo_hits: list[Hit], filters: Filters = Filters(), exclude: Product | None = None) -> list[ProductHit]:
    """Photo hits (in ranking order) as product hits matching ``filters``: each product once, where its
    first photo ranks, with that photo's score."""
    position = {h.id: n for n, h in reversed(list(enumerate(photo_hits)))}
    score_of = {h.id: h.score for h in photo_hits}
    keys = list(position)
    best: dict[int, tuple[int, ProductHit]] = {}
    for start in range(0, len(keys), _CHUNK):
        # Looked up by photo (a few rows of an index) and filtered here: with the filters in the query,
        # SQLite's planner may walk every product of the category instead.
        for row in ProductImage.objects.filter(file__in=keys[start:start + _CHUNK]).select_related("product"):
            if (exclude is not None and row.product_id == exclude.pk) or not filters.matches(row.product):
                continue
            current = best.get(row.product_id)
            if current is None or position[row.file] < current[0]:
                best[row.product_id] = (position[row.file], ProductHit(row.product, score_of[row.file], row.file))
    return [hit for _, hit in sorted(best.values(), key=lambda p: (p[0], p[1].product.item_id))]


def allowed_photos(store: VectorStore, filters: Filters = Filters(), exclude: Product | None = None) -> Allowed:
    """The photos a search restricted by ``filters`` (and not returning ``exclude``) may find, in the
    form ``store`` takes: None (every photo), SQL run inside a PostgreSQL search, or a row mask.

    The mask comes from a table of every (photo, product) pair kept in memory until the catalogue
    or the store changes, so a filtered search scans no database table.
    """
    if not filters.active and exclude is None:
        return None
    if store.kind == "pgvector":
        photos = ProductImage.objects.filter(filters.q("product__"))
        if exclude is not None:
            photos = photos.exclude(product=exclude)
        sql, params = photos.order_by().values("file").query.sql_with_params()
        return SqlRows(sql, tuple(params))
    return _filter_table(store).mask(filters, exclude)


class _FilterTable:
    """Every (photo row, product) pair with the product's category and price, for one catalogue version."""

    def __init__(self, store: VectorStore):
        pos = {pid: n for n, pid in enumerate(store.ids())}
        rows = [(pos[f], p, c, int(price * 100)) for f, p, c, price in
                ProductImage.objects.filter(product__hidden=False)
                .values_list("file", "product_id", "product__category", "product__price")
                if f in pos]
        self.size = len(pos)
        self.categories = {c: n for n, c in enumerate(sorted({r[2] for r in rows}))}
        self.row = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        self.product = np.fromiter((r[1] for r in rows), np.int64, len(rows))
        self.category = np.fromiter((self.categories[r[2]] for r in rows), np.int32, len(rows))
        self.cents = np.fromiter((r[3] for r in rows), np.int64, len(rows))

    def mask(self, filters: Filters, exclude: Product | None) -> np.ndarray:
        keep = np.ones(len(self.row), dtype=bool)
        if filters.category:
            keep &= self.category == self.categories.get(filters.category, -1)
        if filters.min_price is not None:
            keep &= self.cents >= int(filters.min_price * 100)
        if filters.max_price is not None:
            keep &= self.cents <= int(filters.max_price * 100)
        if exclude is not None:
            keep &= self.product != exclude.pk
        mask = np.zeros(self.size, dtype=bool)
        mask[self.row[keep]] = True
        return mask


_filter_tables: dict[tuple, _FilterTable] = {}


def _filter_table(store: VectorStore) -> _FilterTable:
    # The store's generation moves with every vector change, the catalogue version (kept by database
    # triggers) with every product or photo change, from any process.
    key = (store.location, store.generation, CatalogVersion.current())
    with _lock:
        table = _filter_tables.get(key)
    if table is None:
        table = _FilterTable(store)
        with _lock:
            _filter_tables.clear()
            _filter_tables[key] = table
    return table
