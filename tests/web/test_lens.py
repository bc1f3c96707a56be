"""The results page's lens through Django's test client: the suggested box at upload, ``?box=``
searches that part of the stored photo, bad boxes, and the box kept by the filters."""

from __future__ import annotations

import re
from unittest import mock
from urllib.parse import urlsplit

from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import QueryDict
from django.urls import reverse

from jiansuo.images import Box
from jiansuo.web.catalog import lens
from jiansuo.web.history.models import HistoryEntry

from .support import ROCKET_ON_A_WALL, CatalogTestCase, on_a_wall, query_photo


class LensPageTests(CatalogTestCase):
    def setUp(self):
        self.login()

    def upload(self, data: bytes, **filters):
        return self.client.post(reverse("catalog:home"),
                                {"image": SimpleUploadedFile("q.jpg", data, content_type="image/jpeg"), **filters})

    def result_ids(self, response) -> list[str]:
        return [h.product.item_id for h in response.context["hits"]]

    def test_a_product_on_a_wall_opens_the_results_of_its_suggested_box(self):
        response = self.upload(on_a_wall(ROCKET_ON_A_WALL))
        self.assertEqual(response.status_code, 302)
        url = urlsplit(response.url)
        params = QueryDict(url.query)
        box = Box.parse(params["box"])
        # Around the rocket (x 0.62–0.97, y 0.33–0.68), written with 4 decimals.
        self.assertTrue(0.62 <= (box.x0 + box.x1) / 2 <= 0.97 and 0.33 <= (box.y0 + box.y1) / 2 <= 0.68, box)
        self.assertRegex(params["box"], r"^\d\.\d{4},\d\.\d{4},\d\.\d{4},\d\.\d{4}$")
        page = self.client.get(response.url)
        self.assertEqual(page.status_code, 200)
        self.assertEqual(self.result_ids(page)[0], "rocket-1")
        # The box is drawn over the photo (without the script too), and the whole photo is a link away.
        self.assertContains(page, f'data-lens data-box="{params["box"]}"')
        self.assertContains(page, f'style="left: {box.x0 * 100:.2f}%; top: {box.y0 * 100:.2f}%;')
        self.assertContains(page, "Results for the marked part of your photo")
        self.assertContains(page, "jiansuo/lens.js")
        whole_url = re.search(r'href="([^"]+)" class="whole-photo"', page.content.decode()).group(1)
        self.assertEqual(whole_url, url.path)
        whole = self.client.get(whole_url)
        self.assertEqual(whole.status_code, 200)
        self.assertNotContains(whole, "data-box=")
        self.assertNotContains(whole, "Search the whole photo")
        self.assertNotEqual([h.score for h in whole.context["hits"]], [h.score for h in page.context["hits"]])
        # My searches reopens the search at its box.
        self.assertEqual(HistoryEntry.objects.get(token=url.path.split("/")[2]).get_absolute_url(), response.url)

    def test_a_plain_product_photo_opens_the_results_of_the_whole_photo(self):
        response = self.upload(query_photo("rocket"), category="toys")
        self.assertEqual(response.status_code, 302)
        self.assertRegex(response.url, r"^/search/[0-9a-f]{32}/\?category=toys$")
        page = self.client.get(response.url)
        self.assertEqual(self.result_ids(page)[0], "rocket-1")
        self.assertContains(page, "data-lens>")  # an empty lens: the shopper may still draw a box
        self.assertContains(page, "data-lens-box hidden")
        self.assertNotContains(page, "Search the whole photo")
        self.assertNotContains(page, 'name="box"')

    def test_a_query_saved_by_another_network_is_embedded_again(self):
        from django.core.cache import cache

        from jiansuo.web.catalog import photos, views

        results = self.upload(query_photo("rocket")).url
        self.assertEqual(self.result_ids(self.client.get(results))[0], "rocket-1")
        cache.clear()
        # The site's network changed (another model, precision or quantisation): the saved vector is not used.
        with mock.patch.object(photos, "network_tag", return_value="another-net"), \
                mock.patch.object(views, "embed", wraps=views.embed) as embed:
            self.assertEqual(self.result_ids(self.client.get(results))[0], "rocket-1")
            cache.clear()
            self.assertEqual(self.result_ids(self.client.get(results))[0], "rocket-1")
        self.assertEqual(embed.call_count, 1)  # once, then saved for that network

    def test_a_box_searches_that_part_of_the_stored_photo(self):
        two = on_a_wall(("coffee", (60, 200, 260, 195)), ("rocket", (620, 150, 220, 330)))
        results = self.upload(two).url.split("?")[0]
        left = self.client.get(results, {"box": "0.05,0.3,0.37,0.68"})
        right = self.client.get(results, {"box": "0.67,0.22,0.93,0.8"})
        self.assertEqual((self.result_ids(left)[0], self.result_ids(right)[0]), ("coffee-1", "rocket-1"))
        # Each box is embedded once, then read from the cache.
        with mock.patch.object(lens, "embed", wraps=lens.embed) as embed:
            self.assertEqual(self.result_ids(self.client.get(results, {"box": "0.67,0.22,0.93,0.8"}))[0], "rocket-1")
            self.client.get(results, {"box": "0.6,0.2,0.95,0.8"})
        self.assertEqual(embed.call_count, 1)

    def test_a_bad_box_is_a_clear_400_page(self):
        results = self.upload(query_photo("chelsea")).url
        for bad, reason in (("0,0,2,1", "from 0 to 1"), ("0.5,0,0.2,1", "x0 &lt; x1"), ("x,0,1,1", "four numbers"),
                            ("0,0,1", "four numbers"), ("0,0,0,0", "x0 &lt; x1")):
            page = self.client.get(results, {"box": bad, "category": "toys"})
            self.assertEqual(page.status_code, 400, bad)
            self.assertContains(page, "This box is not a part of your photo:", status_code=400)
            self.assertContains(page, reason, status_code=400)
            self.assertEqual(page.context["hits"], [])
            # The way out keeps the filters and drops the box.
            self.assertContains(page, f'href="{results}?category=toys" class="whole-photo"', status_code=400)
        chinese = self.client.get(results, {"box": "0,0,2,1"}, HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9")
        self.assertContains(chinese, "此框无法用于您的图片", status_code=400)
        self.assertContains(chinese, "搜索整张图片", status_code=400)

    def test_the_box_survives_the_filters(self):
        response = self.upload(on_a_wall(ROCKET_ON_A_WALL))
        path, box = response.url.split("?")[0], QueryDict(urlsplit(response.url).query)["box"]
        page = self.client.get(response.url)
        # The filter form sends the box again, and "Clear filters" keeps it.
        self.assertContains(page, f'<input type="hidden" name="box" value="{box}">', html=True)
        self.assertContains(page, f'href="{path}?box={box.replace(",", "%2C")}" class="reset"')
        filtered = self.client.get(path, {"category": "toys", "min_price": "", "max_price": "", "box": box})
        self.assertEqual(filtered.status_code, 200)
        self.assertEqual(self.result_ids(filtered), ["rocket-1", "wheel-1"])
        self.assertEqual(filtered.context["box"], box)
        self.assertContains(filtered, f'<input type="hidden" name="box" value="{box}">', html=True)
        # The upload form on the page is the plain one: a new photo gets its own box.
        self.assertEqual(filtered.content.decode().count('name="box"'), 1)
        self.assertContains(filtered, 'name="category" value="toys"')
