from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import audit_record
from catalog.models import Reservation
from catalog.services import reservation_release
from notifications.models import Notification
from notifications.services import notification_queue
from orders.models import Order, SagaRun, SagaStep
from orders.saga import events as saga_events
from tests.factories import place_order, reserve_stock

pytestmark = pytest.mark.django_db(transaction=True)  # batches commit one by one, as in production

LONG_AGO = timezone.now() - timedelta(days=400)


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: None)


def old_finished_order(order_status="cancelled", saga_status="compensated"):
    """An order whose saga finished long ago, with a released hold and a sent notification of its own."""
    order = place_order()
    SagaRun.objects.filter(order=order).update(status=saga_status, finished_at=LONG_AGO)
    Order.objects.filter(pk=order.pk).update(status=order_status, updated_at=LONG_AGO)
    reservation = reserve_stock(order)
    reservation_release(reservation=reservation)
    Reservation.objects.filter(pk=reservation.pk).update(updated_at=LONG_AGO)
    notification = notification_queue(
        template="t", recipient="a@b.c", context={}, idempotency_key=str(order.pk), order=order
    )
    Notification.objects.filter(pk=notification.pk).update(status="sent", sent_at=LONG_AGO)
    audit_record(obj=order, event="old")
    return order


def run(*argv):
    out = StringIO()
    call_command("cleanup", *argv, stdout=out)
    return out.getvalue()


def test_dry_run_counts_and_deletes_nothing():
    old_finished_order()
    place_order()  # recent and running: kept
    output = run("--older-than", "90d", "--dry-run")
    assert "would delete 4 saga steps" in output
    assert "would delete 1 sent notifications" in output
    assert "would delete 1 ended reservations" in output
    assert SagaStep.objects.count() == 8


def test_cleanup_deletes_old_finished_details_in_batches():
    old_finished_order()
    recent = place_order()
    output = run("--older-than", "90d", "--batch-size", "3")
    assert "deleted 4 saga steps" in output
    assert set(SagaStep.objects.values_list("saga__order_id", flat=True)) == {recent.pk}
    assert not Notification.objects.filter(status="sent").exists()
    assert not Reservation.objects.filter(status="released").exists()
    assert AuditEvent.objects.exists()  # untouched without --include-audit


def test_audit_events_need_the_flag_and_the_retention_period():
    old_finished_order()
    with pytest.raises(CommandError, match="AUDIT_RETENTION_DAYS"):
        run("--older-than", "90d", "--include-audit")
    with connection.cursor() as cursor:  # an event written long ago (inserts are allowed)
        cursor.execute(
            "INSERT INTO audit_auditevent (actor_type, actor_label, object_type, object_id, event, from_state, "
            "to_state, payload, request_id, created_at) "
            "VALUES ('system', 'system', 'x', '1', 'ancient', '', '', '{}', '', %s)",
            [timezone.now() - timedelta(days=800)],
        )
    output = run("--older-than", "400d", "--include-audit")
    assert "deleted 1 audit events" in output
    assert not AuditEvent.objects.filter(event="ancient").exists()
    assert AuditEvent.objects.filter(event="old").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--older-than", "ninety"], "use a number"), (["--older-than", "9d", "--batch-size", "0"], "at least 1")],
)
def test_bad_arguments(argv, message):
    with pytest.raises(CommandError, match=message):
        run(*argv)


def test_the_nightly_beat_job_runs_the_cleanup(settings):
    from orders.tasks import nightly_cleanup

    old_finished_order()
    settings.CLEANUP_OLDER_THAN_DAYS = 90
    assert nightly_cleanup() == {"saga steps": 4, "sent notifications": 1, "ended reservations": 1}


@pytest.mark.parametrize(
    ("order_status", "saga_status"),
    [("delivered", "completed"), ("cancelled", "compensated"), ("cancelled", "resolved")],
)
def test_cleanup_deletes_what_a_settled_order_left_behind(order_status, saga_status):
    old_finished_order(order_status, saga_status)
    assert run("--older-than", "90d").splitlines() == [
        "deleted 4 saga steps",
        "deleted 1 sent notifications",
        "deleted 1 ended reservations",
    ]


@pytest.mark.parametrize(
    ("order_status", "saga_status"),
    [
        ("confirmed", "completed"),  # the customer may still cancel: the compensations need the steps
        ("shipped", "completed"),  # not delivered yet
        ("needs_attention", "failed"),  # an operator may retry it: its hold must be found again
        ("compensating", "compensating"),
    ],
)
def test_cleanup_keeps_everything_of_an_order_that_can_still_change(order_status, saga_status):
    order = old_finished_order(order_status, saga_status)
    assert run("--older-than", "0h").splitlines() == [
        "deleted 0 saga steps",
        "deleted 0 sent notifications",
        "deleted 0 ended reservations",
    ]
    assert SagaStep.objects.filter(saga__order=order).count() == 4
    assert Reservation.objects.filter(order=order).exists()
    assert Notification.objects.filter(order=order).exists()


def test_cleanup_counts_age_from_the_orders_last_change():
    order = old_finished_order("delivered", "completed")
    Order.objects.filter(pk=order.pk).update(updated_at=timezone.now())  # delivered just now
    assert "deleted 0 saga steps" in run("--older-than", "90d")
