"""The saga's success record, batched four ways: one by one, CTEs, psycopg pipeline mode (issue 16).

    .venv/bin/python bench/batching.py [--n 2000] [--runs 5]

A script, not a test: one process, one database connection, no worker. It uses its own PostgreSQL
database (``fulfilment_bench2``, created if missing and migrated as ``bench/saga_throughput.py`` does)
unless ``DATABASE_URL`` says otherwise, refuses the ``fulfilment`` and ``test_fulfilment`` databases,
and empties the order/saga/payment/shipping/notification/audit/analytics tables first.

It builds N orders as the saga leaves them when its payment step has charged the card: each with two
lines, an active reservation (two lines), a pending payment, a running saga whose ``process_payment``
step is running. Then it times N transactions, each the lean path's record of that success: lock
the saga and order rows (``SELECT … FOR UPDATE OF r, o``, the engine's ``_LOCK_SQL``), six writes
nobody reads back, and the step/order/saga updates:

    held writes: UPDATE payment (captured) · INSERT audit event (payment captured) ·
                 UPDATE reservation (expires_at NULL) · INSERT audit event (order paid) ·
                 INSERT … ON CONFLICT DO UPDATE status counters (two rows) ·
                 INSERT … ON CONFLICT DO UPDATE daily stats (what the confirm step's record adds:
                 every kind of held write in one record)
    final:       UPDATE step … RETURNING attempts, started_at · UPDATE order · UPDATE saga

sent in one of these ways:

- ``one_by_one``: ``transaction.atomic()``, each statement its own execute;
- ``cte``: ``transaction.atomic()``, the lock, then one statement with the held writes as CTEs and
  the final updates as the engine's ``_SUCCEED_CTES`` (as ``config.sql.HeldWrites.execute`` builds it);
- ``pipeline``: ``transaction.atomic()``, the lock, the writes and the final updates in one
  ``connection.connection.pipeline()`` (psycopg 3): results read after the pipeline's sync;
- ``pipeline_begin``: no ``atomic``: ``BEGIN``, the lock, the writes and the final updates in one
  pipeline, then ``COMMIT`` (or ``ROLLBACK`` if the lock's or the step's answer is unexpected);
- ``pipeline_commit``: no ``atomic``: ``BEGIN`` … ``COMMIT`` in one pipeline. One round trip, but the
  answers arrive after the commit: nothing can veto the writes any more (only SQL conditions could).

The last two bypass Django's ``atomic`` (no ``on_commit`` hooks, no savepoints): they show what the
BEGIN round trip costs. psycopg sends ``BEGIN`` by itself, and in pipeline mode syncs right after it
(``_start_query``), so inside ``atomic`` a pipeline is always one round trip more than its statements.

Each way runs with synchronous commit and with ``synchronous_commit = off`` (``SET LOCAL`` as an
expression in the lock statement, as the engine does for ``SAGA_ASYNC_COMMIT``). Every run
(``--runs``) times every combination once over the same N rows, reset (and vacuumed, checkpointed)
before each, in an order rotated from run to run; figures are medians over the runs:

- µs per transaction (wall clock, N transactions back to back);
- round trips per transaction: ``Sync`` and ``Query`` messages the client sends, counted with
  libpq's trace of one transaction after the warm-up;
- CPU µs per transaction, from ``/proc``: this process (the client, Django and psycopg), its
  PostgreSQL backend, and the whole PostgreSQL server (its postmaster's process tree: the WAL
  writer included, and on a shared machine other databases' work too). The server must run on
  this machine for the last two.

Not included: the payment's ``INSERT … ON CONFLICT DO NOTHING RETURNING id`` the real record sends
first (its own round trip in every way), and the Python of the step itself. The round trip here is
a loopback one (printed); across a network each one saved is worth that network's round trip.
The last line is

    one_by_one_us=<a> cte_us=<b> pipeline_us=<c> pipeline_begin_us=<d> pipeline_commit_us=<e>
    one_by_one_async_us=<f> cte_async_us=<g> pipeline_async_us=<h> pipeline_begin_async_us=<i>
    pipeline_commit_async_us=<j>

on one line: median µs per transaction with synchronous commit, then with ``synchronous_commit = off``.
"""

import argparse
import contextlib
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Defaults only: the environment still wins. Set before Django (and config.settings) is imported.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/fulfilment_bench2")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/12")  # nothing is queued; settings want one
os.environ.setdefault("DJANGO_DEBUG", "false")  # DEBUG wraps every query to record it: not production
os.environ.setdefault("LOG_LEVEL", "WARNING")
_OWN_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _OWN_METRICS_DIR:  # do not mix the bench's samples into var/prometheus of `make run`
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fulfilment-bench-metrics-")

WAYS = ("one_by_one", "cte", "pipeline", "pipeline_begin", "pipeline_commit")
WARM_UP = 200  # transactions per combination before the runs (statements prepared, caches warm)
STEPS = ("reserve_inventory", "process_payment", "create_shipment", "send_confirmation")
STEP = "process_payment"
ADDRESS = {
    "shipping_name": "Ada Lovelace",
    "shipping_line1": "12 St James's Square",
    "shipping_city": "London",
    "shipping_postal_code": "SW1Y 4JH",
    "shipping_country": "GB",
}


class Unexpected(Exception):
    """A lock or step answer the record does not expect: the bench's rows are not as built."""


# --- statements, built from the models' _meta -------------------------------------------
class Sql:
    """Statement texts, built once."""

    def __init__(self):
        from django.db import connection

        from audit.models import AuditEvent
        from catalog.models import Reservation
        from orders.models import DailyOrderStats, Order, OrderStatusCount, SagaRun, SagaStep
        from payments.models import Payment

        qn = connection.ops.quote_name

        def table(model):
            return qn(model._meta.db_table)

        def col(model, name):
            return qn(model._meta.get_field(name).column)

        def sets(model, *names):
            return ", ".join(f"{col(model, name)} = %s" for name in names)

        def where(model, *names):
            return " AND ".join(f"{col(model, name)} = %s" for name in names)

        def bump(model, keys, values, deltas, rows=1):
            columns = ", ".join(col(model, name) for name in (*keys, *values))
            row = f"({', '.join(['%s'] * (len(keys) + len(values)))})"
            added = ", ".join(
                f"{col(model, d)} = {table(model)}.{col(model, d)} + excluded.{col(model, d)}" for d in deltas
            )
            conflict = ", ".join(col(model, name) for name in keys)
            return (
                f"INSERT INTO {table(model)} ({columns}) VALUES {', '.join([row] * rows)} "
                f"ON CONFLICT ({conflict}) DO UPDATE SET {added}"
            )

        self.audit_fields = [f for f in AuditEvent._meta.concrete_fields if not f.primary_key]
        saga, order, step = table(SagaRun), table(Order), table(SagaStep)
        s_status, o_status = col(SagaRun, "status"), col(Order, "status")
        self.lock = {
            mode: (
                f"SELECT r.{s_status}, r.{col(SagaRun, 'cancel_requested')}, o.{o_status}, {mode} "
                f"FROM {saga} r JOIN {order} o ON o.id = r.{col(SagaRun, 'order')} WHERE r.id = %s FOR UPDATE OF r, o"
            )
            for mode in ("NULL", "set_config('synchronous_commit', 'off', true)")
        }
        self.payment = (
            f"UPDATE {table(Payment)} SET {sets(Payment, 'status', 'gateway_reference', 'updated_at')} WHERE id = %s"
        )
        self.audit = (
            f"INSERT INTO {table(AuditEvent)} ({', '.join(qn(f.column) for f in self.audit_fields)}) "
            f"VALUES ({', '.join(['%s'] * len(self.audit_fields))})"
        )
        self.reservation = (
            f"UPDATE {table(Reservation)} SET {col(Reservation, 'expires_at')} = NULL, "
            f"{col(Reservation, 'updated_at')} = %s WHERE {where(Reservation, 'order', 'status')}"
        )
        self.counts = bump(OrderStatusCount, ["status"], ["count"], ["count"], rows=2)
        daily_values = ["placed", "confirmed", "cancelled", "revenue"]
        self.daily = bump(DailyOrderStats, ["day", "currency"], daily_values, ["confirmed", "revenue"])
        # The final updates, as separate statements ...
        self.step = (
            f"UPDATE {step} SET {sets(SagaStep, 'status', 'result', 'error', 'finished_at')} "
            f"WHERE {where(SagaStep, 'saga', 'kind', 'name', 'status', 'task_id')} "
            f"RETURNING {col(SagaStep, 'attempts')}, {col(SagaStep, 'started_at')}"
        )
        self.order = f"UPDATE {order} SET {sets(Order, 'status', 'updated_at')} WHERE id = %s"
        saga_update = (
            f"UPDATE {saga} SET {col(SagaRun, 'updated_at')} = %s, "
            f"{s_status} = CASE WHEN %s THEN %s ELSE {s_status} END, "
            f"{col(SagaRun, 'finished_at')} = CASE WHEN %s THEN %s ELSE {col(SagaRun, 'finished_at')} END "
            "WHERE id = %s"
        )
        self.saga = saga_update
        # ... and as the engine's _SUCCEED_CTES: order and saga move only if the step was still ours.
        self.succeed_ctes = (
            f"st AS ({self.step}), o AS ({self.order} AND EXISTS (SELECT 1 FROM st)), "
            f"r AS ({saga_update} AND EXISTS (SELECT 1 FROM st))"
        )
        self.succeed_select = "(SELECT attempts FROM st), (SELECT started_at FROM st)"


# --- the rows ------------------------------------------------------------------------
def fresh_tables():
    """Empty every table an order or a saga writes to; analytics counter rows as in a running shop."""
    from django.db import connection
    from django.utils import timezone

    from bench.saga_throughput import transient_tables
    from orders.models import DailyOrderStats, OrderStatus, OrderStatusCount

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(transient_tables())} RESTART IDENTITY CASCADE")
    OrderStatusCount.objects.bulk_create([OrderStatusCount(status=s, count=1000) for s in OrderStatus.values])
    DailyOrderStats.objects.bulk_create(
        [DailyOrderStats(day=timezone.now().date(), currency="USD", placed=1000, confirmed=0, revenue=0)]
    )


def build(n, customer, skus):
    """N orders with their saga at the payment step's record; returns one transaction's statements each."""
    from django.db import connection
    from django.utils import timezone
    from psycopg.types.json import Jsonb

    from audit.models import AuditEvent
    from catalog.models import Product, Reservation, ReservationLine, ReservationStatus
    from orders.models import Order, OrderLine, OrderStatus, SagaRun, SagaStatus, SagaStep, StepKind, StepStatus
    from payments.models import Payment, PaymentStatus

    sql = Sql()
    now = timezone.now()
    products = list(Product.objects.filter(sku__in=skus).order_by("sku"))
    price = Decimal("9.99")
    orders = Order.objects.bulk_create(
        [
            Order(customer=customer, currency="USD", total=2 * price, payment_token="tok_visa", **ADDRESS)
            for _ in range(n)
        ]
    )
    pairs = [(order, products[i % len(products)], products[(i + 1) % len(products)]) for i, order in enumerate(orders)]
    OrderLine.objects.bulk_create(
        OrderLine(order=o, product=p, sku=p.sku, name=p.name, unit_price=price, quantity=1, line_total=price)
        for o, *two in pairs
        for p in two
    )
    sagas = SagaRun.objects.bulk_create(
        SagaRun(order=o, definition="order_fulfilment", version=1, deadline_at=now + timedelta(hours=1)) for o in orders
    )
    done, pending = STEPS[: STEPS.index(STEP)], STEPS[STEPS.index(STEP) + 1 :]
    SagaStep.objects.bulk_create(
        SagaStep(
            saga=s,
            name=name,
            kind=StepKind.FORWARD,
            position=i,
            status=StepStatus.SUCCEEDED
            if name in done
            else StepStatus.PENDING
            if name in pending
            else StepStatus.RUNNING,
            task_id=task(s) if name == STEP else "",
            started_at=None if name in pending else now,
            attempts=0 if name in pending else 1,
            deliveries=0 if name in pending else 1,
        )
        for s in sagas
        for i, name in enumerate(STEPS)
    )
    reservations = Reservation.objects.bulk_create(Reservation(order=o) for o in orders)
    ReservationLine.objects.bulk_create(
        ReservationLine(reservation=r, product=p, quantity=1)
        for r, (_, *two) in zip(reservations, pairs, strict=True)
        for p in two
    )
    payments = Payment.objects.bulk_create(
        Payment(order=o, amount=o.total, currency="USD", gateway="fake", idempotency_key=f"bench-{o.pk}-{STEP}")
        for o in orders
    )

    def audit(obj, event, source, target, order):
        e = AuditEvent(
            object_type=obj._meta.label_lower,
            object_id=str(obj.pk),
            order_id=order.public_id,
            event=event,
            from_state=source,
            to_state=target,
        )
        return sql.audit, [f.get_db_prep_save(f.pre_save(e, True), connection) for f in sql.audit_fields]

    transactions = []
    for saga, order, payment in zip(sagas, orders, payments, strict=True):
        reference = f"ch_{order.public_id.hex[:24]}"
        held = [
            (sql.payment, [PaymentStatus.CAPTURED, reference, now, payment.pk]),
            audit(payment, "capture", PaymentStatus.PENDING, PaymentStatus.CAPTURED, order),
            (sql.reservation, [now, order.pk, ReservationStatus.ACTIVE]),
            audit(order, "mark_paid", OrderStatus.RESERVED, OrderStatus.PAID, order),
            (sql.counts, [OrderStatus.PAID, 1, OrderStatus.RESERVED, -1]),
            (sql.daily, [now.date(), "USD", 0, 1, 0, order.total]),
        ]
        result = Jsonb({"payment_id": payment.pk, "reference": reference})
        step = [StepStatus.SUCCEEDED, result, "", now, saga.pk, StepKind.FORWARD, STEP, StepStatus.RUNNING, task(saga)]
        order_params = [OrderStatus.PAID, now, order.pk]
        saga_params = [now, False, SagaStatus.COMPLETED, False, now, saga.pk]
        transactions.append((saga.pk, held, [(sql.step, step), (sql.order, order_params), (sql.saga, saga_params)]))
    return sql, transactions


def task(saga):
    return f"bench-task-{saga.pk}"


def reset():
    """Every record undone: the N sagas at their running payment step again; a fresh audit table; vacuumed."""
    from django.db import connection
    from django.utils import timezone

    from audit.models import AuditEvent
    from catalog.models import Reservation
    from orders.models import (
        DailyOrderStats,
        Order,
        OrderStatus,
        OrderStatusCount,
        SagaRun,
        SagaStatus,
        SagaStep,
        StepStatus,
    )
    from payments.models import Payment, PaymentStatus

    now = timezone.now()
    Order.objects.update(status=OrderStatus.RESERVED)
    SagaRun.objects.update(status=SagaStatus.RUNNING, finished_at=None, started_at=now)
    SagaStep.objects.filter(name=STEP).update(status=StepStatus.RUNNING, result={}, finished_at=None)
    Payment.objects.update(status=PaymentStatus.PENDING, gateway_reference="")
    Reservation.objects.update(expires_at=now + timedelta(minutes=30))
    tables = [m._meta.db_table for m in (Order, SagaRun, SagaStep, Payment, Reservation, OrderStatusCount)]
    tables += [DailyOrderStats._meta.db_table, AuditEvent._meta.db_table]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {connection.ops.quote_name(AuditEvent._meta.db_table)}")
        cursor.execute(f"VACUUM (ANALYZE) {', '.join(tables)}")
        cursor.execute("CHECKPOINT")  # no checkpoint of the last batch's writes in the middle of this one


def check(n):
    """Each of the N records took effect."""
    from audit.models import AuditEvent
    from orders.models import Order, OrderStatus, SagaStep, StepStatus
    from payments.models import Payment, PaymentStatus

    found = (
        SagaStep.objects.filter(name=STEP, status=StepStatus.SUCCEEDED).count(),
        Order.objects.filter(status=OrderStatus.PAID).count(),
        Payment.objects.filter(status=PaymentStatus.CAPTURED).count(),
        AuditEvent.objects.count(),
    )
    if found != (n, n, n, 2 * n):
        raise Unexpected(f"after {n} records: steps, orders, payments, audit events = {found}")


# --- the ways --------------------------------------------------------------------------
def check_answers(lock, step):
    """The lock found the saga running, not cancelled, its order reserved; the step was still ours."""
    from orders.models import OrderStatus, SagaStatus

    if lock is None or lock[:3] != (SagaStatus.RUNNING, False, OrderStatus.RESERVED):
        raise Unexpected(f"lock answered {lock}")
    if step is None or step[0] is None:
        raise Unexpected("the step was not ours")


def one_by_one(sql, lock_sql, saga_id, held, final):
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(lock_sql, [saga_id])
        lock = cursor.fetchone()
        for text, params in held:
            cursor.execute(text, params)
        (step_sql, step_params), *rest = final
        cursor.execute(step_sql, step_params)
        step = cursor.fetchone()
        check_answers(lock, step)
        for text, params in rest:
            cursor.execute(text, params)


def cte(sql, lock_sql, saga_id, held, final):
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(lock_sql, [saga_id])
        lock = cursor.fetchone()
        check_answers(lock, (0,))  # the engine's record stops here when the saga changed
        # config.sql.HeldWrites.execute: each held write a CTE the SELECT reads, in order, before the rest.
        names = [f"held{i}" for i in range(len(held))]
        parts = [f"{name} AS ({text} RETURNING 1)" for name, (text, _) in zip(names, held, strict=True)]
        reads = [f"(SELECT count(*) FROM {name})" for name in names]
        query = f"WITH {', '.join([*parts, sql.succeed_ctes])} SELECT {', '.join([*reads, sql.succeed_select])}"
        cursor.execute(query, [v for _, params in held for v in params] + [v for _, params in final for v in params])
        step = cursor.fetchone()[len(held) :]
        check_answers(lock, step)


def _pipelined(lock_sql, saga_id, held, final, begin=False, commit=False):
    """Send everything in one pipeline; return (lock answer, step answer) after its sync."""
    from django.db import connection

    with connection.cursor() as lock, connection.cursor() as step, connection.cursor() as other:
        with connection.connection.pipeline():
            if begin:
                other.execute("BEGIN")
            lock.execute(lock_sql, [saga_id])
            for text, params in held:
                other.execute(text, params)
            (step_sql, step_params), *rest = final
            step.execute(step_sql, step_params)
            for text, params in rest:
                other.execute(text, params)
            if commit:
                other.execute("COMMIT")
        return lock.fetchone(), step.fetchone()


def pipeline(sql, lock_sql, saga_id, held, final):
    from django.db import transaction

    with transaction.atomic():
        check_answers(*_pipelined(lock_sql, saga_id, held, final))


def pipeline_begin(sql, lock_sql, saga_id, held, final):
    from django.db import connection

    try:
        answers = _pipelined(lock_sql, saga_id, held, final, begin=True)
        check_answers(*answers)
    except BaseException:
        with connection.cursor() as cursor:
            cursor.execute("ROLLBACK")
        raise
    with connection.cursor() as cursor:
        cursor.execute("COMMIT")


def pipeline_commit(sql, lock_sql, saga_id, held, final):
    from django.db import connection

    try:
        answers = _pipelined(lock_sql, saga_id, held, final, begin=True, commit=True)
    except BaseException:
        with connection.cursor() as cursor:
            cursor.execute("ROLLBACK")  # an error skips the rest of the pipeline, COMMIT included
        raise
    check_answers(*answers)  # committed already: in the engine, a surprise here could only be logged


WAY_FUNCTIONS = {f.__name__: f for f in (one_by_one, cte, pipeline, pipeline_begin, pipeline_commit)}


# --- measuring -----------------------------------------------------------------------
def cpu_ms(backend):
    """(CPU ms of this process's backend, of the whole PostgreSQL server) from /proc."""
    from bench.saga_throughput import TICK_MS, proc_table, server_ticks

    table = proc_table()
    own = table[backend][2] if backend in table else math.nan
    return own * TICK_MS, server_ticks(table, backend) * TICK_MS


def backend_pid():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def batch(way, sql, transactions, asynchronous):
    """Run the transactions one way; {us, client_us, backend_us, postgres_us} per transaction."""
    function, lock_sql = (
        WAY_FUNCTIONS[way],
        sql.lock["set_config('synchronous_commit', 'off', true)" if asynchronous else "NULL"],
    )
    pid = backend_pid()
    backend_before, postgres_before = cpu_ms(pid)
    client_before, started = time.process_time(), time.perf_counter()
    for saga_id, held, final in transactions:
        function(sql, lock_sql, saga_id, held, final)
    elapsed, client = time.perf_counter() - started, time.process_time() - client_before
    backend_after, postgres_after = cpu_ms(pid)
    n = len(transactions)
    return {
        "us": elapsed / n * 1e6,
        "client_us": client / n * 1e6,
        "backend_us": (backend_after - backend_before) / n * 1e3,
        "postgres_us": (postgres_after - postgres_before) / n * 1e3,
    }


def round_trips(way, sql, transaction_, asynchronous):
    """Sync and Query messages the client sends for one transaction (libpq's trace)."""
    from django.db import connection
    from psycopg import pq

    function = WAY_FUNCTIONS[way]
    lock_sql = sql.lock["set_config('synchronous_commit', 'off', true)" if asynchronous else "NULL"]
    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    with tempfile.TemporaryFile("w+") as trace:
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            function(sql, lock_sql, *transaction_)
        finally:
            pgconn.untrace()
        trace.seek(0)
        sent = [line.split("\t") for line in trace if line.startswith("F\t")]
    return sum(1 for fields in sent if len(fields) > 2 and fields[2].strip() in ("Sync", "Query"))


def loopback_round_trip_us(count=2000):
    from django.db import connection

    with connection.cursor() as cursor:
        started = time.perf_counter()
        for _ in range(count):
            cursor.execute("SELECT 1")
            cursor.fetchone()
    return (time.perf_counter() - started) / count * 1e6


def main():
    from bench.saga_throughput import BenchError

    try:
        measure()
    except BenchError as exc:
        sys.exit(f"batching: {exc}")


def measure():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="transactions per way and run")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.n < 1 or args.runs < 1:
        parser.error("--n and --runs must be at least 1")

    from bench.saga_throughput import fixtures, setup

    began = time.perf_counter()
    db = setup()
    from django.conf import settings

    print(
        f"database {db['NAME']} on {db['HOST']}:{db['PORT'] or 5432}, N={args.n}, runs={args.runs}, "
        f"DEBUG={settings.DEBUG}, server-side binding: {db.get('OPTIONS', {}).get('server_side_binding', False)}",
        flush=True,
    )
    customer, skus = fixtures()
    fresh_tables()
    sql, transactions = build(args.n, customer, skus)
    combinations = [(way, asynchronous) for asynchronous in (False, True) for way in WAYS]

    trips = {}
    for way, asynchronous in combinations:  # warm-up: statements prepared, caches warm; then one traced
        reset()
        warm = transactions[: min(WARM_UP, args.n - 1)]
        for saga_id, held, final in warm:
            WAY_FUNCTIONS[way](sql, sql.lock["NULL"], saga_id, held, final)
        trips[way, asynchronous] = round_trips(way, sql, transactions[len(warm)], asynchronous)
    rtt = loopback_round_trip_us()
    print(f"loopback round trip (SELECT 1): {rtt:.0f} µs", flush=True)

    results = {combination: [] for combination in combinations}
    for run in range(1, args.runs + 1):
        shift = (run - 1) % len(combinations)
        for way, asynchronous in combinations[shift:] + combinations[:shift]:
            reset()
            r = batch(way, sql, transactions, asynchronous)
            check(args.n)
            results[way, asynchronous].append(r)
            print(
                f"run {run} {way:15} {'async' if asynchronous else 'sync ':5}: {r['us']:7.0f} µs/tx; CPU µs/tx: "
                f"client {r['client_us']:5.0f}, backend {r['backend_us']:5.0f}, server {r['postgres_us']:5.0f}",
                flush=True,
            )

    medians = {
        combination: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
        for combination, rs in results.items()
    }
    print(f"\nmedians over {args.runs} runs of {args.n} transactions (CPU from /proc: 10 ms ticks, shared machine)")
    print(f"{'way':16} {'commit':6} {'µs/tx':>7} {'trips':>5} {'client':>7} {'backend':>8} {'server':>7}")
    for (way, asynchronous), m in medians.items():
        print(
            f"{way:16} {'async' if asynchronous else 'sync':6} {m['us']:7.0f} {trips[way, asynchronous]:5d} "
            f"{m['client_us']:7.0f} {m['backend_us']:8.0f} {m['postgres_us']:7.0f}"
        )
    print(
        f"(CPU in µs per transaction; a network round trip of 500 µs instead of {rtt:.0f} µs adds about "
        f"{500 - rtt:.0f} µs per trip)"
    )
    print(f"total time {time.perf_counter() - began:.0f} s")
    figures = [f"{way}_us={medians[way, False]['us']:.0f}" for way in WAYS]
    figures += [f"{way}_async_us={medians[way, True]['us']:.0f}" for way in WAYS]
    print(" ".join(figures), flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("batching: interrupted")
    except Unexpected as exc:
        sys.exit(f"batching: {exc}")
    finally:
        if _OWN_METRICS_DIR:
            with contextlib.suppress(OSError):
                shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"])
