"""``python -m jiansuo.web sync_index``: make the search index agree with the catalogue."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from jiansuo.web.catalog import services


class Command(BaseCommand):
    help = ("Embed every product photo that has no vector yet and drop vectors of photos no product "
            "uses. Repairs the index after an interrupted import or a failed update.")

    def add_arguments(self, parser):
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args, **opts):
        report = services.sync_index(progress=not opts["no_progress"])
        self.stdout.write(self.style.SUCCESS(f"indexed {report.added}, removed {report.removed}, "
                                             f"failed {len(report.failed)}"))
        for pid, reason in report.failed:
            self.stderr.write(self.style.WARNING(f"  {pid}: {reason}"))
