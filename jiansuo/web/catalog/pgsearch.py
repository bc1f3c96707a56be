"""PostgreSQL backend: photo features, projections and hash codes in a pgvector table, searched in SQL.

The table (:class:`~.models.PhotoFeature`) holds per photo file its feature as ``halfvec(1280)``
(float16, half the space of ``vector``), and, once a layer is trained, a 128-d projection of it
(``halfvec(128)``) and a 128-bit code (``bit(128)``), each with an HNSW index. A search is one SQL
statement that joins the photos to their products, applies the category and price filters and
orders by distance, so the database does the whole search and any number of web processes and
indexing workers on any number of machines share one index. ``JIANSUO_PG_SEARCH`` chooses how:

- ``hnsw``: ``ORDER BY embedding <=> query LIMIT n`` on the HNSW index of the features (cosine);
- ``pca``: coarse to fine, as the embedded ANN index does it: an inner query takes the photos
  nearest the query in the 128-d projection (``latent <-> query_latent``, its HNSW index), the outer
  query re-ranks only those by the full feature's cosine distance;
- ``hash``: coarse to fine by Hamming distance: the inner query orders by ``code <~> query_code``
  (the codes' HNSW index), the outer query re-ranks by the feature;
- ``auto`` (default): ``pca`` once a layer is trained, ``hnsw`` before.

The projection and the codes come from :mod:`jiansuo.hashing`: an ITQ layer
(:func:`jiansuo.hashing.itq.train_itq`, the unsupervised path: PCA to 128 dimensions and a learnt
rotation; the code is the sign bits) trained on the catalogue's own stored features by
``python -m jiansuo.web train_hash`` and kept in :class:`~.models.CodeLayer`. Workers compute both
for each new photo from its feature with the newest layer, so adding photos never needs retraining.
bench/ann.py measures the three on the same million vectors.

Filters and HNSW: an HNSW scan visits ``hnsw.ef_search`` graph entries and stops, so a filter
that rejects most photos could leave fewer results than asked for. pgvector 0.8's
``hnsw.iterative_scan`` continues the scan until the filtered results are complete (up to
``hnsw.max_scan_tuples``); both are set per query, inside the search's transaction.
"""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import numpy as np
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.models import TextField
from django.db.models.functions import Cast
from pgvector import HalfVector
from pgvector.django import CosineDistance, HammingDistance, L2Distance

from jiansuo.hashing.codes import pack_bits, unpack_bits
from jiansuo.hashing.itq import train_itq
from jiansuo.hashing.layer import HashLayer
from jiansuo.index import ItemInfo

from .models import CODE_BITS, FEATURE_DIM, CodeLayer, PhotoFeature, Product, ProductImage, files_among
from .search import Filters, ProductHit, SearchBackend

log = logging.getLogger(__name__)

_CHUNK = 1000
# Rows per INSERT when storing features (each carries ~13 kB of vector text).
_WRITE_BATCH = 200
# pgvector refuses ef_search above this.
_MAX_EF_SEARCH = 1000
#: Candidates the coarse step passes to the exact re-rank, per mode (JIANSUO_PG_CANDIDATES overrides):
#: measured by bench/ann.py for recall@10 of about 0.97 on a million vectors.
DEFAULT_CANDIDATES = {"pca": 64, "hash": 400}


class PgVectorBackend(SearchBackend):
    """Search backend on PostgreSQL with pgvector (see the module docstring)."""

    def __init__(self, model: str, weights: str | None = None):
        super().__init__(model, weights)
        if self.extractor.dim != FEATURE_DIM:
            raise ImproperlyConfigured(
                f"the PostgreSQL feature column holds {FEATURE_DIM}-d vectors, but JIANSUO_MODEL={model} gives "
                f"{self.extractor.dim}-d ones; use a {FEATURE_DIM}-d model (efficientnet-lite0) with PostgreSQL")
        self._layer: tuple[int, HashLayer] | None = None

    # -------------------------------------------------------------- the hash layer

    def code_layer(self) -> tuple[int, HashLayer] | None:
        """(id, layer) of the newest hash layer, or None before one is trained (cached per process)."""
        newest = CodeLayer.objects.values_list("id", flat=True).first()
        if newest is None:
            return None
        if self._layer is None or self._layer[0] != newest:
            self._layer = (newest, HashLayer.from_bytes(bytes(CodeLayer.objects.get(pk=newest).data)))
        return self._layer

    # -------------------------------------------------------------- the stored vectors

    def add(self, infos: Sequence[ItemInfo], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(infos), FEATURE_DIM):
            raise ValueError(f"expected vectors of shape ({len(infos)}, {FEATURE_DIM}), got {vectors.shape}")
        if not np.all(np.isfinite(vectors)):
            raise ValueError("refusing to store non-finite feature values")
        layer = self.code_layer()
        latents, codes = _encode(layer[1], vectors) if layer else ([None] * len(infos), [None] * len(infos))
        rows = [PhotoFeature(file=info.id, embedding=HalfVector(v), latent=lat, code=c, layer_id=layer and layer[0])
                for info, v, lat, c in zip(infos, vectors, latents, codes)]
        # An upsert: a photo embedded twice (a retried task) keeps one row, the latest.
        PhotoFeature.objects.bulk_create(rows, batch_size=_WRITE_BATCH, update_conflicts=True, unique_fields=["file"],
                                         update_fields=["embedding", "latent", "code", "layer", "updated"])

    def remove(self, photo_ids: Iterable[str]) -> int:
        keys = list(photo_ids)
        removed = 0
        for start in range(0, len(keys), _CHUNK):
            removed += PhotoFeature.objects.filter(file__in=keys[start:start + _CHUNK]).delete()[0]
        return removed

    def photo_ids(self) -> set[str]:
        return set(PhotoFeature.objects.values_list("file", flat=True))

    def indexed(self, photo_ids: Iterable[str]) -> set[str]:
        return files_among(PhotoFeature.objects.all(), list(photo_ids), _CHUNK)

    def vector_of(self, photo_id: str) -> np.ndarray | None:
        value = PhotoFeature.objects.filter(file=photo_id).values_list("embedding", flat=True).first()
        return None if value is None else np.asarray(value, dtype=np.float32)

    def maintain(self) -> None:
        recode()

    # -------------------------------------------------------------- searching

    def search(self, vector: np.ndarray, k: int, filters: Filters = Filters(), *,
               exclude: Product | None = None) -> list[ProductHit]:
        if k <= 0:
            return []
        photos = ProductImage.objects.filter(filters.q("product__"))
        if exclude is not None:
            photos = photos.exclude(product=exclude)
        query = np.asarray(vector, dtype=np.float32)
        # Several photos may belong to one product: ask for more photos than products, and more
        # again while the photos found so far name too few products.
        want = 2 * k + 8
        while True:
            rows = self.nearest_photos(photos, query, want)
            best: dict[int, ProductHit] = {}
            for row in rows:
                if row.product_id not in best:  # rows come best first
                    best[row.product_id] = ProductHit(row.product, 1.0 - float(row.distance), row.file)
            hits = sorted(best.values(), key=lambda h: (-h.score, h.product.item_id))
            if len(hits) >= k or len(rows) < want:
                return hits[:k]
            want *= 4

    def mode(self) -> tuple[str, tuple[int, HashLayer] | None]:
        """(how searches run now, the layer they use): JIANSUO_PG_SEARCH with ``auto`` resolved."""
        wanted = settings.JIANSUO_PG_SEARCH
        layer = self.code_layer() if wanted != "hnsw" else None
        if layer is None:
            if wanted in ("pca", "hash"):
                log.warning("JIANSUO_PG_SEARCH=%s needs a trained layer (python -m jiansuo.web train_hash): "
                            "searching with hnsw", wanted)
            return "hnsw", None
        return ("pca" if wanted == "auto" else wanted), layer

    def nearest_photos(self, photos, query: np.ndarray, n: int) -> list[ProductImage]:
        """The ``n`` rows of ``photos`` (a ProductImage queryset) nearest ``query``, best first, each
        with its product and ``distance`` (cosine distance of its feature); one SQL statement."""
        mode, layer = self.mode()
        target = HalfVector(query)
        ef = settings.JIANSUO_PG_EF_SEARCH
        if layer is None:
            candidates = photos.filter(feature__isnull=False)
        else:
            # Coarse: the pool nearest by projection or code (photos coded with this layer only).
            pool = max(settings.JIANSUO_PG_CANDIDATES or DEFAULT_CANDIDATES[mode], n)
            ef = max(ef, pool)
            latents, codes = _encode(layer[1], query[None, :])
            coarse_distance = (L2Distance("feature__latent", latents[0]) if mode == "pca"
                               else HammingDistance("feature__code", codes[0]))
            coarse = photos.filter(feature__layer_id=layer[0]).order_by(coarse_distance).values("pk")[:pool]
            candidates = ProductImage.objects.filter(pk__in=coarse)
        found = (candidates.annotate(distance=CosineDistance("feature__embedding", target))
                 .select_related("product").order_by("distance")[:n])
        with transaction.atomic(), connection.cursor() as cursor:
            # Per transaction (SET LOCAL): enough of the graph to return n rows after filtering.
            cursor.execute("SELECT set_config('hnsw.ef_search', %s, true), "
                           "set_config('hnsw.iterative_scan', 'relaxed_order', true)",
                           [str(min(_MAX_EF_SEARCH, max(ef, n)))])
            rows = list(found)
        # relaxed_order may return rows slightly out of order: sort the few we have.
        return sorted(rows, key=lambda r: (r.distance, r.pk))


# ------------------------------------------------------------------ training and applying hash layers


def train_code_layer(bits: int = CODE_BITS, *, sample: int = 20_000, seed: int = 0) -> CodeLayer:
    """Train an ITQ hash layer on (a random sample of) the stored features and make it current.

    Codes of existing rows are then recomputed by :func:`recode`. Needs more photos than bits.
    """
    if bits != CODE_BITS:
        raise ValueError(f"the code column holds {CODE_BITS} bits")
    count = PhotoFeature.objects.count()
    if count <= bits:
        raise ValueError(f"training a {bits}-bit layer needs more than {bits} indexed photos; there are {count}")
    features = _as_matrix(PhotoFeature.objects.order_by("?").annotate(text=Cast("embedding", TextField()))
                          .values_list("text", flat=True)[:sample])
    layer = train_itq(features, bits, seed=seed)
    return CodeLayer.objects.create(kind=layer.kind, bits=layer.bits, fingerprint=layer.fingerprint(),
                                    trained_on=len(features), data=layer.to_bytes())


def recode(batch: int = 2000, progress=None) -> int:
    """Recompute projections and codes of rows not coded with the newest layer (from their features).

    Returns how many rows were updated; ``progress(done)`` is called after each batch.
    """
    newest = CodeLayer.objects.first()
    if newest is None:
        return 0
    layer = HashLayer.from_bytes(bytes(newest.data))
    done = 0
    while True:
        stale = list(PhotoFeature.objects.exclude(layer=newest).order_by("file")
                     .annotate(text=Cast("embedding", TextField())).values_list("file", "text")[:batch])
        if not stale:
            return done
        files = [f for f, _ in stale]
        latents, codes = _encode(layer, _as_matrix(t for _, t in stale))
        rows = [PhotoFeature(file=f, latent=lat, code=c, layer=newest) for f, lat, c in zip(files, latents, codes)]
        PhotoFeature.objects.bulk_update(rows, ["latent", "code", "layer"], batch_size=500)
        done += len(rows)
        if progress:
            progress(done)


def _as_matrix(texts: Iterable[str]) -> np.ndarray:
    """Stored features in their text form ('[0.1,0.2,…]', cheaper to parse than lists) as a float32 matrix."""
    rows = [np.array(t[1:-1].split(","), dtype=np.float32) for t in texts]
    return np.stack(rows) if rows else np.zeros((0, FEATURE_DIM), dtype=np.float32)


def _encode(layer: HashLayer, vectors: np.ndarray) -> tuple[list[HalfVector], list[str]]:
    """The layer's projections of ``vectors`` and their codes (sign bits, as '0101…' strings)."""
    latent = layer.latent(vectors).astype(np.float32)
    bits = unpack_bits(pack_bits(latent > 0), layer.bits)
    return [HalfVector(v) for v in latent], ["".join("1" if b else "0" for b in row) for row in bits]
