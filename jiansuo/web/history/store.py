"""Keeping, reopening and removing past searches, and their photo files.

An entry keeps its own copy of the query photo under JIANSUO_HISTORY_DIR: the catalogue purges
query photos after JIANSUO_QUERY_TTL_SECONDS (a day), while an entry lives JIANSUO_HISTORY_DAYS.
Reopening an entry puts the photo back where the catalogue looks for it and lets the session
open the token, so ``/search/<token>/`` works from any session of its owner, however the
catalogue caches the query's vector. Entries past their lifetime are never shown; they and
their files are deleted lazily (at most once a minute, on a new search or a look at the list)
and by ``python -m jiansuo.web purge_history``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone

from jiansuo.atomic import atomic_write
from jiansuo.web.catalog.photos import (query_files, query_photo_path, query_vector, restore_query, vector_file,
                                        vector_files)

from .models import HistoryEntry

#: The session key under which the catalogue's views keep the tokens a session may open, and how
#: many (mirrors jiansuo.web.catalog.views._remember_query).
SESSION_QUERIES_KEY = "queries"
SESSION_QUERIES_MAX = 20
#: Expired entries deleted per lazy purge, so that no page waits long for it (the command has no limit).
LAZY_PURGE_BATCH = 200

_TOKEN = re.compile(r"^[0-9a-f]{32}$")


def history_dir() -> Path:
    return Path(settings.JIANSUO_HISTORY_DIR)


def entry_photo_path(token: str) -> Path | None:
    """The entry's own copy of its query photo, or None when it is gone (or the token is malformed)."""
    if not _TOKEN.match(token or ""):
        return None
    path = history_dir() / f"{token}.jpg"
    return path if path.is_file() else None


def _entry_vector(token: str) -> np.ndarray | None:
    """The entry's own copy of its query vector (computed once, at upload), or None (also when the
    site's network has changed since: the photo is embedded again)."""
    try:
        return np.load(vector_file(history_dir(), token), allow_pickle=False)
    except (OSError, ValueError):
        return None


def expiry_cutoff(now: datetime | None = None) -> datetime:
    """Entries created before this moment have expired."""
    return (now or timezone.now()) - timedelta(days=settings.JIANSUO_HISTORY_DAYS)


def live_entries(user: AbstractBaseUser) -> QuerySet[HistoryEntry]:
    """The user's entries that have not expired, newest first (none for anonymous users)."""
    if not user.is_authenticated:
        return HistoryEntry.objects.none()
    return HistoryEntry.objects.filter(user=user, created__gte=expiry_cutoff())


def record_search(user: AbstractBaseUser, token: str, filters: Mapping[str, object]) -> HistoryEntry | None:
    """Keep the search just stored under ``token`` in the history of ``user`` (nothing for visitors).

    Called by the catalogue right after it stored the query photo; ``filters`` are the ones
    chosen with the upload. The photo is copied, so the entry outlives the catalogue's purge.
    """
    if not user.is_authenticated:
        return None
    source = query_photo_path(token)
    if source is None:
        return None
    atomic_write(history_dir() / f"{token}.jpg", source.read_bytes())
    vector = query_vector(token)
    if vector is not None:
        atomic_write(vector_file(history_dir(), token), lambda fh: np.save(fh, vector))
    entry = HistoryEntry.objects.create(user=user, token=token, filters=urlencode(dict(filters)))
    purge_expired(limit=LAZY_PURGE_BATCH)
    return entry


def reopen_search(request: HttpRequest, token: str) -> bool:
    """Let the signed-in owner of a live entry open ``/search/<token>/`` and its photo from this session.

    Called by the catalogue's results and query-photo views before they check the session. True
    when ``token`` is one of the user's live entries (and its photo is in place again).
    """
    entry = live_entries(request.user).filter(token=token).first()
    if entry is None:
        return False
    if query_photo_path(token) is None or query_vector(token) is None:
        own = entry_photo_path(token)
        if own is None:
            return False
        restore_query(token, own.read_bytes(), _entry_vector(token))
    queries = request.session.get(SESSION_QUERIES_KEY, [])
    if token not in queries:
        request.session[SESSION_QUERIES_KEY] = (queries + [token])[-SESSION_QUERIES_MAX:]
    return True


def delete_entries(request: HttpRequest, entries: QuerySet[HistoryEntry]) -> int:
    """Delete ``entries`` (already limited to the user's own), their photos, and the session's access to them."""
    tokens = set(entries.values_list("token", flat=True))
    count = entries.delete()[1].get(HistoryEntry._meta.label, 0)
    queries = request.session.get(SESSION_QUERIES_KEY, [])
    if tokens & set(queries):
        request.session[SESSION_QUERIES_KEY] = [t for t in queries if t not in tokens]
    return count


def purge_expired(limit: int | None = None, force: bool = False) -> int:
    """Delete expired entries and their files; returns how many entries went.

    Without ``force`` it runs at most once a minute per process (it is called on ordinary
    requests). Photo files left without an entry (a crash between copy and insert) go once
    they are older than the lifetime too.
    """
    global _last_purge
    now = time.time()
    if not force and now - _last_purge < 60:
        return 0
    _last_purge = now
    expired = HistoryEntry.objects.filter(created__lt=expiry_cutoff())
    if limit is not None:
        expired = HistoryEntry.objects.filter(pk__in=list(expired.values_list("pk", flat=True)[:limit]))
    count = expired.delete()[1].get(HistoryEntry._meta.label, 0)
    cutoff = now - settings.JIANSUO_HISTORY_DAYS * 86400
    for f in [*history_dir().glob("*.jpg"), *history_dir().glob("*.npy")]:
        try:
            if f.stat().st_mtime < cutoff and not HistoryEntry.objects.filter(token=f.stem).exists():
                f.unlink()
        except OSError:
            pass  # another process removed it first
    return count


_last_purge = 0.0


def _delete_files(token: str) -> None:
    for path in [history_dir() / f"{token}.jpg", *vector_files(history_dir(), token)]:
        path.unlink(missing_ok=True)
    # The catalogue's copies too: a deleted search's photo must not stay reachable for the rest of the day.
    for path in query_files(token):
        path.unlink(missing_ok=True)


@receiver(post_delete, sender=HistoryEntry, dispatch_uid="jiansuo-history-entry-files")
def _entry_deleted(sender, instance: HistoryEntry, **kwargs) -> None:
    # Also when the user is deleted (the entries go with them). After the commit: a rolled-back
    # delete must leave the entry with its photo.
    if entry_photo_path(instance.token) is not None or query_files(instance.token):
        token = instance.token
        transaction.on_commit(lambda: _delete_files(token))
