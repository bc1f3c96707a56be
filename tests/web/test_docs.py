"""The API's documentation pages, Swagger UI (/api/docs) and ReDoc (/api/redoc): served from the site's
own files, loading nothing from any other host (fonts included).

The browser test loads both pages in Debian's chromium with every request to another host blocked
and recorded, and checks that none was attempted and that the operations are rendered.
Screenshots go to ``artifacts/``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.contrib.staticfiles.testing import StaticLiveServerTestCase
from django.test import SimpleTestCase, TestCase

from jiansuo.web.api.docs import CONTENT_SECURITY_POLICY, REDOCLY_LOGO

OPERATIONS = ["Search the catalogue by photo", "Products similar to a catalogue product", "One product"]
# src= and href= of the page's own markup (the UIs' bundles are checked in the browser).
_LINKS = re.compile(r'(?:src|href)="([^"]+)"')


class DocsPagesTests(TestCase):
    """Without a browser: what the two pages and the ReDoc bundle are made of."""

    def test_pages_are_public_and_reference_only_this_site(self):
        for path in ("/api/docs", "/api/redoc"):
            response = self.client.get(path)  # no account needed, like /api/schema
            self.assertEqual(response.status_code, 200, path)
            self.assertTrue(response["Content-Type"].startswith("text/html"))
            self.assertEqual(response["Content-Security-Policy"], CONTENT_SECURITY_POLICY)
            html = response.content.decode()
            links = _LINKS.findall(html)
            self.assertTrue(links, path)
            self.assertEqual([u for u in links if urlsplit(u).netloc or urlsplit(u).scheme], [], path)
            self.assertNotIn("fonts.googleapis", html)
            self.assertNotIn("fonts.gstatic", html)
            self.assertNotIn("cdn.jsdelivr", html)
            self.assertIn("/api/schema", html)
        self.assertContains(self.client.get("/api/docs"), "/static/drf_spectacular_sidecar/swagger-ui-dist/")
        self.assertContains(self.client.get("/api/docs"), '"validatorUrl": null')

    def test_redoc_bundle_is_served_without_the_outside_logo(self):
        html = self.client.get("/api/redoc").content.decode()
        src = re.search(r'<script src="([^"]+redoc\.standalone\.js[^"]*)"', html).group(1)
        response = self.client.get(src)
        self.assertEqual(response.status_code, 200)
        self.assertIn("javascript", response["Content-Type"])
        self.assertIn("immutable", response["Cache-Control"])
        body = b"".join(response.streaming_content) if response.streaming else response.content
        self.assertIn(b"Redoc", body)
        self.assertNotIn(REDOCLY_LOGO, body)
        self.assertGreater(len(body), 500_000)

    def test_footer_links_the_docs_and_unknown_api_paths_stay_json_404(self):
        home = self.client.get("/")
        for path in ("/api/docs", "/api/redoc", "/api/schema"):
            self.assertContains(home, f'href="{path}"')
        response = self.client.get("/api/docs/nope")
        self.assertEqual(response.status_code, 404)
        self.assertEqual(response.json()["status"], 404)


# ---------------------------------------------------------------------------------------- browser

try:
    from playwright import sync_api as playwright_api
except ImportError:  # the browser tests are skipped, the others still run
    playwright_api = None

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(playwright_api is None or not Path(CHROMIUM).exists(),
                    reason="needs playwright and Debian's chromium at /usr/bin/chromium")
class DocsBrowserTests(StaticLiveServerTestCase):
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
        self.context = self.browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
        self.outside: list[str] = []     # requests to another host: blocked
        self.problems: list[str] = []    # CSP violations, failed requests, page errors
        origin = self.live_server_url

        def route(route, request):
            url = request.url
            if url.startswith(("data:", "blob:")) or url == origin or url.startswith(origin + "/"):
                route.continue_()
            else:
                self.outside.append(url)
                route.abort()

        # On the context, so requests of workers and pop-ups are seen too.
        self.context.route("**/*", route)
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: r.url not in self.outside
                     and self.problems.append(f"failed: {r.url} {r.failure}"))

    def tearDown(self):
        self.context.close()

    def open(self, path: str):
        response = self.page.goto(self.live_server_url + path, wait_until="networkidle")
        self.assertEqual(response.status, 200)

    def assert_nothing_from_elsewhere(self):
        self.page.wait_for_load_state("networkidle")
        self.assertEqual(self.outside, [])
        self.assertEqual(self.problems, [])
        # Fonts: only the reader's own (none was downloaded, from anywhere).
        fonts = self.page.evaluate("() => [...document.fonts].filter(f => f.status !== 'unloaded').map(f => f.family)")
        self.assertEqual(fonts, [])

    def test_swagger_ui(self):
        self.open("/api/docs")
        self.page.wait_for_selector(".opblock-summary")
        summaries = self.page.locator(".opblock-summary-description").all_inner_texts()
        for operation in OPERATIONS:
            self.assertIn(operation, summaries)
        self.assertIn("Jiansuo API", self.page.locator(".info .title").inner_text())
        # Open one operation: its parameters (min_score among them) are described.
        self.page.click("text=Products similar to a catalogue product")
        self.page.wait_for_selector(".parameters-container :text('min_score')")
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / "api-docs.png"), full_page=False)
        self.assert_nothing_from_elsewhere()

    def test_redoc(self):
        self.open("/api/redoc")
        self.page.wait_for_selector("h1:has-text('Jiansuo API')")
        for operation in OPERATIONS:
            self.page.wait_for_selector(f"h2:has-text('{operation}')")
        menu = self.page.locator(".menu-content").text_content()  # tags folded: their operations hidden
        self.assertIn("Search the catalogue by photo", menu)
        self.assertIn("API docs by Redocly", menu)  # the credit stays, its logo from their CDN does not load
        # ReDoc's search runs in a worker: it finds an operation.
        self.page.fill("input[placeholder='Search...']", "similar")
        self.page.wait_for_selector("[data-role='search:results'] :text('Products similar')")
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / "api-redoc.png"), full_page=False)
        self.assert_nothing_from_elsewhere()


class PolicyTests(SimpleTestCase):
    def test_the_policy_allows_this_site_only(self):
        for directive in CONTENT_SECURITY_POLICY.split("; "):
            sources = directive.split()[1:]
            self.assertTrue(set(sources) <= {"'self'", "'unsafe-inline'", "'none'", "data:", "blob:"}, directive)
