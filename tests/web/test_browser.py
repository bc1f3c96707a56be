"""A real browser (Debian's chromium, driven by playwright) against a live site.

Registers (with the captcha), logs out and in, searches by file picker, drag and drop, and
paste, filters the results, opens a product and its similar products, switches to Chinese; sets
a profile photo and reopens and deletes a past search; moves, resizes and redraws the lens over a
query photo with the mouse and with touch. Screenshots of the results pages are
saved under ``artifacts/`` for a person to look at.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import User
from django.contrib.staticfiles.testing import StaticLiveServerTestCase

from jiansuo.web.catalog import services

from tests.conftest import real_photo

from .support import CATALOGUE, CaptchaTestMode, IsolatedSiteMixin, add_product, jpeg_bytes, on_a_wall, query_photo

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium at /usr/bin/chromium")]

# Remembers the kind of the last pointer pressed on each page, across the navigations it causes.
LAST_POINTER = ("document.addEventListener('pointerdown', e => sessionStorage.setItem('pointer', e.pointerType), true);")

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
        # Rank for the closest photos, with the copy check; the choices stay on the page.
        page.select_option("#id_intent", "same")
        page.check("#id_verify")
        page.click("text=Apply")
        page.wait_for_url("**intent=same**")
        self.assertEqual(self.card_titles()[0], "Chelsea (cat-1)")
        self.assertTrue(page.is_checked("#id_verify"))
        self.assertEqual(page.locator("#id_intent").input_value(), "same")
        # A suggested box searches a part of the photo, which the copy check does not compare.
        self.assertEqual(page.locator("[data-verify-off]").count(), 1 if "box=" in page.url else 0)

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

    # ------------------------------------------------------------------ the lens

    def url_box(self) -> list[float]:
        """The box of the current results URL."""
        return [float(v) for v in parse_qs(urlsplit(self.page.url).query)["box"][0].split(",")]

    def drag(self, lens: dict, start: tuple[float, float], end: tuple[float, float], touch=None) -> None:
        """Drag from ``start`` to ``end`` (fractions of the photo ``lens``, a bounding box) by mouse, or
        with ``touch`` (a CDP session) by a finger, then wait for the results of the new box."""
        points = [(lens["x"] + lens["width"] * (start[0] + (end[0] - start[0]) * t / 8),
                   lens["y"] + lens["height"] * (start[1] + (end[1] - start[1]) * t / 8)) for t in range(9)]
        with self.page.expect_navigation(url="**box=**"):
            if touch is None:
                self.page.mouse.move(*points[0])
                self.page.mouse.down()
                for point in points[1:]:
                    self.page.mouse.move(*point)
                self.page.mouse.up()
            else:
                # Chromium's input pipeline turns these into pointer events of type "touch".
                for kind, point in [("touchStart", points[0])] + [("touchMove", p) for p in points[1:]]:
                    touch.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": point[0], "y": point[1]}]})
                touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        self.page.wait_for_selector("[data-results] .card")

    def test_the_lens_follows_the_mouse_and_a_finger(self):
        self.client.force_login(User.objects.create_user("mei", password="long-enough-pass-42"))
        self.page.close()
        self.page = page = self.browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-US", has_touch=True)
        page.set_default_timeout(30_000)
        page.add_init_script(LAST_POINTER)
        page.context.add_cookies([{"name": "sessionid", "value": self.client.cookies["sessionid"].value,
                                   "url": self.live_server_url}])
        # Coffee at x 0.07-0.36, y 0.33-0.66 and the rocket at x 0.69-0.93, y 0.25-0.8 of a brick wall.
        wall = self.site_dir / "wall.jpg"
        wall.write_bytes(on_a_wall(("coffee", (60, 200, 260, 195)), ("rocket", (620, 150, 220, 330))))
        page.goto(self.url())
        with page.expect_navigation(url="**/search/**box=**"):
            page.set_input_files("input[name=image]", str(wall))
        page.wait_for_selector("[data-results] .card")
        self.assert_images_loaded(".query img")

        # The suggested box is drawn where the URL says, around the coffee, whose results come first.
        suggested = self.url_box()
        self.assertEqual(self.card_titles()[0], "Coffee (coffee-1)")
        self.assertTrue(page.is_visible("[data-lens-box]"))
        self.assertTrue(page.is_visible("[data-lens-hint]"))
        lens = page.locator("[data-lens]").bounding_box()
        drawn = page.locator("[data-lens-box]").bounding_box()
        shown = [(drawn["x"] - lens["x"]) / lens["width"], (drawn["y"] - lens["y"]) / lens["height"],
                 (drawn["x"] + drawn["width"] - lens["x"]) / lens["width"],
                 (drawn["y"] + drawn["height"] - lens["y"]) / lens["height"]]
        for got, want in zip(shown, suggested):
            self.assertAlmostEqual(got, want, delta=0.02)
        self.assertEqual(page.eval_on_selector("[data-lens]", "e => getComputedStyle(e).touchAction"), "none")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "results-lens.png"), full_page=True)

        # Press outside the box and drag: a new box, around the rocket.
        self.drag(lens, (0.66, 0.2), (0.95, 0.84))
        for got, want in zip(self.url_box(), (0.66, 0.2, 0.95, 0.84)):
            self.assertAlmostEqual(got, want, delta=0.01)
        self.assertEqual(self.card_titles()[0], "Rocket (rocket-1)")
        self.assertEqual(page.evaluate("sessionStorage.getItem('pointer')"), "mouse")

        # Drag its top left corner: only that corner moves.
        before = self.url_box()
        self.drag(lens, (before[0], before[1]), (before[0] + 0.02, before[1] + 0.03))
        after = self.url_box()
        self.assertAlmostEqual(after[0], before[0] + 0.02, delta=0.01)
        self.assertAlmostEqual(after[1], before[1] + 0.03, delta=0.01)
        self.assertEqual(after[2:], before[2:])
        self.assertEqual(self.card_titles()[0], "Rocket (rocket-1)")

        # A finger drags the box, unchanged in size, back over the coffee.
        x0, y0, x1, y1 = after
        middle = ((x0 + x1) / 2, (y0 + y1) / 2)
        self.drag(lens, middle, (middle[0] - 0.6, middle[1]), touch=page.context.new_cdp_session(page))
        self.assertEqual(page.evaluate("sessionStorage.getItem('pointer')"), "touch")
        moved = self.url_box()
        self.assertAlmostEqual(moved[0], x0 - 0.6, delta=0.01)
        self.assertAlmostEqual(moved[2] - moved[0], x1 - x0, delta=0.002)
        self.assertEqual(self.card_titles()[0], "Coffee (coffee-1)")

        # The whole photo again.
        with page.expect_navigation():
            page.click("text=Search the whole photo")
        page.wait_for_selector("[data-results] .card")
        self.assertNotIn("box=", page.url)
        self.assertFalse(page.is_visible("[data-lens-box]"))
