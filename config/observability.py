"""Request ids, log formatting and Prometheus metrics.

One id follows an order everywhere: it is taken from the ``X-Request-ID``
header (or made up), returned in the response, stored on the order, carried in
every Celery message's headers, put on every log line and every audit event.
"""

import contextvars
import logging
import re
import time
import uuid

from celery import signals as celery_signals

_request_id = contextvars.ContextVar("request_id", default="")
VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def get_request_id():
    return _request_id.get()


def set_request_id(value):
    return _request_id.set(value or "")


class RequestIDMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if VALID.match(incoming) else uuid.uuid4().hex
        token = _request_id.set(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
        finally:
            _request_id.reset(token)
        response["X-Request-ID"] = request_id
        from . import metrics

        route = getattr(getattr(request, "resolver_match", None), "route", "") or "unmatched"
        method = metrics.http_method_label(request.method)
        metrics.HTTP_REQUESTS.labels(method, route, str(response.status_code)).inc()
        metrics.HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)
        return response


@celery_signals.before_task_publish.connect(dispatch_uid="config.observability.publish_request_id")
def _publish_request_id(headers=None, **kwargs):
    if headers is not None and get_request_id() and "request_id" not in headers:
        headers["request_id"] = get_request_id()


@celery_signals.task_prerun.connect(dispatch_uid="config.observability.task_request_id")
def _task_request_id(task=None, **kwargs):
    set_request_id(getattr(task.request, "request_id", "") if task is not None else "")


@celery_signals.task_postrun.connect(dispatch_uid="config.observability.task_request_id_end")
def _task_request_id_end(**kwargs):
    set_request_id("")


class RequestIDFilter(logging.Filter):
    def filter(self, record):
        record.request_id = get_request_id() or "-"
        return True
