"""Log lines: python-json-logger's JSON (or a plain line), UTC with milliseconds, the saga's fields."""

import json
import logging

from config.logs import JSONFormatter, PlainFormatter
from config.observability import RequestIDFilter, set_request_id

CREATED = 1_764_672_293.1239  # 2025-12-02T10:44:53.123Z


def record(msg="step finish %s", args=("x",), exc_info=None, **extra):
    rec = logging.LogRecord("orders.saga", logging.INFO, __file__, 1, msg, args, exc_info)
    rec.created, rec.msecs = CREATED, (CREATED % 1) * 1000
    rec.__dict__.update(extra)
    token = set_request_id("req-7")
    try:
        RequestIDFilter().filter(rec)
    finally:
        set_request_id("")
        del token
    return rec


def test_a_json_line_has_the_same_fields_as_before_with_a_utc_millisecond_time():
    extra = {"order_id": "0b9e", "saga_id": 7, "step": "process_payment", "attempt": 2, "outcome": "succeeded"}

    line = JSONFormatter().format(record(duration_ms=12, **extra))

    assert json.loads(line) == {
        "time": "2025-12-02T10:44:53.123Z",
        "level": "INFO",
        "logger": "orders.saga",
        "message": "step finish x",
        "request_id": "req-7",
        **extra,
        "duration_ms": 12,
    }
    assert list(json.loads(line))[:5] == ["time", "level", "logger", "message", "request_id"]


def test_a_json_line_carries_the_exception_and_values_json_cannot_encode():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = record("failed", (), exc_info=sys.exc_info(), payload=object())

    data = json.loads(JSONFormatter().format(rec))

    assert data["exception"].startswith("Traceback") and "ValueError: boom" in data["exception"]
    assert data["payload"].startswith("<object object")


def test_a_json_line_shows_the_trace_id_next_to_the_request_id_when_there_is_one():
    data = json.loads(JSONFormatter().format(record(trace_id="4bf92f3577b34da6a3ce929d0e0e4736", step="x")))

    assert list(data)[4:7] == ["request_id", "trace_id", "step"]
    assert "trace_id" not in json.loads(JSONFormatter().format(record(trace_id="")))


def test_a_plain_line_is_in_utc_with_milliseconds():
    formatter = PlainFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    assert formatter.format(record()) == "2025-12-02T10:44:53.123Z INFO orders.saga [req-7] step finish x"
