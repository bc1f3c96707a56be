"""``python -m jiansuo.web purge_history``: delete past searches older than JIANSUO_HISTORY_DAYS, and their photos."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from jiansuo.web.history.store import purge_expired


class Command(BaseCommand):
    help = ("Delete the past searches ('My searches') older than JIANSUO_HISTORY_DAYS and their photo files. "
            "The site also does this by itself from time to time; run it from cron to be sure.")

    def handle(self, *args, **opts):
        count = purge_expired(force=True)
        self.stdout.write(self.style.SUCCESS(
            f"deleted {count} past search(es) older than {settings.JIANSUO_HISTORY_DAYS} day(s)"))
