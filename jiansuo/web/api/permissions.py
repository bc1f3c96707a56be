"""Who may call the search API."""

from django.conf import settings
from rest_framework.permissions import BasePermission


class CanSearch(BasePermission):
    """Any authenticated user; everyone when the operator set JIANSUO_PUBLIC_SEARCH."""

    def has_permission(self, request, view) -> bool:
        return settings.JIANSUO_PUBLIC_SEARCH or bool(request.user and request.user.is_authenticated)
