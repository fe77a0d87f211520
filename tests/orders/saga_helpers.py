import time

from django.core.management import call_command

from catalog.models import StockLevel
from notifications.models import Notification
from orders.invariants import check_invariants
from orders.models import SagaRun
from payments.models import FakeGatewayCharge, Payment, Refund
from shipping.models import Shipment

TERMINAL = {"completed", "compensated", "failed"}


def wait_for_saga(order, statuses=TERMINAL, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        saga = SagaRun.objects.select_related("order").get(order=order)
        if saga.status in statuses:
            return saga
        time.sleep(0.05)
    saga = SagaRun.objects.get(order=order)
    steps = list(saga.steps.values_list("kind", "name", "status", "attempts", "error"))
    raise AssertionError(f"saga {saga.pk} still {saga.status} after {timeout}s: {steps}")


def wait_until(condition, timeout=20, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {message}")


def assert_invariants():
    assert check_invariants() == []
    call_command("check_invariants", stdout=open("/dev/null", "w"))  # noqa: SIM115


def snapshot():
    """Everything a step could change, to compare before and after."""
    return {
        "stock": sorted(StockLevel.objects.values_list("product_id", "on_hand", "reserved")),
        "payments": sorted(Payment.objects.values_list("id", "status")),
        "refunds": Refund.objects.count(),
        "shipments": sorted(Shipment.objects.values_list("id", "status")),
        "notifications": sorted(Notification.objects.values_list("id", "status", "attempts")),
        "gateway_calls": sorted(FakeGatewayCharge.objects.values_list("idempotency_key", "attempts")),
        "sagas": sorted(SagaRun.objects.values_list("id", "status")),
    }


def broker_backlog(queue):
    """Saga messages the broker still holds: queued, or delivered and not yet acknowledged.

    ``queue`` is a ``redis.Redis`` client on the test broker. A task waiting for its
    retry countdown (an ETA) sits in the worker's timer, invisible to
    ``celery.worker.state``, but stays in kombu's ``unacked`` hash until it ran
    (``task_acks_late``). Notification tasks waiting out their backoff (up to 10
    minutes) are not counted: their notification row exists already.
    """
    import json

    backlog = queue.llen("celery")
    for raw in queue.hvals("unacked"):
        try:
            task = json.loads(raw)[0]["headers"]["task"]
        except (ValueError, LookupError, TypeError):
            task = ""
        backlog += task.startswith("orders.")
    return backlog


def wait_for_worker_idle(queue, timeout=20, quiet_polls=3):
    """Wait (``time.monotonic``: time-machine leaves it alone) until the worker has no saga work.

    Returns False if it was still busy after ``timeout`` seconds.
    """
    from celery.worker import state

    deadline, quiet = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        busy = state.active_requests or state.reserved_requests or broker_backlog(queue)
        quiet = 0 if busy else quiet + 1
        if quiet >= quiet_polls:
            return True
        time.sleep(0.03)
    return False
