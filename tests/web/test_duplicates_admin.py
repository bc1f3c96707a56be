"""The admin's possible-duplicates page: a re-listed photo is shown with its original, and hiding one
product of the pair takes it out of search results, similar products, its page and the API."""

from __future__ import annotations

from django.urls import reverse
from rest_framework.test import APIClient

from jiansuo.web.catalog import services
from jiansuo.web.catalog.models import Product
from jiansuo.web.catalog.search import Filters, embed, search_products, similar_products
from tests.conftest import real_photo

from .support import CatalogTestCase, add_product, on_postgresql


class DuplicatesAdminTests(CatalogTestCase):
    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        # Another shop re-lists the cat photo, cropped and re-encoded.
        cat = real_photo("chelsea")
        w, h = cat.size
        cls.copy = add_product("cat-copy", cat.crop((w // 12, h // 10, w - w // 10, h - h // 12)),
                               "animals", "99.00")
        services.sync_index()

    def page(self):
        return self.client.get(reverse("admin:catalog_product_duplicates"))

    def test_staff_see_the_pair_with_thumbnails_and_score(self):
        self.login(self.staff)
        response = self.page()
        self.assertEqual(response.status_code, 200)
        groups = response.context["groups"]
        self.assertEqual([sorted(l.product.item_id for l in g.listings) for g in groups], [["cat-1", "cat-copy"]])
        self.assertGreaterEqual(groups[0].score, 0.75)
        for listing in groups[0].listings:
            self.assertContains(response, f'src="{listing.photo.url}"')
        self.assertContains(response, f"{groups[0].score:.3f}")

    def test_non_staff_are_refused(self):
        self.login(self.user)
        response = self.page()
        self.assertEqual(response.status_code, 302)
        self.assertIn(reverse("admin:login"), response.url)

    def test_hiding_one_product_removes_it_everywhere(self):
        query = embed(real_photo("chelsea"))
        self.assertIn("cat-copy", [h.product.item_id for h in search_products(query, 3)])
        self.login(self.staff)
        response = self.client.post(reverse("admin:catalog_product_duplicates"), {"hide": self.copy.pk})
        self.assertEqual(response.status_code, 302)
        self.assertTrue(Product.objects.get(pk=self.copy.pk).hidden)
        self.assertEqual(self.page().context["groups"], [])  # the pair is settled
        # Search results, filtered or not; similar products; the product page; the API.
        self.assertNotIn("cat-copy", [h.product.item_id for h in search_products(query, 9)])
        self.assertNotIn("cat-copy", [h.product.item_id for h in search_products(query, 9, Filters(category="animals"))])
        similar, _ = similar_products(self.products["cat-1"], 9)
        self.assertNotIn("cat-copy", [h.product.item_id for h in similar])
        self.assertEqual(self.client.get(reverse("catalog:product", args=["cat-copy"])).status_code, 404)
        api = APIClient()
        api.force_authenticate(self.user)
        self.assertEqual(api.get("/api/products/cat-copy").status_code, 404)
        body = api.get("/api/products/cat-1/similar", {"k": 9, "min_score": 0}).json()
        self.assertNotIn("cat-copy", [r["item_id"] for r in body["results"]])
        # The original stays.
        self.assertEqual(search_products(query, 1)[0].product.item_id, "cat-1")

    def test_admin_action_hides_selected_products(self):
        self.login(self.staff)
        self.client.post(reverse("admin:catalog_product_changelist"),
                         {"action": "hide_products", "_selected_action": [self.copy.pk]})
        self.assertTrue(Product.objects.get(pk=self.copy.pk).hidden)


PostgresDuplicatesAdminTests = on_postgresql(DuplicatesAdminTests)
