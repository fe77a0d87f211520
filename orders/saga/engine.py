"""Running a saga, one step at a time, with every move recorded in the database.

A step task (forward step or compensation alike) runs in three phases:

1. **claim**: one statement (``store.claim``) takes the step if it may run now
   and says how it stands either way. A step not taken is an unusual case (a
   redelivery, a duplicate, a cancel or deadline, a crashing task) decided here
   in Python from what the claim read (``_not_taken``).
2. **act**: call the step's action with an idempotency key from order + step.
   External calls (gateway, carrier, email) happen here, outside any
   transaction; an action that only writes our database (``Step.local``) runs
   inside phase 3 instead, so its effect and its record commit together.
3. **record**: a success is recorded under the saga lock with its effects
   (``_record_success``: the order's transition, its audit event and counters,
   sent as one ``sql.Batch``); a failure or a retry takes the ORM
   (``_record_failure``): those are rare.

A task never relies on Celery to know what to do next: it returns
``CONTINUE`` (the chain may send the next step), ``STOP`` (drop the rest of the
chain) or ``Retry(countdown)``. Compensations run in reverse order of every step
of the definition (``begin_compensation``), enqueued on commit.

The next capability, a step that waits for an outside event (a payment the
gateway confirms later by webhook, with a timeout), fits here as one more step
status, ``waiting``: the action asks (charge requested), its record parks the
step as ``waiting`` with a deadline instead of succeeding; the event's handler
claims the step from ``waiting`` (one more case of the claim's condition) and
records the success as any delivery does; recovery leaves a waiting step alone
until its deadline, then records a failure (the compensations run by key).
"""

import logging
import random
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config import sql
from config.observability import get_request_id, set_request_id
from orders import signals
from orders.models import SagaRun, SagaStatus, SagaStep, StepKind, StepStatus
from orders.transitions import order_move

from . import store
from .compensation import begin_compensation, compensate_for_stop, fail, finish_compensation
from .definition import StepFailed
from .events import dispatch_on_commit, emit, log_step
from .steps import ORDER_FULFILMENT, definition_of

log = logging.getLogger("orders.saga")

CONTINUE = "continue"
STOP = "stop"
GOING_FORWARD = (SagaStatus.PENDING, SagaStatus.RUNNING)
# The public API for recovery, the admin and order services: lock rows, read pending work.
lock_saga, lock_order, pending_compensations = store.lock, store.lock_order, store.pending_compensations


@dataclass(frozen=True)
class Retry:
    countdown: float


def spec_of(definition, kind, name):
    """The ``Step`` of ``definition`` that a forward step or a compensation belongs to."""
    return definition.step(name) if kind == StepKind.FORWARD else definition.compensation(name)


def step_key(order, step_name):
    """The idempotency key an external call of this step carries."""
    return f"{order.public_id}:{step_name}"


def backoff(attempt):
    """Exponential backoff with jitter, in seconds, before attempt ``attempt + 1``."""
    base = settings.SAGA_RETRY_BACKOFF_BASE * 2 ** (attempt - 1)
    return min(base, settings.SAGA_RETRY_BACKOFF_MAX) * random.uniform(0.5, 1.5)


def forward_names(saga, from_step):
    names = [step.name for step in definition_of(saga).steps]
    return names[names.index(from_step) :]


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


def _may_run(kind):
    """The saga statuses in which a step of ``kind`` may run."""
    return GOING_FORWARD if kind == StepKind.FORWARD else (SagaStatus.COMPENSATING,)


def _grace():
    return timedelta(seconds=settings.SAGA_STEP_TIMEOUT_GRACE_SECONDS)


def in_flight(saga, step, now):
    """Is some delivery working on (or about to retry) this step right now?"""
    if step.status == StepStatus.RUNNING:
        limit = timedelta(seconds=spec_of(definition_of(saga), step.kind, step.name).time_limit)
        return step.started_at is not None and now < step.started_at + limit + _grace()
    if step.status == StepStatus.PENDING and step.next_attempt_at is not None:
        return now < step.next_attempt_at + _grace()
    return False


# --- running a step ---------------------------------------------------------------
def run_forward(saga_id, name, task_id=None):
    return run_step(saga_id, StepKind.FORWARD, name, task_id)


def run_compensation(saga_id, name, task_id=None):
    return run_step(saga_id, StepKind.COMPENSATION, name, task_id)


def run_step(saga_id, kind, name, task_id=None):
    """Run a forward step or a compensation: claim, act, record (see the module docstring)."""
    now, task_id = timezone.now(), task_id or ""
    forward = kind == StepKind.FORWARD
    # The tasks (``orders.tasks``) are those of ORDER_FULFILMENT: their time limits are its own.
    stale_before = now - _grace() - timedelta(seconds=spec_of(ORDER_FULFILMENT, kind, name).time_limit)
    claim = store.claim(
        saga_id=saga_id,
        kind=kind,
        name=name,
        task_id=task_id,
        now=now,
        stale_before=stale_before,
        saga_statuses=_may_run(kind),
    )
    if claim is None:
        log.warning("saga %s does not exist; dropping %s", saga_id, name)
        return STOP
    if not claim.taken:
        return _not_taken(claim, now, task_id, stale_before)
    saga, order = claim.saga, claim.saga.order
    spec = spec_of(definition_of(saga), kind, name)
    if claim.started:
        emit(signals.saga_started, saga)
    log_step(saga, name, claim.attempts, "start")
    if not get_request_id():  # a re-driven task carries no header: the order remembers its id
        set_request_id(order.request_id)
    key = step_key(order, spec.name)
    result = None
    try:
        if not forward:
            result = spec.compensate(order, key)
        elif not spec.local:
            result = spec.action(order, key)
    except Exception as exc:
        return _record_failure(claim, exc, task_id)
    try:
        return _record_success(claim, spec, key, result, task_id)
    except _NotOurs:
        return STOP  # another delivery took the step over; it goes on from here
    except _LocalActionFailed as failed:  # rolled back: nothing of it is left
        return _record_failure(claim, failed.__cause__, task_id)


def _not_taken(claim, now, task_id, stale_before):
    """The claim did not take the step: say why, from what it read, and act on it."""
    saga, forward = claim.saga, claim.kind == StepKind.FORWARD
    if saga.status not in _may_run(claim.kind) or claim.status == StepStatus.FAILED:
        return STOP
    if claim.status == StepStatus.SUCCEEDED:
        # A redelivery. Go on only if the next step was never attempted (the crash came after
        # our commit but before the chain sent it); one waiting for its retry is not cut short.
        return CONTINUE if claim.next_unstarted else STOP
    running_elsewhere = claim.status == StepStatus.RUNNING and claim.task_id != task_id
    if running_elsewhere and claim.started_at is not None and claim.started_at >= stale_before:
        log.info("saga=%s step=%s already running in task %s; dropping duplicate", saga.pk, claim.name, claim.task_id)
        return STOP  # first: a duplicate never decides for the delivery that runs the step
    if claim.unfinished_before:
        log.warning("saga=%s step=%s delivered before the steps it follows; dropping", saga.pk, claim.name)
        return STOP
    if forward and (saga.cancel_requested or now >= saga.deadline_at):
        with transaction.atomic():
            saga = store.lock(saga.pk)
            if saga.status in GOING_FORWARD:
                compensate_for_stop(saga, now)
        return STOP
    if claim.deliveries >= settings.SAGA_STEP_MAX_DELIVERIES:
        with transaction.atomic():  # decided again under the lock: the step may have moved since the claim
            saga = store.lock(saga.pk)
            step = store.lock_step(saga, claim.kind, claim.name)
            open_step = step.status in (StepStatus.PENDING, StepStatus.RUNNING) and not in_flight(saga, step, now)
            if saga.status in _may_run(claim.kind) and open_step:
                step.deliveries += 1
                step.save(update_fields=["deliveries"])
                why = f"{step.name} was delivered {step.deliveries} times without finishing (a crashing task?)"
                fail(saga, step, why)
        return STOP
    log.info("saga=%s step=%s changed while claimed (%s); dropping", saga.pk, claim.name, claim.status)
    return STOP


class _NotOurs(Exception):
    """The step is no longer this delivery's: roll back what the record did."""


class _LocalActionFailed(Exception):
    """A local action raised inside the record: roll back, then record the failure (``__cause__``)."""


def _record_success(claim, spec, key, result, task_id):
    """Record a success with its effects, in one transaction under the saga and order locks.

    The effects (the order's transition, its audit event and counters, what the
    step's ``record`` adds) and the step's own row go out as one ``sql.Batch``.
    """
    saga, order, kind, name = claim.saga, claim.saga.order, claim.kind, claim.name
    forward = kind == StepKind.FORWARD
    # Its own transaction (it may commit asynchronously): never a savepoint of a caller's.
    with transaction.atomic(durable=True):
        locked = store.lock_for_record(saga.pk, kind, name, task_id)
        if locked is None or not locked.ours:
            raise _NotOurs
        saga_status = locked.saga_status
        if forward and (saga_status != SagaStatus.RUNNING or locked.cancel_requested):
            return _record_late(claim, spec, result, task_id)  # the saga stopped going forward meanwhile
        # The order as it is now (the claim read it before any lock wait); django-fsm protects the field.
        type(order)._meta.get_field("status").set_state(order, locked.order_status)
        now = timezone.now()
        batch = sql.Batch()
        last = forward and spec.name == definition_of(saga).steps[-1].name
        if forward:
            if spec.local:
                try:
                    result = spec.action(order, key)
                except Exception as exc:
                    raise _LocalActionFailed from exc
            result = spec.record(order, key, result, batch)
            order_move(order, spec.advance, batch=batch)
        succeeded = store.step_succeeded(
            saga_id=saga.pk, kind=kind, name=name, task_id=task_id, result=result or {}, now=now, completed=last
        )
        rows = batch.send(*succeeded)
        if not rows:
            raise _NotOurs
        if forward:
            emit(signals.step_succeeded, saga, name)
        elif saga_status == SagaStatus.COMPENSATING and not store.pending_compensations(saga):
            finish_compensation(saga, now)
        if last:
            saga.status, saga.finished_at = SagaStatus.COMPLETED, now
            emit(signals.saga_completed, saga)
    log_step(saga, name, rows[0][0], "succeeded", rows[0][1], now)
    return CONTINUE


def _record_late(claim, spec, result, task_id):
    """A forward step finished after its saga was cancelled or began compensating (saga row locked).

    An external call's result is recorded (its compensation asks by key anyway); a
    local action is not run. A cancel asked while the step ran starts the compensation.
    """
    saga = store.lock(claim.saga.pk)
    step = store.lock_step(saga, claim.kind, claim.name) if saga is not None else None
    if step is None or step.status != StepStatus.RUNNING or step.task_id != task_id:
        raise _NotOurs
    now = timezone.now()
    store.commit_synchronously()  # what follows stops the saga: not an asynchronous commit
    if spec.local:
        step.status, step.error = StepStatus.PENDING, "not run: the saga stopped going forward"
    else:
        step.status, step.result, step.error = StepStatus.SUCCEEDED, result or {}, ""
    step.finished_at = now
    step.save(update_fields=["status", "result", "error", "finished_at"])
    if saga.status in GOING_FORWARD:
        compensate_for_stop(saga, now)
    log_step(saga, step.name, step.attempts, "late", step.started_at, now)
    return STOP


def _record_failure(claim, exc, task_id):
    """The action raised: schedule a retry, or fail the step (compensating, or flagging the saga)."""
    now = timezone.now()
    kind, name = claim.kind, claim.name
    forward = kind == StepKind.FORWARD
    with transaction.atomic():
        saga = store.lock(claim.saga.pk)
        step = store.lock_step(saga, kind, name) if saga is not None else None
        if step is None or step.status != StepStatus.RUNNING or step.task_id != task_id:
            return STOP  # another delivery took the step over; it goes on from here
        step.error = f"{type(exc).__name__}: {exc}"[:2000]
        if not (forward and isinstance(exc, StepFailed)):  # a compensation has no business failure: it retries
            limit = settings.SAGA_STEP_MAX_ATTEMPTS if forward else settings.SAGA_COMPENSATION_MAX_ATTEMPTS
            if step.attempts < limit:
                countdown = backoff(step.attempts)
                step.status, step.next_attempt_at = StepStatus.PENDING, now + timedelta(seconds=countdown)
                step.save(update_fields=["status", "error", "next_attempt_at"])
                saga.save(update_fields=["updated_at"])
                log.warning(
                    "step retry saga=%s step=%s attempt=%s in=%.2fs error=%s",
                    saga.pk,
                    name,
                    step.attempts,
                    countdown,
                    exc,
                )
                return Retry(countdown)
            if not forward:
                fail(saga, step, f"{name} gave up after {step.attempts} attempts: {step.error}")
                return STOP
            exc = StepFailed(
                "We could not complete your order; you have not been charged for anything we could not deliver.",
                f"{name} gave up after {step.attempts} attempts: {step.error}",
            )
        step.status, step.error, step.finished_at = StepStatus.FAILED, str(exc)[:2000], now
        step.save(update_fields=["status", "error", "finished_at"])
        log_step(saga, name, step.attempts, "failed", step.started_at, now)
        emit(signals.step_failed, saga, name, step.error)
        if saga.status == SagaStatus.RUNNING:
            begin_compensation(saga, reason=exc.reason, error=f"{name}: {exc}")
    return STOP
