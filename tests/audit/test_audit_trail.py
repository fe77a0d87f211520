from io import StringIO

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from audit.models import AuditEvent
from notifications.models import Notification
from notifications.services import notification_queue
from orders.models import Order, SagaRun
from orders.saga import events as saga_events
from orders.services import order_cancel
from tests.api.conftest import client_for
from tests.factories import ProductFactory, place_order, reserve_stock

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: None)


def events(obj):
    return list(
        AuditEvent.objects.filter(object_type=obj._meta.label_lower, object_id=str(obj.pk))
        .order_by("id")
        .values_list("event", "from_state", "to_state", "actor_type", "actor_label")
    )


def test_api_calls_are_recorded_with_the_customer_as_actor(customer, django_capture_on_commit_callbacks):
    order = place_order(customer=customer)
    api = client_for(customer)
    assert api.post(f"/api/v1/orders/{order.public_id}/cancel/").status_code == 202
    assert events(order) == [
        ("start_compensation", "pending", "compensating", "customer", customer.username),
    ]  # "cancel" follows when the compensations have run (on a worker, as "system")


def test_staff_api_and_admin_actions_are_recorded_with_the_staff_user(staff, customer):
    from django.contrib.auth.models import Permission

    staff.user_permissions.add(*Permission.objects.filter(codename__in=["ship_order", "view_order"]))
    order = place_order(customer=customer, products=[ProductFactory(on_hand=5)])
    reservation = reserve_stock(order)
    from shipping.models import Shipment

    shipment = Shipment.objects.create(order=order, carrier="fake", tracking_number="FK1", idempotency_key="k")
    Order.objects.filter(pk=order.pk).update(status="confirmed")

    assert client_for(staff).post(f"/api/v1/orders/{order.public_id}/ship/").status_code == 200

    who = ("staff", staff.username)
    assert [e[:3] for e in events(order)] == [("ship", "confirmed", "shipped")] and events(order)[0][3:] == who
    assert events(shipment) == [("dispatch", "created", "dispatched", *who)]
    assert events(reservation) == [("commit", "active", "committed", *who)]
    history = client_for(staff).get(f"/api/v1/orders/{order.public_id}/history/").json()
    assert [h["event"] for h in history] == ["ship", "dispatch", "commit"]
    assert client_for(customer).get(f"/api/v1/orders/{order.public_id}/history/").status_code == 403


def test_commands_are_recorded_with_the_command_as_actor():
    order = place_order()
    saga = order.saga
    SagaRun.objects.filter(pk=saga.pk).update(status="failed")
    Order.objects.filter(pk=order.pk).update(status="needs_attention")
    call_command("replay_saga", str(order.public_id), stdout=StringIO())
    [(event, source, target, actor_type, label)] = events(order)
    assert (event, source, target, actor_type) == ("resume", "needs_attention", "pending", "system")
    assert label.startswith("command:replay_saga")


def test_the_worker_is_recorded_as_system():
    order = place_order()
    order_cancel(order=order)  # no request, no command: system
    assert {e[3:] for e in events(order)} == {("system", "system")}


def test_every_transition_of_every_model_leaves_exactly_one_event():
    notification = notification_queue(template="order_confirmed", recipient="a@b.c", context={}, idempotency_key="k")
    for name, args in [("mark_failed", ("boom",)), ("requeue", ()), ("mark_sent", (None,))]:
        with transaction.atomic():
            getattr(notification, name)(*args)
            notification.save()
    assert [e[:3] for e in events(notification)] == [
        ("mark_failed", "queued", "failed"),
        ("requeue", "failed", "queued"),
        ("mark_sent", "queued", "sent"),
    ]
    assert Notification.objects.count() == 1


def test_unsaved_objects_leave_no_event():
    Order(status="pending").mark_reserved()
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_database_refuses_update_and_delete():
    for _ in range(2):  # one event each; one is purged below, the other must still be refused
        order_cancel(order=place_order())
    event = AuditEvent.objects.first()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(event="forged")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET payload = '{}'")
    assert AuditEvent.objects.get(pk=event.pk).event == event.event

    # Only the retention cleanup may delete, and only inside its own transaction.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL audit.allow_purge = 'on'")
        cursor.execute("DELETE FROM audit_auditevent WHERE id = %s", [event.pk])
    assert not AuditEvent.objects.filter(pk=event.pk).exists()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.all().delete()
