"""The PostgreSQL backend itself: pgvector columns, HNSW index use with filters, coarse-to-fine codes.

The site's search, API and admin tests also run on PostgreSQL (their ``...OnPostgreSQL`` copies);
these tests check what only PostgreSQL has. The migrations are checked on both databases.
"""

from __future__ import annotations

import io
import unittest
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection
from django.test import TestCase, override_settings
from django.test.utils import CaptureQueriesContext
from PIL import Image

from jiansuo.index import ItemInfo
from jiansuo.web.catalog.models import CODE_BITS, CodeLayer, PhotoFeature, Product, ProductImage
from jiansuo.web.catalog.search import Filters, IndexBackend, get_backend
from tests.conftest import PHOTO_NAMES

from .support import CATALOGUE, NO_POSTGRES, PG_URL, CatalogTestCase, OnPostgreSQL, add_product, query_photo


class MigrationTests(TestCase):
    databases = "__all__"  # makemigrations checks the history of every database

    def test_models_and_migrations_agree(self):
        out = StringIO()
        call_command("makemigrations", "--check", "--dry-run", stdout=out)
        self.assertIn("No changes detected", out.getvalue())

    def test_sqlite_has_no_vector_tables_and_uses_the_index_folder(self):
        tables = set(connection.introspection.table_names())
        self.assertIn("catalog_indextask", tables)
        self.assertNotIn("catalog_photofeature", tables)
        self.assertNotIn("catalog_codelayer", tables)
        self.assertIsInstance(get_backend(), IndexBackend)


class SearchHelpers:
    def query_vector(self, name: str = "chelsea") -> np.ndarray:
        return get_backend().embed_images([Image.open(io.BytesIO(query_photo(name))).convert("RGB")])[0]

    def exact_order(self, vector: np.ndarray, item_ids) -> list[str]:
        """Products ranked by the cosine of their stored (float16) vector, computed in numpy."""
        backend = get_backend()
        scores = {i: float(backend.vector_of(self.products[i].images.get().file) @ vector) for i in item_ids}
        return sorted(scores, key=lambda i: -scores[i])

    def plan_as_for_a_large_table(self):
        """Make PostgreSQL plan as it would for millions of photos, where reading every row and sorting
        is far dearer than walking an HNSW graph (undone with the test's transaction)."""
        with connection.cursor() as cursor:
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("SET enable_sort = off")

    def explain(self, sql: str) -> str:
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN " + sql)
            return "\n".join(row[0] for row in cursor.fetchall())

    def search_statement(self, queries: CaptureQueriesContext) -> str:
        statements = [q["sql"] for q in queries.captured_queries if "<=>" in q["sql"]]
        self.assertEqual(len(statements), 1, "a search is one SQL statement")
        return statements[0]


@pytest.mark.postgres
@unittest.skipUnless(PG_URL, NO_POSTGRES)
class PgVectorBackendTests(SearchHelpers, OnPostgreSQL, CatalogTestCase):
    def test_features_and_codes_are_pgvector_columns(self):
        backend = get_backend()
        self.assertEqual(type(backend).__name__, "PgVectorBackend")
        self.assertEqual(self.index_ids, set(ProductImage.objects.values_list("file", flat=True)))
        self.assertEqual(PhotoFeature.objects.count(), len(CATALOGUE))
        with connection.cursor() as cursor:
            cursor.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                           "WHERE attrelid = 'catalog_photofeature'::regclass AND attname IN ('embedding', 'code')")
            self.assertEqual(dict(cursor.fetchall()), {"embedding": "halfvec(1280)", "code": f"bit({CODE_BITS})"})
            cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'catalog_photofeature'")
            indexes = dict(cursor.fetchall())
        self.assertIn("USING hnsw (embedding halfvec_cosine_ops)", indexes["photofeature_embedding_hnsw"])
        self.assertIn("USING hnsw (code bit_hamming_ops)", indexes["photofeature_code_hnsw"])
        stored = backend.vector_of(self.products["cat-1"].images.get().file)
        self.assertEqual(stored.shape, (1280,))
        self.assertAlmostEqual(float(np.linalg.norm(stored)), 1.0, places=2)

    def test_one_query_walks_the_hnsw_index_and_applies_the_filters(self):
        vector = self.query_vector("chelsea")
        self.plan_as_for_a_large_table()
        with CaptureQueriesContext(connection) as queries:
            hits = get_backend().search(vector, 5, Filters(min_price=10, max_price=300))
        sql = self.search_statement(queries)
        self.assertIn("photofeature_embedding_hnsw", self.explain(sql))
        self.assertIn('"catalog_product"."price" >=', sql)
        expected = ["astro-1", "cat-1", "cells-1", "coffee-1", "stars-1", "wheel-1"]
        self.assertEqual([h.product.item_id for h in hits], self.exact_order(vector, expected)[:5])
        self.assertEqual(hits[0].product.item_id, "cat-1")
        # A filter that leaves two products: the scan goes on until it has found them (iterative scan).
        posters = get_backend().search(vector, 5, Filters(category="posters"))
        self.assertEqual(sorted(h.product.item_id for h in posters), ["astro-1", "stars-1"])

    def test_scores_are_cosine_similarities_of_the_stored_vectors(self):
        vector = self.query_vector("rocket")
        hits = get_backend().search(vector, len(CATALOGUE))
        self.assertEqual([h.product.item_id for h in hits], self.exact_order(vector, self.products))
        for hit in hits:
            expected = float(get_backend().vector_of(hit.image) @ vector)
            self.assertAlmostEqual(hit.score, expected, places=2)

    def test_a_photo_shared_by_two_products_finds_both(self):
        cat = self.products["cat-1"].images.get()
        twin = Product.objects.create(item_id="cat-2", title="Same cat", price=5, category="animals")
        ProductImage.objects.create(product=twin, file=cat.file, sha256=cat.sha256)
        hits = get_backend().search(self.query_vector("chelsea"), 2)
        self.assertEqual({h.product.item_id for h in hits}, {"cat-1", "cat-2"})
        self.assertEqual(PhotoFeature.objects.filter(file=cat.file).count(), 1)

    def test_training_a_hash_layer_needs_enough_photos(self):
        out = StringIO()
        with self.assertRaisesMessage(Exception, f"needs more than {CODE_BITS} indexed photos; there are 8"):
            call_command("train_hash", stdout=out)
        self.assertFalse(CodeLayer.objects.exists())
        self.assertFalse(PhotoFeature.objects.filter(code__isnull=False).exists())
        self.assertEqual(get_backend().mode(), ("hnsw", None))


@pytest.mark.postgres
@unittest.skipUnless(PG_URL, NO_POSTGRES)
class CoarseToFineTests(SearchHelpers, OnPostgreSQL, CatalogTestCase):
    """Projections and codes on a catalogue big enough to train them: real photos plus variants of
    their features."""

    VARIANTS = 20

    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        backend = get_backend()
        names = [n for n in PHOTO_NAMES if n not in {photo for _, photo, *_ in CATALOGUE}]
        for n, name in enumerate(names):
            add_product(f"extra-{n}", name, category="extra", price="1.00")
        from jiansuo.web.catalog import services

        services.sync_index()
        # Variants of every real feature (real features plus small noise, re-normalised): products whose
        # photos look alike, as in a large catalogue, without storing thousands of files.
        ids, vectors = zip(*[(f, backend.vector_of(f)) for f in backend.photo_ids()])
        rng = np.random.default_rng(0)
        infos, rows = [], []
        for n in range(cls.VARIANTS * len(ids)):
            base = vectors[n % len(ids)]
            v = base + rng.normal(0, 0.01, base.shape).astype(np.float32)
            rows.append(v / np.linalg.norm(v))
            infos.append(ItemInfo(f"variants/{n:04d}.jpg"))
            product = Product.objects.create(item_id=f"variant-{n:04d}", title=f"Variant {n}", price=n % 50,
                                             category="variants")
            ProductImage.objects.create(product=product, file=infos[-1].id, sha256="0" * 64)
        backend.add(infos, np.stack(rows))
        cls.out = StringIO()
        call_command("train_hash", stdout=cls.out)

    def test_every_photo_is_coded_with_the_trained_layer(self):
        layer = CodeLayer.objects.get()
        self.assertEqual((layer.kind, layer.bits), ("itq", CODE_BITS))
        self.assertEqual(PhotoFeature.objects.exclude(layer=layer).count(), 0)
        self.assertFalse(PhotoFeature.objects.filter(latent__isnull=True).exists())
        self.assertIn(f"recomputed {PhotoFeature.objects.count()} codes", self.out.getvalue())
        # A photo stored after training gets its code from the same layer at once.
        product = add_product("late-1", "coffee", price="3.00")
        from jiansuo.web.catalog import services

        services.sync_index(services.photo_ids_of(product))
        row = PhotoFeature.objects.get(file=product.images.get().file)
        self.assertEqual((row.layer, len(row.latent), len(row.code)), (layer, CODE_BITS, CODE_BITS))

    def test_coarse_to_fine_searches_agree_with_exact_search(self):
        backend = get_backend()
        queries = {name: self.query_vector(name) for name in ("chelsea", "coffee", "rocket", "astronaut", "clock")}
        with override_settings(JIANSUO_PG_SEARCH="hnsw"):  # 250 rows: the planner reads them all, exactly
            exact = {name: [h.product.item_id for h in backend.search(v, 10)] for name, v in queries.items()}
        self.plan_as_for_a_large_table()
        for mode, operator, index in (("pca", "<->", "photofeature_latent_hnsw"),
                                      ("hash", "<~>", "photofeature_code_hnsw")):
            recalls = []
            for name, vector in queries.items():
                # 60 candidates of 250 photos: the coarse step has to pick the right quarter.
                with override_settings(JIANSUO_PG_SEARCH=mode, JIANSUO_PG_CANDIDATES=60), \
                        CaptureQueriesContext(connection) as captured:
                    found = [h.product.item_id for h in backend.search(vector, 10)]
                sql = [q["sql"] for q in captured.captured_queries if operator in q["sql"]]
                self.assertEqual(len(sql), 1, "coarse and fine steps are one SQL statement")
                self.assertIn("<=>", sql[0])
                self.assertIn(index, self.explain(sql[0]))
                self.assertEqual(found[0], exact[name][0], mode)
                recalls.append(len(set(exact[name]) & set(found)) / 10)
            self.assertGreaterEqual(np.mean(recalls), 0.9, (mode, recalls))

    def test_auto_mode_uses_the_projection_once_trained(self):
        self.assertEqual(get_backend().mode()[0], "pca")
        with override_settings(JIANSUO_PG_SEARCH="hnsw"):
            self.assertEqual(get_backend().mode(), ("hnsw", None))

    def test_coarse_to_fine_searches_apply_the_filters(self):
        vector = self.query_vector("chelsea")
        self.plan_as_for_a_large_table()
        for mode in ("pca", "hash"):
            with override_settings(JIANSUO_PG_SEARCH=mode):
                hits = get_backend().search(vector, 5, Filters(category="kitchen"))
            self.assertEqual(sorted(h.product.item_id for h in hits), ["clock-1", "coffee-1"], mode)
