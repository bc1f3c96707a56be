"""The site on PostgreSQL: its vectors in the core's pgvector store, HNSW index use with filters,
coarse-to-fine codes.

The site's search, API and admin tests also run on PostgreSQL (their ``...OnPostgreSQL`` copies);
these tests check what only PostgreSQL has. The migrations are checked on both databases.
"""

from __future__ import annotations

import unittest
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection
from django.test import TestCase, override_settings
from PIL import Image

from jiansuo.index import ItemInfo
from jiansuo.search.folder import FolderStore
from jiansuo.search.pgvector import CODE_BITS, PgVectorStore
from jiansuo.web.catalog.models import CatalogVersion, Product, ProductImage
from jiansuo.web.catalog.search import Filters, allowed_photos, embed, get_store, search_products
from tests.conftest import PHOTO_NAMES, real_photo

from .support import CATALOGUE, NO_POSTGRES, PG_URL, CatalogTestCase, OnPostgreSQL, add_product, query_photo


class MigrationTests(TestCase):
    databases = "__all__"  # makemigrations checks the history of every database

    def test_models_and_migrations_agree(self):
        out = StringIO()
        call_command("makemigrations", "--check", "--dry-run", stdout=out)
        self.assertIn("No changes detected", out.getvalue())

    def test_sqlite_keeps_vectors_in_the_index_folder(self):
        tables = set(connection.introspection.table_names())
        self.assertIn("catalog_indextask", tables)
        self.assertFalse({"catalog_photofeature", "catalog_codelayer", "jiansuo_vectors"} & tables)
        self.assertIsInstance(get_store(), FolderStore)

    def test_every_change_to_the_catalogue_moves_its_version(self):
        before = CatalogVersion.current()
        product = Product.objects.create(item_id="v-1", title="Versioned", price=1)
        self.assertGreater(CatalogVersion.current(), before)
        after_create = CatalogVersion.current()
        Product.objects.filter(pk=product.pk).update(price=2)  # a bulk update sends no signal: the trigger sees it
        self.assertGreater(CatalogVersion.current(), after_create)
        after_update = CatalogVersion.current()
        ProductImage.objects.bulk_create([ProductImage(product=product, file="products/x.jpg", sha256="0" * 64)])
        self.assertGreater(CatalogVersion.current(), after_update)


class SearchHelpers:
    def query_vector(self, name: str = "chelsea") -> np.ndarray:
        return embed(query_photo(name))

    def exact_order(self, vector: np.ndarray, item_ids) -> list[str]:
        """Products ranked by the cosine of their stored (float16) vector, computed in numpy."""
        store = get_store()
        scores = {i: float(store.get([self.products[i].images.get().file])[0] @ vector) for i in item_ids}
        return sorted(scores, key=lambda i: -scores[i])

    def plan_as_for_a_large_table(self):
        """Make PostgreSQL plan as it would for millions of photos, where reading every row and sorting
        is far dearer than walking an HNSW graph (undone with the test's transaction)."""
        with connection.cursor() as cursor:
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("SET enable_sort = off")


@pytest.mark.postgres
@unittest.skipUnless(PG_URL, NO_POSTGRES)
class PgVectorStoreTests(SearchHelpers, OnPostgreSQL, CatalogTestCase):
    def test_vectors_are_pgvector_columns_of_the_core_store(self):
        store = get_store()
        self.assertIsInstance(store, PgVectorStore)
        self.assertEqual(self.index_ids, set(ProductImage.objects.values_list("file", flat=True)))
        self.assertEqual(len(store), len(CATALOGUE))
        with connection.cursor() as cursor:
            cursor.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                           "WHERE attrelid = %s::regclass AND attname IN ('embedding', 'code')", [self.vector_table])
            self.assertEqual(dict(cursor.fetchall()), {"embedding": "halfvec(1280)", "code": f"bit({CODE_BITS})"})
            cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [self.vector_table])
            indexes = dict(cursor.fetchall())
        self.assertIn("USING hnsw (embedding halfvec_cosine_ops)", indexes[f"{self.vector_table}_embedding_hnsw"])
        self.assertIn("USING hnsw (code bit_hamming_ops)", indexes[f"{self.vector_table}_code_hnsw"])
        stored = store.get([self.products["cat-1"].images.get().file])[0]
        self.assertEqual(stored.shape, (1280,))
        self.assertAlmostEqual(float(np.linalg.norm(stored)), 1.0, places=2)

    def test_the_filters_run_inside_the_search_that_walks_the_hnsw_index(self):
        vector = self.query_vector("chelsea")
        store = get_store()
        filters = Filters(min_price=10, max_price=300)
        self.plan_as_for_a_large_table()
        plan = store.explain(vector, 5, mode="ann", allowed=allowed_photos(store, filters))
        self.assertIn(f"{self.vector_table}_embedding_hnsw", plan)
        self.assertIn("catalog_product", plan)  # the filter is part of the same statement
        with override_settings(JIANSUO_SEARCH_MODE="ann"):
            hits = search_products(vector, 5, filters, intent="same")  # the plain ranking: by score alone
            # A filter that leaves two products: the scan goes on until it has found them (iterative scan).
            posters = search_products(vector, 5, Filters(category="posters"))
        expected = ["astro-1", "cat-1", "cells-1", "coffee-1", "stars-1", "wheel-1"]
        self.assertEqual([h.product.item_id for h in hits], self.exact_order(vector, expected)[:5])
        self.assertEqual(hits[0].product.item_id, "cat-1")
        self.assertEqual(sorted(h.product.item_id for h in posters), ["astro-1", "stars-1"])

    def test_a_small_catalogue_is_searched_exactly(self):
        store = get_store()
        self.assertEqual(store.resolve_mode("auto"), "exact")
        self.assertNotIn("hnsw", store.explain(self.query_vector(), 5))

    def test_scores_are_cosine_similarities_of_the_stored_vectors(self):
        vector = self.query_vector("rocket")
        hits = search_products(vector, len(CATALOGUE), intent="same")
        self.assertEqual([h.product.item_id for h in hits], self.exact_order(vector, self.products))
        for hit in hits:
            expected = float(get_store().get([hit.image])[0] @ vector)
            self.assertAlmostEqual(hit.score, expected, places=2)

    def test_a_photo_shared_by_two_products_finds_both(self):
        cat = self.products["cat-1"].images.get()
        twin = Product.objects.create(item_id="cat-2", title="Same cat", price=5, category="animals")
        ProductImage.objects.create(product=twin, file=cat.file, sha256=cat.sha256)
        hits = search_products(self.query_vector("chelsea"), 2)
        self.assertEqual({h.product.item_id for h in hits}, {"cat-1", "cat-2"})
        self.assertEqual(get_store().contains([cat.file]), {cat.file})

    def test_training_a_hash_layer_needs_enough_photos(self):
        out = StringIO()
        with self.assertRaisesMessage(Exception, f"needs more than {CODE_BITS} indexed photos; there are 8"):
            call_command("train_hash", stdout=out)
        self.assertIsNone(get_store().hash_layer())
        with self.assertRaisesMessage(Exception, "needs a trained hash layer"):
            get_store().search(self.query_vector()[None], 3, mode="pca")


@pytest.mark.postgres
@unittest.skipUnless(PG_URL, NO_POSTGRES)
class CoarseToFineTests(SearchHelpers, OnPostgreSQL, CatalogTestCase):
    """Projections and codes on a catalogue big enough to train them: real photos plus variants of
    their features."""

    VARIANTS = 20

    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        store = get_store()
        names = [n for n in PHOTO_NAMES if n not in {photo for _, photo, *_ in CATALOGUE}]
        for n, name in enumerate(names):
            add_product(f"extra-{n}", name, category="extra", price="1.00")
        from jiansuo.web.catalog import services

        services.sync_index()
        # Variants of every real feature (real features plus small noise, re-normalised): products whose
        # photos look alike, as in a large catalogue, without storing thousands of files.
        ids = store.ids()
        vectors = store.get(ids)
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
        store.add(infos, np.stack(rows))
        cls.out = StringIO()
        call_command("train_hash", stdout=cls.out)

    def coded(self) -> tuple[int, int]:
        with connection.cursor() as cursor:
            t = self.vector_table
            cursor.execute(f"SELECT count(*), count(*) FILTER (WHERE layer_id = (SELECT max(id) FROM {t}_layers) "
                           f"AND latent IS NOT NULL AND code IS NOT NULL) FROM {t}")
            return cursor.fetchone()

    def test_every_photo_is_coded_with_the_trained_layer(self):
        layer = get_store().hash_layer()
        self.assertEqual((layer.kind, layer.bits), ("itq", CODE_BITS))
        total, coded = self.coded()
        self.assertEqual(total, coded)
        self.assertIn(f"computed {total} codes", self.out.getvalue())
        # A photo stored after training gets its code from the same layer at once.
        product = add_product("late-1", real_photo("coffee").transpose(Image.Transpose.FLIP_LEFT_RIGHT), price="3.00")
        from jiansuo.web.catalog import services

        services.sync_index(services.photo_ids_of(product))
        self.assertEqual(self.coded(), (total + 1, total + 1))

    def test_coarse_to_fine_searches_agree_with_exact_search(self):
        store = get_store()
        queries = {name: self.query_vector(name) for name in ("chelsea", "coffee", "rocket", "astronaut", "clock")}
        exact = {name: [h.product.item_id for h in search_products(v, 10)] for name, v in queries.items()}
        self.plan_as_for_a_large_table()
        for mode, index in (("pca", f"{self.vector_table}_latent_hnsw"), ("hash", f"{self.vector_table}_code_hnsw")):
            recalls = []
            for name, vector in queries.items():
                # 60 candidates of 250 photos: the coarse step has to pick the right quarter.
                with override_settings(JIANSUO_SEARCH_MODE=mode, JIANSUO_SEARCH_CANDIDATES=60):
                    found = [h.product.item_id for h in search_products(vector, 10)]
                self.assertIn(index, store.explain(vector, 10, mode=mode, candidates=60))
                self.assertEqual(found[0], exact[name][0], mode)
                recalls.append(len(set(exact[name]) & set(found)) / 10)
            self.assertGreaterEqual(np.mean(recalls), 0.9, (mode, recalls))

    def test_coarse_to_fine_searches_apply_the_filters(self):
        vector = self.query_vector("chelsea")
        self.plan_as_for_a_large_table()
        for mode in ("pca", "hash"):
            with override_settings(JIANSUO_SEARCH_MODE=mode):
                hits = search_products(vector, 5, Filters(category="kitchen"))
            self.assertEqual(sorted(h.product.item_id for h in hits), ["clock-1", "coffee-1"], mode)
