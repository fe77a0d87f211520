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
every step of the definition (see ``begin_compensation``), and enqueued by the
step that failed, on commit.
"""

import logging
import random
from dataclasses import dataclass
from datetime import timedelta
from functools import cache

from celery import chain
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from config import sql
from config.observability import get_request_id, set_request_id
from orders import signals
from orders.models import Order, OrderLine, OrderStatus, SagaRun, SagaStatus, SagaStep, StepKind, StepStatus

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


def _lock_or_drop(saga_id, name):
    """``_lock(saga_id)``; a saga that no longer exists (cleaned up) is logged and its task dropped."""
    saga = _lock(saga_id)
    if saga is None:
        log.warning("saga %s does not exist; dropping %s", saga_id, name)
    return saga


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
    _log_start(saga, step.name, step.attempts)


def _finished(saga, step, now, outcome):
    step.finished_at = now
    _log_finish(saga, step.name, step.attempts, outcome, step.started_at, now)


def _log_start(saga, name, attempt):
    if not log.isEnabledFor(logging.INFO):
        return
    order_id = str(saga.order.public_id)
    log.info(
        "step start order=%s saga=%s step=%s attempt=%s",
        order_id,
        saga.pk,
        name,
        attempt,
        extra={"order_id": order_id, "saga_id": saga.pk, "step": name, "attempt": attempt},
    )


def _log_finish(saga, name, attempt, outcome, started_at, now):
    if not log.isEnabledFor(logging.INFO):
        return
    order_id = str(saga.order.public_id)
    took = (now - started_at).total_seconds() * 1000 if started_at else 0
    log.info(
        "step finish order=%s saga=%s step=%s attempt=%s outcome=%s duration_ms=%.0f",
        order_id,
        saga.pk,
        name,
        attempt,
        outcome,
        took,
        extra={
            "order_id": order_id,
            "saga_id": saga.pk,
            "step": name,
            "attempt": attempt,
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
    """Run the forward step ``name`` of a saga: claim, act, record (see the module docstring).

    On PostgreSQL the usual case (the step is pending, the saga running, nothing
    unusual) takes a lean path: a few hand-written statements under the same row
    locks. Anything else (a redelivery, a cancel, a failure, a retry) takes the
    general path below, which handles every case; the lean one only ever steps
    aside for it, after rolling back whatever it started.
    """
    claim = _claim_forward_fast(saga_id, name, task_id) if _fast_path() else None
    if claim is None:
        claim = _claim_forward(saga_id, name, task_id)
    if not isinstance(claim, tuple):
        return claim  # CONTINUE or STOP: nothing to run
    saga, order, spec = claim
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

    if failure is None and transient is None and _fast_path():
        try:
            return _record_forward_fast(saga, order, spec, task_id, key, result)
        except _Fallback:
            pass  # rolled back: the general path records it
    return _record_forward(saga_id, spec, task_id, key, result, failure, transient)


def _claim_forward(saga_id, name, task_id):
    """Phase 1, general path: ``(saga, order, spec)`` to go on, or the task's outcome."""
    now = timezone.now()
    with transaction.atomic():
        saga = _lock_or_drop(saga_id, name)
        if saga is None:
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
    return saga, saga.order, spec


def _record_forward(saga_id, spec, task_id, key, result, failure, transient):
    """Phase 3, general path: record success, a retry, or a failure (and start compensating)."""
    name = spec.name
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


# --- the lean path (PostgreSQL) -----------------------------------------------------
# The same protocol as above for the common case, in hand-written SQL: the ORM
# builds each query anew, which cost more than the database round trips
# themselves (bench/saga_throughput.py). Every statement runs under the saga
# row lock, like the general path; whenever a check fails, the transaction is
# rolled back (or nothing was written yet) and the general path takes over.
class _Fallback(Exception):
    """The lean path does not apply: roll back and take the general path."""


def _fast_path():
    return settings.SAGA_FAST_PATH and connection.vendor == "postgresql"


def _columns(model, alias):
    """(attnames, select list) of ``model``'s concrete fields, each named ``<alias><n>``: unique in a CTE."""
    fields = model._meta.concrete_fields
    select = ", ".join(f'{alias}."{f.column}" AS "{alias}{i}"' for i, f in enumerate(fields))
    return [f.attname for f in fields], select


_SAGA_ATTNAMES, _SAGA_COLUMNS = _columns(SagaRun, "r")
_ORDER_ATTNAMES, _ORDER_COLUMNS = _columns(Order, "o")
_SAGA_AND_ORDER_FROM = "FROM orders_sagarun r JOIN orders_order o ON o.id = r.order_id"
_SAGA_WITH_ORDER = f"SELECT {_SAGA_COLUMNS}, {_ORDER_COLUMNS} {_SAGA_AND_ORDER_FROM}"
# Asynchronous commit (``SAGA_ASYNC_COMMIT``) for the lean claim and record: their
# commit returns without waiting for the WAL flush. ``set_config(..., true)`` is
# ``SET LOCAL`` as an expression: it rides a statement we send anyway and ends with
# the transaction. A database crash may lose the last fraction of a second of such
# commits, never a part of one; the saga then stands where it stood before and is
# re-driven (README, "Saga speed").
_ASYNC_COMMIT = "set_config('synchronous_commit', 'off', true)"


def _commit_mode():
    """The claim's and the record's last select item, per ``SAGA_ASYNC_COMMIT``."""
    return _ASYNC_COMMIT if settings.SAGA_ASYNC_COMMIT else "NULL"


# The record's lock: saga and order rows, both locked, and what the record relies on
# that may have changed since the claim (and the commit mode), per commit mode.
_LOCK_SQL = {
    mode: (
        f"SELECT r.status, r.cancel_requested, o.status, {mode} {_SAGA_AND_ORDER_FROM}"
        " WHERE r.id = %s FOR UPDATE OF r, o"
    )
    for mode in (_ASYNC_COMMIT, "NULL")
}
# The claim, as one statement run in autocommit (one round trip, no BEGIN/COMMIT):
# lock the saga row if it may go forward, take the step if it is pending, under
# the delivery limit and after succeeded steps only, and mark a pending saga
# running. It returns a row only if the step is now ours, with what the steps
# work on besides: the order's customer and its lines (not locked).
# The lock comes first (every other clause needs ``r``). If another transaction
# committed while we waited for the lock, PostgreSQL re-reads the saga row and
# the step row we update, but the earlier steps are read from this statement's snapshot: one
# that just succeeded may still look unfinished. Forward steps only ever move
# towards succeeded (an operator retry resets failed or running ones, never a
# succeeded one), so a stale read can only make the claim fail, and then the
# general path takes over with fresh reads.
_CLAIM_SQL = f"""
WITH r AS (
  {_SAGA_WITH_ORDER}
  WHERE r.id = %(saga_id)s AND r.status IN ('pending', 'running') AND NOT r.cancel_requested
    AND r.deadline_at > %(now)s
  FOR UPDATE OF r
), st AS (
  UPDATE orders_sagastep AS st
  SET status = 'running', task_id = %(task_id)s, started_at = %(now)s, next_attempt_at = NULL,
      attempts = st.attempts + 1, deliveries = st.deliveries + 1
  WHERE st.saga_id = %(saga_id)s AND st.kind = 'forward' AND st.name = %(name)s
    AND st.status = 'pending' AND st.deliveries < %(max_deliveries)s
    AND EXISTS (SELECT 1 FROM r)
    AND NOT EXISTS (
      SELECT 1 FROM orders_sagastep AS p
      WHERE p.saga_id = st.saga_id AND p.kind = 'forward' AND p.position < st.position AND p.status <> 'succeeded'
    )
  RETURNING st.attempts
), started AS (
  UPDATE orders_sagarun SET status = 'running', started_at = %(now)s, updated_at = %(now)s
  WHERE id = %(saga_id)s AND status = 'pending' AND EXISTS (SELECT 1 FROM st)
  RETURNING id
)
SELECT r.*, {{customer}},
  (SELECT json_agg(json_build_array({{line_columns}}) ORDER BY l.id) FROM orders_orderline l
   WHERE l.order_id = r."o{_ORDER_ATTNAMES.index("id")}"),
  st.attempts, EXISTS (SELECT 1 FROM started), {{commit_mode}}
FROM r JOIN {{customer_table}} u ON u.{{customer_pk}} = r."o{_ORDER_ATTNAMES.index("customer_id")}", st
"""


@cache
def _claim_plan(commit_mode):
    """(claim SQL, customer model, its attnames, line fields, their attnames): the user model is known once apps are."""
    customer_model = Order._meta.get_field("customer").related_model
    attnames, columns = _columns(customer_model, "u")
    meta = customer_model._meta
    line_fields = OrderLine._meta.concrete_fields
    # JSON has no decimals: those travel as text, and every value goes through its field's to_python.
    line_columns = ", ".join(
        f'l."{f.column}"::text' if f.get_internal_type() == "DecimalField" else f'l."{f.column}"' for f in line_fields
    )
    sql_text = _CLAIM_SQL.format(
        customer=columns,
        customer_table=meta.db_table,
        customer_pk=meta.pk.column,
        line_columns=line_columns,
        commit_mode=commit_mode,
    )
    return sql_text, customer_model, attnames, line_fields, [f.attname for f in line_fields]


# The step succeeded, the order moved on, the saga made progress: CTEs of the
# record's last statement (after the writes held back until then: the audit
# events and counters of the transition). None of the three writes happens
# unless the step is still ours; the SELECT gives NULLs when it is not.
_SUCCEED_CTES = """
st AS (
  UPDATE orders_sagastep SET status = 'succeeded', result = %s, error = '', finished_at = %s
  WHERE saga_id = %s AND kind = 'forward' AND name = %s AND status = 'running' AND task_id = %s
  RETURNING attempts, started_at
), o AS (
  UPDATE orders_order SET status = %s, updated_at = %s
  WHERE id = %s AND EXISTS (SELECT 1 FROM st)
), r AS (
  UPDATE orders_sagarun
  SET updated_at = %s,
      status = CASE WHEN %s THEN 'completed' ELSE status END,
      finished_at = CASE WHEN %s THEN %s ELSE finished_at END
  WHERE id = %s AND EXISTS (SELECT 1 FROM st)
)"""
_SUCCEED_SELECT = "(SELECT attempts FROM st), (SELECT started_at FROM st)"


def _saga_from_row(row):
    """The saga, with its order, from a row that starts with ``_SAGA_WITH_ORDER``'s columns; returns (saga, rest)."""
    split, end = len(_SAGA_ATTNAMES), len(_SAGA_ATTNAMES) + len(_ORDER_ATTNAMES)
    saga = SagaRun.from_db(DEFAULT_DB_ALIAS, _SAGA_ATTNAMES, row[:split])
    saga.order = Order.from_db(DEFAULT_DB_ALIAS, _ORDER_ATTNAMES, row[split:end])
    return saga, row[end:]


def _lock_unchanged(cursor, saga, order):
    """Lock the saga and order rows; True if the saga still runs, no cancel was asked and
    the order is in the state the claim read, so the claim's instances can be recorded on."""
    cursor.execute(_LOCK_SQL[_commit_mode()], [saga.pk])
    row = cursor.fetchone()
    return row is not None and row[:3] == (SagaStatus.RUNNING, False, order.status)


def _claim_forward_fast(saga_id, name, task_id):
    """Phase 1, lean: ``(saga, order, spec)`` when the step was pending and is now ours; else None."""
    now = timezone.now()
    params = {
        "task_id": task_id or "",
        "now": now,
        "saga_id": saga_id,
        "name": name,
        "max_deliveries": settings.SAGA_STEP_MAX_DELIVERIES,
    }
    claim_sql, customer_model, customer_attnames, line_fields, line_attnames = _claim_plan(_commit_mode())
    with connection.cursor() as cursor:
        cursor.execute(claim_sql, params)
        row = cursor.fetchone()
    if row is None:
        return None  # not pending, a step before it unfinished, too many deliveries, or the saga cannot go on
    saga, rest = _saga_from_row(row)
    split = len(customer_attnames)
    order = saga.order
    order.customer = customer_model.from_db(DEFAULT_DB_ALIAS, customer_attnames, rest[:split])
    lines, attempts, started, _ = rest[split:]  # the last one: the commit mode's set_config
    values = ([f.to_python(v) for f, v in zip(line_fields, line, strict=True)] for line in lines or ())
    # What order.lines.all() returns from now on, as after prefetch_related("lines").
    order._prefetched_objects_cache = {"lines": [OrderLine.from_db(DEFAULT_DB_ALIAS, line_attnames, v) for v in values]}
    if started:
        saga.status, saga.started_at, saga.updated_at = SagaStatus.RUNNING, now, now
        emit(signals.saga_started, saga)
    _log_start(saga, name, attempts)
    return saga, saga.order, definition_of(saga).step(name)


def _record_forward_fast(saga, order, spec, task_id, key, result):
    """Phase 3, lean: record a success on the claim's ``saga`` and ``order``.

    Raises ``_Fallback`` (all rolled back) when anything is unusual.
    """
    with transaction.atomic(), connection.cursor() as cursor, sql.deferring() as held:
        if not _lock_unchanged(cursor, saga, order):
            raise _Fallback
        if spec.local:
            try:
                result = spec.action(order, key)
            except Exception as exc:  # the general path runs it again and records what happens
                raise _Fallback from exc
        result = spec.record(order, key, result) or {}
        now = timezone.now()
        definition = definition_of(saga)
        last = spec.name == definition.steps[-1].name
        getattr(order, spec.advance)()  # its receivers' writes (audit, analytics) are held back ...
        # ... and go with this one statement: one round trip for the rest of the record.
        params = [Jsonb(result), now, saga.pk, spec.name, task_id or ""]
        params += [order.status, now, order.pk]
        params += [now, last, last, now, saga.pk]
        attempts, started_at = held.execute(cursor, _SUCCEED_CTES, _SUCCEED_SELECT, params)
        if attempts is None:
            raise _Fallback  # another delivery took the step over
        order.updated_at = saga.updated_at = now
        if last:
            saga.status, saga.finished_at = SagaStatus.COMPLETED, now
        _log_finish(saga, spec.name, attempts, "succeeded", started_at, now)
        emit(signals.step_succeeded, saga, spec.name)
        if last:
            emit(signals.saga_completed, saga)
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
    """Stop going forward and undo, in reverse order, every forward step of the definition.

    Call with the saga row locked. Every compensation runs, whatever the forward
    steps' rows say: a row may be stale (a claim committed asynchronously and
    lost in a database crash while its call went out; rows deleted by retention).
    Each compensation is a no-op for a step that never ran, asks the outside
    world by the step's key, and closes the key there (see ``steps``).
    """
    order = _lock_order(saga)
    saga.status = SagaStatus.COMPENSATING
    saga.failure_reason = reason[:255]
    saga.error = error
    saga.finished_at = None
    if order.status != OrderStatus.COMPENSATING:
        order.start_compensation(reason)
        order.save(update_fields=["status", "cancel_reason", "updated_at"])
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
        saga = _lock_or_drop(saga_id, name)
        if saga is None:
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
