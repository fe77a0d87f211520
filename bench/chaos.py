"""Chaos run: a real web server, worker and beat; kill, duplicate and empty the broker; then check.

    .venv/bin/python bench/chaos.py [--orders 300] [--rate 10] [--kills 3] [--duplicates 60] [--recovery 600]

A script, not a test (it takes minutes). It uses its own PostgreSQL database (``fulfilment_chaos``,
created and migrated if missing, its order tables emptied first) and a private Redis server it starts on
a free port (so it can restart the broker empty without touching anyone else's Redis). It then starts

- the web server (``gunicorn config.wsgi``, two workers) on a free port,
- a Celery worker (prefork, concurrency 2) in its own process group,
- Celery beat, with the recovery jobs every few seconds (``BEAT_REDRIVE_SECONDS=5``,
  ``SAGA_REDRIVE_IDLE_SECONDS=10``, ``SAGA_STEP_TIMEOUT_GRACE_SECONDS=5``),

and places ``--orders`` orders through the HTTP API at ``--rate`` per second, as storefronts do, with a
mix of failing payment tokens, carrier-rejected and flaky addresses, an unreachable mailbox, one scarce
product (so some orders are out of stock) and customer cancels (about one order in ten, through the API).
While the orders flow it

- kills the worker with SIGKILL (whole process group) ``--kills`` times, spread over the placing, and
  starts it again,
- sends ``--duplicates`` step messages by hand for random sagas and steps (a duplicated delivery),
- kills the broker and starts it again empty (every queued message is lost) once, half way.

Then it waits (up to ``--recovery`` seconds) until no saga is active, and checks with its own queries and
``orders.invariants.check_invariants``: every accepted order exists with a saga (none lost), no order is
between states (every saga terminal: completed, compensated, resolved, or failed with the order
``needs_attention``), no order is charged twice (captured payments and the gateway's own books), no
stock is oversold (units of live orders never exceed the initial stock, ``reserved`` matches active
holds). Exit status 1 if anything is found. The last line is

    orders=<n> accepted=<a> confirmed=<c> cancelled=<x> needs_attention=<na> lost=<l> between_states=<b>
    charged_twice=<d> oversold=<o> violations=<v> kills=<k> duplicates=<u> broker_restarts=<r> settle_s=<s>
"""

import argparse
import collections
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


REDIS_PORT = free_port()
# Defaults only: the environment still wins. Set before Django (and config.settings) is imported.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/fulfilment_chaos")
os.environ["CELERY_BROKER_URL"] = f"redis://127.0.0.1:{REDIS_PORT}/0"
os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("LOG_LEVEL", "WARNING")
for name, value in {
    "BEAT_REDRIVE_SECONDS": "5",
    "BEAT_EXPIRE_RESERVATIONS_SECONDS": "10",
    "BEAT_RETRY_NOTIFICATIONS_SECONDS": "20",
    "SAGA_REDRIVE_IDLE_SECONDS": "10",
    "SAGA_STEP_TIMEOUT_GRACE_SECONDS": "5",
    "SAGA_RETRY_BACKOFF_BASE": "0.5",
    "SAGA_RETRY_BACKOFF_MAX": "4",
    "THROTTLE_ORDERS_CREATE": "100000/min",
    "THROTTLE_ORDERS_READ": "100000/min",
    "THROTTLE_ORDERS_WRITE": "100000/min",
    "THROTTLE_AUTH": "100000/min",
    "THROTTLE_ANON": "100000/min",
}.items():
    os.environ.setdefault(name, value)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fulfilment-chaos-metrics-")
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

BIN = ROOT / ".venv" / "bin"
PROTECTED_DATABASES = {"fulfilment", "test_fulfilment"}
SCARCE_SKU, SCARCE_STOCK = "CHAOS-SCARCE", 15
PLENTY = {"CHAOS-MOUSE": ("29.99", 100_000), "CHAOS-KEYBOARD": ("149.99", 100_000)}
TERMINAL_ORDER_STATES = {"confirmed", "cancelled", "needs_attention", "shipped", "delivered"}
ADDRESS = {"name": "Ada Lovelace", "line1": "12 St James's Square", "city": "London", "postal_code": "SW1Y 4JH"}


class ChaosError(Exception):
    pass


# --- processes --------------------------------------------------------------------
class Process:
    """A child process in its own process group, killed as a whole."""

    def __init__(self, name, cmd, log_dir):
        self.name, self.cmd, self.log_dir, self.proc, self.starts = name, cmd, log_dir, None, 0

    def start(self):
        self.starts += 1
        log = open(self.log_dir / f"{self.name}.{self.starts}.log", "w")  # noqa: SIM115 (kept for the child)
        self.proc = subprocess.Popen(
            self.cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=os.environ.copy()
        )

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.kill(signal.SIGTERM)


def wait_for_port(port, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise ChaosError(f"nothing listens on port {port} after {timeout}s")


# --- set-up -----------------------------------------------------------------------
def setup():
    import django

    django.setup()
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        raise ChaosError(f"DATABASE_URL must point to PostgreSQL, not {db['ENGINE']}")
    if db["NAME"] in PROTECTED_DATABASES:
        raise ChaosError(f"refusing to use the {db['NAME']!r} database: the chaos run empties its tables")
    import psycopg
    from psycopg import sql

    params = {"host": db["HOST"] or "127.0.0.1", "port": db["PORT"] or 5432, "dbname": "postgres"}
    params.update({k: db[K] for k, K in (("user", "USER"), ("password", "PASSWORD")) if db[K]})
    with psycopg.connect(**params, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["NAME"])))
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    empty_tables()
    return fixtures()


def empty_tables():
    """Every table the previous run filled, emptied (the audit trail's append-only trigger needs TRUNCATE)."""
    from django.apps import apps
    from django.db import connection

    names = [
        model._meta.db_table
        for app in ("orders", "catalog", "payments", "shipping", "notifications", "audit")
        for model in apps.get_app_config(app).get_models()
    ]
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE " + ", ".join(f'"{n}"' for n in names) + " CASCADE")


def fixtures():
    """Three products (one scarce), thirty customers with API tokens. Returns the tokens."""
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from knox.models import AuthToken

    from catalog.services import product_create

    product_create(sku=SCARCE_SKU, name="Chaos scarce", price=Decimal("999.99"), on_hand=SCARCE_STOCK)
    for sku, (price, stock) in PLENTY.items():
        product_create(sku=sku, name=sku.title(), price=Decimal(price), on_hand=stock)
    tokens = []
    for i in range(30):  # the first one's mailbox is unreachable: its confirmations fail, the saga compensates
        email = f"chaos-{i}+down@example.com" if i == 0 else f"chaos-{i}@example.com"
        user, _ = get_user_model().objects.update_or_create(username=f"chaos-{i}", defaults={"email": email})
        tokens.append(AuthToken.objects.create(user)[1])
    return tokens


# --- the storefront ---------------------------------------------------------------
def call(base, method, path, token, body=None, headers=None):
    request = urllib.request.Request(
        base + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def order_body(rng):
    """A random order: mostly good, with every failure mode the fakes offer mixed in."""
    lines = [{"sku": rng.choice(list(PLENTY)), "quantity": rng.randint(1, 3)}]
    if rng.random() < 0.15:
        lines.append({"sku": SCARCE_SKU, "quantity": rng.randint(1, 3)})
    token = rng.choices(
        ["tok_visa", "tok_declined", "tok_flaky", "tok_timeout", "tok_refund_fails"], [70, 8, 10, 4, 3]
    )[0]
    address = {**ADDRESS, "country": "GB"}
    roll = rng.random()
    if roll < 0.05:
        address["postal_code"] = "00000"  # rejected by the carrier
    elif roll < 0.10:
        address["city"] = "Flakyville"  # the carrier fails twice
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    return {"lines": lines, "shipping_address": address, "payment_token": token}, headers


def storefront(base, tokens, n, rate, rng, accepted, refused, lock):
    start = time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))  # an even flow of ``rate`` orders per second
        token = rng.choice(tokens)
        body, headers = order_body(rng)
        status, answer = call(base, "POST", "/api/v1/orders/", token, body, headers)
        with lock:
            if status in (200, 202):
                accepted.append(answer["id"])
            else:
                refused[status] += 1
        if status in (200, 202) and rng.random() < 0.10:
            time.sleep(rng.random() * 0.5)
            status, _ = call(base, "POST", f"/api/v1/orders/{answer['id']}/cancel/", token)
            with lock:
                refused[f"cancel {status}"] += 1


def duplicate_steps(rng, count):
    """Send step messages by hand for random sagas and steps: duplicated or out-of-order deliveries."""
    from orders.models import SagaRun
    from orders.tasks import STEP_TASKS

    ids = list(SagaRun.objects.values_list("pk", flat=True))
    sent = 0
    for _ in range(count if ids else 0):
        try:
            rng.choice(list(STEP_TASKS.values())).si(rng.choice(ids)).apply_async()
            sent += 1
        except Exception:  # the broker may be down right now: that message is simply not sent
            pass
    return sent


# --- checks -----------------------------------------------------------------------
def findings(accepted):
    from django.db.models import Count, Sum

    from catalog.models import Product
    from orders.invariants import check_invariants
    from orders.models import Order, OrderLine, SagaRun
    from payments.models import CHARGED, FakeGatewayCharge, Payment

    found = collections.OrderedDict()
    present = set(Order.objects.filter(public_id__in=accepted, saga__isnull=False).values_list("public_id", flat=True))
    found["lost"] = [f"order {o}: accepted but missing" for o in set(map(uuid.UUID, accepted)) - present]
    found["between_states"] = [
        f"order {o.public_id}: {o.status} (saga {o.saga.status})"
        for o in Order.objects.exclude(status__in=TERMINAL_ORDER_STATES).select_related("saga")
    ]
    twice = Payment.objects.filter(status__in=CHARGED).values("order_id").annotate(n=Count("id")).filter(n__gt=1)
    found["charged_twice"] = [f"order id {row['order_id']}: {row['n']} payments" for row in twice]
    gateway = FakeGatewayCharge.objects.filter(kind="charge", succeeded=True).values("idempotency_key")
    found["charged_twice"] += [
        f"gateway: {row['idempotency_key']} charged {row['n']} times"
        for row in gateway.annotate(n=Count("id")).filter(n__gt=1)
    ]
    live = OrderLine.objects.exclude(order__status="cancelled").values("sku").annotate(units=Sum("quantity"))
    scarce = {row["sku"]: row["units"] for row in live}.get(SCARCE_SKU, 0)
    found["oversold"] = [f"{SCARCE_SKU}: {scarce} units in live orders, stock was {SCARCE_STOCK}"] * (
        scarce > SCARCE_STOCK
    )
    found["oversold"] += [
        f"{p.sku}: on_hand={p.stock.on_hand} reserved={p.stock.reserved}"
        for p in Product.objects.select_related("stock")
        if p.stock.reserved > p.stock.on_hand or p.stock.on_hand < 0
    ]
    found["violations"] = check_invariants()
    statuses = collections.Counter(Order.objects.values_list("status", flat=True))
    active = SagaRun.objects.filter(status__in=["pending", "running", "compensating"]).count()
    return found, statuses, active


def settle(limit):
    """Wait until no saga is active (or ``limit`` seconds). Returns the seconds waited."""
    from orders.models import SagaRun

    start = time.monotonic()
    while time.monotonic() - start < limit:
        if not SagaRun.objects.filter(status__in=["pending", "running", "compensating"]).exists():
            break
        time.sleep(1)
    return time.monotonic() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--rate", type=float, default=10.0, help="orders per second the storefront places")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--duplicates", type=int, default=60)
    parser.add_argument("--recovery", type=float, default=600.0, help="seconds to wait for every saga to settle")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    log_dir = Path(tempfile.mkdtemp(prefix="fulfilment-chaos-"))
    print(f"seed={seed} logs={log_dir} broker=redis://127.0.0.1:{REDIS_PORT}/0", flush=True)

    redis_cmd = ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    redis = Process("redis", redis_cmd, log_dir)
    redis.start()
    wait_for_port(REDIS_PORT)
    tokens = setup()
    web_port = free_port()
    celery = [str(BIN / "celery"), "-A", "config"]
    web = Process("web", [str(BIN / "gunicorn"), "config.wsgi", "-w", "2", "-b", f"127.0.0.1:{web_port}"], log_dir)
    worker_cmd = [
        *celery,
        "worker",
        "--pool",
        "prefork",
        "-c",
        "2",
        "-l",
        "WARNING",
        "--without-mingle",
        "--without-gossip",
    ]
    worker = Process("worker", worker_cmd, log_dir)
    beat = Process("beat", [*celery, "beat", "-l", "WARNING", "--schedule", str(log_dir / "beat-schedule")], log_dir)
    processes = [beat, worker, web, redis]
    kills = duplicates = broker_restarts = 0
    try:
        for process in (web, worker, beat):
            process.start()
        wait_for_port(web_port)
        base = f"http://127.0.0.1:{web_port}"
        accepted, refused, lock = [], collections.Counter(), threading.Lock()
        shop = threading.Thread(
            target=storefront,
            args=(base, tokens, args.orders, args.rate, random.Random(rng.random()), accepted, refused, lock),
        )
        shop.start()
        # Chaos while the orders flow: kills spread over the run, the broker emptied half way.
        started, duration = time.monotonic(), args.orders / args.rate
        events = [("kill", i / (args.kills + 1)) for i in range(1, args.kills + 1)] + [("broker", 0.5)]
        events.sort(key=lambda event: event[1])
        for kind, at in events:
            time.sleep(max(0.0, started + at * duration - time.monotonic()))
            if kind == "kill":
                worker.kill()
                kills += 1
                duplicates += duplicate_steps(rng, args.duplicates // (args.kills + 1))
                time.sleep(rng.uniform(0.5, 2.0))
                worker.start()
            else:
                redis.kill()
                time.sleep(1.0)
                redis.start()  # empty: --save "" keeps nothing
                wait_for_port(REDIS_PORT)
                broker_restarts += 1
            print(f"{kind} at {len(accepted)} accepted orders", flush=True)
        shop.join()
        duplicates += duplicate_steps(rng, args.duplicates - duplicates)
        print(f"placed: accepted={len(accepted)} other answers={dict(refused)}", flush=True)
        waited = settle(args.recovery)
        time.sleep(3)  # late follow-ups (emails) of the last sagas
        found, statuses, active = findings(accepted)
    finally:
        for process in processes:
            process.stop()
    for name, items in found.items():
        for item in items[:20]:
            print(f"{name}: {item}")
    print(f"order statuses: {dict(statuses)}; active sagas left: {active}")
    print(
        f"orders={args.orders} accepted={len(accepted)} confirmed={statuses.get('confirmed', 0)} "
        f"cancelled={statuses.get('cancelled', 0)} needs_attention={statuses.get('needs_attention', 0)} "
        + " ".join(f"{name}={len(items)}" for name, items in found.items())
        + f" kills={kills} duplicates={duplicates} broker_restarts={broker_restarts} settle_s={waited:.0f}"
    )
    return 1 if any(found.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
