"""Possible duplicate products: the core's groups of near-identical photos (:mod:`jiansuo.search.duplicates`)
over the site's store, as groups of the visible products those photos belong to."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from jiansuo.search.duplicates import DEFAULT_RULE, Report, find_duplicates

from .models import ProductImage
from .search import get_store

_cache: dict[tuple, Report] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Listing:
    """One product of a duplicate group, with the photo of it that is in the group."""

    product: object
    photo: ProductImage


@dataclass(frozen=True)
class DuplicateGroup:
    """Visible products whose photos are near-identical; ``score`` is the lowest cosine joining the photos."""

    score: float
    listings: list[Listing]


def photo_report() -> Report:
    """The core's report over the site's store, recomputed only when the store's vectors changed."""
    store = get_store()
    generation = getattr(store, "generation", None)
    key = (store.location, generation)
    with _lock:
        report = _cache.get(key) if generation is not None else None
    if report is None:
        report = find_duplicates(store, Path(settings.MEDIA_ROOT), DEFAULT_RULE)
        with _lock:
            _cache.clear()
            _cache[key] = report
    return report


def duplicate_products() -> list[DuplicateGroup]:
    """Groups of at least two visible products with near-identical photos, highest score first.

    Hidden products are left out (a pair with one hidden product is settled); photos of one product
    alike among themselves are not a duplicate listing.
    """
    out = []
    for group in photo_report().groups:
        seen: dict[int, Listing] = {}
        rows = ProductImage.objects.filter(file__in=group.ids, product__hidden=False).select_related("product")
        for row in rows.order_by("product__item_id", "position"):
            seen.setdefault(row.product_id, Listing(row.product, row))
        if len(seen) >= 2:
            out.append(DuplicateGroup(group.score, list(seen.values())))
    return out
