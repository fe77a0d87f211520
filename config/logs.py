"""Log formatters: one JSON object per line (python-json-logger) or a plain line, UTC with milliseconds.

Used by ``LOGGING`` in the settings (web and Celery processes) and by ``gunicorn.conf.py`` for
gunicorn's own and its access log, so every line of every process has the same shape::

    {"time": "2026-12-02T10:44:53.123Z", "level": "INFO", "logger": "orders.saga",
     "message": "step finish ...", "request_id": "req-42", "trace_id": "4bf9...",
     "order_id": "...", "saga_id": 7, "step": "process_payment", "attempt": 1,
     "outcome": "succeeded", "duration_ms": 12}

``trace_id`` appears only while a trace is recorded (``OTEL_TRACING``); the fields after it are
the ``extra`` of the call.
"""

import logging
import time
from datetime import UTC, datetime

from pythonjsonlogger.json import JsonFormatter


def utc_timestamp(created):
    """``2026-12-02T10:44:53.123Z`` for a record's ``created``."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JSONFormatter(JsonFormatter):
    """time, level, logger, message, request_id, trace_id, then the record's ``extra`` fields."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger", "exc_info": "exception"})
        kwargs.setdefault("reserved_attrs", [*logging.LogRecord("", 0, "", 0, "", (), None).__dict__, "taskName"])
        super().__init__("%(levelname)s %(name)s %(message)s", *args, **kwargs)

    FIRST = ("time", "level", "logger", "message", "request_id", "trace_id")

    def add_fields(self, log_data, record, message_dict):
        log_data["time"] = utc_timestamp(record.created)
        super().add_fields(log_data, record, message_dict)

    def process_log_record(self, log_data):
        log_data["request_id"] = log_data.get("request_id") or "-"
        if not log_data.get("trace_id"):
            log_data.pop("trace_id", None)
        return {**{key: log_data[key] for key in self.FIRST if key in log_data}, **log_data}


class PlainFormatter(logging.Formatter):
    """``2026-12-02T10:44:53.123Z INFO orders.saga [req-42] step finish ...`` (UTC)."""

    converter = time.gmtime
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"


class GunicornAccessJSONFormatter(JSONFormatter):
    """gunicorn's access log as JSON: the request's fields instead of the Apache line.

    gunicorn logs each request with its "atoms" as the record's arguments; the request id is the
    ``X-Request-ID`` the application answered with (``RequestIDMiddleware``).
    """

    def add_fields(self, log_data, record, message_dict):
        atoms = record.args if isinstance(record.args, dict) else {}
        record.request_id = atoms.get("{x-request-id}o") or "-"
        super().add_fields(log_data, record, message_dict)
        status = atoms.get("s")
        log_data.update(
            message=f"{atoms.get('m')} {atoms.get('U')} {status}",
            method=atoms.get("m"),
            path=atoms.get("U"),
            query=atoms.get("q") or "",
            status=int(status) if str(status).isdigit() else status,
            bytes=atoms.get("B"),
            duration_ms=round(atoms.get("D", 0) / 1000, 1),
            remote_addr=atoms.get("h"),
            user_agent=atoms.get("a"),
            referer=atoms.get("f"),
        )
