"""Staff endpoints ask for the same model permission as the admin, not only ``is_staff``."""

import pytest
from django.contrib.auth.models import Group, Permission

from orders.models import Order, SagaRun
from tests.factories import ProductFactory, StaffFactory, UserFactory, place_order

from .conftest import client_for
from .test_orders import confirmed

pytestmark = pytest.mark.django_db


def support_user():
    user = StaffFactory()
    user.groups.add(Group.objects.get(name="support"))
    return user


def staff_with(*codenames):
    user = StaffFactory()
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def confirmed_order():
    order = place_order(products=[ProductFactory(on_hand=5)])
    confirmed(order)
    return order


@pytest.fixture
def failed_saga():
    order = place_order(products=[ProductFactory(on_hand=5)])
    SagaRun.objects.filter(pk=order.saga.pk).update(status="failed")
    Order.objects.filter(pk=order.pk).update(status="needs_attention")
    return order.saga


def assert_forbidden(response):
    assert response.status_code == 403, response.content
    error = response.json()["error"]
    assert (error["status"], error["code"]) == (403, "permission_denied")
    return error


def test_support_cannot_ship_or_deliver_and_nothing_changes(confirmed_order):
    support = client_for(support_user())

    error = assert_forbidden(support.post(f"/api/v1/orders/{confirmed_order.public_id}/ship/"))
    assert "orders.ship_order" in error["message"]
    assert_forbidden(support.post(f"/api/v1/orders/{confirmed_order.public_id}/deliver/"))
    confirmed_order.refresh_from_db()
    assert confirmed_order.status == "confirmed"


def test_staff_without_permissions_gets_403_on_every_staff_endpoint(confirmed_order, failed_saga):
    clerk = client_for(StaffFactory())
    order_url = f"/api/v1/orders/{confirmed_order.public_id}"

    assert_forbidden(clerk.post(f"{order_url}/ship/"))
    assert_forbidden(clerk.post(f"{order_url}/deliver/"))
    assert_forbidden(clerk.get(f"{order_url}/history/"))
    assert_forbidden(clerk.get("/api/v1/sagas/"))
    assert_forbidden(clerk.post(f"/api/v1/sagas/{failed_saga.pk}/retry/"))
    failed_saga.refresh_from_db()
    assert failed_saga.status == "failed"


def test_staff_without_view_order_sees_only_their_own_orders(confirmed_order):
    clerk = client_for(StaffFactory())
    assert clerk.get(f"/api/v1/orders/{confirmed_order.public_id}/").status_code == 404
    assert clerk.get("/api/v1/orders/").json()["count"] == 0


def test_staff_cannot_cancel_another_customers_order_without_cancel_order(confirmed_order):
    viewer = client_for(staff_with("view_order"))
    assert viewer.get(f"/api/v1/orders/{confirmed_order.public_id}/").status_code == 200

    assert_forbidden(viewer.post(f"/api/v1/orders/{confirmed_order.public_id}/cancel/"))
    confirmed_order.refresh_from_db()
    assert confirmed_order.status == "confirmed"


def test_support_can_read_history_list_and_retry_sagas_and_cancel_for_a_customer(failed_saga, no_broker):
    support = client_for(support_user())
    order = failed_saga.order

    assert support.get(f"/api/v1/orders/{order.public_id}/history/").status_code == 200
    assert [s["id"] for s in support.get("/api/v1/sagas/", {"status": "failed"}).json()["results"]] == [failed_saga.pk]
    assert support.post(f"/api/v1/sagas/{failed_saga.pk}/retry/").status_code == 202

    pending = place_order(products=[ProductFactory(on_hand=5)])
    assert support.post(f"/api/v1/orders/{pending.public_id}/cancel/").status_code == 202


def test_ship_and_deliver_need_their_own_permissions(confirmed_order):
    shipper = client_for(staff_with("ship_order"))
    assert shipper.post(f"/api/v1/orders/{confirmed_order.public_id}/ship/").status_code == 200
    assert_forbidden(shipper.post(f"/api/v1/orders/{confirmed_order.public_id}/deliver/"))

    courier = client_for(staff_with("deliver_order"))
    assert courier.post(f"/api/v1/orders/{confirmed_order.public_id}/deliver/").status_code == 200


def test_a_customer_with_a_permission_but_no_staff_flag_is_still_refused(confirmed_order):
    customer = UserFactory()
    customer.user_permissions.add(Permission.objects.get(codename="ship_order"))
    assert_forbidden(client_for(customer).post(f"/api/v1/orders/{confirmed_order.public_id}/ship/"))


def test_a_customer_still_cancels_their_own_order():
    customer = UserFactory()
    order = place_order(customer=customer, products=[ProductFactory(on_hand=5)])
    assert client_for(customer).post(f"/api/v1/orders/{order.public_id}/cancel/").status_code == 202
