"""Honest similarity: the pages show close matches only, in words, with the raw score on hover; the API's min_score.

These tests run with the calibrated defaults of jiansuo/web/settings.py (bench/similarity.py) rather
than the test suite's ``JIANSUO_MIN_SIMILARITY=-1``. The catalogue: the 8 unrelated real photos of
support.CATALOGUE, plus ``cat-2``, a grey, cropped photo of the same cat as ``cat-1`` (a "similar"
product: cosine about 0.8 to cat-1 and to the query).
"""

from __future__ import annotations

import re

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from django.urls import reverse
from PIL import ImageOps
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from jiansuo.web.catalog import services
from tests.conftest import real_photo

from .support import CATALOGUE, CatalogTestCase, add_product, jpeg_bytes, on_postgresql, query_photo

CALIBRATED = override_settings(JIANSUO_MIN_SIMILARITY=settings.JIANSUO_CALIBRATED_MIN_SIMILARITY,
                               JIANSUO_VERY_SIMILAR=settings.JIANSUO_CALIBRATED_VERY_SIMILAR)
BADGE = re.compile(r'<span class="score ([a-z-]+)" title="([^"]*)" data-score="([0-9.]+)">([^<]*)</span>')
NO_MATCH = "No close match in this catalogue."


def grey_cat():
    """The cat of cat-1 again, in grey and cropped at the sides: like it, but not the same photo."""
    img = real_photo("chelsea")
    w, h = img.size
    return ImageOps.grayscale(img.crop((w // 6, 0, w - w // 6, h))).convert("RGB")


def unrelated_photo() -> bytes:
    """A real photo of nothing in the catalogue (scikit-image's cameraman)."""
    return jpeg_bytes(real_photo("camera"), quality=85)


@CALIBRATED
class HonestSimilarityTests(CatalogTestCase):
    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        cls.products["cat-2"] = add_product("cat-2", grey_cat(), "animals", "99.00")
        services.sync_index()

    def setUp(self):
        self.login()

    def search(self, data: bytes | None = None, language: str = "en", **filters):
        upload = SimpleUploadedFile("q.jpg", data or query_photo("chelsea"), content_type="image/jpeg")
        response = self.client.post(reverse("catalog:home"), {"image": upload, **filters})
        self.assertEqual(response.status_code, 302)
        return self.client.get(response.url, HTTP_ACCEPT_LANGUAGE=language)

    def badges(self, response) -> list[tuple[str, str, float, str]]:
        """(class, title, data-score, label) of each result card's similarity badge, in page order."""
        return [(c, t, float(s), label) for c, t, s, label in BADGE.findall(response.content.decode())]

    # ------------------------------------------------------------------ pages

    def test_results_show_close_matches_only_labelled_with_the_raw_score_on_hover(self):
        page = self.search()
        hits = page.context["hits"]
        self.assertEqual([h.product.item_id for h in hits], ["cat-1", "cat-2"])
        self.assertEqual(page.context["weak"], len(CATALOGUE) - 1)  # the 7 unrelated photos: hidden
        self.assertContains(page, "2 similar products")
        for other in ("rocket-1", "coffee-1", "clock-1"):
            self.assertNotContains(page, f"Product {other}")
        (c1, t1, s1, l1), (c2, t2, s2, l2) = self.badges(page)
        self.assertEqual((c1, l1), ("very-similar", "Very similar"))
        self.assertEqual((c2, l2), ("similar", "Similar"))
        self.assertGreaterEqual(s1, settings.JIANSUO_VERY_SIMILAR)
        self.assertTrue(settings.JIANSUO_MIN_SIMILARITY <= s2 < settings.JIANSUO_VERY_SIMILAR)
        for (_, title, score, _), hit in zip(self.badges(page), hits):
            self.assertEqual(score, round(hit.score, 3))
            self.assertEqual(title, f"Similarity score {hit.score:.3f} (cosine; 1 = identical)")
        self.assertNotContains(page, NO_MATCH)

    def test_a_photo_of_nothing_in_the_catalogue_gets_no_close_match(self):
        page = self.search(unrelated_photo())
        self.assertEqual(page.context["hits"], [])
        self.assertEqual(page.context["weak"], len(self.products))
        self.assertContains(page, f"<h1>{NO_MATCH}</h1>", html=True)
        self.assertContains(page, "Try another photo: a clear, well-lit shot")
        self.assertNotContains(page, "data-results")
        self.assertNotContains(page, "no indexed products yet")
        self.assertNotContains(page, "No product matches these filters")

    def test_no_close_match_with_filters_suggests_removing_them(self):
        page = self.search(category="kitchen")  # the cat is in "animals"
        self.assertEqual(page.context["hits"], [])
        self.assertContains(page, NO_MATCH)
        self.assertContains(page, "Try another photo, or remove the filters to search the whole catalogue.")
        # Filters that nothing matches at all still say so.
        nothing = self.client.get(page.request["PATH_INFO"], {"category": "posters", "min_price": "1000"})
        self.assertContains(nothing, "No product matches these filters")
        self.assertNotContains(nothing, NO_MATCH)

    def test_the_threshold_is_a_setting(self):
        with override_settings(JIANSUO_MIN_SIMILARITY=0.88):
            self.assertEqual([h.product.item_id for h in self.search().context["hits"]], ["cat-1"])
        with override_settings(JIANSUO_MIN_SIMILARITY=-1):
            page = self.search(unrelated_photo())
            self.assertEqual(len(page.context["hits"]), len(self.products))
            self.assertNotContains(page, NO_MATCH)
        with override_settings(JIANSUO_VERY_SIMILAR=0.99):
            self.assertEqual([b[3] for b in self.badges(self.search())], ["Similar", "Similar"])

    def test_product_page_shows_close_matches_only(self):
        page = self.client.get(reverse("catalog:product", args=["cat-1"]))
        self.assertEqual([h.product.item_id for h in page.context["similar"]], ["cat-2"])
        self.assertEqual([(b[0], b[3]) for b in self.badges(page)], [("similar", "Similar")])
        self.assertNotContains(page, NO_MATCH)
        lonely = self.client.get(reverse("catalog:product", args=["rocket-1"]))
        self.assertEqual(lonely.context["similar"], [])
        self.assertNotContains(lonely, "data-similar")
        self.assertContains(lonely, NO_MATCH)
        self.assertContains(lonely, f'<a href="{reverse("catalog:home")}">Try a search with another photo</a>')

    def test_chinese(self):
        page = self.search(language="zh-CN")
        self.assertContains(page, "2 件相似商品")
        badges = self.badges(page)
        self.assertEqual([b[3] for b in badges], ["非常相似", "相似"])
        self.assertTrue(badges[0][1].startswith(f"相似度得分 {badges[0][2]:.3f}（余弦相似度"))
        none = self.search(unrelated_photo(), language="zh-CN")
        self.assertContains(none, "本目录中没有相近的商品。")
        self.assertContains(none, "请换一张照片试试")
        lonely = self.client.get(reverse("catalog:product", args=["rocket-1"]), HTTP_ACCEPT_LANGUAGE="zh-CN")
        self.assertContains(lonely, "本目录中没有相近的商品。")
        self.assertContains(lonely, "换一张照片搜索试试")

    # ------------------------------------------------------------------ API

    def api(self) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=self.staff).key}")
        return client

    def api_search(self, client: APIClient, data: bytes | None = None, **params):
        upload = SimpleUploadedFile("q.jpg", data or query_photo("chelsea"), content_type="image/jpeg")
        return client.post("/api/search", {"image": upload, **params}, format="multipart")

    def test_api_search_min_score_defaults_to_the_setting(self):
        api = self.api()
        body = self.api_search(api).json()
        self.assertEqual(body["min_score"], settings.JIANSUO_MIN_SIMILARITY)
        self.assertEqual([(r["item_id"], r["match"]) for r in body["results"]],
                         [("cat-1", "very_similar"), ("cat-2", "similar")])
        self.assertEqual(self.api_search(api, unrelated_photo()).json()["results"], [])
        # A client may ask for weaker results, and gets the k it asked for, each with its score.
        everything = self.api_search(api, k=5, min_score=-1).json()
        self.assertEqual(everything["min_score"], -1)
        self.assertEqual(len(everything["results"]), 5)
        self.assertEqual([r["match"] for r in everything["results"]], ["very_similar", "similar"] + ["weak"] * 3)
        self.assertTrue(all(r["score"] < settings.JIANSUO_MIN_SIMILARITY for r in everything["results"][2:]))
        strict = self.api_search(api, min_score=str(settings.JIANSUO_VERY_SIMILAR)).json()
        self.assertEqual([r["item_id"] for r in strict["results"]], ["cat-1"])

    def test_api_similar_min_score(self):
        api = self.api()
        body = api.get("/api/products/cat-1/similar").json()
        self.assertEqual([r["item_id"] for r in body["results"]], ["cat-2"])
        self.assertEqual(body["min_score"], settings.JIANSUO_MIN_SIMILARITY)
        self.assertEqual(api.get("/api/products/rocket-1/similar").json()["results"], [])
        three = api.get("/api/products/rocket-1/similar", {"min_score": "-1", "k": 3}).json()["results"]
        self.assertEqual(len(three), 3)
        self.assertTrue(all(r["match"] == "weak" and r["score"] < settings.JIANSUO_MIN_SIMILARITY for r in three))

    def test_api_rejects_a_bad_min_score_as_json(self):
        api = self.api()
        for value in ("1.5", "-2", "abc", "nan"):
            response = api.get("/api/products/cat-1/similar", {"min_score": value})
            self.assertEqual(response.status_code, 400, value)
            self.assertIn("min_score", response.json()["fields"])
        response = self.api_search(api, min_score="2")
        self.assertEqual(response.status_code, 400)
        self.assertIn("min_score", response.json()["fields"])

    def test_schema_documents_min_score_and_match(self):
        schema = self.client.get("/api/schema", {"format": "json"}).json()
        similar = schema["paths"]["/api/products/{item_id}/similar"]["get"]
        param = next(p for p in similar["parameters"] if p["name"] == "min_score")
        self.assertEqual((param["in"], param["schema"]["minimum"], param["schema"]["maximum"]), ("query", -1, 1))
        self.assertIn(f"JIANSUO_MIN_SIMILARITY ({settings.JIANSUO_MIN_SIMILARITY:g})", param["description"])
        request = schema["paths"]["/api/search"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        ref = request["$ref"].rsplit("/", 1)[-1]
        self.assertIn("min_score", schema["components"]["schemas"][ref]["properties"])
        result = schema["components"]["schemas"]["Result"]["properties"]
        self.assertIn("match", result)
        self.assertIn("min_score", schema["components"]["schemas"]["SearchResponse"]["properties"])


HonestSimilarityTestsOnPostgreSQL = on_postgresql(HonestSimilarityTests)
