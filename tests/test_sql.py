"""config/sql.py: prepared single-row INSERT and UPDATE."""

import re
from decimal import Decimal

import pytest
from django.db import IntegrityError
from psycopg import pq

from config import sql
from payments.models import Payment
from tests.factories import ProductFactory, place_order

pytestmark = pytest.mark.django_db


def test_insert_sets_the_key_and_converts_values_like_the_orm():
    order = place_order(products=[ProductFactory()])
    payment = Payment(order=order, amount=Decimal("10.00"), currency="EUR", gateway="fake", idempotency_key="k1")

    assert sql.insert(payment) is True

    stored = Payment.objects.get(pk=payment.pk)
    assert (stored.order_id, stored.amount, stored.status, stored.idempotency_key) == (
        order.pk,
        Decimal("10.00"),
        "pending",
        "k1",
    )
    assert stored.created_at is not None and stored.created_at == payment.created_at


def test_insert_ignoring_conflicts_reports_an_existing_row():
    order = place_order(products=[ProductFactory()])
    first = Payment(order=order, amount=Decimal("1.00"), currency="EUR", gateway="fake", idempotency_key="same")
    again = Payment(order=order, amount=Decimal("2.00"), currency="EUR", gateway="fake", idempotency_key="same")

    assert sql.insert(first, ignore_conflicts=True) is True
    assert sql.insert(again, ignore_conflicts=True) is False
    assert again.pk is None
    assert Payment.objects.get(idempotency_key="same").amount == Decimal("1.00")
    with pytest.raises(IntegrityError):
        sql.insert(Payment(order=order, amount=Decimal("3.00"), currency="EUR", gateway="fake", idempotency_key="same"))


def test_update_writes_only_the_named_fields_and_refreshes_auto_now():
    order = place_order(products=[ProductFactory()])
    payment = Payment.objects.create(
        order=order, amount=Decimal("1.00"), currency="EUR", gateway="fake", idempotency_key="u"
    )
    before = payment.updated_at
    payment.capture(reference="ch_1")
    payment.amount = Decimal("99.00")  # not named: stays as stored

    assert sql.update(payment, ["status", "gateway_reference", "updated_at"]) == 1

    stored = Payment.objects.get(pk=payment.pk)
    assert (stored.status, stored.gateway_reference, stored.amount) == ("captured", "ch_1", Decimal("1.00"))
    assert stored.updated_at > before


def _audit_events():
    from audit.models import AuditEvent

    return list(AuditEvent.objects.order_by("id").values_list("event", flat=True))


def test_a_batch_runs_its_writes_in_the_order_added_then_its_last_statement():
    from django.db import transaction

    from audit.services import audit_record

    with transaction.atomic():
        batch = sql.Batch()
        first = audit_record(object_type="x", object_id="1", event="first", batch=batch)
        audit_record(object_type="x", object_id="1", event="second", batch=batch)
        assert first.pk is None and _audit_events() == []  # added, not yet sent
        rows = batch.send("SELECT count(*) + %s FROM audit_auditevent", [40])
        assert rows == [(42,)]  # the last statement sees what the ones before it wrote
        assert _audit_events() == ["first", "second"]  # the ids follow the order of the calls


def test_two_writes_to_one_row_in_a_batch_both_count():
    """Unlike two sub-statements of one WITH (one snapshot, "only one of the modifications takes place")."""
    from django.db import transaction

    from orders.analytics import order_moved
    from orders.models import OrderStatusCount

    order = place_order(products=[ProductFactory()])
    with transaction.atomic():
        batch = sql.Batch()
        order_moved(order, "pending", "reserved", batch=batch)
        order_moved(order, "pending", "reserved", batch=batch)
        batch.send()
    assert OrderStatusCount.objects.get(status="reserved").count == 2


def test_a_batch_is_one_message_and_one_answer(tmp_path):
    """One execute that Django's wrappers see, one message to the server, and the client waits once:
    in libpq's trace every message it sent comes before every answer."""
    from django.db import connection, transaction

    from audit.services import audit_record

    seen = []

    def watch(execute, sql_text, params, many, context):
        seen.append(sql_text)
        return execute(sql_text, params, many, context)

    trace = tmp_path / "libpq.trace"
    with transaction.atomic(), connection.execute_wrapper(watch), open(trace, "w") as out:
        batch = sql.Batch()
        for n in range(3):
            audit_record(object_type="x", object_id=str(n), event="e", batch=batch)
        pgconn = connection.connection.pgconn
        pgconn.trace(out.fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        rows = batch.send("SELECT 41 + %s", [1])
        pgconn.untrace()
    assert rows == [(42,)]
    assert len(seen) == 1 and seen[0].count("INSERT INTO") == 3
    lines = trace.read_text().splitlines()
    messages = [line.split("\t")[:3:2] for line in lines if line.startswith(("F\t", "B\t"))]
    assert re.fullmatch("F+B+", "".join(direction for direction, _ in messages)), messages
    assert [name for direction, name in messages if direction == "F"] == ["Query"]


def test_a_failing_statement_in_a_batch_rolls_back_the_block_with_djangos_error():
    from django.db import IntegrityError, connection, transaction

    from audit.services import audit_record

    with pytest.raises(IntegrityError), transaction.atomic():
        batch = sql.Batch()
        audit_record(object_type="x", object_id="1", event="before", batch=batch)
        batch.add("INSERT INTO orders_orderstatuscount (status, count) VALUES (NULL, 1)", [])
        audit_record(object_type="x", object_id="1", event="after", batch=batch)
        batch.send()
    assert _audit_events() == []
    with connection.cursor() as cursor:  # the connection is still usable
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_a_batch_never_sent_leaves_nothing_when_the_block_raises():
    from django.db import transaction

    from audit.services import audit_record

    with pytest.raises(RuntimeError), transaction.atomic():
        batch = sql.Batch()
        audit_record(object_type="x", object_id="1", event="sent", batch=batch)
        batch.send()
        audit_record(object_type="x", object_id="1", event="never", batch=batch)
        raise RuntimeError
    assert _audit_events() == []


def test_without_a_batch_a_write_happens_at_once():
    from audit.services import audit_record

    event = audit_record(object_type="x", object_id="1", event="now")
    assert event.pk is not None and _audit_events() == ["now"]
