"""Template tags of the account pages and the header."""

from __future__ import annotations

from django import template
from django.urls import reverse

from ..profile import get_profile, profile_photo_path

register = template.Library()


@register.simple_tag(takes_context=True)
def profile_photo_url(context) -> str:
    """``{% profile_photo_url as url %}``: the signed-in user's profile photo URL, "" without one."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return ""
    # The header asks on every page: look the profile up once per request.
    if not hasattr(request, "_jiansuo_profile_photo_url"):
        profile = get_profile(user)
        request._jiansuo_profile_photo_url = (reverse("profile_photo", args=[profile.photo_token])
                                              if profile_photo_path(profile) else "")
    return request._jiansuo_profile_photo_url
