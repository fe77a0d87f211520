"""Engine edge cases driven step by step in the test's own thread (the transport is captured)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from orders.models import SagaRun, SagaStep, StepStatus
from orders.saga import engine
from orders.saga import events as saga_events
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
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: calls.append(names))
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


def _claim(order, name="reserve_inventory", kind="forward", task_id="t"):
    from orders.saga import store

    now = timezone.now()
    return store.claim(
        saga_id=order.saga.pk,
        kind=kind,
        name=name,
        task_id=task_id,
        now=now,
        stale_before=now - timedelta(seconds=60),
        saga_statuses=engine.GOING_FORWARD if kind == "forward" else ("compensating",),
    )


def test_the_claim_brings_the_order_its_customer_and_its_lines(django_assert_num_queries):
    from decimal import Decimal

    order = place_order(products=[ProductFactory(price=Decimal("2.50")), ProductFactory()], quantity=3)
    email = order.customer.email
    lines = [(line.pk, line.sku, line.quantity, line.unit_price, line.line_total) for line in order.lines.all()]
    with django_assert_num_queries(1):
        claim = _claim(order)
        claimed = claim.saga.order
        assert (claimed.pk, claimed.customer.email, claim.taken, claim.attempts) == (order.pk, email, True, 1)
        claimed_lines = [(x.pk, x.sku, x.quantity, x.unit_price, x.line_total) for x in claimed.lines.all()]
    assert claimed_lines == lines and lines[0][3:] == (Decimal("2.50"), Decimal("7.50"))
    assert claim.saga.status == "running" and claim.started


def test_a_claim_that_does_not_take_the_step_says_how_it_stands():
    order = place_order(products=[ProductFactory(on_hand=5)])
    assert _claim(order, task_id="a").taken
    again = _claim(order, task_id="b")  # a duplicate while "a" runs it
    assert (again.taken, again.status, again.task_id, again.deliveries) == (False, "running", "a", 1)
    later = _claim(order, name="process_payment")
    assert (later.taken, later.status, later.unfinished_before) == (False, "pending", 1)
    assert _claim(order, task_id="a").taken  # the same task, redelivered after a worker died: it goes on


@pytest.mark.parametrize("async_commit", [True, False])
def test_forward_claims_and_records_choose_their_commit_mode_compensations_stay_synchronous(settings, async_commit):
    """``SAGA_ASYNC_COMMIT``: synchronous_commit is off for those transactions only, and only going forward."""
    from django.db import connection, transaction

    from orders.saga import store

    settings.SAGA_ASYNC_COMMIT = async_commit
    order = place_order(products=[ProductFactory()])
    expected = "off" if async_commit else "on"

    def commit_mode(cursor):
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]

    with connection.cursor() as cursor:
        assert commit_mode(cursor) == "on"
        sent = []  # the claim is one autocommit statement: look at what it asks of its transaction
        with connection.execute_wrapper(lambda execute, sql, *args: sent.append(sql) or execute(sql, *args)):
            _claim(order)
        assert ("set_config('synchronous_commit', 'off', true)" in sent[0]) == async_commit
        assert commit_mode(cursor) == "on"  # SET LOCAL: the connection's own setting is untouched
        for kind, mode in (("forward", expected), ("compensation", "on")):
            with transaction.atomic():
                locked = store.lock_for_record(order.saga.pk, kind, "reserve_inventory", "t")
                assert (locked.saga_status, locked.cancel_requested, locked.order_status) == (
                    "running",
                    False,
                    "pending",
                )
                assert locked.ours == (kind == "forward")  # the claim took the forward step in task "t"
                assert commit_mode(cursor) == mode


def test_a_success_is_recorded_with_its_effects_in_one_batch(sent, django_assert_num_queries):
    """The order's move, its audit event, its counters and the step's row go out together, in this order."""
    from audit.models import AuditEvent
    from orders.models import OrderStatusCount

    order = place_order(products=[ProductFactory(on_hand=5)])
    _advance(order, STEPS[:1])
    order.refresh_from_db()
    assert order.status == "reserved"
    assert list(AuditEvent.objects.filter(order_id=order.public_id, event="mark_reserved").values_list(
        "from_state", "to_state"
    )) == [("pending", "reserved")]  # fmt: skip
    counts = dict(OrderStatusCount.objects.values_list("status", "count"))
    assert (counts["pending"], counts["reserved"]) == (0, 1)


def test_the_record_steps_aside_when_another_delivery_took_the_step(sent, monkeypatch):
    """Between claim and record another delivery took the step over: ours records nothing."""
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


def test_a_local_step_that_fails_is_rolled_back_then_recorded_as_failed(sent):
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
def test_what_the_claim_does_not_take_the_engine_decides(settings, sent, case, saga_status, order_status):
    """The one-statement claim takes only a step that may run now; the engine decides the rest from what it read."""
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


def test_the_first_claim_starts_the_saga(sent):
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


@pytest.mark.parametrize("case", ["deadline_passed", "cancel_requested", "delivery_limit"])
def test_a_duplicate_of_a_step_running_elsewhere_decides_nothing(settings, sent, case):
    """Found in review: a duplicate message must be dropped before it may compensate or fail the saga
    (the delivery that runs the step decides when it records)."""
    order = place_order(products=[ProductFactory(on_hand=5)])
    _advance(order, STEPS[:1])
    assert _claim(order, name="process_payment", task_id="a").taken  # "a" is charging the card
    saga = order.saga
    if case == "deadline_passed":
        SagaRun.objects.filter(pk=saga.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    elif case == "cancel_requested":
        SagaRun.objects.filter(pk=saga.pk).update(cancel_requested=True)
    else:
        SagaStep.objects.filter(saga=saga, name="process_payment").update(deliveries=settings.SAGA_STEP_MAX_DELIVERIES)

    assert engine.run_forward(saga.pk, "process_payment", task_id="b") == engine.STOP

    saga.refresh_from_db()
    step = SagaStep.objects.get(saga=saga, name="process_payment")
    assert (saga.status, step.status, step.task_id) == ("running", "running", "a")
    assert all("release_inventory" not in names for names in sent)  # no compensation sent


def test_compensation_rows_from_before_every_step_was_compensated_get_their_reverse_positions(sent):
    """Rows written when only the started steps were compensated (refund 0, release 1) are renumbered."""
    from django.db import transaction

    from orders.models import SagaStep, StepKind
    from orders.saga import store
    from orders.saga.compensation import begin_compensation
    from orders.saga.steps import ORDER_FULFILMENT

    order = place_order(products=[ProductFactory(on_hand=5)])
    for position, name in enumerate(["refund_payment", "release_inventory"]):
        SagaStep.objects.create(saga=order.saga, name=name, kind=StepKind.COMPENSATION, position=position)
    with transaction.atomic():
        begin_compensation(store.lock(order.saga.pk), reason="test")
    rows = SagaStep.objects.filter(saga=order.saga, kind=StepKind.COMPENSATION).order_by("position")
    expected = [step.compensation for step in reversed(ORDER_FULFILMENT.steps)]
    assert [(row.position, row.name) for row in rows] == list(enumerate(expected))


def test_a_claim_inside_a_callers_transaction_leaves_its_commit_synchronous(sent):
    """Asynchronous commit is for the claim's own transaction only, never for a caller's."""
    from django.db import connection, transaction

    order = place_order(products=[ProductFactory(on_hand=5)])
    with transaction.atomic():
        assert _claim(order).taken
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone() == ("on",)


def test_the_record_of_a_success_refuses_to_run_inside_a_callers_transaction(sent):
    from django.db import transaction

    order = place_order(products=[ProductFactory(on_hand=5)])
    with pytest.raises(RuntimeError), transaction.atomic():
        engine.run_forward(order.saga.pk, "reserve_inventory", task_id="t")


def test_a_redelivered_step_does_not_cut_short_the_next_steps_retry_wait(sent):
    """The next step failed once and waits for its retry: a redelivery of the step before it stops there."""
    order = place_order(products=[ProductFactory(on_hand=5)])
    _advance(order, ["reserve_inventory"])
    SagaStep.objects.filter(saga=order.saga, name="process_payment").update(
        status=StepStatus.PENDING, attempts=1, next_attempt_at=timezone.now() + timedelta(seconds=30)
    )
    assert engine.run_forward(order.saga.pk, "reserve_inventory", task_id="t2") == engine.STOP
    # The crash case it is there for: the next step never started, so the chain is sent on.
    SagaStep.objects.filter(saga=order.saga, name="process_payment").update(attempts=0, next_attempt_at=None)
    assert engine.run_forward(order.saga.pk, "reserve_inventory", task_id="t3") == engine.CONTINUE


def test_a_booking_answered_after_a_cancel_leaves_no_live_shipment(sent, monkeypatch):
    """The customer cancels while the carrier books the parcel: the late booking is recorded on the
    step only, the compensations cancel it at the carrier by key, and no ``created`` shipment is left."""
    from orders.invariants import check_invariants
    from orders.saga import steps
    from shipping.carriers import get_carrier
    from shipping.models import Shipment

    order = place_order(products=[ProductFactory(on_hand=5)])
    saga = order.saga
    _advance(order, STEPS[:2])
    real_book = steps.shipment_book

    def book_then_cancel(**kwargs):
        tracking_number = real_book(**kwargs)
        assert order_cancel(order=order).status == "paid"  # the step is in flight: only flagged
        return tracking_number

    monkeypatch.setattr(steps, "shipment_book", book_then_cancel)
    assert engine.run_forward(saga.pk, "create_shipment", task_id="t") == engine.STOP
    step = SagaStep.objects.get(saga=saga, name="create_shipment")
    assert step.status == "succeeded" and step.result["tracking_number"]
    assert not Shipment.objects.filter(order=order).exists()  # the late answer is kept on the step only

    compensations = sent[-1]
    assert compensations == ["send_cancellation", "cancel_shipment", "refund_payment", "release_inventory"]
    for name in compensations:
        assert engine.run_compensation(saga.pk, name, task_id="c") == engine.CONTINUE

    order.refresh_from_db()
    assert order.status == "cancelled"
    assert not Shipment.objects.filter(order=order).exclude(status="cancelled").exists()
    assert (f"{order.public_id}:create_shipment", True) in get_carrier().books()  # cancelled by key
    assert check_invariants() == []
