"""``python -m jiansuo.web import_catalog FILE``: import a CSV or JSON Lines catalogue."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from jiansuo.web.catalog import jobs
from jiansuo.web.catalog.fetch import Fetcher
from jiansuo.web.catalog.importer import COLUMNS, CatalogFileError, import_catalog


class Command(BaseCommand):
    help = (f"Import products from a CSV or JSON Lines file with the columns {','.join(COLUMNS)} "
            "(optionally currency). image is a local path (relative to the file) or an http(s) URL; "
            "several are separated by '|'. Reruns update changed rows only.")

    def add_arguments(self, parser):
        parser.add_argument("file", help="catalogue file (.csv or .jsonl)")
        parser.add_argument("--format", choices=["csv", "jsonl"], default=None,
                            help="file format (default: from the file name)")
        parser.add_argument("--workers", type=int, default=8, help="concurrent downloads (default 8)")
        parser.add_argument("--timeout", type=float, default=10.0, help="seconds per network operation (default 10)")
        parser.add_argument("--retries", type=int, default=2, help="retries of a failed download (default 2)")
        parser.add_argument("--max-mb", type=float, default=20.0, help="largest photo accepted, in MB (default 20)")
        parser.add_argument("--chunk", type=int, default=256, help="rows per transaction (default 256)")
        parser.add_argument("--refresh-images", action="store_true",
                            help="download photos again even when their URL has not changed")
        parser.add_argument("--wait", action="store_true",
                            help="with indexing workers (JIANSUO_BROKER_URL): wait until they have embedded "
                                 "every queued photo, showing their progress")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args, **opts):
        fetcher = Fetcher(timeout=opts["timeout"], retries=opts["retries"],
                          max_bytes=int(opts["max_mb"] * 1024 * 1024))
        try:
            report = import_catalog(opts["file"], fetcher=fetcher, workers=opts["workers"],
                                    chunk_size=opts["chunk"], refresh_images=opts["refresh_images"],
                                    fmt=opts["format"], progress=not opts["no_progress"])
        except CatalogFileError as exc:
            raise CommandError(str(exc)) from None
        head, *details = report.summary().splitlines()
        self.stdout.write(self.style.SUCCESS(head))
        for line in details:
            self.stderr.write(self.style.WARNING(line))
        if report.job is not None:
            wait_for_workers(self, report.job, opts["wait"], not opts["no_progress"])


def wait_for_workers(command: BaseCommand, job, wait: bool, show: bool) -> None:
    """Report on a queued job: wait for it (progress bar) or say how to follow it."""
    if not wait:
        command.stdout.write(f"the workers are embedding the photos; follow job {job.pk} on the admin's "
                             f"indexing jobs page")
        return
    state = jobs.wait(job, show=show)
    command.stdout.write(command.style.SUCCESS(f"workers indexed {state.indexed} of {state.photos} photos"))
    for pid, reason in state.failed_photos:
        command.stderr.write(command.style.WARNING(f"  photo {pid} not indexed: {reason}"))
