"""Changing the catalogue and keeping the search index in step with it, from one place.

The admin, the import command and the API call these functions; nothing else writes to the
vector store. The store is reconciled by photo id (a photo's path under MEDIA_ROOT, named by the
hash of its content, so a photo id never changes meaning): a photo some product refers to must
have a vector, a photo no product refers to must not (and its file is deleted).

:func:`index_photos` is the embedding work itself. With a broker configured, :func:`sync_index`
queues it as tasks for the workers (:mod:`.jobs`) instead of running it in this process; removals
are always immediate (they only delete rows).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet

from jiansuo.pipeline import add_files

from . import jobs
from .models import IndexJob, Product, ProductImage, files_among
from .photos import delete_product_photo
from .search import get_extractor, get_store, open_site_store, reset_store

log = logging.getLogger(__name__)

_CHUNK = 500
# Vectors written to the index per commit: fewer, larger segments than one per inference batch.
_COMMIT_EVERY = 1024


@dataclass
class SyncReport:
    """What a reconciliation did."""

    added: int = 0
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: Photos handed to the workers instead of embedded here, and the job they were added to.
    queued: int = 0
    job: IndexJob | None = None


def index_photos(photo_ids: Iterable[str], *, progress: bool = False) -> SyncReport:
    """Embed these stored product photos and store their vectors (the unit of embedding work).

    Photos whose files cannot be read or decoded are reported in ``failed`` and left unindexed.
    """
    media = Path(settings.MEDIA_ROOT)
    files = [(media / pid, pid) for pid in sorted(set(photo_ids))]
    report = SyncReport()
    report.added = add_files(get_store(), files, get_extractor(), commit_every=_COMMIT_EVERY, progress=progress,
                             skipped=report.failed)
    for pid, reason in report.failed:
        log.warning("cannot index photo %s: %s", pid, reason)
    return report


def sync_index(photo_ids: Iterable[str] | None = None, *, progress: bool = False, job: IndexJob | None = None,
               label: str = "") -> SyncReport:
    """Make the index agree with the database for these photo ids (every photo when None).

    Photos to embed are embedded now, or, with a broker configured, queued for the workers as
    tasks of ``job`` (a new job named ``label`` when None).
    """
    store = get_store()
    if photo_ids is None:
        indexed = set(store.ids())
        referenced_now = set(ProductImage.objects.values_list("file", flat=True))
        candidates = referenced_now | indexed
        store.maintain(progress=progress)
    else:
        candidates = set(photo_ids)
        indexed = store.contains(candidates)
        referenced_now = referenced(candidates)
    unreferenced = candidates - referenced_now
    report = SyncReport()
    report.removed = store.remove(unreferenced & indexed)
    for pid in unreferenced:
        if pid.startswith("products/"):
            delete_product_photo(pid)
    missing = referenced_now - indexed
    if missing and jobs.queue_enabled():
        if photo_ids is None:  # a full repair leaves photos already waiting for a worker to it
            missing -= jobs.pending_photo_ids()
        if missing:
            report.job = job or jobs.new_job(label or "index photos")
            jobs.queue(missing, report.job)
            report.queued = len(missing)
    elif missing:
        added = index_photos(missing, progress=progress)
        report.added, report.failed = added.added, added.failed
    return report


def rebuild_store() -> int:
    """Empty the vector store for the site's current model (refusing nothing); returns how many vectors
    were forgotten. A full :func:`sync_index` then embeds every photo again."""
    model = get_extractor().describe()
    reset_store()
    with open_site_store(model, check=False) as store:
        forgotten = store.reset(model)
    reset_store()
    return forgotten


def delete_products(products: QuerySet[Product]) -> int:
    """Delete products, then drop the photos no other product uses; returns how many were deleted.

    The index and the files are only touched once the deletion is committed, so a rolled-back
    deletion never loses a photo.
    """
    photo_ids = set(ProductImage.objects.filter(product__in=products).values_list("file", flat=True))
    count = products.count()
    products.delete()
    transaction.on_commit(lambda: sync_index(photo_ids))
    return count


def photo_ids_of(product: Product) -> set[str]:
    """The photo ids a product refers to now (read from the database, not a prefetch cache)."""
    return set(ProductImage.objects.filter(product=product).values_list("file", flat=True))


def referenced(photo_ids: Iterable[str]) -> set[str]:
    """Those of ``photo_ids`` some product uses."""
    return files_among(ProductImage.objects.all(), list(photo_ids), _CHUNK)
