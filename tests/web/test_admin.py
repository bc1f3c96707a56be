"""Managing the catalogue in the admin: every change reaches the search index without a rebuild."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from jiansuo.web.catalog.models import Product, ProductImage
from jiansuo.web.catalog.search import embed, search_products
from tests.conftest import real_photo

from .support import CatalogTestCase, jpeg_bytes, on_postgresql


def inline(prefix: str = "images", total: int = 1, initial: int = 0, **rows) -> dict:
    data = {f"{prefix}-TOTAL_FORMS": str(total), f"{prefix}-INITIAL_FORMS": str(initial),
            f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"}
    data.update({f"{prefix}-{k}": v for k, v in rows.items()})
    return data


class AdminTests(CatalogTestCase):
    def setUp(self):
        self.login(self.staff)

    def product_form(self, **overrides) -> dict:
        data = {"item_id": "moon-1", "title": "Moon lamp", "category": "lights", "price": "88.00",
                "currency": "CNY", "shop": "Night shop", "url": "https://shop.example.com/moon-1"}
        data.update(overrides)
        return data

    def search_first(self, photo_name: str) -> str:
        return search_products(embed(real_photo(photo_name)), 1)[0].product.item_id

    def add_moon(self):
        upload = SimpleUploadedFile("moon.jpg", jpeg_bytes(real_photo("moon")), content_type="image/jpeg")
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post(reverse("admin:catalog_product_add"), {
                **self.product_form(), **inline(**{"0-upload": upload, "0-position": "0"}),
            })
        self.assertEqual(response.status_code, 302, getattr(response, "context", None) and
                         response.context.get("errors"))
        return Product.objects.get(item_id="moon-1")

    def test_only_staff_may_manage_the_catalogue(self):
        self.login(self.user)
        response = self.client.get(reverse("admin:catalog_product_changelist"))
        self.assertEqual(response.status_code, 302)
        self.assertIn(reverse("admin:login"), response.url)
        self.login(self.staff)
        self.assertContains(self.client.get(reverse("admin:catalog_product_changelist")), "cat-1")

    def test_adding_a_product_indexes_its_photo(self):
        before = set(self.index_ids)
        product = self.add_moon()
        photo = product.images.get()
        self.assertEqual(self.index_ids - before, {photo.file})
        self.assertTrue((Path(settings.MEDIA_ROOT) / photo.file).is_file())
        self.assertEqual(self.search_first("moon"), "moon-1")

    def test_changing_the_photo_replaces_it_in_the_index(self):
        product = self.add_moon()
        old = product.images.get()
        upload = SimpleUploadedFile("coins.png", jpeg_bytes(real_photo("coins")), content_type="image/png")
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post(reverse("admin:catalog_product_change", args=[product.pk]), {
                **self.product_form(price="99.00"),
                **inline(total=2, initial=1, **{"0-id": str(old.pk), "0-product": str(product.pk),
                                                "0-position": "0", "0-DELETE": "on",
                                                "1-upload": upload, "1-position": "1"}),
            })
        self.assertEqual(response.status_code, 302)
        new = product.images.get()
        self.assertNotIn(old.file, self.index_ids)
        self.assertIn(new.file, self.index_ids)
        self.assertFalse((Path(settings.MEDIA_ROOT) / old.file).exists())
        self.assertEqual(self.search_first("coins"), "moon-1")
        self.assertEqual(Product.objects.get(pk=product.pk).price, 99)

    def test_deleting_a_product_removes_its_photo_unless_shared(self):
        product = self.add_moon()
        photo = product.images.get()
        # A second product with the very same photo: the file and vector stay while it uses them.
        twin = Product.objects.create(item_id="moon-2", title="Moon lamp, again", price=1)
        ProductImage.objects.create(product=twin, file=photo.file, sha256=photo.sha256)
        with self.captureOnCommitCallbacks(execute=True):
            self.client.post(reverse("admin:catalog_product_delete", args=[product.pk]), {"post": "yes"})
        self.assertFalse(Product.objects.filter(pk=product.pk).exists())
        self.assertIn(photo.file, self.index_ids)
        self.assertEqual(self.search_first("moon"), "moon-2")
        with self.captureOnCommitCallbacks(execute=True):
            self.client.post(reverse("admin:catalog_product_changelist"), {
                "action": "delete_selected", "_selected_action": [str(twin.pk)], "post": "yes"})
        self.assertFalse(Product.objects.filter(pk=twin.pk).exists())
        self.assertNotIn(photo.file, self.index_ids)
        self.assertFalse((Path(settings.MEDIA_ROOT) / photo.file).exists())

    def test_a_non_image_upload_is_refused_and_nothing_is_saved(self):
        upload = SimpleUploadedFile("evil.jpg", b"<?php echo 'hi'; ?>", content_type="image/jpeg")
        before = set(self.index_ids)
        response = self.client.post(reverse("admin:catalog_product_add"), {
            **self.product_form(), **inline(**{"0-upload": upload, "0-position": "0"}),
        })
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "not a usable image")
        self.assertFalse(Product.objects.filter(item_id="moon-1").exists())
        self.assertEqual(set(self.index_ids), before)

    def test_a_product_needs_a_photo_file_in_each_new_row(self):
        response = self.client.post(reverse("admin:catalog_product_add"), {
            **self.product_form(), **inline(**{"0-position": "0", "0-upload": ""}),
        })
        self.assertContains(response, "Choose a photo file")

    def test_the_same_photo_twice_is_refused(self):
        data = jpeg_bytes(real_photo("moon"))
        response = self.client.post(reverse("admin:catalog_product_add"), {
            **self.product_form(), **inline(total=2, **{
                "0-upload": SimpleUploadedFile("a.jpg", data), "0-position": "0",
                "1-upload": SimpleUploadedFile("b.jpg", data), "1-position": "1"}),
        })
        self.assertContains(response, "The same photo was given twice")

    def test_admin_pages_render(self):
        product = self.products["cat-1"]
        self.assertContains(self.client.get(reverse("admin:catalog_product_change", args=[product.pk])),
                            product.images.first().url)
        self.assertEqual(self.client.get(reverse("admin:catalog_product_add")).status_code, 200)
        self.assertContains(self.client.get(reverse("admin:catalog_product_changelist"), {"q": "coffee"}), "coffee-1")


AdminTestsOnPostgreSQL = on_postgresql(AdminTests)
