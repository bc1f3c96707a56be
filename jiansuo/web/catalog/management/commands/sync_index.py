"""``python -m jiansuo.web sync_index``: make the search index agree with the catalogue."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from jiansuo.web.catalog import jobs, services

from .import_catalog import wait_for_workers


class Command(BaseCommand):
    help = ("Embed every product photo that has no vector yet and drop vectors of photos no product "
            "uses. Repairs the index after an interrupted import or a failed update. With indexing "
            "workers (JIANSUO_BROKER_URL), the photos to embed are queued for them.")

    def add_arguments(self, parser):
        parser.add_argument("--wait", action="store_true", help="wait until the workers have embedded the photos")
        parser.add_argument("--requeue", action="store_true",
                            help="send again the tasks still pending after the broker's visibility timeout "
                                 "(their messages were lost, e.g. the broker restarted without its data)")
        parser.add_argument("--rebuild", action="store_true",
                            help="forget every stored vector and embed every photo again (after a change of "
                                 "model or of how images are prepared, which the store refuses to mix)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args, **opts):
        if opts["rebuild"]:
            forgotten = services.rebuild_store()
            self.stdout.write(f"forgot {forgotten} vectors; embedding the catalogue again")
        if opts["requeue"] and jobs.queue_enabled():
            timeout = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
            self.stdout.write(f"sent {jobs.requeue_unfinished(timeout)} pending task(s) again")
        report = services.sync_index(progress=not opts["no_progress"], label="sync_index")
        self.stdout.write(self.style.SUCCESS(f"indexed {report.added}, removed {report.removed}, "
                                             f"failed {len(report.failed)}, queued {report.queued}"))
        for pid, reason in report.failed:
            self.stderr.write(self.style.WARNING(f"  {pid}: {reason}"))
        if report.job is not None:
            wait_for_workers(self, report.job, opts["wait"], not opts["no_progress"])
