"""Running a saga, one step at a time, with every move recorded in the database.

A step task runs in three phases:

1. **claim** (a short transaction, saga row locked): a step that already
   succeeded is a no-op; otherwise count the delivery, mark the step running.
2. **act**: call the step's action with an idempotency key from order + step.
   External calls (gateway, carrier, email) happen here, outside any
   transaction; an action that only writes our database (``Step.local``) runs
   inside phase 3 instead, so its effect and its record commit together.
3. **record** (saga row locked again): success moves the order's state machine
   and lets the chain go on; a business failure (``StepFailed``), or a
   transient one after ``SAGA_STEP_MAX_ATTEMPTS``, starts the compensations.

A task never relies on Celery to know what to do next: it returns
``CONTINUE`` (the chain may send the next step), ``STOP`` (drop the rest of the
chain) or ``Retry(countdown)``. Compensations are chained in reverse order of
the steps that started, and enqueued by the step that failed, on commit.
"""

import logging
import random
from dataclasses import dataclass
from datetime import timedelta

from celery import chain
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.observability import get_request_id, set_request_id
from orders import signals
from orders.models import Order, OrderStatus, SagaRun, SagaStatus, SagaStep, StepKind, StepStatus

from .definition import StepFailed
from .steps import DEFINITIONS, ORDER_FULFILMENT

log = logging.getLogger("orders.saga")

CONTINUE = "continue"
STOP = "stop"


@dataclass(frozen=True)
class Retry:
    countdown: float


def definition_of(saga):
    return DEFINITIONS[(saga.definition, saga.version)]


def step_key(order, step_name):
    """The idempotency key an external call of this step carries."""
    return f"{order.public_id}:{step_name}"


def backoff(attempt):
    """Exponential backoff with jitter, in seconds, before attempt ``attempt + 1``."""
    base = settings.SAGA_RETRY_BACKOFF_BASE * 2 ** (attempt - 1)
    return min(base, settings.SAGA_RETRY_BACKOFF_MAX) * random.uniform(0.5, 1.5)


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


# --- dispatch ---------------------------------------------------------------------
def _task(name):
    from orders.tasks import STEP_TASKS

    return STEP_TASKS[name]


def dispatch(saga_id, names):
    """Send ``names`` as one Celery chain (called on commit)."""
    if names:
        chain(*(_task(name).si(saga_id) for name in names)).apply_async()


def dispatch_on_commit(saga_id, names):
    # robust: a broker outage must not turn a committed order into an error;
    # the saga stays idle in the database and recovery sends it again.
    transaction.on_commit(lambda: dispatch(saga_id, names), robust=True)


def forward_names(saga, from_step):
    names = [step.name for step in definition_of(saga).steps]
    return names[names.index(from_step) :]


def pending_compensations(saga):
    return list(
        saga.steps.filter(kind=StepKind.COMPENSATION)
        .exclude(status=StepStatus.SUCCEEDED)
        .order_by("position")
        .values_list("name", flat=True)
    )


# --- creating ---------------------------------------------------------------------
def saga_create(*, order, definition=ORDER_FULFILMENT) -> SagaRun:
    """Create the saga for a new order and start it when the transaction commits."""
    saga = SagaRun.objects.create(
        order=order,
        definition=definition.name,
        version=definition.version,
        deadline_at=timezone.now() + timedelta(seconds=settings.SAGA_DEADLINE_SECONDS),
    )
    SagaStep.objects.bulk_create(
        SagaStep(saga=saga, name=step.name, kind=StepKind.FORWARD, position=index)
        for index, step in enumerate(definition.steps)
    )
    dispatch_on_commit(saga.pk, forward_names(saga, definition.steps[0].name))
    return saga


# --- locking helpers --------------------------------------------------------------
def _lock(saga_id, *, with_order=False):
    """The saga row, locked; ``with_order`` locks its order row in the same query."""
    qs = SagaRun.objects.select_related("order")
    qs = qs.select_for_update(of=("self", "order")) if with_order else qs.select_for_update(of=("self",))
    return qs.filter(pk=saga_id).first()


def _lock_step(saga, kind, name):
    return SagaStep.objects.select_for_update().get(saga=saga, kind=kind, name=name)


def _lock_order(saga):
    saga.order = Order.objects.select_for_update().get(pk=saga.order_id)
    return saga.order


def _time_limit(saga, step):
    definition = definition_of(saga)
    spec = definition.step(step.name) if step.kind == StepKind.FORWARD else definition.compensation(step.name)
    return spec.time_limit


def in_flight(saga, step, now):
    """Is some delivery working on (or about to retry) this step right now?"""
    grace = timedelta(seconds=settings.SAGA_STEP_TIMEOUT_GRACE_SECONDS)
    if step.status == StepStatus.RUNNING:
        return (
            step.started_at is not None and now < step.started_at + timedelta(seconds=_time_limit(saga, step)) + grace
        )
    if step.status == StepStatus.PENDING and step.next_attempt_at is not None:
        return now < step.next_attempt_at + grace
    return False


def _claim(saga, step, task_id, now):
    """Common part of phase 1. Returns None to go on, or an outcome to return."""
    if step.status == StepStatus.RUNNING and step.task_id != task_id and in_flight(saga, step, now):
        log.info("saga=%s step=%s already running in task %s; dropping duplicate", saga.pk, step.name, step.task_id)
        return STOP
    step.deliveries += 1
    if step.deliveries > settings.SAGA_STEP_MAX_DELIVERIES:
        step.save(update_fields=["deliveries"])
        fail(saga, step, f"{step.name} was delivered {step.deliveries} times without finishing (a crashing task?)")
        return STOP
    return None


def _start(saga, step, task_id, now):
    step.status = StepStatus.RUNNING
    step.task_id = task_id or ""
    step.started_at = now
    step.next_attempt_at = None
    step.attempts += 1
    step.save(update_fields=["status", "task_id", "started_at", "next_attempt_at", "attempts", "deliveries"])
    saga.save(update_fields=["status", "started_at", "updated_at"])
    log.info(
        "step start order=%s saga=%s step=%s attempt=%s",
        saga.order.public_id,
        saga.pk,
        step.name,
        step.attempts,
        extra={"order_id": str(saga.order.public_id), "saga_id": saga.pk, "step": step.name, "attempt": step.attempts},
    )


def _finished(saga, step, now, outcome):
    step.finished_at = now
    took = (now - step.started_at).total_seconds() * 1000 if step.started_at else 0
    log.info(
        "step finish order=%s saga=%s step=%s attempt=%s outcome=%s duration_ms=%.0f",
        saga.order.public_id,
        saga.pk,
        step.name,
        step.attempts,
        outcome,
        took,
        extra={
            "order_id": str(saga.order.public_id),
            "saga_id": saga.pk,
            "step": step.name,
            "attempt": step.attempts,
            "outcome": outcome,
            "duration_ms": round(took),
        },
    )


def _retry_or_give_up(saga, step, exc, now, max_attempts):
    """A transient failure: schedule a retry, or return None when attempts are used up."""
    step.error = f"{type(exc).__name__}: {exc}"[:2000]
    if step.attempts >= max_attempts:
        return None  # the caller fails the step
    countdown = backoff(step.attempts)
    step.status = StepStatus.PENDING
    step.next_attempt_at = now + timedelta(seconds=countdown)
    step.save(update_fields=["status", "error", "next_attempt_at"])
    saga.save(update_fields=["updated_at"])
    log.warning(
        "step retry saga=%s step=%s attempt=%s in=%.2fs error=%s", saga.pk, step.name, step.attempts, countdown, exc
    )
    return Retry(countdown)


# --- forward steps ----------------------------------------------------------------
def run_forward(saga_id, name, task_id=None):
    now = timezone.now()
    with transaction.atomic():
        saga = _lock(saga_id)
        if saga is None:
            log.warning("saga %s does not exist; dropping step %s", saga_id, name)
            return STOP
        spec = definition_of(saga).step(name)
        # Every forward step in one query; the saga row lock guards them all.
        forward = list(saga.steps.filter(kind=StepKind.FORWARD).order_by("position"))
        step = next(s for s in forward if s.name == name)
        if saga.status not in (SagaStatus.PENDING, SagaStatus.RUNNING) or step.status == StepStatus.FAILED:
            return STOP
        if step.status == StepStatus.SUCCEEDED:
            # A redelivery. Go on only if the next step never started (the
            # crash came after our commit but before the chain sent it).
            later = forward[step.position + 1] if step.position + 1 < len(forward) else None
            return CONTINUE if later is not None and later.status == StepStatus.PENDING else STOP
        if any(s.status != StepStatus.SUCCEEDED for s in forward[: step.position]):
            log.warning("saga=%s step=%s delivered before the steps it follows; dropping", saga.pk, name)
            return STOP
        outcome = _claim(saga, step, task_id, now)
        if outcome is not None:
            return outcome
        if saga.cancel_requested or now >= saga.deadline_at:
            step.save(update_fields=["deliveries"])
            _begin_compensation_for_stop(saga, now)
            return STOP
        if saga.status == SagaStatus.PENDING:
            saga.status, saga.started_at = SagaStatus.RUNNING, now
            emit(signals.saga_started, saga)
        _start(saga, step, task_id, now)
    order = saga.order
    if not get_request_id():  # a re-driven task carries no header: the order remembers its id
        set_request_id(order.request_id)
    key = step_key(order, name)

    result = failure = transient = None
    if not spec.local:
        try:
            result = spec.action(order, key)
        except StepFailed as exc:
            failure = exc
        except Exception as exc:
            transient = exc

    with transaction.atomic():
        now = timezone.now()
        saga = _lock(saga_id, with_order=True)
        step = SagaStep.objects.get(saga=saga, kind=StepKind.FORWARD, name=name)
        if step.status != StepStatus.RUNNING or step.task_id != (task_id or ""):
            return STOP  # another delivery took the step over; it goes on from here
        order = saga.order
        if spec.local:
            try:
                result = spec.action(order, key)  # atomic itself: a failure leaves nothing behind
            except StepFailed as exc:
                failure = exc
            except Exception as exc:
                transient = exc

        if transient is not None:
            retry = _retry_or_give_up(saga, step, transient, now, settings.SAGA_STEP_MAX_ATTEMPTS)
            if retry is not None:
                return retry
            failure = StepFailed(
                "We could not complete your order; you have not been charged for anything we could not deliver.",
                f"{name} gave up after {step.attempts} attempts: {step.error}",
            )
        if failure is not None:
            step.status = StepStatus.FAILED
            step.error = str(failure)[:2000]
            _finished(saga, step, now, "failed")
            step.save(update_fields=["status", "error", "finished_at"])
            emit(signals.step_failed, saga, name, step.error)
            if saga.status == SagaStatus.RUNNING:
                begin_compensation(saga, reason=failure.reason, error=f"{name}: {failure}")
            return STOP

        result = spec.record(order, key, result)
        step.status = StepStatus.SUCCEEDED
        step.result = result or {}
        step.error = ""
        _finished(saga, step, now, "succeeded")
        step.save(update_fields=["status", "result", "error", "finished_at"])
        if saga.status != SagaStatus.RUNNING:
            return STOP  # the saga moved on (it is compensating); this late result is only recorded
        getattr(order, spec.advance)()
        order.save(update_fields=["status", "updated_at"])
        emit(signals.step_succeeded, saga, name)
        if saga.cancel_requested:  # asked while this step ran: undo, even if it was the last one
            _begin_compensation_for_stop(saga, now)
            return STOP
        if step.position == len(definition_of(saga).steps) - 1:
            saga.status, saga.finished_at = SagaStatus.COMPLETED, now
            saga.save(update_fields=["status", "finished_at", "updated_at"])
            emit(signals.saga_completed, saga)
            return CONTINUE
        saga.save(update_fields=["updated_at"])
    return CONTINUE


def _begin_compensation_for_stop(saga, now):
    if saga.cancel_requested:
        begin_compensation(saga, reason=saga.order.cancel_reason or "Cancelled at your request.", error="cancelled")
    else:
        begin_compensation(
            saga,
            reason="We could not complete your order in time.",
            error=f"deadline {saga.deadline_at.isoformat()} passed",
        )


# --- compensation -----------------------------------------------------------------
def begin_compensation(saga, *, reason, error=""):
    """Stop going forward and undo, in reverse order, every step that started.

    Call with the saga row locked. A step "started" if it ran at least once,
    even if it failed: a payment that timed out may still have charged, so its
    refund runs too (and is a no-op when nothing was charged).
    """
    order = _lock_order(saga)
    saga.status = SagaStatus.COMPENSATING
    saga.failure_reason = reason[:255]
    saga.error = error
    saga.finished_at = None
    if order.status != OrderStatus.COMPENSATING:
        order.start_compensation(reason)
        order.save(update_fields=["status", "cancel_reason", "updated_at"])
    definition = definition_of(saga)
    started = {
        step.name
        for step in saga.steps.filter(kind=StepKind.FORWARD)
        if step.status != StepStatus.PENDING or step.attempts > 0
    }
    names = [step.compensation for step in reversed(definition.steps) if step.name in started]
    for position, name in enumerate(names):
        comp, created = SagaStep.objects.get_or_create(
            saga=saga, kind=StepKind.COMPENSATION, name=name, defaults={"position": position}
        )
        if not created and comp.status == StepStatus.FAILED:
            comp.status, comp.deliveries, comp.attempts, comp.error = StepStatus.PENDING, 0, 0, ""
            comp.save(update_fields=["status", "deliveries", "attempts", "error"])
    saga.save(update_fields=["status", "failure_reason", "error", "finished_at", "updated_at"])
    remaining = pending_compensations(saga)
    if remaining:
        dispatch_on_commit(saga.pk, remaining)
    else:
        _finish_compensation(saga, timezone.now())


def _finish_compensation(saga, now):
    order = _lock_order(saga)
    order.cancel()
    order.save(update_fields=["status", "updated_at"])
    saga.status, saga.finished_at = SagaStatus.COMPENSATED, now
    saga.save(update_fields=["status", "finished_at", "updated_at"])
    emit(signals.saga_compensated, saga, error=saga.error)


def fail(saga, step, error):
    """The saga cannot go on by itself: an operator must act (order ``needs_attention``)."""
    now = timezone.now()
    step.status = StepStatus.FAILED
    step.error = error[:2000]
    step.finished_at = now
    step.save(update_fields=["status", "error", "finished_at"])
    saga.status, saga.error, saga.finished_at = SagaStatus.FAILED, error, now
    saga.save(update_fields=["status", "error", "finished_at", "updated_at"])
    order = _lock_order(saga)
    if order.status != OrderStatus.NEEDS_ATTENTION:
        order.flag_for_attention()
        order.save(update_fields=["status", "updated_at"])
    log.error("saga failed order=%s saga=%s step=%s error=%s", order.public_id, saga.pk, step.name, error)
    emit(signals.step_failed, saga, step.name, error)
    emit(signals.saga_failed, saga, step.name, error)


def run_compensation(saga_id, name, task_id=None):
    now = timezone.now()
    with transaction.atomic():
        saga = _lock(saga_id)
        if saga is None:
            log.warning("saga %s does not exist; dropping compensation %s", saga_id, name)
            return STOP
        forward = definition_of(saga).compensation(name)
        step = _lock_step(saga, StepKind.COMPENSATION, name)
        if saga.status != SagaStatus.COMPENSATING or step.status == StepStatus.FAILED:
            return STOP
        if step.status == StepStatus.SUCCEEDED:
            later = saga.steps.filter(kind=StepKind.COMPENSATION, position=step.position + 1).first()
            return CONTINUE if later is not None and later.status == StepStatus.PENDING else STOP
        outcome = _claim(saga, step, task_id, now)
        if outcome is not None:
            return outcome
        _start(saga, step, task_id, now)
    order = saga.order

    result = error = None
    try:
        result = forward.compensate(order, step_key(order, forward.name))
    except Exception as exc:
        error = exc

    with transaction.atomic():
        now = timezone.now()
        saga = _lock(saga_id)
        step = _lock_step(saga, StepKind.COMPENSATION, name)
        if step.status != StepStatus.RUNNING or step.task_id != (task_id or ""):
            return STOP
        if error is not None:
            retry = _retry_or_give_up(saga, step, error, now, settings.SAGA_COMPENSATION_MAX_ATTEMPTS)
            if retry is not None:
                return retry
            fail(saga, step, f"{name} gave up after {step.attempts} attempts: {step.error}")
            return STOP
        step.status = StepStatus.SUCCEEDED
        step.result = result or {}
        step.error = ""
        _finished(saga, step, now, "succeeded")
        step.save(update_fields=["status", "result", "error", "finished_at"])
        if saga.status == SagaStatus.COMPENSATING and not pending_compensations(saga):
            _finish_compensation(saga, now)
        else:
            saga.save(update_fields=["updated_at"])
    return CONTINUE
