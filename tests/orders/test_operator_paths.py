"""Staff, operators and time acting on orders: ship, release a hold, expiry, retry, concurrent cancels.

The saga is driven step by step in the test's own thread (the Celery transport
is captured), so each case sets up exactly the state it needs. Every case ends
with ``check_invariants``.
"""

import threading
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.core.cache import cache
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from catalog import services as catalog_services
from catalog.models import Reservation, StockLevel
from catalog.services import reservation_release
from orders.models import Order
from orders.saga import engine
from orders.saga import events as saga_events
from orders.saga.recovery import SagaActionError, expire_reservations, saga_compensate, saga_retry
from orders.services import (
    HoldStillNeeded,
    OrderNotCancellable,
    OrderNotShippable,
    order_cancel,
    order_ship,
    reservation_release_by_staff,
)
from shipping.models import Shipment
from tests.api.conftest import client_for
from tests.factories import ProductFactory, StaffFactory, place_order, reserve_stock

from .saga_helpers import assert_invariants

pytestmark = pytest.mark.django_db(transaction=True)  # the fake gateway refuses to run inside a transaction

STEPS = ["reserve_inventory", "process_payment", "create_shipment", "send_confirmation"]


@pytest.fixture(autouse=True)
def sent(monkeypatch):
    calls = []
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: calls.append(names))
    return calls


@pytest.fixture(autouse=True)
def fake_email(settings, mailoutbox):
    settings.EMAIL_BACKEND = "notifications.backends.FakeEmailBackend"
    cache.clear()  # API throttles


@pytest.fixture
def product():
    return ProductFactory(on_hand=10)


def stock(product):
    level = StockLevel.objects.get(product=product)
    return level.on_hand, level.reserved


def advance(order, steps=STEPS):
    for name in steps:
        assert engine.run_forward(order.saga.pk, name, task_id="t") == engine.CONTINUE
    order.refresh_from_db()
    return order


def confirmed_order(product, quantity=2):
    order = advance(place_order(products=[product], quantity=quantity))
    assert order.status == "confirmed"
    return order


def staff_api():
    user = StaffFactory()
    user.user_permissions.add(*_perms("ship_order", "deliver_order"))
    return client_for(user)


def _perms(*codenames):
    from django.contrib.auth.models import Permission

    return Permission.objects.filter(codename__in=codenames)


# --- shipping commits the stock or refuses ----------------------------------------------
def test_shipping_commits_the_held_stock(product):
    order = confirmed_order(product)

    response = staff_api().post(f"/api/v1/orders/{order.public_id}/ship/")

    assert response.status_code == 200 and response.json()["status"] == "shipped"
    assert stock(product) == (8, 0)
    assert Reservation.objects.get(order=order).status == "committed"
    assert_invariants()


def test_shipping_an_order_whose_hold_was_released_is_refused_with_409(product):
    order = confirmed_order(product)
    reservation_release(reservation=order.reservation)  # what the admin's release used to allow

    response = staff_api().post(f"/api/v1/orders/{order.public_id}/ship/")

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "conflict"
    assert error["message"].startswith("No stock is held for this order (its reservation is released)")
    order.refresh_from_db()
    assert order.status == "confirmed"
    assert Shipment.objects.get(order=order).status == "created"
    assert stock(product) == (10, 0)
    assert_invariants()


def test_shipping_an_order_whose_reservation_is_gone_is_refused_with_409(product):
    order = confirmed_order(product)
    reservation_release(reservation=order.reservation)
    Reservation.objects.filter(order=order).delete()  # what the retention cleanup used to delete

    response = staff_api().post(f"/api/v1/orders/{order.public_id}/ship/")

    assert response.status_code == 409
    assert "(its reservation no longer exists)" in response.json()["error"]["message"]
    order.refresh_from_db()
    assert order.status == "confirmed"
    assert_invariants()


def test_the_ship_service_says_why_it_refuses(product):
    order = place_order(products=[product])
    with pytest.raises(OrderNotShippable, match="only a confirmed order"):
        order_ship(order=order)
    assert Order.objects.get(pk=order.pk).status == "pending"


# --- releasing a hold by hand ------------------------------------------------------------
@pytest.fixture
def support_client(client, django_user_model):
    user = django_user_model.objects.create_user("sam", "sam@example.com", "pw", is_staff=True)
    user.groups.add(Group.objects.get(name="support"))
    client.force_login(user)
    return client


def release_in_admin(client, reservation):
    changelist = reverse("admin:catalog_reservation_changelist")
    response = client.post(changelist, {"action": "release", "_selected_action": [reservation.pk]}, follow=True)
    assert response.status_code == 200
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_support_cannot_release_the_hold_of_a_confirmed_order_so_it_never_ships_without_stock(product, support_client):
    order = confirmed_order(product)

    messages = release_in_admin(support_client, order.reservation)

    assert messages == [
        f"Reservation {order.reservation.pk} was not released: order {order.public_id} is confirmed and still "
        "needs its stock. Cancel the order instead (its saga releases the stock and refunds the customer)."
    ]
    assert Reservation.objects.get(order=order).status == "active"
    assert stock(product) == (10, 2)
    assert staff_api().post(f"/api/v1/orders/{order.public_id}/ship/").status_code == 200
    assert stock(product) == (8, 0)
    assert_invariants()


@pytest.mark.parametrize("steps", [[], STEPS[:1], STEPS[:2]], ids=["pending", "reserved", "paid"])
def test_the_hold_of_an_order_still_in_its_saga_is_not_released_by_hand(product, support_client, steps):
    order = advance(place_order(products=[product]), steps)
    reservation = reserve_stock(order)

    [message] = release_in_admin(support_client, reservation)

    assert message.startswith(f"Reservation {reservation.pk} was not released")
    assert Reservation.objects.get(pk=reservation.pk).status == "active"
    with pytest.raises(HoldStillNeeded):
        reservation_release_by_staff(reservation=reservation)


def test_a_hold_left_behind_by_an_order_resolved_by_hand_can_be_released(product, support_client):
    order = place_order(products=[product])
    reservation = reserve_stock(order)
    Order.objects.filter(pk=order.pk).update(status="cancelled")  # resolved by an operator, stock not given back

    assert release_in_admin(support_client, reservation) == ["Released 1 reservation(s)."]
    assert Reservation.objects.get(pk=reservation.pk).status == "released"
    assert stock(product) == (10, 0)


# --- an operator's retry after the hold ended -----------------------------------------------
def fail_at_payment(order, step_name="process_payment"):
    """The saga went as far as ``step_name``, which kept crashing its worker: failed, needs attention."""
    advance(order, STEPS[: STEPS.index(step_name)])
    saga = order.saga
    with transaction.atomic():
        locked = engine.lock_saga(saga.pk)
        step = locked.steps.get(name=step_name)
        step.deliveries = 11
        engine.fail(locked, step, f"{step_name} was delivered 11 times without finishing (a crashing task?)")
    return saga


def end_hold(order, how):
    """The hold ends while the saga waits for an operator."""
    if how in ("expired", "deleted"):
        Reservation.objects.filter(order=order).update(expires_at=timezone.now() - timedelta(seconds=1))
        assert expire_reservations() == {"compensating": 0, "expired": 1, "skipped": 0}
    else:
        reservation_release(reservation=order.reservation)  # as the admin's release allowed before
    if how == "deleted":  # as the retention cleanup did before
        Reservation.objects.filter(order=order).delete()


@pytest.mark.parametrize("how", ["expired", "released", "deleted"])
def test_a_retried_saga_holds_its_stock_again_before_it_goes_on(product, sent, how):
    order = place_order(products=[product], quantity=3)
    saga = fail_at_payment(order)
    end_hold(order, how)
    assert stock(product) == (10, 0)

    assert saga_retry(saga.pk) == "retrying from process_payment"

    reservation = Reservation.objects.get(order=order)
    assert reservation.status == "active" and reservation.expires_at > timezone.now()
    assert stock(product) == (10, 3)
    assert_invariants()
    order = advance(order, STEPS[1:])
    assert order.status == "confirmed"
    assert Reservation.objects.get(order=order).expires_at is None  # paid: held until it ships
    order_ship(order=order)
    assert stock(product) == (7, 0)
    assert_invariants()


def test_a_retried_saga_whose_hold_ran_out_before_the_beat_expired_it_gets_a_fresh_hold(product, sent):
    """The hold is still active but past ``expires_at`` (the beat has not run yet): the retry renews it,
    so the next beat tick does not undo the operator's retry."""
    order = place_order(products=[product], quantity=3)
    saga = fail_at_payment(order)
    Reservation.objects.filter(order=order).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert saga_retry(saga.pk) == "retrying from process_payment"

    reservation = Reservation.objects.get(order=order)
    assert reservation.status == "active" and reservation.expires_at > timezone.now()
    assert expire_reservations() == {"compensating": 0, "expired": 0, "skipped": 0}
    assert stock(product) == (10, 3)
    assert advance(order, STEPS[1:]).status == "confirmed"
    assert_invariants()


def beat_reads_then(monkeypatch, action):
    """The beat has read its overdue holds; ``action`` commits (in its own thread) before it locks the saga."""
    from orders.saga import recovery

    lock_saga = engine.lock_saga

    def act_then_lock(*args, **kwargs):
        monkeypatch.setattr(recovery.engine, "lock_saga", lock_saga)  # once, and not for ``action``
        outcome = run_together(action, holding=threading.Event())[0]
        assert not isinstance(outcome, Exception), outcome
        return lock_saga(*args, **kwargs)

    monkeypatch.setattr(recovery.engine, "lock_saga", act_then_lock)


def test_the_beat_leaves_a_hold_the_operator_renewed_after_it_read_it_as_overdue(product, sent, monkeypatch):
    order = place_order(products=[product], quantity=3)
    saga = fail_at_payment(order)
    Reservation.objects.filter(order=order).update(expires_at=timezone.now() - timedelta(seconds=1))
    beat_reads_then(monkeypatch, lambda: saga_retry(saga.pk))

    assert expire_reservations() == {"compensating": 0, "expired": 0, "skipped": 1}

    order.refresh_from_db()
    assert order.status == "reserved" and Reservation.objects.get(order=order).status == "active"
    assert advance(order, STEPS[1:]).status == "confirmed"
    assert_invariants()


def test_the_beat_leaves_a_hold_the_payment_kept_after_it_read_it_as_overdue(product, sent, monkeypatch):
    order = advance(place_order(products=[product], quantity=3), STEPS[:1])
    Reservation.objects.filter(order=order).update(expires_at=timezone.now() - timedelta(seconds=1))
    beat_reads_then(monkeypatch, lambda: advance(order, STEPS[1:2]))

    assert expire_reservations() == {"compensating": 0, "expired": 0, "skipped": 1}

    order.refresh_from_db()
    assert order.status == "paid" and Reservation.objects.get(order=order).expires_at is None
    assert advance(order, STEPS[2:]).status == "confirmed"
    assert_invariants()


def test_a_paid_order_retried_after_its_hold_was_released_holds_the_stock_until_it_ships(product, sent):
    order = place_order(products=[product], quantity=3)
    saga = fail_at_payment(order, "create_shipment")  # paid: its hold does not expire
    reservation_release(reservation=order.reservation)  # as the admin's release allowed before

    assert saga_retry(saga.pk) == "retrying from create_shipment"

    reservation = Reservation.objects.get(order=order)
    assert (reservation.status, reservation.expires_at) == ("active", None)
    assert stock(product) == (10, 3)
    assert advance(order, STEPS[2:]).status == "confirmed"
    order_ship(order=order)
    assert stock(product) == (7, 0)
    assert_invariants()


def test_a_retried_saga_whose_stock_was_sold_meanwhile_is_compensated(product, sent):
    order = place_order(products=[product], quantity=3)
    saga = fail_at_payment(order)
    end_hold(order, "expired")
    other = advance(place_order(products=[product], quantity=8), STEPS[:1])  # takes what the hold gave back
    sent.clear()

    outcome = saga_retry(saga.pk)

    assert outcome == "compensating: the stock is no longer available"
    order.refresh_from_db()
    assert order.status == "compensating"
    [chain] = sent  # one compensation chain; it ends by releasing what the order held (nothing, here)
    assert chain[-2:] == ["refund_payment", "release_inventory"]
    order = finish_compensation(order, sent)
    assert order.status == "cancelled" and "stock" in order.cancel_reason
    assert stock(product) == (10, 8)
    assert Reservation.objects.get(order=other).status == "active"
    assert_invariants()


# --- concurrent cancels and ships: one winner, a clean answer -------------------------------
def run_together(first, *others, holding):
    """Run ``first`` in a thread and, once it holds its locks (``holding`` is set), each of ``others`` in its own.

    Returns each call's result or the exception it raised.
    """
    calls = [first, *others]
    outcomes = [None] * len(calls)

    def run(index, call):
        try:
            if index:
                assert holding.wait(10), "the first call never took its locks"
                time.sleep(0.05)  # be sure to be waiting on the first call's lock
            outcomes[index] = call()
        except Exception as exc:
            outcomes[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes


def slowed(monkeypatch, module, name, seconds=0.5):
    """Make ``module.name`` hold its caller's locks a while longer; returns an event set once it holds them."""
    original = getattr(module, name)
    holding = threading.Event()

    def slow(*args, **kwargs):
        result = original(*args, **kwargs)
        holding.set()
        time.sleep(seconds)
        return result

    monkeypatch.setattr(module, name, slow)
    return holding


def finish_compensation(order, sent):
    for names in sent:
        for name in names:
            engine.run_compensation(order.saga.pk, name, task_id="t")
    order.refresh_from_db()
    return order


def test_two_concurrent_cancels_of_one_order_start_one_compensation(product, sent, monkeypatch):
    order = confirmed_order(product)
    sent.clear()
    holding = slowed(monkeypatch, engine, "begin_compensation")  # the first holds the saga while the second arrives

    first, second = run_together(lambda: order_cancel(order=order), lambda: order_cancel(order=order), holding=holding)

    assert not isinstance(first, Exception), first
    assert not isinstance(second, Exception), second
    assert (first.status, second.status) == ("compensating", "compensating")
    assert sent == [["send_cancellation", "cancel_shipment", "refund_payment", "release_inventory"]]
    assert finish_compensation(order, sent).status == "cancelled"
    assert_invariants()


def test_a_cancel_racing_a_ship_that_won_is_refused_cleanly(product, sent, monkeypatch):
    order = confirmed_order(product)
    sent.clear()
    holding = slowed(monkeypatch, catalog_services, "order_stock_commit")  # the ship holds the order row a while

    shipped, cancelled = run_together(
        lambda: order_ship(order=order), lambda: order_cancel(order=order), holding=holding
    )

    assert not isinstance(shipped, Exception), shipped
    assert shipped.status == "shipped"
    assert isinstance(cancelled, OrderNotCancellable), cancelled
    assert "only until it ships" in str(cancelled)
    assert sent == []
    order.refresh_from_db()
    assert order.status == "shipped"
    assert stock(product) == (8, 0)
    assert_invariants()


def test_a_ship_racing_a_cancel_that_won_is_refused_cleanly(product, sent, monkeypatch):
    order = confirmed_order(product)
    sent.clear()
    holding = slowed(monkeypatch, engine, "begin_compensation")  # the cancel holds saga and order a while

    cancelled, shipped = run_together(
        lambda: order_cancel(order=order), lambda: order_ship(order=order), holding=holding
    )

    assert not isinstance(cancelled, Exception), cancelled
    assert cancelled.status == "compensating"
    assert isinstance(shipped, OrderNotShippable), shipped
    assert "only a confirmed order can be shipped" in str(shipped)
    assert finish_compensation(order, sent).status == "cancelled"
    assert stock(product) == (10, 0)
    assert_invariants()


def test_concurrent_cancel_and_ship_through_the_api_answer_202_or_409_never_500(product, sent, monkeypatch):
    order = confirmed_order(product)
    sent.clear()
    staff, customer = staff_api(), client_for(order.customer)
    holding = slowed(monkeypatch, catalog_services, "order_stock_commit")

    ship, cancel, cancel_again = run_together(
        lambda: staff.post(f"/api/v1/orders/{order.public_id}/ship/"),
        lambda: customer.post(f"/api/v1/orders/{order.public_id}/cancel/"),
        lambda: customer.post(f"/api/v1/orders/{order.public_id}/cancel/"),
        holding=holding,
    )

    assert [r.status_code for r in (ship, cancel, cancel_again)] == [200, 409, 409]
    assert cancel.json()["error"]["code"] == "conflict"
    assert "only until it ships" in cancel.json()["error"]["message"]
    order.refresh_from_db()
    assert order.status == "shipped"
    assert_invariants()


def test_an_operators_compensate_racing_a_ship_that_won_is_refused_with_a_reason(product, sent, monkeypatch):
    order = confirmed_order(product)
    sent.clear()
    holding = slowed(monkeypatch, catalog_services, "order_stock_commit")

    shipped, compensated = run_together(
        lambda: order_ship(order=order),
        lambda: saga_compensate(order.saga.pk, reason="Cancelled by our staff."),
        holding=holding,
    )

    assert shipped.status == "shipped"
    assert isinstance(compensated, SagaActionError), compensated
    assert str(compensated) == "The order is shipped: it can no longer be cancelled."
    assert sent == []
    assert_invariants()


def test_shipping_an_order_without_a_booked_shipment_is_refused_with_409(product):
    order = confirmed_order(product)
    Shipment.objects.filter(order=order).update(status="cancelled")  # e.g. cancelled at the carrier by hand

    response = staff_api().post(f"/api/v1/orders/{order.public_id}/ship/")

    assert response.status_code == 409
    assert response.json()["error"]["message"] == "The order has no booked shipment: it cannot be shipped."
    assert Reservation.objects.get(order=order).status == "active"


def test_the_order_page_says_why_it_will_not_ship_an_order_without_stock(product, client, django_user_model):
    order = confirmed_order(product)
    reservation_release(reservation=order.reservation)
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "pw"))

    response = client.post(reverse("admin:orders_order_act", args=[order.pk, "ship"]), follow=True)

    assert response.status_code == 200
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        f"Order {order.public_id}: No stock is held for this order (its reservation is released): shipping it "
        "would sell the same units twice. Cancel the order instead."
    ]
    order.refresh_from_db()
    assert order.status == "confirmed"
    assert_invariants()
