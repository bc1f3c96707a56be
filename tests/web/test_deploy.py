"""Production settings: ``check --deploy`` is clean, and a missing secret key is a clear error."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    # Only the variables given here (plus where the model cache lives) configure the site.
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("JIANSUO_", "DJANGO_", "DATABASE_URL")) or k == "JIANSUO_CACHE"}
    return subprocess.run([sys.executable, "-m", "jiansuo.web", *args], env={**base, **env},
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    result = manage("check", "--deploy", "--fail-level", "WARNING",
                    JIANSUO_SECRET_KEY=secrets.token_urlsafe(50), JIANSUO_ALLOWED_HOSTS="shop.example.com",
                    JIANSUO_DATA_DIR=str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_development_settings_are_not_deployable(tmp_path):
    result = manage("check", "--deploy", "--fail-level", "WARNING", JIANSUO_DEBUG="1", JIANSUO_DATA_DIR=str(tmp_path))
    assert result.returncode != 0
    assert "DEBUG" in result.stderr and "SECRET_KEY" in result.stderr


def test_missing_secret_key_is_a_clear_error(tmp_path):
    result = manage("check", JIANSUO_DATA_DIR=str(tmp_path))
    assert result.returncode != 0
    assert "set JIANSUO_SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr
