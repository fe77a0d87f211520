"""Saga throughput against a bare Celery chain, and saga latency at half load.

    .venv/bin/python bench/saga_throughput.py [--n 2000] [--runs 3]

Uses its own PostgreSQL database (``fulfilment_saga_bench``) and Redis db 14
unless ``DATABASE_URL`` / ``CELERY_BROKER_URL`` say otherwise. Each run, with
the worker stopped, it

A. places N orders through ``order_place`` (their chains queue up), starts a
   real worker (prefork, concurrency 2) and waits until every saga is terminal;
   sagas/s = N / (last saga finished - first step started), from the database;
B. enqueues N reference chains — four tasks, each one UPDATE in its own
   transaction on a one-row-per-chain table — starts the same worker and waits;
   chains/s = N / (last finished - first started).

Then, with a worker running, it offers orders at 50% of the median saga
throughput for about 20 s and reports per-order latency (placed -> confirmed).
The last line:

    sagas_per_s=<x> reference_chains_per_s=<y> ratio=<x/y> p50_ms=<a> p99_ms=<b>
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ENV = {
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/fulfilment_saga_bench",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/14",
    "DJANGO_SETTINGS_MODULE": "config.settings",
    "DJANGO_DEBUG": "false",  # DEBUG keeps every query in memory
    "CONN_MAX_AGE": "600",
    "LOG_LEVEL": "WARNING",
}
for key, value in ENV.items():
    os.environ.setdefault(key, value)
WAIT_LIMIT = 600

ADDRESS = {"name": "Bench", "line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"}


def setup():
    import django

    django.setup()
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], dbname="postgres", autocommit=True
    ) as c:
        if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]).fetchone():
            c.execute(f'CREATE DATABASE "{db["NAME"]}"')
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS bench_chain (id serial PRIMARY KEY, step int NOT NULL DEFAULT 0, "
            "started_at timestamptz, finished_at timestamptz)"
        )


def reset():
    import redis
    from django.conf import settings
    from django.db import connection

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE bench_chain, orders_order, orders_orderline, orders_sagarun, orders_sagastep, "
            "catalog_reservation, catalog_reservationline, payments_payment, payments_refund, "
            "payments_fakegatewaycharge, shipping_shipment, shipping_fakecarrierbooking, notifications_notification, "
            "audit_auditevent, orders_dailyorderstats, orders_orderstatuscount, orders_productsalesstats, "
            "orders_stepfailurestats RESTART IDENTITY CASCADE"
        )
        cursor.execute("UPDATE catalog_stocklevel SET on_hand = 100000000, reserved = 0")
    from orders import analytics

    analytics.rebuild()  # a counter row for every status, as in a running shop
    connection.close()


def fixtures():
    from django.contrib.auth import get_user_model

    from catalog.models import Product
    from catalog.services import product_create

    customer, _ = get_user_model().objects.get_or_create(username="bench", defaults={"email": "bench@example.com"})
    if not Product.objects.filter(sku="BENCH-1").exists():
        product_create(sku="BENCH-1", name="Bench", price="9.99", on_hand=100_000_000)
    return customer


class Worker:
    def __enter__(self):
        self.process = subprocess.Popen(
            [
                str(ROOT / ".venv/bin/celery"),
                "-A",
                "config",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                "2",
                "--loglevel",
                "WARNING",
                "--without-mingle",
                "--without-gossip",
                "-I",
                "bench.reference_tasks",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self

    def __exit__(self, *exc):
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)


def wait(done, what):
    deadline = time.monotonic() + WAIT_LIMIT
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.25)


def place(customer, n):
    from orders.services import order_place

    return [
        order_place(
            customer=customer,
            lines=[{"sku": "BENCH-1", "quantity": 1}],
            shipping_address=ADDRESS,
            payment_token="tok_visa",
        )
        for _ in range(n)
    ]


def saga_phase(customer, n):
    from django.db.models import Max, Min

    from orders.models import SagaRun, SagaStep

    reset()
    place(customer, n)
    with Worker():
        wait(lambda: SagaRun.objects.filter(status__in=["completed", "compensated", "failed"]).count() >= n, "sagas")
    assert SagaRun.objects.filter(status="completed").count() == n, "some sagas did not complete"
    first = SagaStep.objects.aggregate(t=Min("started_at"))["t"]
    last = SagaRun.objects.aggregate(t=Max("finished_at"))["t"]
    return n / (last - first).total_seconds()


def reference_phase(n):
    from celery import chain
    from django.db import connection

    from bench.reference_tasks import ref_1, ref_2, ref_3, ref_4

    reset()
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO bench_chain (step) SELECT 0 FROM generate_series(1, %s) RETURNING id", [n])
        ids = [row[0] for row in cursor.fetchall()]
    for row_id in ids:
        chain(ref_1.si(row_id), ref_2.si(row_id), ref_3.si(row_id), ref_4.si(row_id)).apply_async()

    def done():
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM bench_chain WHERE step >= 4")
            return cursor.fetchone()[0] >= n

    with Worker():
        wait(done, "reference chains")
    with connection.cursor() as cursor:
        cursor.execute("SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM bench_chain")
        return n / float(cursor.fetchone()[0])


def latency_phase(customer, rate, seconds=20.0, limit=2000):
    from orders.models import SagaRun

    reset()
    count = max(1, min(limit, int(rate * seconds)))
    with Worker():
        time.sleep(3)  # let the worker start before offering load
        started = time.monotonic()
        orders = []
        for i in range(count):
            target = started + i / rate
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            orders.extend(place(customer, 1))
        wait(lambda: SagaRun.objects.filter(finished_at__isnull=False).count() >= count, "latency sagas")
    latencies = sorted(
        (saga.finished_at - saga.order.created_at).total_seconds() * 1000
        for saga in SagaRun.objects.select_related("order")
    )
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return count, p50, p99


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    setup()
    customer = fixtures()
    sagas, references = [], []
    for run in range(1, args.runs + 1):
        sagas.append(saga_phase(customer, args.n))
        references.append(reference_phase(args.n))
        print(
            f"run {run}: sagas {sagas[-1]:.1f}/s  reference chains {references[-1]:.1f}/s  "
            f"ratio {sagas[-1] / references[-1]:.2f}",
            flush=True,
        )
    saga_rate, reference_rate = statistics.median(sagas), statistics.median(references)
    count, p50, p99 = latency_phase(customer, saga_rate / 2)
    print(f"latency at {saga_rate / 2:.1f} orders/s offered ({count} orders): p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    print(
        f"sagas_per_s={saga_rate:.1f} reference_chains_per_s={reference_rate:.1f} "
        f"ratio={saga_rate / reference_rate:.2f} p50_ms={p50:.0f} p99_ms={p99:.0f}"
    )


if __name__ == "__main__":
    main()
