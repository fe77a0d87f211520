"""The saga's statements on its own tables (``SagaRun``, ``SagaStep``, with the order and its lines).

Built once from the models' ``_meta``, with status values from their ``TextChoices``.
Every write to a saga's rows happens with the saga row locked (``SELECT … FOR
UPDATE``): the claim, the record of a success, and the ORM code of the rare paths
(``lock``). The engine decides what the rows mean (``orders/saga/engine.py``).
"""

from dataclasses import dataclass
from datetime import datetime
from functools import cache

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection
from psycopg.types.json import Jsonb

from config.sql import column as _col
from config.sql import table as _table
from orders.models import Order, OrderLine, SagaRun, SagaStatus, SagaStep, StepKind, StepStatus


def _select_list(model, alias):
    """(attnames, select list) of ``model``'s concrete fields, each named ``<alias><n>``: unique in one row."""
    fields = model._meta.concrete_fields
    select = ", ".join(f'{alias}.{connection.ops.quote_name(f.column)} AS "{alias}{i}"' for i, f in enumerate(fields))
    return [f.attname for f in fields], select


# --- locks (the rare paths: ORM) ----------------------------------------------------------
def lock(saga_id, *, with_order=False):
    """The saga row, locked; ``with_order`` locks its order row in the same query."""
    qs = SagaRun.objects.select_related("order")
    qs = qs.select_for_update(of=("self", "order")) if with_order else qs.select_for_update(of=("self",))
    return qs.filter(pk=saga_id).first()


def lock_order(saga) -> Order:
    saga.order = Order.objects.select_for_update().get(pk=saga.order_id)
    return saga.order


def lock_step(saga, kind, name) -> SagaStep:
    return SagaStep.objects.select_for_update().get(saga=saga, kind=kind, name=name)


def pending_compensations(saga) -> list[str]:
    return list(
        saga.steps.filter(kind=StepKind.COMPENSATION)
        .exclude(status=StepStatus.SUCCEEDED)
        .order_by("position")
        .values_list("name", flat=True)
    )


# --- the claim: one statement ----------------------------------------------------------------
@dataclass
class Claim:
    """What the claim found, and whether the step is now ours (``taken``)."""

    saga: SagaRun  # with ``saga.order`` (its customer and lines loaded)
    kind: str
    name: str
    taken: bool
    attempts: int  # of the step, counting this one when taken
    started: bool  # this claim moved the saga from pending to running
    status: str  # the step's status as the claim read it (before taking it)
    task_id: str
    started_at: datetime | None
    deliveries: int
    unfinished_before: int  # steps of the same kind before it that have not succeeded
    next_unstarted: bool  # the step after it is pending and was never attempted (False for the last one)


@cache
def _claim_plan():
    run, step, order = SagaRun, SagaStep, Order
    saga_attnames, saga_columns = _select_list(run, "r")
    order_attnames, order_columns = _select_list(order, "o")
    customer = order._meta.get_field("customer").related_model
    customer_attnames, customer_columns = _select_list(customer, "u")
    line_fields = OrderLine._meta.concrete_fields
    # JSON has no decimals: those travel as text, and every value goes through its field's to_python.
    line_values = ", ".join(
        f'l."{f.column}"::text' if f.get_internal_type() == "DecimalField" else f'l."{f.column}"' for f in line_fields
    )
    S = StepStatus
    sql = f"""
WITH r AS (
  SELECT {saga_columns}, {order_columns}
  FROM {_table(run)} r JOIN {_table(order)} o ON o.{_col(order, "id")} = r.{_col(run, "order")}
  WHERE r.{_col(run, "id")} = %(saga_id)s
  FOR UPDATE OF r
), me AS (  -- the step, with how the steps of its kind around it stand (one pass over the saga's steps)
  SELECT st.{_col(step, "id")} AS id, st.{_col(step, "status")} AS status, st.{_col(step, "task_id")} AS task_id,
    st.{_col(step, "started_at")} AS started_at, st.{_col(step, "deliveries")} AS deliveries,
    count(*) FILTER (WHERE p.{_col(step, "position")} < st.{_col(step, "position")}
                       AND p.{_col(step, "status")} <> '{S.SUCCEEDED}') AS unfinished_before,
    coalesce(bool_or(p.{_col(step, "status")} = '{S.PENDING}' AND p.{_col(step, "attempts")} = 0)
               FILTER (WHERE p.{_col(step, "position")} = st.{_col(step, "position")} + 1), false) AS next_unstarted
  FROM {_table(step)} st JOIN {_table(step)} p
    ON p.{_col(step, "saga")} = st.{_col(step, "saga")} AND p.{_col(step, "kind")} = st.{_col(step, "kind")}
  WHERE st.{_col(step, "saga")} = %(saga_id)s AND st.{_col(step, "kind")} = %(kind)s
    AND st.{_col(step, "name")} = %(name)s
  GROUP BY st.{_col(step, "id")}
), taken AS (
  UPDATE {_table(step)} AS st
  SET {_col(step, "status")} = '{S.RUNNING}', {_col(step, "task_id")} = %(task_id)s,
      {_col(step, "started_at")} = %(now)s, {_col(step, "next_attempt_at")} = NULL,
      {_col(step, "attempts")} = st.{_col(step, "attempts")} + 1,
      {_col(step, "deliveries")} = st.{_col(step, "deliveries")} + 1
  FROM r, me
  WHERE st.{_col(step, "id")} = me.id AND r."r{saga_attnames.index("status")}" = ANY(%(saga_statuses)s)
    AND NOT (%(forward)s AND (r."r{saga_attnames.index("cancel_requested")}"
                              OR r."r{saga_attnames.index("deadline_at")}" <= %(now)s))
    AND me.unfinished_before = 0 AND st.{_col(step, "deliveries")} < %(max_deliveries)s
    AND (st.{_col(step, "status")} = '{S.PENDING}'
         OR (st.{_col(step, "status")} = '{S.RUNNING}'
             AND (st.{_col(step, "task_id")} = %(task_id)s OR st.{_col(step, "started_at")} < %(stale_before)s)))
  RETURNING st.{_col(step, "attempts")} AS attempts
), started AS (
  UPDATE {_table(run)}
  SET {_col(run, "status")} = '{SagaStatus.RUNNING}', {_col(run, "started_at")} = %(now)s,
      {_col(run, "updated_at")} = %(now)s
  WHERE {_col(run, "id")} = %(saga_id)s AND {_col(run, "status")} = '{SagaStatus.PENDING}'
    AND EXISTS (SELECT 1 FROM taken)
  RETURNING 1
)
SELECT r.*, {customer_columns},
  (SELECT json_agg(json_build_array({line_values}) ORDER BY l.{_col(OrderLine, "id")})
   FROM {_table(OrderLine)} l WHERE l.{_col(OrderLine, "order")} = r."o{order_attnames.index("id")}"),
  me.status, me.task_id, me.started_at, me.deliveries, me.unfinished_before, me.next_unstarted,
  (SELECT attempts FROM taken), EXISTS (SELECT 1 FROM started), {{commit_mode}}
FROM r JOIN {_table(customer)} u
  ON u.{_col(customer, customer._meta.pk.name)} = r."o{order_attnames.index("customer_id")}"
  JOIN me ON true
"""
    return sql, saga_attnames, order_attnames, customer, customer_attnames, line_fields


# Asynchronous commit (``SAGA_ASYNC_COMMIT``) for the claim and the success record: their commit
# returns without waiting for the WAL flush. ``set_config(..., true)`` is ``SET LOCAL`` as an
# expression: it rides a statement we send anyway and ends with the transaction. A database crash
# may lose the last fraction of a second of such commits, never a part of one; the saga then
# stands where it stood before and is re-driven (README, "Saga speed").
def _commit_mode(kind):
    """Forward steps only: compensations stay synchronous."""
    if settings.SAGA_ASYNC_COMMIT and kind == StepKind.FORWARD:
        return "set_config('synchronous_commit', 'off', true)"
    return "NULL"


def claim(*, saga_id, kind, name, task_id, now, stale_before, saga_statuses) -> Claim | None:
    """Take the step if it may run now; in any case say how it stands. None: no such saga.

    One statement, run on its own (autocommit). Taken means: the saga is in one of
    ``saga_statuses`` (a forward step also needs no cancel asked and the deadline ahead),
    every step of the kind before it succeeded, it was delivered fewer than
    ``SAGA_STEP_MAX_DELIVERIES`` times, and it is pending, or running in this task, or
    running since before ``stale_before`` (its task died). The saga row is locked first;
    the step row is re-checked by the UPDATE after any wait. ``unfinished_before`` and
    ``next_unstarted`` are read from the statement's snapshot: they can only be older, and
    the engine treats them so.
    """
    sql, saga_attnames, order_attnames, customer, customer_attnames, line_fields = _claim_plan()
    params = {
        "saga_id": saga_id,
        "kind": kind,
        "name": name,
        "task_id": task_id,
        "now": now,
        "stale_before": stale_before,
        "saga_statuses": list(saga_statuses),
        "forward": kind == StepKind.FORWARD,
        "max_deliveries": settings.SAGA_STEP_MAX_DELIVERIES,
    }
    with connection.cursor() as cursor:
        # On its own (autocommit) its commit may be asynchronous; inside a caller's transaction
        # it must not decide how that transaction commits.
        commit_mode = "NULL" if connection.in_atomic_block else _commit_mode(kind)
        cursor.execute(sql.replace("{commit_mode}", commit_mode), params)
        row = cursor.fetchone()
    if row is None:
        return None
    split, end = len(saga_attnames), len(saga_attnames) + len(order_attnames)
    saga = SagaRun.from_db(DEFAULT_DB_ALIAS, saga_attnames, row[:split])
    order = saga.order = Order.from_db(DEFAULT_DB_ALIAS, order_attnames, row[split:end])
    rest = row[end:]
    order.customer = customer.from_db(DEFAULT_DB_ALIAS, customer_attnames, rest[: len(customer_attnames)])
    lines, status, step_task, started_at, deliveries, unfinished, next_unstarted, attempts, started, _ = rest[
        len(customer_attnames) :
    ]
    attnames = [f.attname for f in line_fields]
    # What order.lines.all() returns from now on, as after prefetch_related("lines").
    order._prefetched_objects_cache = {  # type: ignore[attr-defined]
        "lines": [
            OrderLine.from_db(
                DEFAULT_DB_ALIAS, attnames, [f.to_python(v) for f, v in zip(line_fields, line, strict=True)]
            )
            for line in lines or ()
        ]
    }
    if started:
        saga.status, saga.started_at, saga.updated_at = SagaStatus.RUNNING, now, now
    return Claim(
        saga, kind, name, attempts is not None, attempts or 0, started, status, step_task, started_at, deliveries,
        unfinished, next_unstarted,
    )  # fmt: skip


# --- the record of a success ---------------------------------------------------------------
@cache
def _lock_sql(commit_mode):
    run, order, step = SagaRun, Order, SagaStep
    return (
        f"SELECT r.{_col(run, 'status')}, r.{_col(run, 'cancel_requested')}, o.{_col(order, 'status')},"
        f" st.{_col(step, 'status')}, st.{_col(step, 'task_id')}, {commit_mode}"
        f" FROM {_table(run)} r JOIN {_table(order)} o ON o.{_col(order, 'id')} = r.{_col(run, 'order')}"
        f" LEFT JOIN {_table(step)} st ON st.{_col(step, 'saga')} = r.{_col(run, 'id')}"
        f" AND st.{_col(step, 'kind')} = %s AND st.{_col(step, 'name')} = %s"
        f" WHERE r.{_col(run, 'id')} = %s FOR UPDATE OF r, o"
    )


@dataclass
class Locked:
    """What the record of a success relies on, read under the saga and order locks."""

    saga_status: str
    cancel_requested: bool
    order_status: str
    ours: bool  # the step is still running in this task


def lock_for_record(saga_id, kind, name, task_id) -> Locked | None:
    """Lock the saga and order rows and read what the record relies on; None if the saga is gone."""
    with connection.cursor() as cursor:
        cursor.execute(_lock_sql(_commit_mode(kind)), [kind, name, saga_id])
        row = cursor.fetchone()
    if row is None:
        return None
    saga_status, cancel_requested, order_status, step_status, step_task = row[:5]
    return Locked(
        saga_status, cancel_requested, order_status, (step_status, step_task) == (StepStatus.RUNNING, task_id)
    )


def commit_synchronously():
    """This transaction's commit waits for the WAL flush after all (it turns to stopping the saga)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('synchronous_commit', 'on', true)")


@cache
def _succeeded_sql():
    """The step succeeded if it is still this task's; only then the saga made progress (and is completed).

    The saga's UPDATE reads the step's ``RETURNING`` rows (``EXISTS``): PostgreSQL's way for one
    sub-statement of a ``WITH`` to depend on another. They change different tables.
    """
    step, run = SagaStep, SagaRun
    status, finished = _col(run, "status"), _col(run, "finished_at")
    return f"""
WITH st AS (
  UPDATE {_table(step)} SET {_col(step, "status")} = '{StepStatus.SUCCEEDED}', {_col(step, "result")} = %s,
    {_col(step, "error")} = '', {_col(step, "finished_at")} = %s
  WHERE {_col(step, "saga")} = %s AND {_col(step, "kind")} = %s AND {_col(step, "name")} = %s
    AND {_col(step, "status")} = '{StepStatus.RUNNING}' AND {_col(step, "task_id")} = %s
  RETURNING {_col(step, "attempts")} AS attempts, {_col(step, "started_at")} AS started_at
), progress AS (
  UPDATE {_table(run)} SET {_col(run, "updated_at")} = %s,
    {status} = CASE WHEN %s THEN '{SagaStatus.COMPLETED}' ELSE {status} END,
    {finished} = CASE WHEN %s THEN %s ELSE {finished} END
  WHERE {_col(run, "id")} = %s AND EXISTS (SELECT 1 FROM st)
)
SELECT attempts, started_at FROM st
"""


def step_succeeded(*, saga_id, kind, name, task_id, result, now, completed):
    """(sql, params): the step succeeded and its saga made progress (``completed`` if it was the last
    step), if the step is still this task's; its rows: (attempts, started_at), none if it is not ours."""
    step_params = [Jsonb(result), now, saga_id, kind, name, task_id]
    return _succeeded_sql(), [*step_params, now, completed, completed, now, saga_id]
