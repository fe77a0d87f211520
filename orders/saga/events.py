"""What a saga tells the world: the Celery chains it sends, its signals (after commit), its log lines."""

import logging

from celery import chain, signature
from django.conf import settings
from django.db import transaction

from orders.models import SagaRun

log = logging.getLogger("orders.saga")


def emit(signal, saga, step=None, error=""):
    """Send a saga signal once the current transaction commits."""

    def send():
        kwargs = {"sender": SagaRun, "saga": saga, "order": saga.order, "step": step, "error": error}
        if settings.SAGA_SIGNALS_RAISE:
            signal.send(**kwargs)
            return
        for receiver, response in signal.send_robust(**kwargs):
            if isinstance(response, Exception):
                log.error("saga signal receiver %r failed", receiver, exc_info=response)

    transaction.on_commit(send)


def log_step(saga, name, attempt, outcome, started_at=None, now=None):
    """One structured log line per step start (``outcome="start"``) and finish."""
    if not log.isEnabledFor(logging.INFO):
        return
    order_id = str(saga.order.public_id)
    extra = {"order_id": order_id, "saga_id": saga.pk, "step": name, "attempt": attempt}
    if outcome == "start":
        log.info("step start order=%s saga=%s step=%s attempt=%s", order_id, saga.pk, name, attempt, extra=extra)
        return
    took = round((now - started_at).total_seconds() * 1000) if started_at and now else 0
    log.info(
        "step finish order=%s saga=%s step=%s attempt=%s outcome=%s duration_ms=%s",
        *(order_id, saga.pk, name, attempt, outcome, took),
        extra={**extra, "outcome": outcome, "duration_ms": took},
    )


def dispatch(saga_id, names):
    """Send ``names`` as one Celery chain (called on commit); tasks are named ``orders.saga.<step>``."""
    if names:
        chain(*(signature(f"orders.saga.{name}", args=(saga_id,), immutable=True) for name in names)).apply_async()


def dispatch_on_commit(saga_id, names):
    # robust: a broker outage must not turn a committed order into an error;
    # the saga stays idle in the database and recovery sends it again.
    transaction.on_commit(lambda: dispatch(saga_id, names), robust=True)
