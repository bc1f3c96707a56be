"""Every API error is JSON: ``{"error": "<clear message>", "status": <code>, ...}``."""

from __future__ import annotations

from django.http import JsonResponse
from django.utils.translation import gettext as _
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.views import exception_handler as drf_exception_handler


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


def json_server_error(request):
    return JsonResponse({"error": _("Internal server error."), "status": 500}, status=500)


__all__ = ["NotAnImage", "PayloadTooLarge", "exception_handler", "json_not_found", "json_server_error"]
