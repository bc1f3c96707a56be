"""Refuse oversized request bodies before anything reads them."""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.utils.translation import gettext as _

logger = logging.getLogger(__name__)

# Room for the multipart framing and the other form fields around the file.
_FORM_OVERHEAD = 64 * 1024


class UploadLimitMiddleware:
    """Answer 413 to a request whose declared body exceeds the upload limit.

    A WSGI server only hands Django ``CONTENT_LENGTH`` bytes, so the declared length bounds the
    body; checking it here means a huge upload is never parsed, spooled to disk or hashed. The body
    is still read and thrown away (up to ``JIANSUO_DRAIN_MAX_BYTES``) before the answer: a server
    that closes a connection with unread data makes the kernel reset it, and a client still
    sending its upload then never reads the 413.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > settings.JIANSUO_MAX_UPLOAD_BYTES + _FORM_OVERHEAD:
            response = too_large_response(request)
            if length <= settings.JIANSUO_DRAIN_MAX_BYTES:
                _drain(request)
            else:
                response["Connection"] = "close"
            return response
        return self.get_response(request)


def _drain(request: HttpRequest, chunk: int = 1 << 20) -> None:
    """Read the request body and discard it."""
    try:
        while request.read(chunk):
            pass
    except OSError:
        pass  # the client went away: nothing left to answer


class StoreErrorMiddleware:
    """A vector store the site cannot search (built with another model, or an older way of preparing
    images) answers 503 with what to do, as JSON under /api/ and as a page elsewhere."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        from jiansuo.index import IndexError_

        if not isinstance(exception, IndexError_):
            return None
        logger.error("the search index cannot be used: %s", exception)
        message = _("The search index must be rebuilt before the catalogue can be searched: an administrator "
                    "runs python -m jiansuo.web sync_index --rebuild.")
        if request.path_info.startswith("/api/"):
            return JsonResponse({"error": message, "status": 503}, status=503)
        html = render_to_string("catalog/error.html", {"title": _("Search unavailable"), "message": message},
                                request=request)
        return HttpResponse(html, status=503)


def too_large_message() -> str:
    """The translated explanation of the upload limit."""
    return _("The file is too large: the limit is %(mb)s MB.") % {
        "mb": f"{settings.JIANSUO_MAX_UPLOAD_BYTES / (1024 * 1024):g}"
    }


def too_large_response(request: HttpRequest) -> HttpResponse:
    """413 as JSON for the API, as a page for everything else."""
    if request.path_info.startswith("/api/"):
        return JsonResponse({"error": too_large_message(), "status": 413}, status=413)
    html = render_to_string("catalog/error.html", {"title": _("File too large"), "message": too_large_message()},
                            request=request)
    return HttpResponse(html, status=413)
