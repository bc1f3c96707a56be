"""My searches: a signed-in user's past query photos, their results one click away, deletable, expiring."""

from __future__ import annotations

import io
import os
import re
import shutil
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from jiansuo.web.catalog import photos
from jiansuo.web.history import store
from jiansuo.web.history.models import HistoryEntry

from .support import CatalogTestCase, on_postgresql, query_photo

_RESULTS = re.compile(r"^/search/([0-9a-f]{32})/")


class HistoryTests(CatalogTestCase):
    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        cls.carol = User.objects.create_user("carol", "carol@example.com", "another-long-secret-8")

    def setUp(self):
        # The class shares its folders while each test's database changes are rolled back.
        for folder in (settings.JIANSUO_HISTORY_DIR, settings.JIANSUO_QUERY_DIR):
            shutil.rmtree(folder, ignore_errors=True)
        store._last_purge = 0.0
        self.login()

    def search(self, photo: str = "chelsea", client: Client | None = None, **filters) -> str:
        """Search by upload; returns the new search's token."""
        response = (client or self.client).post(reverse("catalog:home"), {
            "image": SimpleUploadedFile("q.jpg", query_photo(photo), content_type="image/jpeg"), **filters})
        self.assertEqual(response.status_code, 302)
        return _RESULTS.match(response.url).group(1)

    def client_for(self, user: User) -> Client:
        """A new browser session of ``user``: it never uploaded anything."""
        client = Client()
        client.force_login(user)
        return client

    def listed(self, client: Client | None = None) -> list[str]:
        page = (client or self.client).get(reverse("history:list"))
        self.assertEqual(page.status_code, 200)
        return [e.token for e in page.context["entries"]]

    def results_of(self, response) -> list[str]:
        self.assertEqual(response.status_code, 200)
        return [h.product.item_id for h in response.context["hits"]]

    def history_file(self, token: str) -> Path:
        return Path(settings.JIANSUO_HISTORY_DIR) / f"{token}.jpg"

    def query_file(self, token: str) -> Path:
        return Path(settings.JIANSUO_QUERY_DIR) / f"{token}.jpg"

    # ------------------------------------------------------------------ listing and opening

    def test_searches_are_listed_newest_first_with_photo_and_results_one_click_away(self):
        self.assertEqual(self.listed(), [])
        self.assertContains(self.client.get(reverse("history:list")), "No searches yet")
        cat = self.search("chelsea")
        rocket = self.search("rocket", category="toys", max_price="1000")
        self.assertEqual(self.listed(), [rocket, cat])
        page = self.client.get(reverse("history:list"))
        self.assertContains(page, "kept for 30 days")
        self.assertContains(page, '<span class="tag">toys</span>', html=True)
        self.assertContains(page, "price up to 1000")
        # Each entry's own copy of its (re-encoded) query photo.
        photo = self.client.get(reverse("history:photo", args=[cat]))
        self.assertEqual((photo.status_code, photo["Content-Type"]), (200, "image/jpeg"))
        body = b"".join(photo.streaming_content)
        self.assertEqual(body, self.query_file(cat).read_bytes())
        self.assertEqual(Image.open(io.BytesIO(body)).format, "JPEG")
        # One click: the results with the filters chosen at upload time.
        entry = HistoryEntry.objects.get(token=rocket)
        link = entry.get_absolute_url()
        self.assertContains(page, f'href="{link.replace("&", "&amp;")}"')
        self.assertEqual(self.results_of(self.client.get(link))[0], "rocket-1")
        self.assertTrue(set(self.results_of(self.client.get(link))) <= {"rocket-1", "wheel-1"})
        self.assertEqual(self.results_of(self.client.get(HistoryEntry.objects.get(token=cat).get_absolute_url()))[0],
                         "cat-1")

    def test_the_owner_opens_a_past_search_from_a_new_session_after_the_purge(self):
        token = self.search("coffee")
        # A day later: the catalogue's copy of the query photo is purged and its vector left the cache.
        old = time.time() - settings.JIANSUO_QUERY_TTL_SECONDS - 60
        os.utime(self.query_file(token), (old, old))
        photos._last_purge = 0.0
        other_search = self.search("clock", client=self.client_for(self.staff))
        self.assertFalse(self.query_file(token).exists())
        self.assertTrue(self.query_file(other_search).exists())
        cache.clear()
        self.assertTrue(self.history_file(token).exists())  # the entry keeps its own copy
        later = self.client_for(self.user)
        self.assertEqual(self.listed(later), [token])
        self.assertEqual(self.results_of(later.get(reverse("catalog:results", args=[token]))), self.results_of(
            self.client.get(reverse("catalog:results", args=[token]))))
        self.assertEqual(self.results_of(later.get(reverse("catalog:results", args=[token])))[0], "coffee-1")
        self.assertEqual(later.get(reverse("catalog:query_image", args=[token])).status_code, 200)
        self.assertEqual(later.get(reverse("history:photo", args=[token])).status_code, 200)

    def test_visitors_searches_are_not_kept(self):
        with override_settings(JIANSUO_PUBLIC_SEARCH=True):
            self.search("chelsea", client=Client())
        self.assertEqual(HistoryEntry.objects.count(), 0)
        self.assertEqual(list(Path(settings.JIANSUO_HISTORY_DIR).glob("*")) if Path(
            settings.JIANSUO_HISTORY_DIR).exists() else [], [])
        visitor = Client().get(reverse("history:list"))
        self.assertEqual(visitor.status_code, 302)
        self.assertTrue(visitor.url.startswith(reverse("login")))

    # ------------------------------------------------------------------ others

    def test_another_user_never_sees_or_deletes_someone_elses_searches(self):
        mine = self.search("chelsea")
        carol = self.client_for(self.carol)
        hers = self.search("rocket", client=carol)
        self.assertEqual(self.listed(carol), [hers])
        self.assertNotContains(carol.get(reverse("history:list")), mine)
        self.assertEqual(carol.get(reverse("history:photo", args=[mine])).status_code, 404)
        self.assertEqual(carol.get(reverse("catalog:results", args=[mine])).status_code, 404)
        self.assertEqual(carol.get(reverse("catalog:query_image", args=[mine])).status_code, 404)
        with self.captureOnCommitCallbacks(execute=True):
            self.assertEqual(carol.post(reverse("history:delete", args=[mine])).status_code, 404)
            carol.post(reverse("history:delete_all"))
        self.assertEqual(self.listed(), [mine])
        self.assertTrue(self.history_file(mine).exists())
        self.assertEqual(self.listed(carol), [])
        self.assertFalse(self.history_file(hers).exists())
        # Visitors: sent to the login page, nothing deleted.
        visitor = Client()
        for response in (visitor.get(reverse("history:photo", args=[mine])),
                         visitor.post(reverse("history:delete", args=[mine])),
                         visitor.post(reverse("history:delete_all"))):
            self.assertEqual(response.status_code, 302)
            self.assertTrue(response.url.startswith(reverse("login")))
        self.assertEqual(self.listed(), [mine])

    # ------------------------------------------------------------------ deleting

    def test_delete_one(self):
        keep, drop = self.search("chelsea"), self.search("coffee")
        self.assertEqual(self.client.get(reverse("history:delete", args=[drop])).status_code, 405)
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post(reverse("history:delete", args=[drop]), follow=True)
        self.assertRedirects(response, reverse("history:list"))
        self.assertContains(response, "The search was deleted.")
        self.assertEqual(self.listed(), [keep])
        self.assertFalse(self.history_file(drop).exists())
        self.assertFalse(self.query_file(drop).exists())
        # Gone for this session too, not only from the list.
        self.assertEqual(self.client.get(reverse("catalog:results", args=[drop])).status_code, 404)
        self.assertEqual(self.client.get(reverse("catalog:query_image", args=[drop])).status_code, 404)
        self.assertEqual(self.client.get(reverse("history:photo", args=[drop])).status_code, 404)
        self.assertEqual(self.client.post(reverse("history:delete", args=[drop])).status_code, 404)
        self.assertEqual(self.results_of(self.client.get(reverse("catalog:results", args=[keep])))[0], "cat-1")

    def test_delete_all_asks_first(self):
        tokens = [self.search(p) for p in ("chelsea", "coffee", "rocket")]
        hers = self.search("clock", client=self.client_for(self.carol))
        confirm = self.client.get(reverse("history:delete_all"))
        self.assertContains(confirm, "all 3 of your past searches")
        self.assertEqual(self.listed(), tokens[::-1])
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post(reverse("history:delete_all"), follow=True)
        self.assertContains(response, "3 searches were deleted.")
        self.assertEqual(self.listed(), [])
        for token in tokens:
            self.assertFalse(self.history_file(token).exists())
            self.assertEqual(self.client.get(reverse("catalog:results", args=[token])).status_code, 404)
        self.assertEqual(HistoryEntry.objects.get().token, hers)
        self.assertTrue(self.history_file(hers).exists())

    def test_deleting_the_user_deletes_the_searches(self):
        token = self.search("chelsea")
        with self.captureOnCommitCallbacks(execute=True):
            self.carol.delete()
            self.assertTrue(self.history_file(token).exists())
            self.user.delete()
        self.assertFalse(HistoryEntry.objects.exists())
        self.assertFalse(self.history_file(token).exists())

    # ------------------------------------------------------------------ expiry

    @override_settings(JIANSUO_HISTORY_DAYS=7)
    def test_entries_expire(self):
        old, recent = self.search("chelsea"), self.search("coffee")
        HistoryEntry.objects.filter(token=old).update(created=timezone.now() - timedelta(days=7, minutes=1))
        HistoryEntry.objects.filter(token=recent).update(created=timezone.now() - timedelta(days=6, hours=23))
        later = self.client_for(self.user)
        # Never shown or opened once expired, even before the purge removed it.
        store._last_purge = time.time()
        self.assertEqual(self.listed(later), [recent])
        self.assertContains(later.get(reverse("history:list")), "kept for 7 days")
        self.assertEqual(later.get(reverse("history:photo", args=[old])).status_code, 404)
        self.assertEqual(later.get(reverse("catalog:results", args=[old])).status_code, 404)
        self.assertEqual(self.results_of(later.get(reverse("catalog:results", args=[recent])))[0], "coffee-1")
        # The lazy purge (at most once a minute) removes the entry and its photo.
        self.assertTrue(HistoryEntry.objects.filter(token=old).exists())
        store._last_purge = 0.0
        with self.captureOnCommitCallbacks(execute=True):
            self.listed(later)
        self.assertFalse(HistoryEntry.objects.filter(token=old).exists())
        self.assertFalse(self.history_file(old).exists())
        self.assertTrue(self.history_file(recent).exists())

    @override_settings(JIANSUO_HISTORY_DAYS=3)
    def test_purge_command(self):
        old, recent = self.search("chelsea"), self.search("coffee")
        HistoryEntry.objects.filter(token=old).update(created=timezone.now() - timedelta(days=4))
        # A photo left behind without its entry (a crash between copy and insert), as old.
        orphan = self.history_file("f" * 32)
        orphan.write_bytes(self.history_file(recent).read_bytes())
        stale = time.time() - 4 * 86400
        os.utime(orphan, (stale, stale))
        out = io.StringIO()
        with self.captureOnCommitCallbacks(execute=True):
            call_command("purge_history", stdout=out)
        self.assertIn("deleted 1 past search(es) older than 3 day(s)", out.getvalue())
        self.assertEqual(list(HistoryEntry.objects.values_list("token", flat=True)), [recent])
        self.assertFalse(self.history_file(old).exists())
        self.assertFalse(orphan.exists())
        self.assertTrue(self.history_file(recent).exists())

    # ------------------------------------------------------------------ language, admin

    def test_chinese_pages(self):
        self.client.post(reverse("set_language"), {"language": "zh-hans", "next": "/"})
        self.assertContains(self.client.get(reverse("history:list")), "还没有搜索记录")
        token = self.search("chelsea", category="animals")
        page = self.client.get(reverse("history:list"))
        self.assertContains(page, "我的搜索")
        self.assertContains(page, "保留 30 天")
        self.assertContains(page, "查看结果")
        self.assertContains(self.client.get(reverse("history:delete_all")), "删除我的全部搜索记录")
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post(reverse("history:delete", args=[token]), follow=True)
        self.assertContains(response, "该搜索记录已删除。")

    def test_admin_lists_and_deletes(self):
        token = self.search("chelsea")
        admin = User.objects.create_superuser("root", "root@example.com", "root-password-123")
        client = self.client_for(admin)
        changelist = client.get(reverse("admin:history_historyentry_changelist"))
        self.assertContains(changelist, "alice")
        self.assertEqual(client.get(reverse("admin:history_historyentry_add")).status_code, 403)
        entry = HistoryEntry.objects.get(token=token)
        with self.captureOnCommitCallbacks(execute=True):
            client.post(reverse("admin:history_historyentry_delete", args=[entry.pk]), {"post": "yes"})
        self.assertFalse(HistoryEntry.objects.exists())
        self.assertFalse(self.history_file(token).exists())


HistoryTestsOnPostgreSQL = on_postgresql(HistoryTests)
