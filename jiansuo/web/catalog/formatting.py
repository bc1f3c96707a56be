"""Prices and scores written for the reader's language (through Babel's CLDR data)."""

from __future__ import annotations

from decimal import Decimal

from babel.numbers import format_currency, format_percent
from django.utils import translation


def _locale() -> str:
    # Django's "zh-hans" becomes "zh_Hans", which is also CLDR's name.
    return translation.to_locale(translation.get_language() or "en")


def format_price(amount: Decimal, currency: str) -> str:
    """E.g. ``CN¥1,299.00`` in English, ``¥1,299.00`` in Chinese."""
    return format_currency(amount, currency or "CNY", locale=_locale())


def format_score(value: float) -> str:
    """A similarity in [-1, 1] as a whole percentage in the active language."""
    return format_percent(max(0.0, float(value)), locale=_locale())
