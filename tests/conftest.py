import pytest


@pytest.fixture
def customer(db):
    from tests.factories import UserFactory

    return UserFactory()


@pytest.fixture
def staff(db):
    from tests.factories import StaffFactory

    return StaffFactory()


@pytest.fixture(scope="module")
def saga_worker():
    """A real Celery worker (solo pool, in a thread) on the Redis test broker.

    Module-scoped: it runs only while a saga test module runs, so other tests'
    orders are never picked up. Saga tests need ``django_db(transaction=True)``:
    the worker has its own database connection and sees only committed rows.
    """
    from celery.contrib.testing.worker import start_worker

    from config.celery import app

    app.control.purge()  # messages left behind by earlier tests
    with start_worker(
        app, pool="solo", concurrency=1, perform_ping_check=False, loglevel="WARNING", shutdown_timeout=30
    ) as worker:
        yield worker
    app.control.purge()


@pytest.fixture(scope="session", autouse=True)
def _close_stray_connections(django_db_setup, django_db_blocker):
    """Before the test database is dropped, end sessions that test threads left open.

    The live server, the worker and the concurrency tests run ORM code in other
    threads; a connection one of them still holds would stop the drop.
    """
    yield
    from django.db import connection

    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(autouse=True)
def _saga_worker_settled(request):
    """After a saga test, wait until the worker finished the follow-up work the test started.

    Emails and other tasks scheduled after commit may still be running when the
    assertions pass; the test database must not be flushed under them.
    """
    yield
    if request.node.get_closest_marker("saga") is None:
        return
    import time

    import redis
    from celery.worker import state
    from django.conf import settings

    queue = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    deadline, quiet = time.monotonic() + 20, 0
    while time.monotonic() < deadline and quiet < 3:
        busy = state.active_requests or state.reserved_requests or queue.llen("celery")
        quiet = 0 if busy else quiet + 1
        time.sleep(0.05)
