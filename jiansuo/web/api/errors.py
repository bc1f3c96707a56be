"""Every API error is JSON: ``{"error": "<clear message>", "status": <code>, ...}``.

DRF turns the errors it knows (validation, authentication, 405, parse errors) into JSON through
:func:`exception_handler`. What happens outside a DRF view, or what DRF re-raises (a multipart
body with too many files or fields is a ``SuspiciousOperation``, an unexpected exception a 500),
reaches Django's error handlers: the site's (``handler400`` … in :mod:`jiansuo.web.urls`) answer
JSON for ``/api/`` paths and the usual pages elsewhere.
"""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.views import defaults
from django.utils.translation import gettext as _
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.views import exception_handler as drf_exception_handler

from jiansuo.web.catalog.middleware import too_large_response


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"


class NotAnImage(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "not_an_image"


def exception_handler(exc, context):
    """DRF's handler, with the body reshaped to one message plus field details where there are any."""
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    body = {"error": _message(response.data), "status": response.status_code}
    if isinstance(exc, ValidationError) and isinstance(response.data, dict):
        body["fields"] = response.data
    response.data = body
    return response


def _message(data) -> str:
    if isinstance(data, dict):
        if "detail" in data and len(data) == 1:
            return str(data["detail"])
        return "; ".join(f"{k}: {_message(v)}" if k != "non_field_errors" else _message(v)
                         for k, v in data.items())
    if isinstance(data, list):
        return " ".join(_message(v) for v in data)
    return str(data)


def json_not_found(request, exception=None):
    """404 for an unknown /api/ URL, as JSON like every other API error."""
    return JsonResponse({"error": _("No such API endpoint."), "status": 404}, status=404)


def _is_api(request) -> bool:
    return request.path_info.startswith("/api/")


def bad_request(request, exception=None):
    """Django's 400 (e.g. too many files or fields in a multipart body): JSON under /api/."""
    if isinstance(exception, RequestDataTooBig):  # form fields beyond DATA_UPLOAD_MAX_MEMORY_SIZE
        return too_large_response(request)
    if _is_api(request):
        reason = str(exception) if exception is not None and str(exception) else _("Bad request.")
        return JsonResponse({"error": reason, "status": 400}, status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if _is_api(request):
        return JsonResponse({"error": _("You do not have permission to do this."), "status": 403}, status=403)
    return defaults.permission_denied(request, exception)


def page_not_found(request, exception=None):
    if _is_api(request):
        return json_not_found(request, exception)
    return defaults.page_not_found(request, exception)


def server_error(request):
    """500: JSON under /api/ (no details: they are in the server's log), the site's page elsewhere."""
    if _is_api(request):
        return JsonResponse({"error": _("Internal server error."), "status": 500}, status=500)
    return defaults.server_error(request)


__all__ = ["NotAnImage", "PayloadTooLarge", "bad_request", "exception_handler", "json_not_found",
           "page_not_found", "permission_denied", "server_error"]
