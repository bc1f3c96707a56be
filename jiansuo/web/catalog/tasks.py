"""Celery tasks of the indexing workers (run by ``celery -A jiansuo.web worker``).

A message carries only the id of an :class:`~.models.IndexTask` row; the row holds the photo ids
and the task's state, so any worker on any machine can run it and the site can show progress.
Delivery is at least once: the message is acknowledged only after the work (``acks_late``), a
message whose worker process died is handed to another worker (``reject_on_worker_lost``, and the
broker's visibility timeout when the whole worker machine disappears), and errors are retried with
exponential backoff. Running a task twice is harmless: storing a photo's vector replaces it.
"""

from __future__ import annotations

from jiansuo.web.celery import app

from . import jobs

#: Retries of a task that raised (database or storage unreachable, ...), waiting 5 s, 10 s, 20 s, … up to 5 min.
MAX_RETRIES = 8


@app.task(bind=True, name="jiansuo.embed_photos", acks_late=True, reject_on_worker_lost=True,
          autoretry_for=(Exception,), retry_backoff=5, retry_backoff_max=300, retry_jitter=True,
          max_retries=MAX_RETRIES)
def embed_photos(self, task_id: int) -> None:
    """Embed the photos of IndexTask ``task_id`` and store their vectors."""
    jobs.run_task(task_id, worker=self.request.hostname or "", final_attempt=self.request.retries >= MAX_RETRIES)
