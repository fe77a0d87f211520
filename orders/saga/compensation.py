"""Stopping a saga: compensating it (in reverse order of its steps), or failing it for an operator.

Each function is called with the saga row locked (``store.lock``), by the engine,
by recovery's operator actions and by the order services.
"""

import logging

from django.utils import timezone

from orders import signals
from orders.models import OrderStatus, SagaStatus, SagaStep, StepKind, StepStatus
from orders.transitions import order_move

from . import store
from .events import dispatch_on_commit, emit
from .steps import definition_of

log = logging.getLogger("orders.saga")


def compensate_for_stop(saga, now):
    """The customer cancelled, or the deadline passed: compensate with the matching reason."""
    if saga.cancel_requested:
        begin_compensation(saga, reason=saga.order.cancel_reason or "Cancelled at your request.", error="cancelled")
    else:
        begin_compensation(
            saga,
            reason="We could not complete your order in time.",
            error=f"deadline {saga.deadline_at.isoformat()} passed",
        )


def begin_compensation(saga, *, reason, error=""):
    """Stop going forward and undo, in reverse order, every forward step of the definition.

    Every compensation runs, whatever the forward steps' rows say: a row may be
    stale (a claim committed asynchronously and lost in a database crash while
    its call went out; rows deleted by retention). Each compensation is a no-op
    for a step that never ran, asks the outside world by the step's key, and
    closes the key there (see ``steps``).
    """
    order = store.lock_order(saga)
    saga.status, saga.failure_reason, saga.error, saga.finished_at = SagaStatus.COMPENSATING, reason[:255], error, None
    if order.status != OrderStatus.COMPENSATING:
        order_move(order, "start_compensation", reason)
    names = [step.compensation for step in reversed(definition_of(saga).steps)]
    for position, name in enumerate(names):
        comp, created = SagaStep.objects.get_or_create(
            saga=saga, kind=StepKind.COMPENSATION, name=name, defaults={"position": position}
        )
        if created:
            continue
        changed = []
        if comp.position != position:  # a row from when only the started steps were compensated
            comp.position = position
            changed.append("position")
        if comp.status == StepStatus.FAILED:
            comp.status, comp.deliveries, comp.attempts, comp.error = StepStatus.PENDING, 0, 0, ""
            changed += ["status", "deliveries", "attempts", "error"]
        if changed:
            comp.save(update_fields=changed)
    saga.save(update_fields=["status", "failure_reason", "error", "finished_at", "updated_at"])
    remaining = store.pending_compensations(saga)
    if remaining:
        dispatch_on_commit(saga.pk, remaining)
    else:
        finish_compensation(saga, timezone.now())


def finish_compensation(saga, now):
    order_move(store.lock_order(saga), "cancel")
    saga.status, saga.finished_at = SagaStatus.COMPENSATED, now
    saga.save(update_fields=["status", "finished_at", "updated_at"])
    emit(signals.saga_compensated, saga, error=saga.error)


def fail(saga, step, error):
    """The saga cannot go on by itself: an operator must act (order ``needs_attention``)."""
    now = timezone.now()
    step.status, step.error, step.finished_at = StepStatus.FAILED, error[:2000], now
    step.save(update_fields=["status", "error", "finished_at"])
    saga.status, saga.error, saga.finished_at = SagaStatus.FAILED, error, now
    saga.save(update_fields=["status", "error", "finished_at", "updated_at"])
    order = store.lock_order(saga)
    if order.status != OrderStatus.NEEDS_ATTENTION:
        order_move(order, "flag_for_attention")
    log.error("saga failed order=%s saga=%s step=%s error=%s", order.public_id, saga.pk, step.name, error)
    emit(signals.step_failed, saga, step.name, error)
    emit(signals.saga_failed, saga, step.name, error)
