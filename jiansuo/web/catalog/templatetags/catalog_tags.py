"""Template filters for the catalogue pages."""

from __future__ import annotations

from django import template
from django.core.files.storage import default_storage
from django.utils.html import format_html
from django.utils.translation import gettext as _

from ..formatting import format_price, format_score
from ..search import match_level

register = template.Library()


@register.simple_tag
def price(product) -> str:
    """``{% price product %}``: the product's price in its currency, written for the page's language."""
    return format_price(product.price, product.currency)


@register.filter
def score(value: float) -> str:
    """A cosine similarity as a percentage for people (0.873 -> "87%")."""
    return format_score(value)


@register.simple_tag
def similarity(value: float) -> str:
    """``{% similarity score %}``: a result's likeness in words ("Very similar", "Similar"), its raw
    cosine similarity on hover (``title``) and in ``data-score``."""
    level = match_level(value)
    label = {"very_similar": _("Very similar"), "similar": _("Similar")}.get(level) or _("Weak match")
    raw = f"{float(value):.3f}"
    return format_html('<span class="score {}" title="{}" data-score="{}">{}</span>', level.replace("_", "-"),
                       _("Similarity score %(score)s (cosine; 1 = identical)") % {"score": raw}, raw, label)


@register.filter
def media_url(photo_id: str) -> str:
    """The URL of a stored photo from its id (its path under MEDIA_ROOT)."""
    return default_storage.url(photo_id) if photo_id else ""
