"""Django set-up for the site's tests: settings from the environment, a test database per session.

Runs with plain ``pytest`` (no pytest-django): the environment is set before Django is imported,
and a session fixture creates the test database (SQLite in memory by default; whatever
DATABASE_URL names otherwise) the way Django's own test runner does.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_DATA_DIR = tempfile.mkdtemp(prefix="jiansuo-web-tests-")
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
})
for _name in ("JIANSUO_INDEX", "JIANSUO_MEDIA_ROOT", "JIANSUO_STATIC_ROOT"):
    os.environ.pop(_name, None)

import django  # noqa: E402

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
