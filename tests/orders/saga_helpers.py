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
