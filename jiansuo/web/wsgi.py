"""WSGI entry point for production servers (e.g. ``gunicorn jiansuo.web.wsgi``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jiansuo.web.settings")
application = get_wsgi_application()
