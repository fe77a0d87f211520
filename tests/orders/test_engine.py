"""Engine edge cases driven step by step in the test's own thread (the transport is captured)."""

import pytest

from orders.models import SagaRun
from orders.saga import engine
from orders.services import order_cancel
from tests.factories import ProductFactory, place_order

pytestmark = pytest.mark.django_db(transaction=True)  # the fake gateway refuses to run inside a transaction

STEPS = ["reserve_inventory", "process_payment", "create_shipment", "send_confirmation"]


def _advance(order, steps):
    """Run ``steps`` of the order's saga in this thread, each expected to let the chain go on."""
    for name in steps:
        assert engine.run_forward(order.saga.pk, name, task_id="t") == engine.CONTINUE


@pytest.fixture(autouse=True)
def sent(monkeypatch):
    calls = []
    monkeypatch.setattr(engine, "dispatch", lambda saga_id, names: calls.append(names))
    return calls


def test_a_cancel_asked_during_the_last_step_is_not_lost(sent, monkeypatch):
    order = place_order(products=[ProductFactory(on_hand=5)])
    saga = order.saga
    for name in STEPS[:3]:
        assert engine.run_forward(saga.pk, name, task_id="t") == engine.CONTINUE

    # The customer cancels while send_confirmation is sending the email.
    from orders.saga import steps

    real_send = steps.notification_queue_and_send

    def send_then_cancel(**kwargs):
        result = real_send(**kwargs)
        assert order_cancel(order=order).status == "shipment_created"  # the step is in flight: only flagged
        return result

    monkeypatch.setattr(steps, "notification_queue_and_send", send_then_cancel)
    assert engine.run_forward(saga.pk, "send_confirmation", task_id="t") == engine.STOP

    saga = SagaRun.objects.get(pk=saga.pk)
    assert saga.status == "compensating" and saga.cancel_requested
    assert sent[-1] == ["send_cancellation", "cancel_shipment", "refund_payment", "release_inventory"]
    order.refresh_from_db()
    assert order.status == "compensating"


def _record(saga):
    """What a saga left behind, without ids or times."""
    from audit.models import AuditEvent
    from orders.models import OrderStatusCount

    saga = SagaRun.objects.select_related("order").get(pk=saga.pk)
    return {
        "saga": (saga.status, saga.started_at is not None, saga.finished_at is not None),
        "order": saga.order.status,
        "steps": list(
            saga.steps.order_by("-kind", "position").values_list("kind", "name", "status", "attempts", "deliveries")
        ),
        "results": [sorted(r) for r in saga.steps.filter(kind="forward").values_list("result", flat=True)],
        "events": sorted(
            AuditEvent.objects.filter(order_id=saga.order.public_id).values_list("object_type", "event", "to_state")
        ),
        "counts": dict(OrderStatusCount.objects.exclude(count=0).values_list("status", "count")),
    }


@pytest.mark.parametrize("token", ["tok_visa", "tok_declined"])
def test_the_lean_path_and_the_general_path_record_the_same_thing(settings, sent, token):
    """PostgreSQL takes the lean path for a pending step; both paths must leave the same rows."""
    from django.db import connection

    from orders.models import OrderStatusCount

    records = {}
    for fast in (True, False):
        settings.SAGA_FAST_PATH = fast
        OrderStatusCount.objects.all().delete()
        order = place_order(products=[ProductFactory(on_hand=5)], payment_token=token)
        for name in STEPS:
            if engine.run_forward(order.saga.pk, name, task_id=f"t-{name}") != engine.CONTINUE:
                break
        records[fast] = _record(order.saga)
    assert connection.vendor == "postgresql"  # else both runs took the general path
    assert records[True] == records[False]
    expected = "confirmed" if token == "tok_visa" else "compensating"
    assert records[True]["order"] == expected


def test_the_lean_path_takes_fewer_statements(settings, sent):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    product = ProductFactory(on_hand=5)
    counts = {}
    for fast in (False, True, False):  # the first run creates the analytics rows both others update
        settings.SAGA_FAST_PATH = fast
        order = place_order(products=[product])
        with CaptureQueriesContext(connection) as queries:
            _advance(order, STEPS)
        counts[fast] = len(queries)
    assert counts[True] < counts[False] * 0.8, counts


def test_the_lean_claim_brings_the_order_its_customer_and_its_lines(django_assert_num_queries):
    from decimal import Decimal

    order = place_order(products=[ProductFactory(price=Decimal("2.50")), ProductFactory()], quantity=3)
    email = order.customer.email
    lines = [(line.pk, line.sku, line.quantity, line.unit_price, line.line_total) for line in order.lines.all()]
    with django_assert_num_queries(1):
        saga, claimed, spec = engine._claim_forward_fast(order.saga.pk, "reserve_inventory", "t")
        assert (claimed.pk, claimed.customer.email, spec.name) == (order.pk, email, "reserve_inventory")
        claimed_lines = [(x.pk, x.sku, x.quantity, x.unit_price, x.line_total) for x in claimed.lines.all()]
    assert claimed_lines == lines and lines[0][3:] == (Decimal("2.50"), Decimal("7.50"))
    assert saga.status == "running"


@pytest.mark.parametrize("async_commit", [True, False])
def test_the_lean_claim_and_record_choose_their_commit_mode(settings, async_commit):
    """``SAGA_ASYNC_COMMIT``: the claim and the record turn synchronous_commit off for their own transaction only."""
    from django.db import connection, transaction

    settings.SAGA_ASYNC_COMMIT = async_commit
    order = place_order(products=[ProductFactory()])
    expected = "off" if async_commit else "on"

    def commit_mode(cursor):
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]

    with connection.cursor() as cursor:
        assert commit_mode(cursor) == "on"
        with transaction.atomic():  # the claim is one autocommit statement: look inside its transaction
            saga, claimed, _ = engine._claim_forward_fast(order.saga.pk, "reserve_inventory", "t")
            assert commit_mode(cursor) == expected
        assert commit_mode(cursor) == "on"  # SET LOCAL: the connection's own setting is untouched
        with transaction.atomic():
            assert engine._lock_unchanged(cursor, saga, claimed)
            assert commit_mode(cursor) == expected
        assert commit_mode(cursor) == "on"


def test_the_lean_record_steps_aside_when_saga_or_order_changed_since_the_claim():
    """The record reuses the claim's instances only if what it relies on is unchanged under the lock."""
    from django.db import connection, transaction

    from orders.models import Order

    order = place_order(products=[ProductFactory()])
    saga, claimed, _ = engine._claim_forward_fast(order.saga.pk, "reserve_inventory", "t")

    def unchanged():
        with transaction.atomic(), connection.cursor() as cursor:
            return engine._lock_unchanged(cursor, saga, claimed)

    assert unchanged()
    changes = [
        (Order.objects.filter(pk=order.pk), {"status": "needs_attention"}, {"status": claimed.status}),
        (SagaRun.objects.filter(pk=saga.pk), {"cancel_requested": True}, {"cancel_requested": False}),
        (SagaRun.objects.filter(pk=saga.pk), {"status": "compensating"}, {"status": "running"}),
    ]
    for rows, change, undo in changes:
        rows.update(**change)
        assert not unchanged(), change
        rows.update(**undo)
        assert unchanged()


def test_the_lean_path_steps_aside_when_another_delivery_took_the_step(sent, monkeypatch):
    """Between claim and record another delivery took the step over: ours records nothing."""
    from orders.models import SagaStep
    from orders.saga import steps
    from payments.models import Payment

    order = place_order(products=[ProductFactory(on_hand=5)])
    saga = order.saga
    assert engine.run_forward(saga.pk, "reserve_inventory", task_id="a") == engine.CONTINUE
    real_charge = steps.payment_gateway_charge

    def charge_then_lose_the_step(**kwargs):
        result = real_charge(**kwargs)
        SagaStep.objects.filter(saga=saga, name="process_payment").update(task_id="b")
        return result

    monkeypatch.setattr(steps, "payment_gateway_charge", charge_then_lose_the_step)
    assert engine.run_forward(saga.pk, "process_payment", task_id="a") == engine.STOP

    step = SagaStep.objects.get(saga=saga, name="process_payment")
    assert (step.status, step.task_id) == ("running", "b")
    assert not Payment.objects.filter(order=order).exists()  # the record rolled back; "b" records it
    order.refresh_from_db()
    assert order.status == "reserved"


def test_a_local_step_that_fails_on_the_lean_path_is_recorded_by_the_general_one(sent):
    from catalog.models import StockLevel

    product = ProductFactory(on_hand=1)
    other = ProductFactory(on_hand=5)
    order = place_order(products=[other, product], quantity=2)

    assert engine.run_forward(order.saga.pk, "reserve_inventory", task_id="t") == engine.STOP

    saga = SagaRun.objects.get(pk=order.saga.pk)
    step = saga.steps.get(name="reserve_inventory")
    assert (step.status, step.attempts, step.deliveries) == ("failed", 1, 1)
    assert "not enough stock" in step.error.lower()
    assert list(StockLevel.objects.filter(product__in=[product, other]).values_list("reserved", flat=True)) == [0, 0]
    assert saga.status == "compensating"
    assert sent[-1] == ["send_cancellation", "cancel_shipment", "refund_payment", "release_inventory"]


def test_sagas_run_on_prepared_statements(sent):
    """PostgreSQL parses and plans the saga's statements once per connection.

    The default settings (``DATABASE_PREPARED_STATEMENTS``: server-side binding, prepare threshold 5).
    """
    from django.db import connection

    product = ProductFactory(on_hand=50)
    orders = [place_order(products=[product]) for _ in range(7)]  # psycopg prepares a statement on its 6th use
    for order in orders:
        _advance(order, STEPS)
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert any("orders_sagastep" in statement for statement in prepared), prepared
    assert SagaRun.objects.filter(order__in=orders, status="completed").count() == len(orders)


@pytest.mark.parametrize(
    ("case", "saga_status", "order_status"),
    [
        ("cancel_requested", "compensating", "compensating"),
        ("deadline_passed", "compensating", "compensating"),
        ("out_of_order", "running", "reserved"),
        ("delivery_limit", "failed", "needs_attention"),
    ],
)
def test_what_the_lean_claim_refuses_the_general_path_decides(settings, sent, case, saga_status, order_status):
    """The one-statement claim takes only a pending step of a saga that may go on; anything else falls through."""
    from datetime import timedelta

    from django.utils import timezone

    from orders.models import SagaStep

    order = place_order(products=[ProductFactory(on_hand=5)])
    _advance(order, STEPS[:1])
    saga = order.saga
    name = "process_payment"
    if case == "cancel_requested":
        SagaRun.objects.filter(pk=saga.pk).update(cancel_requested=True)
    elif case == "deadline_passed":
        SagaRun.objects.filter(pk=saga.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    elif case == "out_of_order":
        name = "create_shipment"
    else:
        SagaStep.objects.filter(saga=saga, name=name).update(deliveries=settings.SAGA_STEP_MAX_DELIVERIES)

    assert engine.run_forward(saga.pk, name, task_id="t") == engine.STOP

    saga.refresh_from_db()
    order.refresh_from_db()
    assert (saga.status, order.status) == (saga_status, order_status)
    step = SagaStep.objects.get(saga=saga, name=name)
    assert step.attempts == 0  # never ran: no external call was made
    assert step.status == ("failed" if case == "delivery_limit" else "pending")


def test_the_first_lean_claim_starts_the_saga(sent):
    from orders import signals

    started = []
    signals.saga_started.connect(lambda sender, saga, **kwargs: started.append(saga.pk), weak=False, dispatch_uid="t")
    try:
        order = place_order(products=[ProductFactory(on_hand=5)])
        _advance(order, STEPS[:2])
    finally:
        signals.saga_started.disconnect(dispatch_uid="t")
    saga = SagaRun.objects.get(pk=order.saga.pk)
    assert saga.status == "running" and saga.started_at is not None
    assert started == [saga.pk]  # once, for the first step only
    assert list(saga.steps.filter(kind="forward").values_list("status", "attempts", "deliveries")) == [
        ("succeeded", 1, 1),
        ("succeeded", 1, 1),
        ("pending", 0, 0),
        ("pending", 0, 0),
    ]
