"""Template context shared by every page."""

from __future__ import annotations

from django.conf import settings


def site(request) -> dict:
    """Flags the base template needs: demo banner, public search, upload limit."""
    return {
        "jiansuo_demo": settings.JIANSUO_DEMO,
        "jiansuo_public_search": settings.JIANSUO_PUBLIC_SEARCH,
        "jiansuo_max_upload_bytes": settings.JIANSUO_MAX_UPLOAD_BYTES,
        "jiansuo_max_upload_mb": f"{settings.JIANSUO_MAX_UPLOAD_BYTES / (1024 * 1024):g}",
    }
