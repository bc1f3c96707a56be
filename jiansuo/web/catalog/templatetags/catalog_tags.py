"""Template filters for the catalogue pages."""

from __future__ import annotations

from django import template
from django.core.files.storage import default_storage

from ..formatting import format_price, format_score

register = template.Library()


@register.simple_tag
def price(product) -> str:
    """``{% price product %}``: the product's price in its currency, written for the page's language."""
    return format_price(product.price, product.currency)


@register.filter
def score(value: float) -> str:
    """A cosine similarity as a percentage for people (0.873 -> "87%")."""
    return format_score(value)


@register.filter
def media_url(photo_id: str) -> str:
    """The URL of a stored photo from its id (its path under MEDIA_ROOT)."""
    return default_storage.url(photo_id) if photo_id else ""
