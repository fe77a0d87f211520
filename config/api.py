"""Cross-cutting pieces of the storefront API: errors, pagination, auth endpoints.

Every error has one JSON shape::

    {"error": {"status": 400, "code": "invalid", "message": "...", "fields": {"lines[0].sku": ["..."]}}}

``fields`` appears for validation errors, with dotted paths; ``retry_after``
(seconds) for throttled calls, which also carry a ``Retry-After`` header.
"""

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.views import exception_handler as drf_exception_handler

# Deeper than any body the API takes (an order is 3 levels), far below Python's recursion limit.


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state of the resource."
    default_code = "conflict"


class Unprocessable(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "The request cannot be processed."
    default_code = "unprocessable"


def flatten_errors(detail, prefix=""):
    """``{"a": [{"b": ["msg"]}]}`` → ``{"a[0].b": ["msg"]}``."""
    out = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            # A list serializer's errors are keyed by index.
            path = f"{prefix}[{key}]" if isinstance(key, int) else (f"{prefix}.{key}" if prefix else key)
            if key == "non_field_errors":
                path = prefix or "non_field_errors"
            out.update(flatten_errors(value, path))
    elif isinstance(detail, list) and detail and all(isinstance(item, dict | list) for item in detail):
        for index, item in enumerate(detail):
            if item:
                out.update(flatten_errors(item, f"{prefix}[{index}]"))
    else:
        messages = detail if isinstance(detail, list) else [detail]
        out.setdefault(prefix or "non_field_errors", []).extend(str(m) for m in messages)
    return out


def exception_handler(exc, context):
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    body = {"status": response.status_code, "code": "error", "message": ""}
    if isinstance(exc, exceptions.ValidationError):
        body["code"] = "invalid"
        body["message"] = "The request is not valid; see fields."
        body["fields"] = flatten_errors(exc.detail)
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        body["code"] = codes if isinstance(codes, str) else "error"
        body["message"] = str(exc.detail)
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            body["retry_after"] = int(exc.wait + 0.999)
    response.data = {"error": body}
    return response


# The largest whole number a query parameter may carry: 18 digits (Python refuses to read more
# than 4300 as an int, and no count is that large). The schema documents it as the maximum.
MAX_QUERY_INT = 10**18 - 1


def positive_query_int(request, name):
    """A query parameter given at most once, as a whole number from 1; None if absent or empty."""
    raw = [value for value in request.query_params.getlist(name) if value != ""]  # empty is the same as absent
    if not raw:
        return None
    if len(raw) > 1:
        raise exceptions.ValidationError({name: ["Give this parameter once."]})
    text = raw[0]
    if not text.isascii() or not text.isdigit() or len(text) > len(str(MAX_QUERY_INT)) or int(text) < 1:
        raise exceptions.ValidationError({name: ["A positive whole number is required."]})
    return int(raw[0])


class Pagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100  # a larger page_size is capped, not refused

    def get_page_number(self, request, paginator):
        return positive_query_int(request, self.page_query_param) or 1  # past the last page: 404

    def get_page_size(self, request):
        size = positive_query_int(request, self.page_size_query_param)
        return self.page_size if size is None else min(size, self.max_page_size)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": MAX_QUERY_INT}
            if parameter["name"] == self.page_size_query_param:
                parameter["description"] = (
                    f"Results per page ({self.page_size} if absent; above {self.max_page_size}: {self.max_page_size})."
                )
            else:
                parameter["description"] = "A page number; past the last page is a 404."
        return parameters


class QuerySerializer(serializers.Serializer):
    """Query parameters, each given at most once: a repeated one is a 400, not silently the last."""

    def to_internal_value(self, data):
        if hasattr(data, "getlist"):
            repeated = [name for name in self.fields if len(data.getlist(name)) > 1]
            if repeated:
                raise exceptions.ValidationError({name: ["Give this parameter once."] for name in repeated})
        return super().to_internal_value(data)


# --- Django's error views (handler400/403/404/500): JSON under /api/, HTML elsewhere -------
def _is_api(request):
    return request.path_info.startswith("/api/")


def _error_response(status_code, code, message):
    return JsonResponse({"error": {"status": status_code, "code": code, "message": message}}, status=status_code)


def bad_request(request, exception=None):
    """A request Django itself refuses (a bad Host header, a malformed body) before any view."""
    if _is_api(request):
        return _error_response(400, "bad_request", "The request is malformed.")
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if _is_api(request):
        return _error_response(403, "permission_denied", "You do not have permission to perform this action.")
    return defaults.permission_denied(request, exception)


def not_found(request, exception=None):
    """404 for URLs that match no route: JSON in the API's error shape under /api/, HTML elsewhere."""
    if _is_api(request):
        return _error_response(404, "not_found", "No such resource.")
    return defaults.page_not_found(request, exception)


def server_error(request):
    """An unexpected exception (the API's exception handler answers None for it).

    Django logs it first (``django.request``, with the traceback) and sends
    ``got_request_exception``, so the test client re-raises it: it fails loudly in
    tests. With ``DEBUG`` on, Django shows its debug page instead; with
    ``DEBUG_PROPAGATE_EXCEPTIONS`` the exception reaches the WSGI server.
    """
    if _is_api(request):
        return _error_response(500, "server_error", "Something went wrong on our side; it has been logged.")
    return defaults.server_error(request)


def allow_empty_query_values(result, generator, request, public):
    """drf-spectacular hook: document that an empty query value means "not given"."""
    for path in result.get("paths", {}).values():
        for operation in path.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if parameter.get("in") == "query":
                    parameter["allowEmptyValue"] = True
    return result
