"""The Celery application of the indexing workers: ``celery -A jiansuo.web worker``.

Configured from the Django settings whose names start with ``CELERY_`` (see
:mod:`jiansuo.web.settings`: the broker is ``JIANSUO_BROKER_URL``). Its only task,
:func:`jiansuo.web.catalog.tasks.embed_photos`, embeds queued photos and writes their vectors where
the site searches them (the shared PostgreSQL database, or the index folder on one machine).
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jiansuo.web.settings")

app = Celery("jiansuo")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
