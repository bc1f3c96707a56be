"""The API's browsable documentation: Swagger UI (``/api/docs``) and ReDoc (``/api/redoc``) of ``/api/schema``.

Both pages load only this site's own files: the JavaScript and CSS bundled by
``drf-spectacular-sidecar`` (``SPECTACULAR_SETTINGS`` selects it), a ReDoc template without
drf-spectacular's web-font links (templates/api/redoc.html; ReDoc's theme uses the site's system
fonts), and Swagger UI without its online validator badge (``validatorUrl: None``). ReDoc 2's side
menu always shows the Redocly logo from cdn.redoc.ly: this site serves the ReDoc bundle with that
address replaced by an empty image (the logo then hides itself, the "API docs by Redocly" link
stays). A Content-Security-Policy on both pages lets them fetch from this site only, so a later
bundle that reaches out would be stopped (and tests/web/test_docs.py would see it).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from django.contrib.staticfiles import finders
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.gzip import gzip_page
from django.views.decorators.http import require_GET
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

REDOC_BUNDLE = "drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js"
# The one outside address in ReDoc's bundle that it fetches at run time, whatever its options.
REDOCLY_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"

# The docs pages may load from this site only; inline scripts and styles are the two UIs' own
# (Swagger UI's start-up script, ReDoc's styled components), ReDoc's search runs in a blob: worker.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self' 'unsafe-inline'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "worker-src 'self' blob:",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])


class _OwnFilesOnly:
    """Public pages (like the schema itself) that may fetch from this site only."""

    permission_classes = [AllowAny]

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response


class SwaggerView(_OwnFilesOnly, SpectacularSwaggerView):
    url_name = "api-schema"


class RedocView(_OwnFilesOnly, SpectacularRedocView):
    url_name = "api-schema"
    template_name = "api/redoc.html"

    @staticmethod
    def _redoc_standalone() -> str:
        return reverse("api-redoc-bundle") + f"?v={_redoc_bundle()[1]}"


@lru_cache(maxsize=1)
def _redoc_bundle() -> tuple[bytes, str]:
    """(ReDoc's bundle with the Redocly logo's address emptied, a digest of it)."""
    path = finders.find(REDOC_BUNDLE)
    if not path:
        raise Http404("drf-spectacular-sidecar is not installed")
    data = Path(path).read_bytes().replace(REDOCLY_LOGO, b"data:,")
    return data, hashlib.sha256(data).hexdigest()[:16]


@require_GET
@gzip_page
def redoc_bundle(request: HttpRequest) -> HttpResponse:
    """ReDoc's JavaScript, from the sidecar's copy (see the module's description)."""
    data, digest = _redoc_bundle()
    response = HttpResponse(data, content_type="text/javascript; charset=utf-8")
    response["ETag"] = f'"{digest}"'
    # The URL names the digest (?v=...): a new bundle gets a new URL.
    response["Cache-Control"] = "public, max-age=31536000, immutable"
    return response
