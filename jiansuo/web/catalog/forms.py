"""Forms of the search pages: the photo upload and the result filters."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _
import numpy as np
from PIL import Image

from jiansuo.images import Box, ImageError, load_image
from jiansuo.search.ranking import INTENTS

from .middleware import too_large_message
from .models import Product
from .search import Filters, auto_box, embed

# The site's words for the ranking intents, which are the CLI's and the API's.
_INTENT_LABELS = {"both": _("This product first, then similar ones"),
                  "same": _("The closest photos (other listings of it)"),
                  "similar": _("Similar styles")}
INTENT_CHOICES = [(intent, _INTENT_LABELS[intent]) for intent in INTENTS]


def upload_bytes(upload) -> bytes:
    """The bytes of an uploaded file within the upload limit; ValidationError(code="too_large") otherwise."""
    if upload.size > settings.JIANSUO_MAX_UPLOAD_BYTES:
        raise ValidationError(too_large_message(), code="too_large")
    return upload.read()


def _not_an_image(exc: ImageError) -> ValidationError:
    return ValidationError(_("This file is not a usable image: %(reason)s.") % {"reason": exc}, code="not_an_image")


def decode_photo(data: bytes) -> Image.Image:
    """Decode photo bytes into an RGB image; ValidationError(code="not_an_image") with the reason otherwise."""
    try:
        return load_image(data)
    except ImageError as exc:
        raise _not_an_image(exc) from None


def read_photo(upload) -> Image.Image:
    """Check and decode an uploaded photo (the pages, the API and the admin share these checks)."""
    return decode_photo(upload_bytes(upload))


def photo_vector(data: bytes, box: Box | None = None) -> np.ndarray:
    """The query vector of photo bytes, or of their part ``box`` (decoded once, as the CLI decodes a
    file); ValidationError (code="not_an_image") when they are not a usable image."""
    try:
        return embed(data, box=box)
    except ImageError as exc:
        raise _not_an_image(exc) from None


def photo_box(data: bytes, whole: np.ndarray | None = None) -> Box | None:
    """The suggested box of photo bytes (None: search it whole; ``whole``: their vector, if known);
    ValidationError like :func:`photo_vector`."""
    try:
        return auto_box(data, whole=whole)
    except ImageError as exc:
        raise _not_an_image(exc) from None


def category_choices() -> list[tuple[str, str]]:
    """("", "All categories") followed by every category in the catalogue."""
    cats = (Product.objects.exclude(category="").order_by("category")
            .values_list("category", flat=True).distinct())
    return [("", _("All categories"))] + [(c, c) for c in cats]


class FilterForm(forms.Form):
    """Category and price range, and how to rank (intent, copy check); every field optional."""

    category = forms.ChoiceField(label=_("Category"), required=False)
    min_price = forms.DecimalField(label=_("Lowest price"), required=False, min_value=0, max_digits=12,
                                   decimal_places=2, widget=forms.NumberInput(attrs={"step": "any",
                                                                                      "placeholder": "0"}))
    max_price = forms.DecimalField(label=_("Highest price"), required=False, min_value=0, max_digits=12,
                                   decimal_places=2, widget=forms.NumberInput(attrs={"step": "any",
                                                                                      "placeholder": "∞"}))

    intent = forms.ChoiceField(label=_("Show"), required=False, choices=INTENT_CHOICES)
    verify = forms.BooleanField(label=_("Find the very photo (checks the first results' pixels; slower)"),
                                required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["category"].choices = category_choices()

    def clean(self):
        data = super().clean()
        lo, hi = data.get("min_price"), data.get("max_price")
        if lo is not None and hi is not None and lo > hi:
            raise ValidationError(_("The lowest price is above the highest price."))
        return data

    def filters(self) -> Filters:
        """The valid filters (an invalid form filters nothing)."""
        if not self.is_valid():
            return Filters()
        data = self.cleaned_data
        return Filters(data.get("category") or None, data.get("min_price"), data.get("max_price"))

    def ranking(self) -> tuple[str, bool]:
        """(intent, verify) as chosen; the defaults ("both", no copy check) for an invalid form."""
        data = self.cleaned_data if self.is_valid() else {}
        return data.get("intent") or "both", bool(data.get("verify"))


class PhotoSearchForm(FilterForm):
    """The home page form: a photo plus the filters to apply to its results.

    A valid form has the decoded photo as ``cleaned_data["image"]`` and its bytes as :attr:`photo_bytes`.
    """

    image = forms.FileField(label=_("Photo"), widget=forms.ClearableFileInput(attrs={"accept": "image/*"}))
    photo_bytes: bytes = b""

    def clean_image(self) -> Image.Image:
        self.photo_bytes = upload_bytes(self.cleaned_data["image"])
        return decode_photo(self.photo_bytes)
