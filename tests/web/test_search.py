"""The site searches through the core's vector store, exactly as the CLI does, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np
from django.core.management import call_command
from decimal import Decimal
from pathlib import Path
from unittest import mock

from django.conf import settings
from django.db import connections
from django.test import TransactionTestCase, override_settings
from rest_framework.test import APIClient

from jiansuo.cli import main
from jiansuo.web.catalog import services
from jiansuo.web.catalog.models import Product, ProductImage
from jiansuo.web.catalog.search import Filters, embed, get_store, reset_store, search_products
from tests.conftest import real_photo

from .support import CATALOGUE, CatalogTestCase, IsolatedSiteMixin, add_product, on_postgresql, query_photo


@override_settings(JIANSUO_PUBLIC_SEARCH=True)
class SameResultsTests(IsolatedSiteMixin, TransactionTestCase):
    """The API and ``jiansuo search`` on the site's own store return the same ranking and scores.

    A TransactionTestCase: the CLI opens the store with its own connection, which sees committed rows only.
    """

    def setUp(self):
        for item, photo, category, price, currency in CATALOGUE:
            add_product(item, photo, category, price, currency)
        services.sync_index()
        self.queries = Path(self.site_dir) / "queries-in"
        self.queries.mkdir(exist_ok=True)

    def location(self) -> str:
        if get_store().kind == "folder":
            return str(settings.JIANSUO_INDEX_PATH)
        db = connections["default"].settings_dict
        return f"postgresql://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"

    def query_file(self, name: str) -> Path:
        path = self.queries / f"{name}.jpg"
        path.write_bytes(query_photo(name))
        return path

    def cli(self, path: Path, k: int) -> list[dict]:
        out = io.StringIO()
        with mock.patch.dict(os.environ, {"JIANSUO_PG_TABLE": settings.JIANSUO_PG_TABLE}), \
                contextlib.redirect_stdout(out):
            self.assertEqual(main(["search", str(path), "--index", self.location(), "--json", "-k", str(k)]), 0)
        [answer] = json.loads(out.getvalue())
        return answer

    def api(self, path: Path, k: int) -> list[tuple[str, float]]:
        with open(path, "rb") as fh:
            response = APIClient().post("/api/search", {"image": fh, "k": k}, format="multipart")
        self.assertEqual(response.status_code, 200, response.content)
        media = f"http://testserver{settings.MEDIA_URL}"
        return [(r["image_url"].removeprefix(media), r["score"]) for r in response.json()["results"]]

    def test_the_api_and_the_cli_rank_alike(self):
        for name in ("chelsea", "rocket", "clock"):
            path = self.query_file(name)
            cli = self.cli(path, len(CATALOGUE))
            site = self.api(path, len(CATALOGUE))
            self.assertEqual([file for file, _ in site], [r["id"] for r in cli["results"]], name)
            for (_, score), r in zip(site, cli["results"]):
                self.assertAlmostEqual(score, r["score"], places=3)
            self.assertEqual(cli["mode"], "exact")  # eight photos: below any ANN threshold

    def test_above_the_threshold_both_search_the_ann_index(self):
        path = self.query_file("chelsea")
        exact = self.api(path, 5)
        with mock.patch.dict(os.environ, {"JIANSUO_ANN_THRESHOLD": "4"}):
            self.assertEqual(get_store().resolve_mode("auto"), "ann")
            site = self.api(path, 5)
            cli = self.cli(path, 5)
            if get_store().kind == "folder":  # the site built (and saved) the graph the CLI then searched
                self.assertTrue((Path(settings.JIANSUO_INDEX_PATH) / "ann" / "manifest.json").is_file())
            # (On PostgreSQL, test_pgvector checks the plan walks the HNSW index; for eight rows the
            # planner rightly prefers reading them all.)
        self.assertEqual(cli["mode"], "ann")
        self.assertEqual([f for f, _ in site], [r["id"] for r in cli["results"]])
        self.assertEqual([f for f, _ in site], [f for f, _ in exact])  # a tiny graph is exact


SameResultsTestsOnPostgreSQL = on_postgresql(SameResultsTests)


class FilterTests(CatalogTestCase):
    """Category and price filters return exactly the matching products, whatever the search mode."""

    def expected(self, vector, filters: Filters) -> list[str]:
        matching = Product.objects.filter(filters.q())
        scores = {p.item_id: float(get_store().get([p.images.get().file])[0] @ vector) for p in matching}
        return sorted(scores, key=lambda i: -scores[i])

    def test_every_filter_returns_the_matching_products_best_first(self):
        vector = embed(query_photo("coffee"))
        cases = [Filters(category="kitchen"), Filters(category="posters"), Filters(category="nothing"),
                 Filters(min_price=Decimal("35.50")), Filters(max_price=Decimal("35.50")),
                 Filters(min_price=Decimal("20"), max_price=Decimal("300")),
                 Filters(category="toys", max_price=Decimal("100"))]
        for mode in ("exact", "ann"):
            with override_settings(JIANSUO_SEARCH_MODE=mode):
                for filters in cases:
                    hits = search_products(vector, len(CATALOGUE), filters, intent="same")
                    self.assertEqual([h.product.item_id for h in hits], self.expected(vector, filters), (mode, filters))
                    default = search_products(vector, len(CATALOGUE), filters)  # same products, other order
                    self.assertEqual(sorted(h.product.item_id for h in default), sorted(self.expected(vector, filters)))
                    self.assertEqual(default[:1], hits[:1])

    def test_a_filter_follows_changes_to_the_catalogue(self):
        vector = embed(query_photo("rocket"))
        self.assertNotIn("rocket-1", [h.product.item_id for h in search_products(vector, 5, Filters(category="kitchen"))])
        Product.objects.filter(item_id="rocket-1").update(category="kitchen")  # no save(), no signal
        hits = search_products(vector, 5, Filters(category="kitchen"))
        self.assertEqual(hits[0].product.item_id, "rocket-1")
        Product.objects.filter(item_id="rocket-1").update(price=Decimal("5000"))
        self.assertNotIn("rocket-1", [h.product.item_id for h in
                                      search_products(vector, 5, Filters(max_price=Decimal("2000")))])

    def test_a_photo_shared_by_products_of_two_categories(self):
        cat = self.products["cat-1"].images.get()
        twin = Product.objects.create(item_id="cat-poster", title="Cat poster", price=Decimal("15"),
                                      category="posters")
        ProductImage.objects.create(product=twin, file=cat.file, sha256=cat.sha256)
        vector = embed(query_photo("chelsea"))
        posters = [h.product.item_id for h in search_products(vector, 5, Filters(category="posters"))]
        animals = [h.product.item_id for h in search_products(vector, 5, Filters(category="animals"))]
        self.assertEqual(posters[0], "cat-poster")
        self.assertEqual(animals, ["cat-1"])
        similar = [h.product.item_id for h in search_products(vector, 3, exclude=self.products["cat-1"])]
        self.assertEqual(similar[0], "cat-poster")  # the photo stays searchable through the other product
        self.assertNotIn("cat-1", similar)

    def test_a_product_photo_added_later_is_found_with_the_filters(self):
        late = add_product("late-cat", real_photo("chelsea").rotate(90, expand=True), "animals", "7.00")
        services.sync_index(services.photo_ids_of(late))
        hits = search_products(embed(real_photo("chelsea").rotate(90, expand=True)), 2, Filters(category="animals"))
        self.assertEqual(hits[0].product.item_id, "late-cat")


FilterTestsOnPostgreSQL = on_postgresql(FilterTests)


class CategoryLayerTests(IsolatedSiteMixin, TransactionTestCase):
    """``train_hash --categories``: a supervised layer on the products' categories, judged on held-out photos."""

    def setUp(self):
        from jiansuo.datasets import fashion_mnist
        from jiansuo.demo import product_photo

        images, labels = fashion_mnist.load("test")
        rng = np.random.default_rng(0)
        n = 0
        for label, category in ((0, "T-shirts"), (1, "trousers"), (7, "sneakers")):
            for i in rng.choice(np.flatnonzero(labels == label), 50, replace=False):
                add_product(f"fm-{n}", product_photo(images[i], (40 + 20 * label, 90, 160)), category, "20.00")
                n += 1
        services.sync_index()

    def test_the_layer_is_trained_judged_and_used_by_searches(self):
        out = io.StringIO()
        call_command("train_hash", "--categories", "--epochs", "30", stdout=out)
        layer = get_store().hash_layer()
        self.assertEqual((layer.kind, layer.bits), ("supervised", 128))
        self.assertEqual(len(layer.info["classes"]), 3)
        self.assertIn("held-out photos", out.getvalue())
        self.assertIn(layer.info["similar_ranking"], ("learned", "expanded"))
        probe = Product.objects.get(item_id="fm-60").images.get()
        hits = search_products(get_store().get([probe.file])[0], 10)
        self.assertEqual(hits[0].product.item_id, "fm-60")
        self.assertGreaterEqual(sum(h.product.category == "trousers" for h in hits), 8)


CategoryLayerTestsOnPostgreSQL = on_postgresql(CategoryLayerTests)


class StaleStoreTests(CatalogTestCase):
    """A store built with an older way of preparing images is refused with what to do, never mixed."""

    def test_pages_and_the_api_say_the_index_must_be_rebuilt(self):
        store = get_store()
        old = {**store.model, "version": "1", "preprocessing": "an older way"}
        store.set_meta("model", json.dumps(old, sort_keys=True))
        reset_store()
        self.login()
        with open(self.site_dir / "q.jpg", "wb") as fh:
            fh.write(query_photo("chelsea"))
        api = APIClient()
        api.force_authenticate(self.user)
        with open(self.site_dir / "q.jpg", "rb") as fh:
            response = api.post("/api/search", {"image": fh}, format="multipart")
        self.assertEqual(response.status_code, 503)
        self.assertIn("sync_index --rebuild", response.json()["error"])
        page = self.client.get("/products/cat-1/")
        self.assertEqual(page.status_code, 503)
        self.assertContains(page, "sync_index --rebuild", status_code=503)
        out = io.StringIO()
        call_command("sync_index", "--rebuild", "--no-progress", stdout=out)
        self.assertIn(f"forgot {len(CATALOGUE)} vectors", out.getvalue())
        self.assertEqual(self.client.get("/products/cat-1/").status_code, 200)
        self.assertEqual(len(get_store()), len(CATALOGUE))


StaleStoreTestsOnPostgreSQL = on_postgresql(StaleStoreTests)
