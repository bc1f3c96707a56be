"""A real browser (Debian's chromium, driven by playwright) against a live site.

Registers (with the captcha), logs out and in, searches by file picker, drag and drop, and
paste, filters the results, opens a product and its similar products, switches to Chinese; sets
a profile photo and reopens and deletes a past search. Screenshots of the results pages are
saved under ``artifacts/`` for a person to look at.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.contrib.staticfiles.testing import StaticLiveServerTestCase

from jiansuo.web.catalog import services

from tests.conftest import real_photo

from .support import CATALOGUE, CaptchaTestMode, IsolatedSiteMixin, add_product, jpeg_bytes, query_photo

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium at /usr/bin/chromium")]

# Playwright's sync API runs an event loop in this thread; the ORM calls made by the test itself
# (creating the catalogue) are still plain synchronous calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

DROP_FILE = """([b64, name, mode]) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const file = new File([bytes], name, {type: "image/jpeg"});
  const dt = new DataTransfer();
  dt.items.add(file);
  if (mode === "paste") {
    document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: dt, bubbles: true}));
  } else {
    const zone = document.querySelector("[data-dropzone]");
    zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: dt, bubbles: true, cancelable: true}));
    zone.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
  }
}"""


class BrowserTests(CaptchaTestMode, IsolatedSiteMixin, StaticLiveServerTestCase):
    host = "127.0.0.1"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pw = playwright_api.sync_playwright().start()
        cls.browser = cls.pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()
        cls.pw.stop()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        for item, photo, cat, price, cur in CATALOGUE:
            add_product(item, photo, cat, price, cur, title=f"{photo.replace('_', ' ').title()} ({item})")
        services.sync_index()
        self.query_file = self.site_dir / "query-cat.jpg"
        self.query_file.write_bytes(query_photo("chelsea"))
        self.page = self.browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-US")
        self.page.set_default_timeout(30_000)

    def tearDown(self):
        self.page.close()

    def url(self, path: str = "/") -> str:
        return self.live_server_url + path

    def card_titles(self) -> list[str]:
        return self.page.locator("[data-results] .card-title").all_inner_texts()

    def assert_images_loaded(self, selector: str) -> None:
        broken = self.page.eval_on_selector_all(
            selector, "els => els.filter(e => !(e.complete && e.naturalWidth > 0)).map(e => e.src)")
        self.assertEqual(broken, [])

    def test_register_log_in_search_filter_and_browse(self):
        page = self.page
        page.goto(self.url())
        self.assertIn("Searching needs an account", page.content())

        # Register, which logs the new user in.
        page.click("text=Register")
        page.fill("#id_username", "wei")
        page.fill("#id_email", "wei@example.com")
        page.fill("#id_password1", "long-enough-pass-42")
        page.fill("#id_password2", "long-enough-pass-42")
        self.assert_images_loaded("img.captcha-image")
        page.fill("#id_captcha_1", "PASSED")  # the captcha's test mode
        page.click("form.stacked button[type=submit]")
        page.wait_for_selector("text=Welcome, wei")

        # Log out and in again.
        page.click("button:has-text('Log out')")
        page.wait_for_selector("a:has-text('Log in')")
        page.click("a:has-text('Log in')")
        page.fill("#id_username", "wei")
        page.fill("#id_password", "long-enough-pass-42")
        page.click("form.stacked button[type=submit]")
        page.wait_for_selector("[data-dropzone]")

        # Search with the file picker: choosing a file previews it and submits by itself.
        with page.expect_navigation(url="**/search/**"):
            page.set_input_files("input[name=image]", str(self.query_file))
        page.wait_for_selector("[data-results] .card")
        titles = self.card_titles()
        self.assertEqual(titles[0], "Chelsea (cat-1)")
        self.assertEqual(len(titles), len(CATALOGUE))
        self.assert_images_loaded(".query img, [data-results] img")
        first = page.locator("[data-results] .card").first
        self.assertIn("CN¥129.00", first.inner_text())
        self.assertIn("animals", first.inner_text())
        # The likeness in words, the raw cosine on hover.
        self.assertEqual(first.locator(".score").inner_text(), "Very similar")
        self.assertRegex(first.locator(".score").get_attribute("title"), r"^Similarity score 0\.\d{3} ")
        self.assertEqual(first.locator(".listing").get_attribute("href"), "https://shop.example.com/cat-1")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "results.png"), full_page=True)

        # Filter by category and price.
        page.select_option("#id_category", "kitchen")
        page.click("text=Apply")
        page.wait_for_url("**category=kitchen**")
        self.assertEqual(sorted(self.card_titles()), ["Clock (clock-1)", "Coffee (coffee-1)"])
        page.select_option("#id_category", "")
        page.fill("#id_min_price", "100")
        page.fill("#id_max_price", "300")
        page.click("text=Apply")
        page.wait_for_url("**min_price=100**")
        self.assertEqual(sorted(self.card_titles()), ["Chelsea (cat-1)", "Immunohistochemistry (cells-1)"])

        # A product page and its similar products.
        page.click("[data-results] .card-title >> nth=0")
        page.wait_for_selector("[data-similar] .card")
        self.assertEqual(page.locator("h1").inner_text(), "Chelsea (cat-1)")
        similar = page.locator("[data-similar] .card-title").all_inner_texts()
        self.assertEqual(len(similar), len(CATALOGUE) - 1)
        self.assertNotIn("Chelsea (cat-1)", similar)
        self.assert_images_loaded(".main-photo, [data-similar] img")
        page.click("[data-similar] .card-title >> nth=0")
        page.wait_for_selector("[data-similar] .card")
        self.assertEqual(page.locator("h1").inner_text(), similar[0])

    def test_drag_and_drop_paste_and_chinese(self):
        self.client.force_login(User.objects.create_user("li", password="long-enough-pass-42"))
        page = self.page
        page.context.add_cookies([{"name": "sessionid", "value": self.client.cookies["sessionid"].value,
                                   "url": self.live_server_url}])
        rocket = base64.b64encode(query_photo("rocket")).decode()
        page.goto(self.url())
        with page.expect_navigation(url="**/search/**"):
            page.evaluate(DROP_FILE, [rocket, "rocket.jpg", "drop"])
        page.wait_for_selector("[data-results] .card")
        self.assertEqual(self.card_titles()[0], "Rocket (rocket-1)")

        # Switch to Chinese, then paste a photo on the results page itself.
        page.click("button[value=zh-hans]")
        page.wait_for_selector("h1:has-text('件相似商品')")
        coffee = base64.b64encode(query_photo("coffee")).decode()
        with page.expect_navigation(url="**/search/**"):
            page.evaluate(DROP_FILE, [coffee, "coffee.jpg", "paste"])
        page.wait_for_selector("[data-results] .card")
        self.assertEqual(self.card_titles()[0], "Coffee (coffee-1)")
        self.assertIn("¥35.50", page.locator("[data-results] .card").first.inner_text())
        self.assertIn("查看商品", page.content())
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "results-zh.png"), full_page=True)

    def test_captcha_profile_photo_and_my_searches(self):
        page = self.page
        page.goto(self.url("/accounts/register/"))
        # "New picture" swaps the picture and its key without reloading the page.
        old_src, old_key = page.get_attribute("img.captcha-image", "src"), page.input_value("#id_captcha_0")
        page.fill("#id_captcha_1", "XYZ")
        page.click("[data-captcha-refresh]")
        page.wait_for_function("src => { const img = document.querySelector('img.captcha-image');"
                               " return img.getAttribute('src') !== src && img.complete && img.naturalWidth > 0; }",
                               arg=old_src)
        self.assertNotEqual(page.input_value("#id_captcha_0"), old_key)
        self.assertEqual(page.input_value("#id_captcha_1"), "")
        self.assert_images_loaded("img.captcha-image")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "register.png"), full_page=True)
        page.fill("#id_username", "yun")
        page.fill("#id_password1", "long-enough-pass-42")
        page.fill("#id_password2", "long-enough-pass-42")
        page.fill("#id_captcha_1", "PASSED")
        page.click("form.stacked button[type=submit]")
        page.wait_for_selector("text=Welcome, yun")

        # A profile photo, shown small in the header.
        self.assertEqual(page.locator(".topbar img.avatar").count(), 0)
        photo = self.site_dir / "me.jpg"
        photo.write_bytes(jpeg_bytes(real_photo("astronaut")))
        page.goto(self.url("/accounts/"))
        page.set_input_files("input[name=photo]", str(photo))
        page.click("text=Save photo")
        page.wait_for_selector(".topbar img.avatar")
        self.assert_images_loaded("img.avatar")
        self.assertEqual(page.eval_on_selector(".topbar img.avatar", "e => e.getBoundingClientRect().width"), 28)

        # Search, then reopen the search from "My searches" in a new browser session.
        page.click(".brand")
        with page.expect_navigation(url="**/search/**"):
            page.set_input_files("input[name=image]", str(self.query_file))
        page.wait_for_selector("[data-results] .card")
        results_url = page.url
        fresh = self.browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-US")  # its own cookies
        try:
            fresh.goto(self.url("/accounts/login/"))
            fresh.fill("#id_username", "yun")
            fresh.fill("#id_password", "long-enough-pass-42")
            fresh.click("form.stacked button[type=submit]")
            fresh.wait_for_selector("[data-dropzone]")
            fresh.click("a:has-text('My searches')")
            fresh.wait_for_selector("[data-history] .card")
            self.assertEqual(fresh.locator("[data-history] .card").count(), 1)
            self.page, page = fresh, fresh
            self.assert_images_loaded("[data-history] img, .topbar img.avatar")
            fresh.screenshot(path=str(ARTIFACTS / "my-searches.png"), full_page=True)
            fresh.click("text=Show the results")
            fresh.wait_for_selector("[data-results] .card")
            self.assertEqual(fresh.url, results_url)
            self.assertEqual(self.card_titles()[0], "Chelsea (cat-1)")
            self.assert_images_loaded(".query img")
            fresh.go_back()
            fresh.click("[data-history] button:has-text('Delete')")
            fresh.wait_for_selector("text=The search was deleted.")
            self.assertEqual(fresh.locator("[data-history] .card").count(), 0)
        finally:
            fresh.close()
