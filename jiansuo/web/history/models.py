"""A past search of a signed-in user: the token of its query photo and the filters it was made with."""

from __future__ import annotations

from django.conf import settings
from django.http import QueryDict
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class HistoryEntry(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="search_history",
                             verbose_name=_("user"))
    #: The query photo's token (see jiansuo.web.catalog.photos): also its results page, /search/<token>/.
    token = models.CharField(_("token"), max_length=32, unique=True)
    #: The filters chosen with the upload, as a URL query string, so the results reopen as they were.
    filters = models.CharField(_("filters"), max_length=500, blank=True)
    created = models.DateTimeField(_("searched"), default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["user", "-created"], name="history_user_created")]
        verbose_name = _("past search")
        verbose_name_plural = _("past searches")

    def __str__(self) -> str:
        return f"{self.user} {self.created:%Y-%m-%d %H:%M}"

    def get_absolute_url(self) -> str:
        """The search's results page, with the filters it was made with."""
        url = reverse("catalog:results", args=[self.token])
        return f"{url}?{self.filters}" if self.filters else url

    def filter_values(self) -> QueryDict:
        """The filters as a mapping (``category``, ``min_price``, ``max_price``; each may be missing)."""
        return QueryDict(self.filters)
