"""Indexing work spread over workers: jobs and tasks in the database, messages through the broker.

With a broker configured (``JIANSUO_BROKER_URL``), :func:`queue` splits the photos to embed into
:class:`~.models.IndexTask` rows of ``JIANSUO_TASK_PHOTOS`` photos and sends one Celery message per
task once the rows are committed; workers run :func:`run_task` (through
:func:`.tasks.embed_photos`), which calls :func:`.services.index_photos`, the same unit of work
the site runs in-process when no broker is configured. Progress lives in the database, so the
site, the import command and any worker see the same picture (:func:`progress`).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterable

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from .models import IndexJob, IndexTask

log = logging.getLogger(__name__)

State = IndexTask.State
PENDING = (State.QUEUED, State.RUNNING)
FINISHED = (State.DONE, State.FAILED)


def queue_enabled() -> bool:
    """Whether embedding goes to the workers (a broker is configured) or runs in this process."""
    return bool(settings.CELERY_BROKER_URL)


def new_job(label: str) -> IndexJob:
    """An empty job that tasks can be added to (e.g. one per catalogue import)."""
    return IndexJob.objects.create(label=label[:300])


def queue(photo_ids: Iterable[str], job: IndexJob) -> list[IndexTask]:
    """Add tasks embedding these photos to ``job``; their messages go out when the transaction commits."""
    ids = sorted(set(photo_ids))
    size = max(1, settings.JIANSUO_TASK_PHOTOS)
    tasks = IndexTask.objects.bulk_create([IndexTask(job=job, photo_ids=ids[s:s + size], size=len(ids[s:s + size]))
                                           for s in range(0, len(ids), size)])
    IndexJob.objects.filter(pk=job.pk).update(photos=F("photos") + len(ids))
    # After the commit: a worker must find the task row (and the photos' rows) when the message arrives.
    transaction.on_commit(lambda: send([t.pk for t in tasks]))
    return tasks


def send(task_ids: list[int]) -> None:
    """Publish one message per task to the broker named by the settings."""
    from .tasks import embed_photos

    with embed_photos.app.connection_for_write(settings.CELERY_BROKER_URL) as conn:
        for task_id in task_ids:
            embed_photos.apply_async((task_id,), connection=conn, queue=settings.CELERY_TASK_DEFAULT_QUEUE)


def pending_photo_ids() -> set[str]:
    """Photos in tasks not finished yet (a repair need not queue them again)."""
    found: set[str] = set()
    for ids in IndexTask.objects.filter(state__in=PENDING).values_list("photo_ids", flat=True).iterator():
        found.update(ids)
    return found


def run_task(task_id: int, *, worker: str = "", final_attempt: bool = False) -> None:
    """Run one task: embed its photos that products still use, store the vectors, record the outcome.

    A task already done (a message delivered twice) or deleted with its job is skipped. An
    exception is recorded and re-raised for Celery to retry; after the last attempt the task
    is marked failed (``sync_index`` queues its photos again).
    """
    from . import services

    task = IndexTask.objects.filter(pk=task_id).first()
    if task is None or task.state == State.DONE:
        return
    IndexTask.objects.filter(pk=task_id).update(state=State.RUNNING, attempts=F("attempts") + 1, worker=worker[:200],
                                                started=timezone.now(), error="")
    try:
        wanted = services.referenced(task.photo_ids)
        report = services.index_photos(wanted)
        # A product deleted while its photo was being embedded: drop the vector again.
        gone = wanted - services.referenced(wanted)
        if gone:
            services.get_store().remove(gone)
    except Exception as exc:
        log.exception("indexing task %s failed", task_id)
        IndexTask.objects.filter(pk=task_id).update(
            state=State.FAILED if final_attempt else State.QUEUED, error=f"{type(exc).__name__}: {exc}"[:2000],
            finished=timezone.now() if final_attempt else None)
        raise
    IndexTask.objects.filter(pk=task_id).update(state=State.DONE, indexed=report.added,
                                                failed=[list(f) for f in report.failed], finished=timezone.now())


@dataclass(frozen=True)
class Progress:
    """Where a job stands, in photos (``finished`` counts both embedded and unusable ones)."""

    photos: int
    finished: int
    indexed: int
    running_tasks: int
    failed_tasks: int
    failed_photos: list[tuple[str, str]]

    @property
    def done(self) -> bool:
        return self.finished >= self.photos

    @property
    def percent(self) -> int:
        return 100 if not self.photos else int(100 * self.finished / self.photos)


def progress(job: IndexJob) -> Progress:
    """The job's progress, read from its tasks."""
    job.refresh_from_db(fields=["photos"])
    tasks = job.tasks.all()
    agg = tasks.aggregate(finished=Sum("size", filter=Q(state__in=FINISHED), default=0),
                          indexed=Sum("indexed", default=0),
                          running=Count("pk", filter=Q(state=State.RUNNING)),
                          failed=Count("pk", filter=Q(state=State.FAILED)))
    failed = [(pid, reason) for rows in tasks.exclude(failed=[]).values_list("failed", flat=True)
              for pid, reason in rows]
    failed += [(f"task {pk}", error) for pk, error in tasks.filter(state=State.FAILED).values_list("pk", "error")]
    return Progress(job.photos, agg["finished"], agg["indexed"], agg["running"], agg["failed"], failed)


def wait(job: IndexJob, *, show: bool = True, poll: float = 0.25, quiet_after: float = 60.0) -> Progress:
    """Block until every task of ``job`` has finished, showing a progress bar read from the database.

    Warns when nothing has moved for ``quiet_after`` seconds (is a worker running?).
    """
    from tqdm import tqdm

    state = progress(job)
    last_change, last = time.monotonic(), state.finished
    with tqdm(total=state.photos, unit="photo", desc="embedding (workers)", disable=not show,
              file=sys.stderr, dynamic_ncols=True) as bar:
        while True:
            bar.update(state.finished - bar.n)
            bar.set_postfix(running=state.running_tasks, failed=len(state.failed_photos))
            if state.done:
                return state
            if state.finished != last:
                last_change, last = time.monotonic(), state.finished
            elif time.monotonic() - last_change > quiet_after:
                bar.write(f"no progress for {quiet_after:.0f} s: is a worker running? "
                          f"(celery -A jiansuo.web worker -Q {settings.CELERY_TASK_DEFAULT_QUEUE})")
                last_change = time.monotonic()
            time.sleep(poll)
            state = progress(job)


def requeue_unfinished(older_than_seconds: float) -> int:
    """Send again the messages of tasks still pending after this long (e.g. a broker restarted without
    its data lost them); returns how many were sent. Safe when a task is in fact still running."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    stale = list(IndexTask.objects.filter(state__in=PENDING, job__created__lt=cutoff)
                 .filter(Q(started__isnull=True) | Q(started__lt=cutoff)).values_list("pk", flat=True))
    if stale:
        send(stale)
    return len(stale)
