"""config/sql.py: prepared single-row INSERT and UPDATE."""

from decimal import Decimal

import pytest
from django.db import IntegrityError

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


def test_held_writes_run_with_the_last_statement_in_the_order_they_were_made():
    from django.db import connection, transaction

    from audit.services import audit_record

    with transaction.atomic(), connection.cursor() as cursor, sql.deferring() as held:
        first = audit_record(object_type="x", object_id="1", event="first")
        audit_record(object_type="x", object_id="1", event="second")
        assert first.pk is None and _audit_events() == []  # held back, not yet sent
        row = held.execute(cursor, "n AS (SELECT 41 AS v)", "(SELECT v FROM n) + %s", [1])
        assert row == (42,)
        assert _audit_events() == ["first", "second"]  # the ids follow the order of the calls
        audit_record(object_type="x", object_id="1", event="left over")
    assert _audit_events() == ["first", "second", "left over"]  # still held at the end: run then


def test_held_writes_are_dropped_when_the_block_raises():
    from django.db import transaction

    from audit.services import audit_record

    with pytest.raises(RuntimeError), transaction.atomic(), sql.deferring():
        audit_record(object_type="x", object_id="1", event="never")
        raise RuntimeError
    assert _audit_events() == []


def test_insert_later_outside_a_deferring_block_inserts_at_once():
    from audit.services import audit_record

    event = audit_record(object_type="x", object_id="1", event="now")
    assert event.pk is not None and _audit_events() == ["now"]


def test_writes_still_held_at_the_end_of_the_block_run_as_one_statement():
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from audit.services import audit_record

    payment = Payment.objects.create(
        order=place_order(products=[ProductFactory()]),
        amount=Decimal("1.00"),
        currency="EUR",
        gateway="fake",
        idempotency_key="held",
    )
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        with sql.deferring():
            payment.capture(reference="ch_held")  # its audit event is held back too
            sql.update_later(payment, ["status", "gateway_reference", "updated_at"])
            audit_record(object_type="x", object_id="1", event="also held")
            assert Payment.objects.get(pk=payment.pk).status == "pending"
        sent = [q["sql"] for q in queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    assert len(sent) == 2 and sent[1].startswith("WITH held0")  # the SELECT above, then every held write at once
    assert Payment.objects.get(pk=payment.pk).status == "captured"
    assert _audit_events() == ["capture", "also held"]
