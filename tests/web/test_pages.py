"""The search pages through Django's test client: upload, results, filters, product pages, languages."""

from __future__ import annotations

import io
import re
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.contrib.auth.models import User
from django.test import Client, TestCase, override_settings
from django.urls import reverse
from PIL import Image, PngImagePlugin

from tests.conftest import real_photo

from .support import CATALOGUE, CatalogTestCase, IsolatedSiteMixin, on_postgresql, query_photo


def upload(name: str, data: bytes, content_type: str = "image/jpeg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


class SearchPageTests(CatalogTestCase):
    def search(self, data: bytes | None = None, **filters):
        return self.client.post(reverse("catalog:home"),
                                {"image": upload("q.jpg", data or query_photo("chelsea")), **filters})

    def result_ids(self, response) -> list[str]:
        return [h.product.item_id for h in response.context["hits"]]

    def test_home_asks_visitors_to_log_in_before_searching(self):
        response = self.client.get(reverse("catalog:home"))
        self.assertEqual(response.status_code, 200)
        self.assertNotContains(response, 'name="image"')
        self.assertContains(response, reverse("login"))
        response = self.search()
        self.assertEqual(response.status_code, 302)
        self.assertTrue(response.url.startswith(reverse("login")))

    @override_settings(JIANSUO_PUBLIC_SEARCH=True)
    def test_public_search_needs_no_account(self):
        response = self.search()
        self.assertEqual(response.status_code, 302)
        self.assertEqual(self.result_ids(self.client.get(response.url))[0], "cat-1")

    def test_upload_redirects_to_results_with_the_original_first(self):
        self.login()
        home = self.client.get(reverse("catalog:home"))
        self.assertContains(home, 'name="image"')
        self.assertContains(home, "data-upload")
        response = self.search()
        self.assertEqual(response.status_code, 302)
        token = re.fullmatch(r"/search/([0-9a-f]{32})/", response.url).group(1)
        page = self.client.get(response.url)
        self.assertEqual(page.status_code, 200)
        ids = self.result_ids(page)
        self.assertEqual(ids[0], "cat-1")
        self.assertEqual(sorted(ids), sorted(item for item, *_ in CATALOGUE))
        scores = [h.score for h in page.context["hits"]]
        self.assertEqual(scores, sorted(scores, reverse=True))
        # Every card shows the product's title, price, category, shop, score and listing link.
        self.assertContains(page, "Product cat-1")
        self.assertContains(page, "CN¥129.00")
        self.assertContains(page, "animals")
        self.assertContains(page, "Test shop")
        self.assertContains(page, 'href="https://shop.example.com/cat-1"')
        self.assertContains(page, 'class="score very-similar"')
        # The query photo is shown to its uploader only.
        photo = self.client.get(reverse("catalog:query_image", args=[token]))
        self.assertEqual(photo.status_code, 200)
        self.assertEqual(photo["Content-Type"], "image/jpeg")
        other = Client()
        other.force_login(self.staff)
        self.assertEqual(other.get(reverse("catalog:query_image", args=[token])).status_code, 404)
        self.assertEqual(other.get(response.url).status_code, 404)

    def test_stored_query_is_reencoded_under_a_random_name(self):
        self.login()
        # A PNG carrying a text chunk: what is stored must be a fresh JPEG without it.
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", "<script>alert(1)</script>")
        img = real_photo("coffee").resize((200, 133))
        buf = io.BytesIO()
        img.save(buf, "PNG", pnginfo=info)
        response = self.client.post(reverse("catalog:home"), {"image": upload("../../etc/passwd.png", buf.getvalue(),
                                                                               "image/png")})
        token = response.url.strip("/").split("/")[-1]
        stored = list(Path(settings.JIANSUO_QUERY_DIR).iterdir())
        self.assertIn(f"{token}.jpg", [p.name for p in stored])
        data = (Path(settings.JIANSUO_QUERY_DIR) / f"{token}.jpg").read_bytes()
        self.assertTrue(data.startswith(b"\xff\xd8"))
        self.assertNotIn(b"<script>", data)
        self.assertFalse(any("passwd" in p.name for p in stored))

    def test_non_image_upload_is_rejected_with_a_message(self):
        self.login()
        response = self.search(b"this is a text file, not a photo\n")
        self.assertEqual(response.status_code, 400)
        self.assertContains(response, "not a usable image", status_code=400)

    def test_truncated_image_is_rejected(self):
        self.login()
        response = self.search(query_photo("chelsea")[:2000])
        self.assertContains(response, "not a usable image", status_code=400)

    def test_too_large_upload_is_refused(self):
        self.login()
        huge = b"\xff\xd8" + b"\0" * (settings.JIANSUO_MAX_UPLOAD_BYTES + 200_000)
        response = self.search(huge)
        self.assertEqual(response.status_code, 413)
        self.assertContains(response, "too large", status_code=413)
        # Just over the limit: the body passes the gate, the file check still refuses it.
        response = self.search(b"\xff\xd8" + b"\0" * (settings.JIANSUO_MAX_UPLOAD_BYTES + 10))
        self.assertContains(response, "too large", status_code=400)

    def test_upload_needs_the_csrf_token(self):
        client = Client(enforce_csrf_checks=True)
        client.force_login(self.user)
        response = client.post(reverse("catalog:home"), {"image": upload("q.jpg", query_photo())})
        self.assertEqual(response.status_code, 403)

    def test_category_and_price_filters(self):
        self.login()
        first = self.search()
        posters = self.client.get(first.url, {"category": "posters"})
        self.assertEqual(sorted(self.result_ids(posters)), ["astro-1", "stars-1"])
        cheap = self.client.get(first.url, {"min_price": "10", "max_price": "60"})
        self.assertEqual(sorted(self.result_ids(cheap)), ["astro-1", "coffee-1", "stars-1", "wheel-1"])
        nothing = self.client.get(first.url, {"category": "posters", "min_price": "1000"})
        self.assertEqual(self.result_ids(nothing), [])
        self.assertContains(nothing, "No product matches")
        # Filters given with the upload carry over to the results.
        filtered = self.search(category="kitchen")
        self.assertIn("category=kitchen", filtered.url)
        self.assertEqual(sorted(self.result_ids(self.client.get(filtered.url))), ["clock-1", "coffee-1"])

    def test_bad_price_range_is_explained_and_not_applied(self):
        self.login()
        first = self.search()
        response = self.client.get(first.url, {"min_price": "100", "max_price": "5"})
        self.assertContains(response, "lowest price is above the highest price")
        self.assertEqual(len(self.result_ids(response)), len(self.products))

    def test_the_ranking_intent_and_the_copy_check_are_chosen_on_the_page(self):
        from unittest import mock

        from jiansuo.search import verify
        from jiansuo.web.catalog.search import close_matches, embed, search_products

        from .support import jpeg_bytes

        self.login()
        home = self.client.get(reverse("catalog:home"))
        self.assertContains(home, 'name="intent"')
        self.assertContains(home, 'name="verify"')
        small = real_photo("rocket")
        small.thumbnail((80, 80))
        data = jpeg_bytes(small, 40)
        first = self.search(data, intent="similar", verify="on")
        self.assertIn("intent=similar", first.url)
        self.assertIn("verify=True", first.url)
        self.assertNotIn("box=", first.url)  # the copy check compares the whole photo: no suggested box
        self.assertNotIn("intent=", self.search(data).url)  # the defaults stay out of the URL
        self.assertIn("min_price=0", self.search(data, min_price="0").url)  # a chosen 0 is not a default
        vector = embed(data)
        for intent in ("same", "similar"):
            page = self.client.get(first.url.split("?")[0], {"intent": intent})
            expected = close_matches(search_products(vector, settings.JIANSUO_RESULTS, intent=intent))[0]
            self.assertEqual(self.result_ids(page), [h.product.item_id for h in expected], intent)
            self.assertContains(page, f'<option value="{intent}" selected>')
        with mock.patch.object(verify, "copy_first", wraps=verify.copy_first) as checked:
            page = self.client.get(first.url)
        self.assertTrue(checked.called)
        self.assertEqual(self.result_ids(page)[0], "rocket-1")
        self.assertContains(page, 'name="verify" id="id_verify" checked')
        # The upload form for another photo carries the choices along.
        self.assertContains(page, '<input type="hidden" name="intent" value="similar">', html=True)
        self.assertContains(page, '<input type="hidden" name="verify" value="True">', html=True)
        # The copy check compares whole photos: with a part of the photo it is off, and the page says so.
        with mock.patch.object(verify, "copy_first", wraps=verify.copy_first) as checked:
            page = self.client.get(first.url, {"verify": "on", "box": "0,0,0.5,1"})
        self.assertFalse(checked.called)
        self.assertContains(page, "data-verify-off")

    def test_unknown_or_expired_search_is_404(self):
        self.login()
        self.assertEqual(self.client.get("/search/" + "0" * 32 + "/").status_code, 404)
        self.assertEqual(self.client.get("/search/not-a-token/").status_code, 404)

    def test_product_page_shows_similar_products_without_itself(self):
        self.login()
        response = self.client.get(reverse("catalog:product", args=["cat-1"]))
        self.assertEqual(response.status_code, 200)
        self.assertTrue(response.context["indexed"])
        similar = [h.product.item_id for h in response.context["similar"]]
        self.assertNotIn("cat-1", similar)
        self.assertEqual(len(similar), len(self.products) - 1)
        self.assertContains(response, "Similar products")
        self.assertContains(response, self.products["cat-1"].images.first().url)

    def test_product_pages_need_an_account_and_unknown_ones_are_404(self):
        response = self.client.get(reverse("catalog:product", args=["cat-1"]))
        self.assertEqual(response.status_code, 302)
        self.login()
        self.assertEqual(self.client.get(reverse("catalog:product", args=["nope"])).status_code, 404)

    def test_media_photos_are_served(self):
        photo = self.products["rocket-1"].images.first()
        response = self.client.get(photo.url)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(Image.open(io.BytesIO(b"".join(response.streaming_content))).format, "JPEG")


class EmptyCatalogueTests(IsolatedSiteMixin, TestCase):
    def test_search_in_an_empty_catalogue_says_so(self):
        self.client.force_login(User.objects.create_user("zoe", password="x-long-enough-1"))
        response = self.client.post(reverse("catalog:home"), {"image": upload("q.jpg", query_photo())}, follow=True)
        self.assertEqual(response.context["hits"], [])
        self.assertContains(response, "no indexed products yet")


class LanguageTests(CatalogTestCase):
    def test_browser_language_chooses_chinese(self):
        self.login()
        response = self.client.get(reverse("catalog:product", args=["cat-1"]), HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9")
        self.assertEqual(response.headers["Content-Language"], "zh-hans")
        self.assertContains(response, "相似商品")
        self.assertContains(response, "¥129.00")
        self.assertNotContains(response, "CN¥129.00")
        english = self.client.get(reverse("catalog:product", args=["cat-1"]), HTTP_ACCEPT_LANGUAGE="en")
        self.assertContains(english, "Similar products")
        self.assertContains(english, "CN¥129.00")

    def test_language_switcher_sets_the_language(self):
        response = self.client.post(reverse("set_language"), {"language": "zh-hans", "next": "/"})
        self.assertEqual(response.status_code, 302)
        home = self.client.get("/")
        self.assertContains(home, "以图搜商品")
        self.assertContains(home, 'lang="zh-hans"')
        self.client.post(reverse("set_language"), {"language": "en", "next": "/"})
        self.assertContains(self.client.get("/"), "Find a product by its photo")

    def test_errors_are_translated(self):
        self.login()
        self.client.post(reverse("set_language"), {"language": "zh-hans", "next": "/"})
        response = self.client.post(reverse("catalog:home"), {"image": upload("x.jpg", b"not an image")})
        self.assertContains(response, "不是可用的图片", status_code=400)


class DemoBannerTests(CatalogTestCase):
    @override_settings(JIANSUO_DEMO=True)
    def test_demo_catalogue_is_labelled(self):
        self.assertContains(self.client.get("/"), "demo-banner")

    def test_no_banner_for_a_real_catalogue(self):
        self.assertNotContains(self.client.get("/"), "demo-banner")


SearchPageTestsOnPostgreSQL = on_postgresql(SearchPageTests)
EmptyCatalogueTestsOnPostgreSQL = on_postgresql(EmptyCatalogueTests)
