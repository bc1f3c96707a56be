"""Django set-up for the site's tests: settings from the environment, test databases per session.

Runs with plain ``pytest`` (no pytest-django): the environment is set before Django is imported,
and a session fixture creates the test databases the way Django's own test runner does: the
default one (SQLite in memory unless DATABASE_URL names another) and, when
JIANSUO_TEST_DATABASE_URL is set (``source var/services.env`` after ``scripts/services.sh``), a
PostgreSQL one under the alias ``postgres``. Test classes wrapped by
:func:`tests.web.support.on_postgresql` run with that one as the default database, so the same
tests check both search backends.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_DATA_DIR = tempfile.mkdtemp(prefix="jiansuo-web-tests-")
# STATIC_ROOT, which WhiteNoise watches (empty: the pages' static files come from the app folders).
os.makedirs(os.path.join(_DATA_DIR, "static"))
os.environ.update({
    "DJANGO_SETTINGS_MODULE": "jiansuo.web.settings",
    "JIANSUO_DATA_DIR": _DATA_DIR,
    "JIANSUO_SECRET_KEY": "tests-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    "JIANSUO_DEBUG": "0",
    "JIANSUO_HTTPS": "0",
    "JIANSUO_SERVE_FILES": "1",
    "JIANSUO_ALLOWED_HOSTS": "testserver,localhost,127.0.0.1",
    "JIANSUO_MAX_UPLOAD_MB": "1",
    "JIANSUO_PUBLIC_SEARCH": "0",
    "JIANSUO_DEMO": "0",
    "JIANSUO_API_ANON_RATE": "100000/min",
    "JIANSUO_API_USER_RATE": "100000/min",
    # The test catalogue's photos are unrelated to each other: ranking and filter tests see every
    # product; the threshold's own tests (test_similarity.py) set the calibrated defaults.
    "JIANSUO_MIN_SIMILARITY": "-1",
})
# No broker: photos are embedded in-process unless a test configures one.
for _name in ("JIANSUO_INDEX", "JIANSUO_MEDIA_ROOT", "JIANSUO_STATIC_ROOT", "JIANSUO_BROKER_URL", "CELERY_BROKER_URL",
              "JIANSUO_SEARCH_MODE", "JIANSUO_PG_TABLE", "JIANSUO_VERY_SIMILAR"):
    os.environ.pop(_name, None)

import dj_database_url  # noqa: E402
import django  # noqa: E402
from django.conf import settings  # noqa: E402

PG_URL = os.environ.get("JIANSUO_TEST_DATABASE_URL", "").strip()
if PG_URL:
    # A test database per pytest process: several test runs may share one server.
    settings.DATABASES["postgres"] = {**dj_database_url.parse(PG_URL),
                                      "TEST": {"NAME": f"test_jiansuo_{os.getpid()}"}}
django.setup()


@pytest.fixture(scope="session", autouse=True)
def django_test_database():
    """Django's test environment (locmem mail, ...) and a fresh test database for the session."""
    from django.test.utils import setup_databases, setup_test_environment, teardown_databases, teardown_test_environment

    setup_test_environment()
    old = setup_databases(verbosity=0, interactive=False)
    yield
    teardown_databases(old, verbosity=0)
    teardown_test_environment()
    shutil.rmtree(_DATA_DIR, ignore_errors=True)
