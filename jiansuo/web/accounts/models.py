"""A user's profile: for now only the optional profile photo shown in the header."""

from __future__ import annotations

import re

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

_PHOTO_NAME = re.compile(r"^[0-9a-f]{32}\.jpg$")


class Profile(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile",
                                verbose_name=_("user"))
    #: File name under JIANSUO_PROFILE_PHOTO_DIR: random, chosen by the site, new for every photo
    #: (so the photo's URL changes with it and browsers never show a stale cached one).
    photo = models.CharField(_("profile photo"), max_length=40, blank=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("profile")
        verbose_name_plural = _("profiles")

    def __str__(self) -> str:
        return str(self.user)

    @property
    def photo_token(self) -> str:
        """The random part of the photo's file name ("" without a photo): the photo URL's key."""
        return self.photo[:-4] if _PHOTO_NAME.match(self.photo) else ""
