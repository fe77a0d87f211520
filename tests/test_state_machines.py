"""Every transition of every state machine, from every state: allowed ones move
the state to their target, refused ones raise TransitionNotAllowed and change nothing."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_fsm import TransitionNotAllowed

from catalog.models import Reservation
from notifications.models import Notification
from orders.models import Order
from payments.models import Payment
from shipping.models import Shipment

NOW = timezone.now()
IN_PROGRESS = {"pending", "reserved", "paid", "shipment_created"}
CANCELLABLE = IN_PROGRESS | {"confirmed"}

# model: (states, {transition: (allowed sources, target, args)})
MACHINES = {
    Order: (
        [
            "pending",
            "reserved",
            "paid",
            "shipment_created",
            "confirmed",
            "shipped",
            "delivered",
            "compensating",
            "cancelled",
            "needs_attention",
        ],
        {
            "mark_reserved": ({"pending"}, "reserved", ()),
            "mark_paid": ({"reserved"}, "paid", ()),
            "mark_shipment_created": ({"paid"}, "shipment_created", ()),
            "confirm": ({"shipment_created"}, "confirmed", ()),
            "ship": ({"confirmed"}, "shipped", ()),
            "deliver": ({"shipped"}, "delivered", ()),
            "start_compensation": (CANCELLABLE | {"needs_attention"}, "compensating", ("customer asked",)),
            "cancel": ({"compensating"}, "cancelled", ()),
            "flag_for_attention": (CANCELLABLE | {"compensating"}, "needs_attention", ()),
            "resume": ({"needs_attention"}, "paid", ("paid",)),
            "resolve": ({"needs_attention"}, "cancelled", ()),
        },
    ),
    Reservation: (
        ["active", "committed", "released", "expired"],
        {
            "commit": ({"active"}, "committed", ()),
            "release": ({"active"}, "released", ()),
            "expire": ({"active"}, "expired", ()),
        },
    ),
    Payment: (
        ["pending", "authorized", "captured", "refunded", "failed", "voided"],
        {
            "authorize": ({"pending"}, "authorized", ("ref",)),
            "capture": ({"pending", "authorized"}, "captured", ("ref",)),
            "fail": ({"pending", "authorized"}, "failed", ("card_declined", "declined")),
            "void": ({"authorized"}, "voided", ()),
            "refund": ({"captured"}, "refunded", ()),
        },
    ),
    Shipment: (
        ["created", "dispatched", "delivered", "cancelled", "return_requested"],
        {
            "dispatch": ({"created"}, "dispatched", (NOW,)),
            "deliver": ({"dispatched"}, "delivered", (NOW,)),
            "cancel": ({"created"}, "cancelled", (NOW,)),
            "request_return": ({"dispatched"}, "return_requested", (NOW,)),
        },
    ),
    Notification: (
        ["queued", "sent", "failed"],
        {
            "mark_sent": ({"queued"}, "sent", (NOW,)),
            "mark_failed": ({"queued"}, "failed", ("boom",)),
            "requeue": ({"failed"}, "queued", ()),
        },
    ),
}


def make(model, state):
    extra = {}
    if model is Reservation:
        extra["expires_at"] = NOW - timedelta(minutes=1)
    if model is Shipment:
        extra["tracking_number"] = "FK123"
    return model(status=state, **extra)


CASES = [
    pytest.param(model, state, name, spec, id=f"{model.__name__}.{name}-from-{state}")
    for model, (states, transitions) in MACHINES.items()
    for name, spec in transitions.items()
    for state in states
]


@pytest.mark.parametrize(("model", "state", "name", "spec"), CASES)
def test_transition_is_allowed_exactly_from_its_sources(model, state, name, spec):
    sources, target, args = spec
    obj = make(model, state)
    if state in sources:
        getattr(obj, name)(*args)
        assert obj.status == target
    else:
        with pytest.raises(TransitionNotAllowed):
            getattr(obj, name)(*args)
        assert obj.status == state


def test_every_declared_transition_is_covered_by_this_table():
    for model, (states, transitions) in MACHINES.items():
        field = model._meta.get_field("status")
        declared = {t.name for t in field.get_all_transitions(model)}
        assert declared == set(transitions), model.__name__
        assert {c for c, _ in field.choices} == set(states), model.__name__


@pytest.mark.parametrize("model", list(MACHINES))
def test_status_cannot_be_assigned_directly(model):
    states = MACHINES[model][0]
    obj = make(model, states[0])
    with pytest.raises(AttributeError, match="Direct status modification is not allowed"):
        obj.status = states[-1]


def test_reservation_cannot_expire_before_its_time():
    reservation = Reservation(status="active", expires_at=timezone.now() + timedelta(minutes=5))
    with pytest.raises(TransitionNotAllowed, match="conditions have not been met"):
        reservation.expire()
    assert reservation.status == "active"


def test_shipment_cannot_be_dispatched_without_a_tracking_number():
    shipment = Shipment(status="created", tracking_number="")
    with pytest.raises(TransitionNotAllowed, match="conditions have not been met"):
        shipment.dispatch(NOW)
    assert shipment.status == "created"


def test_order_resume_refuses_a_state_outside_the_saga():
    order = Order(status="needs_attention")
    with pytest.raises(Exception):  # noqa: B017 - django-fsm raises InvalidResultState
        order.resume("delivered")


@pytest.mark.django_db
def test_transition_permissions_are_checked_for_users(customer, staff):
    from django.contrib.auth.models import Permission
    from django_fsm import has_transition_perm

    order = Order(status="confirmed")
    assert not has_transition_perm(order.ship, customer)
    assert not has_transition_perm(order.ship, staff)
    staff.user_permissions.add(Permission.objects.get(codename="ship_order"))
    staff = type(staff).objects.get(pk=staff.pk)  # drop the permission cache
    assert has_transition_perm(order.ship, staff)
