"""Saga throughput against a bare Celery chain of four tasks, and saga latency at half load.

    .venv/bin/python bench/saga_throughput.py [--n 2000] [--runs 3]

It needs only ``orders.services.order_place``, the models and ``bench/reference_tasks.py`` of the code
it measures: to measure another checkout with this version, copy this file out of the tree and run
the copy with that checkout as the working directory (the project is then the working directory).

A script, not a test. It uses its own PostgreSQL database (``fulfilment_bench``, created if
missing, migrated) and Redis db 14 unless ``DATABASE_URL`` / ``CELERY_BROKER_URL`` say
otherwise; it refuses the ``fulfilment`` and ``test_fulfilment`` databases. Every phase starts
from emptied order/saga/payment/shipping/notification/audit/analytics tables and an empty queue.

Each run interleaves (alternating which goes first, so both see the same machine noise):

A. saga throughput: N orders placed through ``orders.services.order_place`` with no worker
   running (their chains pile up in Redis); then a real worker is started
   (``celery -A config worker --pool prefork --concurrency 2``) and timed from its start until
   every saga is terminal (polling the database): sagas/s = N / elapsed.
B. reference: N chains of four tasks (``bench/reference_tasks.py``), each one ORM UPDATE
   (``BenchChain.objects.filter(pk=id).update(step=F("step") + 1)``) in its own transaction,
   enqueued with no worker running; the same worker command is started and timed until every row has step = 4.

CPU per saga and per reference chain (A and B), read from ``/proc`` (Linux), so the cost shows
beyond one machine's speed. Counted from the first saga (chain) seen started until the last is
done, divided by the sagas (chains) that finished in that window, so the worker's start-up is left
out (printed apart):

- worker: utime + stime of the celery main process and every live descendant (its prefork
  children), plus what reaped children left in their parents' cutime/cstime;
- postgres (``pg_ms``): utime + stime of the backends serving the bench database (pids from
  ``pg_stat_activity``, this script's own connection excepted), read at every poll (10 a second)
  so that a backend that exits (a worker drops a connection older than ``CONN_MAX_AGE``) loses
  at most a tenth of a second. The server must run on this machine. Not in it: the WAL writer,
  checkpointer and autovacuum, shared with the server's other databases;
- the whole PostgreSQL server (``pg_server_ms``): its postmaster (the parent of this script's
  backend) and all its descendants, with what exited backends left in its cutime/cstime. It has
  the WAL writer's work (which asynchronous commit moves out of the backends), but also every
  other database's on a shared machine, and this script's polling;
- redis: ``used_cpu_user + used_cpu_sys`` from the broker's ``INFO cpu`` (the whole server, other clients too).

``SC_CLK_TCK`` is usually 100: a tick is 10 ms, so use N in the thousands for these figures.

Medians over the runs. Then phase C: with a worker running, orders are placed at 50% of the
median saga throughput for about 20 s (at most N orders); latency per order = the saga's
``finished_at`` - the order's ``created_at``. The last line printed is

    sagas_per_s=<x> reference_chains_per_s=<y> ratio=<x/y> p50_ms=<a> p99_ms=<b>
    worker_ms=<w> ref_worker_ms=<rw> pg_ms=<p> ref_pg_ms=<rp> redis_ms=<r> ref_redis_ms=<rr>
    pg_server_ms=<ps> ref_pg_server_ms=<rps>

on one line: CPU milliseconds per saga (``ref_``: per reference chain), medians over the runs.
"""

import argparse
import contextlib
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if not (ROOT / "manage.py").exists():  # a copy run from elsewhere (another checkout's code): the working directory
    ROOT = Path.cwd()
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Defaults only: the environment still wins. Set before Django (and config.settings) is imported.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/fulfilment_bench")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("DJANGO_DEBUG", "false")  # DEBUG wraps every query to record it: not production
os.environ.setdefault("LOG_LEVEL", "WARNING")  # this process; the worker's own level is its --loglevel
_OWN_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _OWN_METRICS_DIR:  # do not mix the bench's samples into var/prometheus of `make run`
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fulfilment-bench-metrics-")
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

WORKER_CMD = [
    str(ROOT / ".venv" / "bin" / "celery"),
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
]
WAIT_LIMIT = 600.0  # seconds: the longest any single wait may take
POLL = 0.1  # seconds between two looks at the database
LATENCY_SECONDS = 20.0
PRODUCTS = 10  # orders cycle through these, one line each: no single hot stock row
STOCK = 100_000_000
PROTECTED_DATABASES = {"fulfilment", "test_fulfilment"}
ADDRESS = {  # tests/factories.py ADDRESS
    "name": "Ada Lovelace",
    "line1": "12 St James's Square",
    "city": "London",
    "postal_code": "SW1Y 4JH",
    "country": "GB",
}


class BenchError(Exception):
    pass


# --- set-up -----------------------------------------------------------------------
def database_settings():
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        raise BenchError(f"DATABASE_URL must point to PostgreSQL, not {db['ENGINE']}")
    if db["NAME"] in PROTECTED_DATABASES:
        raise BenchError(f"refusing to use the {db['NAME']!r} database: the bench empties its tables")
    return db


def ensure_database(db):
    import psycopg
    from psycopg import sql

    params = {"host": db["HOST"] or "127.0.0.1", "port": db["PORT"] or 5432, "dbname": "postgres"}
    params.update({k: db[K] for k, K in (("user", "USER"), ("password", "PASSWORD")) if db[K]})
    with psycopg.connect(**params, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["NAME"])))
            print(f"created database {db['NAME']}")


def setup():
    import django

    django.setup()
    db = database_settings()
    ensure_database(db)
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_chain (id serial PRIMARY KEY, step int NOT NULL DEFAULT 0)")
    return db


def fixtures():
    from django.contrib.auth import get_user_model

    from catalog.models import Product
    from catalog.services import product_create

    customer, _ = get_user_model().objects.get_or_create(
        username="bench-customer", defaults={"email": "bench-customer@example.com"}
    )
    skus = [f"BENCH-{i:02d}" for i in range(1, PRODUCTS + 1)]
    have = set(Product.objects.filter(sku__in=skus).values_list("sku", flat=True))
    for sku in skus:
        if sku not in have:
            product_create(sku=sku, name=f"Bench product {sku}", price="9.99", on_hand=STOCK)
    return customer, skus


def transient_tables():
    """Every table a placed order or a saga writes to (catalog products and stock levels excepted)."""
    from django.apps import apps

    from catalog.models import Reservation, ReservationLine

    models = [Reservation, ReservationLine]
    for label in ("orders", "payments", "shipping", "notifications", "audit"):
        models.extend(apps.get_app_config(label).get_models())
    return sorted({model._meta.db_table for model in models} | {"bench_chain"})


def purge_queue():
    import redis
    from django.conf import settings

    from config.celery import app

    app.control.purge()
    # Messages a stopped worker had taken but not acknowledged (acks_late) would come back.
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("unacked", "unacked_index", "unacked_mutex")


def queue_depth():
    import redis
    from django.conf import settings

    return redis.Redis.from_url(settings.CELERY_BROKER_URL).llen("celery")


def reset(skus):
    """Empty the queue and the bench's transient tables; full stock again; analytics counters seeded."""
    from django.db import connection

    from catalog.models import StockLevel
    from orders import analytics

    purge_queue()
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(transient_tables())} RESTART IDENTITY CASCADE")
    StockLevel.objects.filter(product__sku__in=skus).update(on_hand=STOCK, reserved=0)
    analytics.rebuild()  # a counter row per order status, as in a running shop


def analyze():
    """Fresh planner statistics for the tables just filled (outside the measured time)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {', '.join(transient_tables())}")


# --- the worker -------------------------------------------------------------------
class Worker:
    """``celery worker`` as a subprocess in its own process group; stop() always cleans up."""

    def __init__(self, log_path):
        self.log_path = log_path
        self.process = None
        self.started = None

    def start(self):
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== {time.strftime('%H:%M:%S')} {' '.join(WORKER_CMD)}\n".encode())
            log.flush()
            self.started = time.perf_counter()
            self.process = subprocess.Popen(
                WORKER_CMD,
                cwd=ROOT,
                env=os.environ.copy(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def check_alive(self):
        if self.process.poll() is not None:
            raise BenchError(f"the worker exited with status {self.process.returncode}; see {self.log_path}")

    def stop(self):
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # warm shutdown: the pool's children stop with it
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            # Still alive, so the process group (its own session) is certainly ours: kill it whole.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# --- CPU, from /proc ----------------------------------------------------------------
HAVE_PROC = os.path.exists("/proc/self/stat")
TICK_MS = 1000 / os.sysconf("SC_CLK_TCK") if HAVE_PROC else math.nan


def proc_table():
    """{pid: (comm, ppid, own ticks, reaped children's ticks)} of every process now (proc(5), clock ticks)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:  # it exited meanwhile
            continue
        close = data.rindex(b")")  # comm may itself hold ")" or spaces
        comm = data[data.index(b"(") + 1 : close].decode(errors="replace")
        fields = data[close + 2 :].split()  # fields[0] is field 3 (state): ppid 4, utime 14 ... cstime 17
        table[int(name)] = (comm, int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14]))
    return table


def tree_ticks(table, root):
    """CPU ticks of ``root`` and its live descendants, with what their reaped children left them."""
    children = {}
    for pid, (_, ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root] if root in table else []
    while todo:
        pid = todo.pop()
        total += table[pid][2] + table[pid][3]
        todo.extend(children.get(pid, ()))
    return total


def redis_cpu_ms():
    import redis
    from django.conf import settings

    info = redis.Redis.from_url(settings.CELERY_BROKER_URL).info("cpu")
    return (float(info["used_cpu_user"]) + float(info["used_cpu_sys"])) * 1000


def bench_backends():
    """(this process's backend, the other backends connected to the bench database): PostgreSQL pids."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_backend_pid(), coalesce(array_agg(pid) FILTER (WHERE pid <> pg_backend_pid()), '{}') "
            "FROM pg_stat_activity WHERE datname = current_database()"
        )
        return cursor.fetchone()


def server_ticks(table, own_backend):
    """CPU ticks of the PostgreSQL server whose backend ``own_backend`` is: its postmaster's whole tree."""
    if own_backend not in table:
        return math.nan  # the server runs on another machine
    return tree_ticks(table, table[own_backend][1])


def own_ticks(pid):
    """utime + stime of one process in clock ticks, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


class CpuSample:
    """Cumulative CPU milliseconds of the worker tree, the PostgreSQL server and redis."""

    def __init__(self, worker_pid):
        self.redis = redis_cpu_ms()
        if not HAVE_PROC:
            self.worker = self.postgres = math.nan
            return
        own_backend, _ = bench_backends()
        table = proc_table()
        self.worker = tree_ticks(table, worker_pid) * TICK_MS
        self.postgres = server_ticks(table, own_backend) * TICK_MS

    def per_unit(self, start, backends_ms, units):
        """CPU ms per saga (chain) from ``start`` to this sample, over ``units`` finished in between."""
        units = max(units, 1)
        return {
            "worker": (self.worker - start.worker) / units,
            "pg": backends_ms / units,
            "pg_server": (self.postgres - start.postgres) / units,
            "redis": (self.redis - start.redis) / units,
            "startup": start.worker,
            "units": units,
        }


class BackendCpu:
    """CPU of the backends serving the bench database (this script's own excepted), as they come and go.

    Read at every poll: a backend that exits (a worker drops its connection after ``CONN_MAX_AGE``)
    loses only what it used since the poll before; one that appears later counts from its start.
    """

    def __init__(self):
        self.first, self.last = {}, {}

    def sample(self):
        if not HAVE_PROC:
            return
        later = bool(self.first)
        for pid in bench_backends()[1]:
            ticks = own_ticks(pid)
            if ticks is not None:
                self.first.setdefault(pid, 0 if later else ticks)
                self.last[pid] = ticks

    def ms(self):
        if not HAVE_PROC:
            return math.nan
        return sum(ticks - self.first[pid] for pid, ticks in self.last.items()) * TICK_MS


def wait_until(worker, probe, what, n):
    """Poll ``probe() -> (finished, started)`` until ``n`` finished.

    Returns (seconds since worker start, first progress at, CPU per finished unit from the first
    progress seen to the end: ``CpuSample.per_unit``).
    """
    deadline = time.perf_counter() + WAIT_LIMIT
    first_progress = first_sample = None
    backends = BackendCpu()
    finished_then = 0
    while True:
        finished, started = probe()
        now = time.perf_counter()
        if started and first_progress is None:
            first_progress = now - worker.started
            first_sample, finished_then = CpuSample(worker.process.pid), finished
        if first_sample is not None:
            backends.sample()
        if finished >= n:
            cpu = None
            if first_sample is not None:
                cpu = CpuSample(worker.process.pid).per_unit(first_sample, backends.ms(), n - finished_then)
            return now - worker.started, first_progress, cpu
        if now > deadline:
            raise BenchError(f"gave up after {WAIT_LIMIT:.0f} s waiting for {what}")
        worker.check_alive()
        time.sleep(POLL)


# --- phases -----------------------------------------------------------------------
def place_orders(customer, skus, count, start=0):
    from orders.services import order_place

    return [
        order_place(
            customer=customer,
            lines=[{"sku": skus[(start + i) % len(skus)], "quantity": 1}],
            shipping_address=ADDRESS,
            payment_token="tok_visa",
        ).pk
        for i in range(count)
    ]


def saga_probe():
    from django.db.models import Count, Q

    from orders.models import ACTIVE_SAGA_STATUSES, SagaRun, SagaStatus

    def probe():
        counts = SagaRun.objects.aggregate(
            terminal=Count("id", filter=~Q(status__in=ACTIVE_SAGA_STATUSES)),
            started=Count("id", filter=~Q(status=SagaStatus.PENDING)),
        )
        return counts["terminal"], counts["started"] > 0

    return probe


def saga_outcomes():
    from django.db.models import Count

    from orders.models import SagaRun

    return dict(SagaRun.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))


def phase_a(customer, skus, n, log_path):
    """N sagas queued, then a worker: N / (worker start -> every saga terminal)."""
    from django.db.models import Max, Min

    from orders.models import SagaRun, SagaStep

    reset(skus)
    started = time.perf_counter()
    place_orders(customer, skus, n)
    placing = time.perf_counter() - started
    analyze()
    if queue_depth() < n:
        raise BenchError(f"only {queue_depth()} messages queued for {n} orders: is the broker reachable?")
    with Worker(log_path) as worker:
        elapsed, first, cpu = wait_until(worker, saga_probe(), f"{n} sagas", n)
    outcomes = saga_outcomes()
    if outcomes.get("completed", 0) != n:
        print(f"  WARNING: not every saga completed: {outcomes}", flush=True)
    span = SagaStep.objects.aggregate(t=Min("started_at"))["t"], SagaRun.objects.aggregate(t=Max("finished_at"))["t"]
    busy = (span[1] - span[0]).total_seconds()
    return {"rate": n / elapsed, "elapsed": elapsed, "first": first, "busy": busy, "placing": placing, "cpu": cpu}


def reference_probe():
    from django.db import connection

    def probe():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FILTER (WHERE step >= 4), count(*) FILTER (WHERE step > 0) FROM bench_chain"
            )
            done, started = cursor.fetchone()
        return done, started > 0

    return probe


def phase_b(skus, n, log_path):
    """N bare chains queued, then a worker: N / (worker start -> every row at step 4)."""
    from celery import chain
    from django.db import connection

    from bench.reference_tasks import REFERENCE_CHAIN

    reset(skus)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO bench_chain (step) SELECT 0 FROM generate_series(1, %s) RETURNING id", [n])
        ids = [row[0] for row in cursor.fetchall()]
    for row_id in ids:
        chain(*(task.si(row_id) for task in REFERENCE_CHAIN)).apply_async()
    placing = time.perf_counter() - started
    analyze()
    with Worker(log_path) as worker:
        elapsed, first, cpu = wait_until(worker, reference_probe(), f"{n} reference chains", n)
    return {"rate": n / elapsed, "elapsed": elapsed, "first": first, "placing": placing, "cpu": cpu}


def percentile(values, q):
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def phase_c(customer, skus, rate, n, log_path):
    """Orders offered at ``rate`` per second for about LATENCY_SECONDS: (count, p50 ms, p99 ms, ...)."""
    from orders.models import SagaRun

    reset(skus)
    count = max(1, min(n, round(rate * LATENCY_SECONDS)))
    with Worker(log_path) as worker:
        # Warm-up: the worker is up and both pool processes have run a saga before the clock starts.
        warm = place_orders(customer, skus, 4)
        wait_until(worker, saga_probe(), "warm-up sagas", len(warm))
        first_measured = max(warm) + 1
        started = time.perf_counter()
        for i in range(count):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            place_orders(customer, skus, 1, start=i)
        offered = time.perf_counter() - started
        wait_until(worker, saga_probe(), f"{count} latency sagas", len(warm) + count)
    rows = list(
        SagaRun.objects.filter(order_id__gte=first_measured).values_list("status", "finished_at", "order__created_at")
    )
    not_completed = sum(1 for status, _, _ in rows if status != "completed")
    if not_completed:
        print(f"  WARNING: {not_completed} of {len(rows)} latency sagas did not complete", flush=True)
    latencies = [(finished - created).total_seconds() * 1000 for _, finished, created in rows]
    return {
        "count": count,
        "offered_rate": count / offered if offered > 0 else float("inf"),
        "p50": statistics.median(latencies),
        "p99": percentile(latencies, 99),
        "max": max(latencies),
    }


# --- main -------------------------------------------------------------------------
CPU_KEYS = ("worker", "pg", "pg_server", "redis", "startup")
NO_CPU = dict.fromkeys(CPU_KEYS, math.nan)  # no progress was ever seen (cannot happen with n >= 1)


def print_cpu(label, saga, reference):
    """CPU ms per saga against per reference chain, and their ratios."""

    def figure(key):
        ratio = saga[key] / reference[key] if reference[key] else math.nan
        return f"{saga[key]:.2f} / {reference[key]:.2f} ms (x{ratio:.2f})"

    print(
        f"{label} per saga / per reference chain: worker {figure('worker')}, postgres {figure('pg')} "
        f"[whole server {figure('pg_server')}], redis {figure('redis')}",
        flush=True,
    )


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="sagas (and reference chains) per phase")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.n < 1 or args.runs < 1:
        parser.error("--n and --runs must be at least 1")
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)

    began = time.perf_counter()
    db = setup()
    from django.conf import settings

    log_path = Path(tempfile.gettempdir()) / f"saga_throughput-worker-{os.getpid()}.log"
    print(
        f"database {db['NAME']} on {db['HOST']}:{db['PORT'] or 5432}, broker {settings.CELERY_BROKER_URL}, "
        f"N={args.n}, runs={args.runs}, DEBUG={settings.DEBUG}\nworker: {' '.join(WORKER_CMD[1:])}\n"
        f"worker log: {log_path}",
        flush=True,
    )
    customer, skus = fixtures()
    sagas, references, saga_cpu, reference_cpu = [], [], [], []
    for run in range(1, args.runs + 1):
        order = ("A", "B") if run % 2 else ("B", "A")
        results = {}
        for phase in order:
            if phase == "A":
                results["A"] = a = phase_a(customer, skus, args.n, log_path)
                print(
                    f"run {run} A: {args.n} sagas in {a['elapsed']:.1f} s from worker start = {a['rate']:.1f} sagas/s "
                    f"(first saga started after {a['first'] or 0:.1f} s; first step -> last saga "
                    f"{a['busy']:.1f} s = {args.n / max(a['busy'], 1e-6):.1f}/s; placing took {a['placing']:.1f} s)",
                    flush=True,
                )
            else:
                results["B"] = b = phase_b(skus, args.n, log_path)
                print(
                    f"run {run} B: {args.n} chains in {b['elapsed']:.1f} s from worker start = "
                    f"{b['rate']:.1f} chains/s (first chain started after {b['first'] or 0:.1f} s; "
                    f"enqueueing took {b['placing']:.1f} s)",
                    flush=True,
                )
        sagas.append(results["A"]["rate"])
        references.append(results["B"]["rate"])
        saga_cpu.append(results["A"]["cpu"] or NO_CPU)
        reference_cpu.append(results["B"]["cpu"] or NO_CPU)
        print(f"run {run}: ratio {sagas[-1] / references[-1]:.2f}", flush=True)
        print_cpu(f"run {run} CPU", saga_cpu[-1], reference_cpu[-1])
        print(
            f"run {run} worker start-up (until the first saga / chain started): "
            f"{saga_cpu[-1]['startup']:.0f} / {reference_cpu[-1]['startup']:.0f} ms CPU (left out of the above)",
            flush=True,
        )

    saga_rate, reference_rate = statistics.median(sagas), statistics.median(references)
    print(f"median: {saga_rate:.1f} sagas/s, {reference_rate:.1f} reference chains/s", flush=True)
    cpu = {key: statistics.median(c[key] for c in saga_cpu) for key in CPU_KEYS}
    ref_cpu = {key: statistics.median(c[key] for c in reference_cpu) for key in CPU_KEYS}
    print_cpu("median CPU", cpu, ref_cpu)
    print(
        "  (postgres: the backends serving the bench database; whole server: every process of the PostgreSQL "
        "server, its WAL writer and its other databases' work included. The machine may be shared: "
        "compare runs of one session.)",
        flush=True,
    )
    c = phase_c(customer, skus, saga_rate / 2, args.n, log_path)
    print(
        f"C: {c['count']} orders offered at {saga_rate / 2:.1f}/s (achieved {c['offered_rate']:.1f}/s): "
        f"latency p50 {c['p50']:.0f} ms, p99 {c['p99']:.0f} ms, max {c['max']:.0f} ms",
        flush=True,
    )
    print(f"total time {time.perf_counter() - began:.0f} s")
    print(
        f"sagas_per_s={saga_rate:.1f} reference_chains_per_s={reference_rate:.1f} "
        f"ratio={saga_rate / reference_rate:.2f} p50_ms={c['p50']:.0f} p99_ms={c['p99']:.0f} "
        f"worker_ms={cpu['worker']:.2f} ref_worker_ms={ref_cpu['worker']:.2f} "
        f"pg_ms={cpu['pg']:.2f} ref_pg_ms={ref_cpu['pg']:.2f} "
        f"redis_ms={cpu['redis']:.2f} ref_redis_ms={ref_cpu['redis']:.2f} "
        f"pg_server_ms={cpu['pg_server']:.2f} ref_pg_server_ms={ref_cpu['pg_server']:.2f}",
        flush=True,
    )


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        sys.exit(f"saga_throughput: {exc}")
    except KeyboardInterrupt:
        sys.exit("saga_throughput: interrupted")
    finally:
        if _OWN_METRICS_DIR:
            shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
