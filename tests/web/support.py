"""Helpers for the site's tests: a catalogue of real photos in its own media folder and index."""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import unittest
from decimal import Decimal
from pathlib import Path
from unittest import mock

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import connections
from django.test import TestCase, override_settings
from PIL import Image

from jiansuo.web.catalog import services
from jiansuo.web.catalog.models import Product, ProductImage
from jiansuo.web.catalog.photos import store_product_photo
from jiansuo.web.catalog.search import get_store, reset_store
from tests.conftest import real_photo

# item_id, photo, category, price, currency
CATALOGUE = [
    ("cat-1", "chelsea", "animals", "129.00", "CNY"),
    ("coffee-1", "coffee", "kitchen", "35.50", "CNY"),
    ("rocket-1", "rocket", "toys", "899.00", "CNY"),
    ("astro-1", "astronaut", "posters", "59.90", "USD"),
    ("stars-1", "hubble_deep_field", "posters", "19.90", "CNY"),
    ("cells-1", "immunohistochemistry", "science", "249.00", "CNY"),
    ("wheel-1", "colorwheel", "toys", "12.00", "CNY"),
    ("clock-1", "clock", "kitchen", "1299.00", "CNY"),
]


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def query_photo(name: str = "chelsea") -> bytes:
    """A query that is not byte-identical to the catalogue photo: cropped, resized, recompressed."""
    img = real_photo(name)
    w, h = img.size
    img = img.crop((w // 10, h // 10, w - w // 12, h - h // 8)).resize((w // 2, h // 2))
    return jpeg_bytes(img, quality=75)


def on_a_wall(*products: tuple[str, tuple[int, int, int, int]]) -> bytes:
    """A shopper's photo: catalogue photos (name, (left, top, width, height) in pixels) pasted onto a
    brick wall of 900×600, as JPEG. Whole, it looks like a wall; the products are small parts of it."""
    wall = real_photo("brick").resize((900, 600))
    for name, (left, top, width, height) in products:
        wall.paste(real_photo(name).resize((width, height)), (left, top))
    return jpeg_bytes(wall, 85)


#: The rocket at 35% of the wall's width: x 0.62–0.97, y 0.33–0.68 of the photo.
ROCKET_ON_A_WALL = ("rocket", (560, 195, 315, 210))


def add_product(item_id: str, photo: str | Image.Image, category: str = "", price: str = "10.00",
                currency: str = "CNY", title: str | None = None, shop: str = "Test shop") -> Product:
    """Create a product with one stored photo (not yet indexed: call services.sync_index())."""
    img = real_photo(photo) if isinstance(photo, str) else photo
    stored = store_product_photo(jpeg_bytes(img, quality=92))
    product = Product.objects.create(item_id=item_id, title=title or f"Product {item_id}", category=category,
                                     price=Decimal(price), currency=currency, shop=shop,
                                     url=f"https://shop.example.com/{item_id}")
    ProductImage.objects.create(product=product, file=stored.file, sha256=stored.sha256, width=stored.width,
                                height=stored.height)
    return product


class IsolatedSiteMixin:
    """Each test class gets its own media folder, vector store (index folder or PostgreSQL table) and
    query folder. A TransactionTestCase's store is emptied after each test, as its database is."""

    @classmethod
    def setUpClass(cls):
        cls.site_dir = Path(tempfile.mkdtemp(prefix="jiansuo-site-"))
        cls.vector_table = f"test_vectors_{cls.site_dir.name.rsplit('-', 1)[-1].lower()}"
        cls._isolation = override_settings(
            MEDIA_ROOT=cls.site_dir / "media", JIANSUO_INDEX_PATH=cls.site_dir / "catalog.idx",
            JIANSUO_QUERY_DIR=cls.site_dir / "queries", JIANSUO_PG_TABLE=cls.vector_table,
            JIANSUO_HISTORY_DIR=cls.site_dir / "history", JIANSUO_PROFILE_PHOTO_DIR=cls.site_dir / "profiles",
        )
        cls._isolation.enable()
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls._isolation.disable()
        reset_store()
        shutil.rmtree(cls.site_dir, ignore_errors=True)

    def _fixture_teardown(self):
        super()._fixture_teardown()
        if not isinstance(self, TestCase):  # a TransactionTestCase: its writes were committed
            store = get_store()
            if hasattr(store, "drop"):
                store.drop()
            reset_store()
            shutil.rmtree(self.site_dir / "catalog.idx", ignore_errors=True)

    @property
    def index_ids(self) -> set[str]:
        return set(get_store().ids())


class CatalogTestCase(IsolatedSiteMixin, TestCase):
    """A test case with the CATALOGUE products indexed, a user and a staff user."""

    @classmethod
    def setUpTestData(cls):
        cls.products = {item: add_product(item, photo, cat, price, cur)
                        for item, photo, cat, price, cur in CATALOGUE}
        services.sync_index()
        cls.user = User.objects.create_user("alice", "alice@example.com", "correct-horse-battery")
        cls.staff = User.objects.create_user("bob", "bob@example.com", "staff-password-123", is_staff=True)
        cls.staff.user_permissions.set(Permission.objects.filter(content_type__app_label="catalog"))

    def login(self, user=None):
        self.client.force_login(user or self.user)


PG_URL = os.environ.get("JIANSUO_TEST_DATABASE_URL", "").strip()
NO_POSTGRES = ("JIANSUO_TEST_DATABASE_URL is unset: start PostgreSQL with scripts/services.sh and "
               "`source var/services.env` to run the PostgreSQL tests")


class OnPostgreSQL:
    """Mixin: the test class runs with the PostgreSQL test database as Django's default database.

    Everything the site does (the ORM, transactions, ``get_store()``) goes through
    ``connections["default"]``, so pointing that alias at the PostgreSQL connection for the
    class's duration runs the very same tests against the pgvector backend.
    """

    databases = {"default", "postgres"}

    @classmethod
    def setUpClass(cls):
        cls._saved_default = connections["default"]
        connections["default"] = connections["postgres"]
        reset_store()
        # Content type ids are cached per alias; "default" now names another database with other ids.
        ContentType.objects.clear_cache()
        try:
            super().setUpClass()
        except BaseException:
            cls._restore_default()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls._restore_default()

    @classmethod
    def _restore_default(cls):
        connections["default"] = cls._saved_default
        reset_store()
        ContentType.objects.clear_cache()


def on_postgresql(cls: type) -> type:
    """A copy of the test class ``cls`` that runs on PostgreSQL (skipped when no server is configured)."""
    variant = type(f"{cls.__name__}OnPostgreSQL", (OnPostgreSQL, cls),
                   {"__module__": cls.__module__, "__doc__": f"{cls.__doc__ or cls.__name__} (PostgreSQL)"})
    return pytest.mark.postgres(unittest.skipUnless(PG_URL, NO_POSTGRES)(variant))


# ------------------------------------------------------------------ the registration / password-reset captcha

_CAPTCHA_KEY = re.compile(r'name="captcha_0" value="([0-9a-f]{40})"')


def captcha_key(page) -> str:
    """The key of the captcha on a rendered form page (a response or its HTML)."""
    html = page if isinstance(page, str) else page.content.decode()
    return _CAPTCHA_KEY.search(html).group(1)


def solved_captcha(page) -> dict[str, str]:
    """The captcha fields of the form on ``page``, answered the way the library's test mode accepts."""
    return {"captcha_0": captcha_key(page), "captcha_1": "PASSED"}


class CaptchaTestMode:
    """Mixin: django-simple-captcha's test mode (the answer "PASSED" is accepted) during each test.

    The library reads CAPTCHA_TEST_MODE once, when it is imported, so override_settings cannot
    switch it: its module constant is patched instead.
    """

    def setUp(self):
        super().setUp()
        patcher = mock.patch("captcha.conf.settings.CAPTCHA_TEST_MODE", True)
        patcher.start()
        self.addCleanup(patcher.stop)
