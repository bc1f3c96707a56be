"""``python -m jiansuo.web ARGS`` is this project's ``manage.py``: Django's command line with our settings."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    """Run a Django management command (``migrate``, ``runserver``, ``import_catalog``, ...)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jiansuo.web.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(["jiansuo-site", *(sys.argv[1:] if argv is None else argv)])
    except ImproperlyConfigured as exc:  # a settings problem: say what to set, without a traceback
        sys.exit(f"jiansuo-site: error: {exc}")


if __name__ == "__main__":
    main()
