"""Indexing spread over workers: real ``celery -A jiansuo.web worker`` processes, Redis and PostgreSQL.

The test process plays the site (it queues photos and searches); each worker is a separate process
with its own environment, as on another machine, sharing only the database, the broker and the
media folder.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import unittest
import uuid

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connections
from django.test import TransactionTestCase, override_settings
from PIL import ImageOps
from rest_framework.test import APIClient

from jiansuo.web.catalog import jobs, services
from jiansuo.web.catalog.models import IndexJob, IndexTask, Product, ProductImage
from jiansuo.web.catalog.search import embed, get_store, search_products
from tests.conftest import PHOTO_NAMES, real_photo

from .support import CATALOGUE, NO_POSTGRES, PG_URL, IsolatedSiteMixin, OnPostgreSQL, add_product, query_photo

REDIS_URL = os.environ.get("JIANSUO_TEST_REDIS_URL", "").strip()
QUEUE = f"jiansuo-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
VISIBILITY_TIMEOUT = 4


@pytest.mark.slow
@pytest.mark.postgres
@unittest.skipUnless(PG_URL, NO_POSTGRES)
@unittest.skipUnless(REDIS_URL, "JIANSUO_TEST_REDIS_URL is unset: start Redis with scripts/services.sh and "
                                "`source var/services.env` to run the Celery worker tests")
@override_settings(CELERY_BROKER_URL=REDIS_URL, CELERY_TASK_DEFAULT_QUEUE=QUEUE)
class WorkerTests(OnPostgreSQL, IsolatedSiteMixin, TransactionTestCase):
    def tearDown(self):
        import redis

        redis.Redis.from_url(REDIS_URL).delete(QUEUE)
        super().tearDown()

    # ------------------------------------------------------------------ helpers

    def start_worker(self, name: str) -> subprocess.Popen:
        db = connections["postgres"].settings_dict  # its NAME is the test database's by now
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "jiansuo.web.settings",
               "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
               "JIANSUO_BROKER_URL": REDIS_URL, "JIANSUO_TASK_QUEUE": QUEUE,
               "JIANSUO_TASK_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
               "JIANSUO_DATA_DIR": str(self.site_dir / name), "JIANSUO_MEDIA_ROOT": str(settings.MEDIA_ROOT),
               "JIANSUO_PG_TABLE": settings.JIANSUO_PG_TABLE}
        log = open(self.site_dir / f"{name}.log", "w")
        self.addCleanup(log.close)
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "jiansuo.web", "worker", "-n", f"{name}@%h", "-Q", QUEUE,
             "--pool", "prefork", "--concurrency", "1", "--without-gossip", "--without-mingle", "-l", "info"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.addCleanup(self.stop_worker, proc)
        return proc

    def stop_worker(self, proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)

    def worker_logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.site_dir.glob("*.log")))

    def wait_for(self, condition, what: str, timeout: float = 240.0):
        deadline = time.monotonic() + timeout
        while not (result := condition()):
            if time.monotonic() > deadline:
                self.fail(f"timed out waiting for {what}\n{self.worker_logs()}")
            time.sleep(0.05)
        return result

    def search_first(self, photo: str) -> str | None:
        hits = search_products(embed(query_photo(photo)), 1)
        return hits[0].product.item_id if hits else None

    # ------------------------------------------------------------------ tests

    @override_settings(JIANSUO_TASK_PHOTOS=2)
    def test_workers_embed_queued_photos_and_the_site_finds_them(self):
        products = [add_product(item, photo, cat, price) for item, photo, cat, price, _ in CATALOGUE[:5]]
        report = services.sync_index()
        self.assertEqual((report.queued, report.added), (5, 0))
        job = report.job
        self.assertEqual(job.tasks.count(), 3)  # 2 + 2 + 1 photos
        # Queued, not embedded: nothing is searchable until a worker has run.
        self.assertEqual(set(get_store().ids()), set())
        self.assertIsNone(self.search_first("chelsea"))
        self.assertEqual(jobs.progress(job).finished, 0)
        # A repair while the tasks wait does not queue the same photos again.
        self.assertEqual(services.sync_index().queued, 0)

        self.start_worker("alpha")
        self.start_worker("beta")
        state = self.wait_for(lambda: (s := jobs.progress(job)).done and s, "the workers to finish the job")
        self.assertEqual((state.photos, state.finished, state.indexed, state.failed_photos), (5, 5, 5, []))
        files = {p.images.get().file for p in products}
        self.assertEqual(set(get_store().ids()), files)
        self.assertEqual(self.search_first("chelsea"), "cat-1")
        self.assertEqual(self.search_first("rocket"), "rocket-1")
        self.assertTrue(all(w.split("@")[0] in ("alpha", "beta")
                            for w in IndexTask.objects.values_list("worker", flat=True)))
        # The API answers from the same table.
        api = APIClient()
        api.force_authenticate(User.objects.create_user("carol", password="long-enough-pass-1"))
        response = api.post("/api/search", {"image": SimpleUploadedFile("q.jpg", query_photo("coffee")), "k": 2},
                            format="multipart")
        self.assertEqual(response.json()["results"][0]["item_id"], "coffee-1")
        # Deleting a product takes effect at once, without a worker.
        cat_file = products[0].images.get().file
        services.delete_products(Product.objects.filter(item_id="cat-1"))
        self.assertNotIn(cat_file, set(get_store().ids()))
        self.assertNotEqual(self.search_first("chelsea"), "cat-1")

    @override_settings(JIANSUO_TASK_PHOTOS=64)
    def test_a_killed_workers_task_is_run_again_by_another(self):
        # 36 distinct photos (real photos, mirrored and turned): one task that takes a few seconds.
        for n, name in enumerate(PHOTO_NAMES):
            img = real_photo(name)
            for variant, photo in enumerate((img, ImageOps.mirror(img), img.rotate(90, expand=True))):
                add_product(f"p{n}-{variant}", photo, price=str(n + 1))
        files = set(ProductImage.objects.values_list("file", flat=True))
        self.assertEqual(len(files), 36)
        job = services.sync_index().job
        task = IndexTask.objects.get(job=job)

        first = self.start_worker("doomed")
        self.wait_for(lambda: IndexTask.objects.filter(pk=task.pk, state=IndexTask.State.RUNNING).exists(),
                      "the first worker to start the task")
        os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool process, mid-task
        first.wait(timeout=30)
        task.refresh_from_db()
        self.assertEqual((task.state, task.attempts, task.worker.split("@")[0]), ("running", 1, "doomed"))
        self.assertEqual(get_store().contains(files), set())

        time.sleep(VISIBILITY_TIMEOUT)  # the message is unacknowledged for longer than the broker waits
        self.start_worker("rescuer")
        self.wait_for(lambda: IndexTask.objects.filter(pk=task.pk, state=IndexTask.State.DONE).exists(),
                      "the second worker to run the task again")
        task.refresh_from_db()
        self.assertEqual((task.attempts, task.worker.split("@")[0], task.indexed), (2, "rescuer", 36))
        self.assertEqual(get_store().contains(files), files)
        self.assertEqual(jobs.progress(IndexJob.objects.get(pk=job.pk)).finished, 36)
        self.assertTrue(self.search_first("rocket").startswith(f"p{PHOTO_NAMES.index('rocket')}-"))

    def test_a_catalogue_import_queues_its_photos_and_waits_for_the_workers(self):
        folder = self.site_dir / "catalogue"
        folder.mkdir()
        rows = []
        for item, photo, category, price, _ in CATALOGUE[:4]:
            real_photo(photo).save(folder / f"{photo}.jpg", quality=90)
            rows.append(f"{item},Product {item},{category},{price},Shop,,{photo}.jpg")
        (folder / "catalogue.csv").write_text("item_id,title,category,price,shop,url,image\n" + "\n".join(rows) + "\n")
        self.start_worker("importer")
        out, err = io.StringIO(), io.StringIO()
        with override_settings(JIANSUO_TASK_PHOTOS=3):
            call_command("import_catalog", str(folder / "catalogue.csv"), "--wait", "--no-progress",
                         stdout=out, stderr=err)
        job = IndexJob.objects.get()
        self.assertEqual(job.label, "import catalogue.csv")
        self.assertIn(f"indexed 0; queued 4 for the indexing workers (job {job.pk})", out.getvalue())
        self.assertIn("workers indexed 4 of 4 photos", out.getvalue())
        self.assertEqual(job.tasks.count(), 2)  # one job for the whole import, in tasks of 3 photos
        self.assertEqual(set(get_store().ids()), set(ProductImage.objects.values_list("file", flat=True)))
        self.assertEqual(self.search_first("coffee"), "coffee-1")

    @override_settings(JIANSUO_TASK_PHOTOS=2)
    def test_tasks_whose_messages_were_lost_are_sent_again(self):
        import redis

        for item, photo, category, price, _ in CATALOGUE[:3]:
            add_product(item, photo, category, price)
        job = services.sync_index().job
        redis.Redis.from_url(REDIS_URL).delete(QUEUE)  # the broker restarted without its data
        self.start_worker("late")
        out = io.StringIO()
        with override_settings(CELERY_BROKER_TRANSPORT_OPTIONS={"visibility_timeout": 0}):
            call_command("sync_index", "--requeue", "--wait", "--no-progress", stdout=out)
        self.assertIn("sent 2 pending task(s) again", out.getvalue())
        self.assertIn("queued 0", out.getvalue())  # the repair itself queued nothing twice
        self.assertTrue(self.wait_for(lambda: jobs.progress(job).done, "the requeued tasks"))
        self.assertEqual(set(get_store().ids()), set(ProductImage.objects.values_list("file", flat=True)))
