"""How fast are the admin's order changelist and order page with many orders?

    .venv/bin/python bench/admin_scale.py [--orders 1000000] [--runs 7]

Loads the data once into its own PostgreSQL database (``fulfilment_admin_bench``
unless ``DATABASE_URL`` says otherwise) with set-based SQL, reusing it when it
already holds enough orders: per order one line, one saga with four steps, a
payment, a shipment and an audit event. Then renders, as a superuser through
Django's test client, the unfiltered changelist, a filtered and a searched one,
and an order's detail page; prints medians and query counts. The last line is

    orders=<n> changelist_ms=<median> detail_ms=<median> changelist_queries=<q> detail_queries=<q>
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/fulfilment_admin_bench")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver,localhost")
os.environ.setdefault("CONN_MAX_AGE", "0")


def ensure_database():
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    with psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], dbname="postgres", autocommit=True
    ) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]).fetchone():
            conn.execute(f'CREATE DATABASE "{db["NAME"]}"')


LOAD_SQL = """
INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, is_active, date_joined)
SELECT '!', false, 'bench' || g, '', '', 'bench' || g || '@example.com', false, true, now()
FROM generate_series(1, 1000) g ON CONFLICT DO NOTHING;

INSERT INTO catalog_product (sku, name, price, currency, active, created_at, updated_at)
SELECT 'BENCH-' || g, 'Bench product ' || g, 10 + g, 'USD', true, now(), now()
FROM generate_series(1, 100) g ON CONFLICT DO NOTHING;

CREATE TEMP TABLE bench_ids AS
SELECT g AS n,
       (SELECT min(id) FROM auth_user WHERE username LIKE 'bench%%') + (g %% 1000) AS customer_id,
       (SELECT min(id) FROM catalog_product WHERE sku LIKE 'BENCH-%%') + (g %% 100) AS product_id,
       now() - (g * interval '30 seconds') AS at,
       CASE WHEN g %% 1000 = 7 THEN 'needs_attention' WHEN g %% 10 = 3 THEN 'cancelled'
            WHEN g %% 10 < 3 THEN 'confirmed' ELSE 'delivered' END AS status
FROM generate_series(%(start)s, %(stop)s) g;

INSERT INTO orders_order (public_id, customer_id, status, currency, total, idempotency_key, request_fingerprint,
    payment_token, shipping_name, shipping_line1, shipping_line2, shipping_city, shipping_region,
    shipping_postal_code, shipping_country, cancel_reason, request_id, created_at, updated_at)
SELECT gen_random_uuid(), customer_id, status, 'USD', 42.00, '', '', 'tok_visa', 'Bench Customer', '1 Main St', '',
       'Springfield', '', '12345', 'US', '', '', at, at
FROM bench_ids ORDER BY n DESC;

CREATE TEMP TABLE bench_orders AS
SELECT o.id, o.public_id, o.status, o.created_at, o.customer_id, b.product_id
FROM orders_order o JOIN bench_ids b ON b.at = o.created_at AND b.customer_id = o.customer_id;

INSERT INTO orders_orderline (order_id, product_id, sku, name, unit_price, quantity, line_total)
SELECT id, product_id, 'BENCH-' || (product_id %% 100), 'Bench product', 42.00, 1, 42.00 FROM bench_orders;

INSERT INTO orders_sagarun (order_id, definition, version, status, cancel_requested, failure_reason, error,
    deadline_at, redrives, created_at, started_at, finished_at, updated_at)
SELECT id, 'order_fulfilment', 1,
       CASE status WHEN 'needs_attention' THEN 'failed' WHEN 'cancelled' THEN 'compensated' ELSE 'completed' END,
       false, '', '', created_at + interval '30 minutes', 0, created_at, created_at, created_at, created_at
FROM bench_orders;

INSERT INTO orders_sagastep (saga_id, name, kind, position, status, attempts, deliveries, task_id, result, error,
    started_at, finished_at)
SELECT s.id, step.name, 'forward', step.position, 'succeeded', 1, 1, '', '{}'::jsonb, '', s.created_at, s.created_at
FROM orders_sagarun s JOIN bench_orders b ON b.id = s.order_id
CROSS JOIN (VALUES ('reserve_inventory', 0), ('process_payment', 1), ('create_shipment', 2),
                   ('send_confirmation', 3)) AS step(name, position);

INSERT INTO payments_payment (order_id, amount, currency, status, gateway, gateway_reference, idempotency_key,
    failure_code, failure_message, created_at, updated_at)
SELECT id, 42.00, 'USD', CASE WHEN status = 'cancelled' THEN 'refunded' ELSE 'captured' END, 'fake',
       'ch_' || id, public_id || ':process_payment', '', '', created_at, created_at
FROM bench_orders;

INSERT INTO shipping_shipment (order_id, status, carrier, tracking_number, idempotency_key, created_at, updated_at)
SELECT id, CASE WHEN status = 'cancelled' THEN 'cancelled' ELSE 'created' END, 'fake', 'FK' || id,
       public_id || ':create_shipment', created_at, created_at
FROM bench_orders;

INSERT INTO audit_auditevent (actor_type, actor_label, object_type, object_id, order_id, event, from_state,
    to_state, payload, request_id, created_at)
SELECT 'system', 'system', 'orders.order', id::text, public_id, 'confirm', 'shipment_created', 'confirmed',
       '{}'::jsonb, '', created_at
FROM bench_orders;

DROP TABLE bench_ids;
DROP TABLE bench_orders;
"""


def load(target):
    import psycopg
    from django.db import connection

    from orders.models import Order

    have = Order.objects.count()
    if have >= target:
        print(f"reusing {have} orders already loaded")
        return have
    started = time.perf_counter()
    batch = 200_000
    for start in range(have + 1, target + 1, batch):
        stop = min(start + batch - 1, target)
        # Several statements in one call: client-side binding (the project's connections bind on the
        # server, and a server-bound call takes one statement only).
        connection.ensure_connection()
        with psycopg.ClientCursor(connection.connection) as cursor:
            cursor.execute(LOAD_SQL, {"start": start, "stop": stop})
        print(f"  loaded orders {start}..{stop} ({time.perf_counter() - started:.0f} s)", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    print(f"loaded {target - have} orders in {time.perf_counter() - started:.0f} s")
    return Order.objects.count()


def measure(client, url, runs):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url)  # warm up
    timings, queries = [], 0
    for _ in range(runs):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(url)
            timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        queries = len(captured.captured_queries)
    return statistics.median(timings), queries


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    import django

    django.setup()
    ensure_database()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model
    from django.test import Client

    from orders.models import Order

    total = load(args.orders)
    User = get_user_model()
    admin = User.objects.filter(username="bench-admin").first() or User.objects.create_superuser(
        "bench-admin", "bench-admin@example.com", "x"
    )
    client = Client()
    client.force_login(admin)

    order = Order.objects.filter(status="needs_attention").order_by("-created_at").first()
    pages = {
        "changelist": "/admin/orders/order/",
        "changelist ?status=needs_attention": "/admin/orders/order/?status__exact=needs_attention",
        "changelist ?q=<email>": "/admin/orders/order/?q=bench7%40example.com",
        "changelist page 100": "/admin/orders/order/?p=100",
        "detail": f"/admin/orders/order/{order.pk}/change/",
        "failed sagas": "/admin/orders/failedsaga/",
        "dashboard": "/admin/",
    }
    results = {}
    for name, url in pages.items():
        ms, queries = measure(client, url, args.runs)
        results[name] = (ms, queries)
        print(f"{name:40s} median {ms:8.1f} ms  {queries:3d} queries")
    cl, detail = results["changelist"], results["detail"]
    print(
        f"orders={total} changelist_ms={cl[0]:.0f} detail_ms={detail[0]:.0f} "
        f"changelist_queries={cl[1]} detail_queries={detail[1]}"
    )


if __name__ == "__main__":
    main()
