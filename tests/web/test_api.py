"""The JSON API: search, similar products, tokens, the OpenAPI description, and every error path."""

from __future__ import annotations

import struct
import zlib

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.conftest import real_photo

from .support import CatalogTestCase, jpeg_bytes, on_postgresql, query_photo

RESULT_KEYS = {"item_id", "title", "category", "price", "shop", "url", "image_url", "score"}


def photo(data: bytes | None = None, name: str = "q.jpg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data if data is not None else query_photo("chelsea"), content_type="image/jpeg")


class ApiTests(CatalogTestCase):
    def setUp(self):
        self.api = APIClient()
        self.token = Token.objects.create(user=self.user)
        self.api.credentials(HTTP_AUTHORIZATION=f"Token {self.token.key}")

    def assertError(self, response, status: int, words: str):
        self.assertEqual(response.status_code, status, response.content)
        self.assertEqual(response["Content-Type"], "application/json")
        body = response.json()
        self.assertEqual(body["status"], status)
        self.assertIn(words.lower(), body["error"].lower())
        return body

    def test_search_returns_the_documented_shape_best_first(self):
        response = self.api.post("/api/search", {"image": photo(), "k": 5}, format="multipart")
        self.assertEqual(response.status_code, 200)
        results = response.json()["results"]
        self.assertEqual(len(results), 5)
        self.assertTrue(all(RESULT_KEYS <= set(r) for r in results))
        first = results[0]
        self.assertEqual(first["item_id"], "cat-1")
        self.assertEqual(first["price"], 129.0)
        self.assertEqual(first["category"], "animals")
        self.assertEqual(first["url"], "https://shop.example.com/cat-1")
        self.assertTrue(first["image_url"].startswith("http://testserver/media/products/"))
        scores = [r["score"] for r in results]
        self.assertEqual(scores, sorted(scores, reverse=True))
        self.assertGreater(scores[0], 0.8)
        image = self.client.get(first["image_url"].removeprefix("http://testserver"))
        self.assertEqual(image.status_code, 200)

    def test_search_filters(self):
        response = self.api.post("/api/search", {"image": photo(), "category": "kitchen"}, format="multipart")
        self.assertEqual(sorted(r["item_id"] for r in response.json()["results"]), ["clock-1", "coffee-1"])
        response = self.api.post("/api/search", {"image": photo(), "min_price": "100", "max_price": "300"},
                                 format="multipart")
        self.assertEqual(sorted(r["item_id"] for r in response.json()["results"]), ["cat-1", "cells-1"])

    def test_similar_products(self):
        response = self.api.get("/api/products/coffee-1/similar", {"k": 3})
        self.assertEqual(response.status_code, 200)
        body = response.json()
        self.assertEqual(body["item_id"], "coffee-1")
        self.assertTrue(body["indexed"])
        self.assertEqual(len(body["results"]), 3)
        self.assertNotIn("coffee-1", [r["item_id"] for r in body["results"]])
        filtered = self.api.get("/api/products/coffee-1/similar", {"category": "toys"}).json()["results"]
        self.assertEqual(sorted(r["item_id"] for r in filtered), ["rocket-1", "wheel-1"])

    def test_product_detail(self):
        body = self.api.get("/api/products/astro-1").json()
        self.assertEqual((body["item_id"], body["currency"], body["price"]), ("astro-1", "USD", 59.9))
        self.assertEqual(len(body["image_urls"]), 1)

    def test_unknown_product_is_a_json_404(self):
        self.assertError(self.api.get("/api/products/nope/similar"), 404, "no product has the item id nope")
        self.assertError(self.api.get("/api/products/nope"), 404, "no product has the item id nope")
        self.assertError(self.api.get("/api/no-such-thing"), 404, "no such api endpoint")

    def test_non_image_is_400(self):
        body = self.assertError(self.api.post("/api/search", {"image": photo(b"%PDF-1.4 not a photo")},
                                              format="multipart"), 400, "not a usable image")
        self.assertIn("format not recognised", body["error"])

    def test_decompression_bomb_is_400(self):
        # A valid PNG header announcing 60000 x 60000 pixels: refused before any pixel is decoded.
        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
               + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b""))
        body = self.assertError(self.api.post("/api/search", {"image": photo(png, "bomb.png")}, format="multipart"),
                                400, "not a usable image")
        self.assertIn("decompression bomb", body["error"])

    def test_missing_image_and_bad_parameters_are_400(self):
        body = self.assertError(self.api.post("/api/search", {"k": 3}, format="multipart"), 400, "image")
        self.assertIn("image", body["fields"])
        self.assertError(self.api.post("/api/search", {"image": photo(), "k": 0}, format="multipart"), 400, "k")
        self.assertError(self.api.post("/api/search", {"image": photo(), "k": 10_000}, format="multipart"), 400, "k")
        self.assertError(self.api.post("/api/search", {"image": photo(), "min_price": "9", "max_price": "1"},
                                       format="multipart"), 400, "min_price is above max_price")
        self.assertError(self.api.get("/api/products/cat-1/similar", {"min_price": "cheap"}), 400, "min_price")

    def test_too_large_upload_is_413(self):
        over = b"\xff\xd8" + b"\0" * (settings.JIANSUO_MAX_UPLOAD_BYTES + 200_000)
        self.assertError(self.api.post("/api/search", {"image": photo(over)}, format="multipart"), 413, "too large")
        # Just over the limit passes the request-size gate; the file check answers 413 too.
        just_over = b"\xff\xd8" + b"\0" * (settings.JIANSUO_MAX_UPLOAD_BYTES + 10)
        self.assertError(self.api.post("/api/search", {"image": photo(just_over)}, format="multipart"),
                         413, "too large")

    def test_no_credentials_is_401(self):
        anonymous = APIClient()
        response = anonymous.post("/api/search", {"image": photo()}, format="multipart")
        self.assertError(response, 401, "credentials were not provided")
        self.assertEqual(response["WWW-Authenticate"], "Token")
        self.assertError(anonymous.get("/api/products/cat-1/similar"), 401, "credentials")

    def test_bad_token_is_401(self):
        stranger = APIClient()
        stranger.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef0123456789abcdef01234567")
        self.assertError(stranger.get("/api/products/cat-1/similar"), 401, "invalid token")

    def test_session_without_csrf_token_is_403(self):
        browser = APIClient(enforce_csrf_checks=True)
        browser.force_login(self.user)
        self.assertEqual(browser.get("/api/products/cat-1/similar").status_code, 200)  # reads need no token
        self.assertError(browser.post("/api/search", {"image": photo()}, format="multipart"), 403, "csrf")

    def test_obtain_token_with_password(self):
        anonymous = APIClient()
        response = anonymous.post("/api/token", {"username": "alice", "password": "correct-horse-battery"})
        self.assertEqual(response.json()["token"], self.token.key)
        self.assertError(anonymous.post("/api/token", {"username": "alice", "password": "wrong"}), 400,
                         "unable to log in")

    @override_settings(JIANSUO_PUBLIC_SEARCH=True)
    def test_public_search_allows_anonymous_calls(self):
        response = APIClient().post("/api/search", {"image": photo(), "k": 1}, format="multipart")
        self.assertEqual(response.json()["results"][0]["item_id"], "cat-1")

    def test_errors_follow_the_language(self):
        response = self.api.post("/api/search", {"image": photo(b"nope")}, format="multipart",
                                 HTTP_ACCEPT_LANGUAGE="zh-hans")
        self.assertIn("不是可用的图片", response.json()["error"])

    def test_openapi_description(self):
        response = APIClient().get("/api/schema", {"format": "json"})
        self.assertEqual(response.status_code, 200)
        schema = response.json()
        self.assertTrue(schema["openapi"].startswith("3."))
        self.assertIn("/api/search", schema["paths"])
        self.assertIn("/api/products/{item_id}/similar", schema["paths"])
        search = schema["paths"]["/api/search"]["post"]
        self.assertIn("multipart/form-data", search["requestBody"]["content"])
        self.assertTrue({"200", "400", "401", "413"} <= set(search["responses"]))


    def multipart(self, parts: list[tuple[str, str | None, bytes]], boundary: str = "jiansuo-test-boundary") -> bytes:
        """A multipart/form-data body of (field name, file name or None, content) parts."""
        out = []
        for name, filename, content in parts:
            disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
            out.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n")
        return b"".join(out) + f"--{boundary}--\r\n".encode()

    def post_raw(self, body: bytes, content_type: str = "multipart/form-data; boundary=jiansuo-test-boundary"):
        return self.api.generic("POST", "/api/search", body, content_type=content_type)

    def test_too_many_files_or_fields_is_a_json_400(self):
        files = [("image", f"q{n}.jpg", b"x") for n in range(settings.DATA_UPLOAD_MAX_NUMBER_FILES + 1)]
        self.assertError(self.post_raw(self.multipart(files)), 400, "number of files")
        fields = [(f"f{n}", None, b"1") for n in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)]
        self.assertError(self.post_raw(self.multipart(fields)), 400, "number of")

    def test_malformed_multipart_is_a_json_400(self):
        self.assertError(self.post_raw(b"--nope\r\ngarbage", "multipart/form-data"), 400, "boundary")
        body = self.multipart([("image", "q.jpg", query_photo())])
        self.assertError(self.post_raw(body[: len(body) // 2]), 400, "image")  # cut off mid-file

    def test_wrong_method_and_unknown_paths_are_json(self):
        self.assertError(self.api.get("/api/search"), 405, "method")
        self.assertError(self.api.delete("/api/products/cat-1"), 405, "method")
        self.assertError(self.api.post("/api/products/cat-1/nothing-here"), 404, "no such api endpoint")

    def test_an_unexpected_failure_is_a_json_500_and_pages_keep_their_html(self):
        from unittest import mock

        from jiansuo.web.api import views

        client = APIClient(raise_request_exception=False)
        client.credentials(HTTP_AUTHORIZATION=f"Token {self.token.key}")
        with mock.patch.object(views, "search_products", side_effect=RuntimeError("the disk caught fire")):
            response = client.post("/api/search", {"image": photo()}, format="multipart")
        body = self.assertError(response, 500, "internal server error")
        self.assertNotIn("disk", body["error"])  # details go to the log, not to the caller
        page = self.client.get("/no-such-page/")
        self.assertEqual((page.status_code, page["Content-Type"].split(";")[0]), (404, "text/html"))


    def test_a_box_searches_that_part_of_the_photo(self):
        from tests.test_cli import side_by_side
        from tests.conftest import real_photo

        both = side_by_side(real_photo("coffee"), real_photo("rocket"))
        half = real_photo("coffee").width * 300 / real_photo("coffee").height / both.width
        data = jpeg_bytes(both, 85)
        for box, item in ((f"0,0,{half:.3f},1", "coffee-1"), (f"{half:.3f},0,1,1", "rocket-1")):
            response = self.api.post("/api/search", {"image": photo(data), "box": box, "k": 1}, format="multipart")
            self.assertEqual(response.json()["results"][0]["item_id"], item, box)

    def test_verify_checks_the_first_results_against_the_photo(self):
        from unittest import mock

        from jiansuo.search import verify
        from jiansuo.web.catalog.models import ProductImage

        small = real_photo("rocket")
        small.thumbnail((80, 80))
        with mock.patch.object(verify, "copy_first", wraps=verify.copy_first) as checked:
            response = self.api.post("/api/search", {"image": photo(jpeg_bytes(small, 40)), "verify": "true", "k": 3},
                                     format="multipart")
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(response.json()["results"][0]["item_id"], "rocket-1")
        self.assertTrue(checked.called)
        stored = min(verify.VERIFY_K, ProductImage.objects.count())
        self.assertTrue(all(len(call.args[0]) >= stored for call in checked.call_args_list))
        self.assertError(self.api.post("/api/search", {"image": photo(), "verify": "true", "box": "0,0,0.5,1"},
                                       format="multipart"), 400, "whole photos")

    def test_box_auto_finds_a_product_on_a_wall_and_leaves_a_whole_photo_whole(self):
        from jiansuo.images import Box
        from tests.conftest import real_photo

        wall = real_photo("brick").resize((900, 600))
        wall.paste(real_photo("rocket").resize((220, 330)), (600, 150))   # x 0.67-0.91, y 0.25-0.8
        response = self.api.post("/api/search", {"image": photo(jpeg_bytes(wall, 85)), "box": "auto", "k": 1},
                                 format="multipart")
        body = response.json()
        self.assertEqual(body["results"][0]["item_id"], "rocket-1")
        box = Box.parse(body["box"])
        self.assertTrue(0.67 <= (box.x0 + box.x1) / 2 <= 0.91 and 0.25 <= (box.y0 + box.y1) / 2 <= 0.8, body["box"])
        auto = self.api.post("/api/search", {"image": photo(), "box": "auto"}, format="multipart").json()
        whole = self.api.post("/api/search", {"image": photo()}, format="multipart").json()
        self.assertIsNone(auto["box"])
        self.assertEqual(auto["results"], whole["results"])

    def test_bad_boxes_are_json_400(self):
        for box in ("0,0,2,1", "1,0,0,1", "x,0,1,1", "0,0,1", "0,0,0,0"):
            self.assertError(self.api.post("/api/search", {"image": photo(), "box": box}, format="multipart"),
                             400, "box")


ApiTestsOnPostgreSQL = on_postgresql(ApiTests)
