import threading
from decimal import Decimal

import pytest
from django.db import connection
from rest_framework.test import APIClient

from orders.models import Order, SagaRun
from tests.factories import ADDRESS, ProductFactory, UserFactory, place_order, reserve_stock

from .conftest import client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def mouse():
    return ProductFactory(sku="MOUSE-01", name="Mouse", price=Decimal("29.99"), on_hand=50)


def body(**overrides):
    data = {"lines": [{"sku": "MOUSE-01", "quantity": 2}], "shipping_address": ADDRESS, "payment_token": "tok_visa"}
    return data | overrides


def post(api, data, key="key-1"):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return api.post("/api/v1/orders/", data, format="json", **headers)


def test_placing_an_order_is_accepted_and_prices_come_from_the_catalog(
    api, mouse, no_broker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post(api, body())

    assert response.status_code == 202
    order = response.json()
    assert response["Location"] == f"http://testserver/api/v1/orders/{order['id']}/"
    assert order["status"] == "pending"
    assert order["total"] == "59.98"
    assert order["lines"] == [
        {"sku": "MOUSE-01", "name": "Mouse", "unit_price": "29.99", "quantity": 2, "line_total": "59.98"}
    ]
    assert order["shipping_address"]["country"] == "GB"
    assert order["tracking_number"] is None
    assert order["saga"]["status"] == "pending"
    assert [s["name"] for s in order["saga"]["steps"]] == [
        "reserve_inventory",
        "process_payment",
        "create_shipment",
        "send_confirmation",
    ]
    saga = SagaRun.objects.get(order__public_id=order["id"])
    assert no_broker == [(saga.pk, [s["name"] for s in order["saga"]["steps"]])]


def test_same_key_and_body_returns_the_same_order(api, mouse):
    first = post(api, body())
    second = post(api, body())
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["id"] == second.json()["id"]
    assert Order.objects.count() == 1


def test_same_key_with_another_body_is_422(api, mouse):
    post(api, body())
    response = post(api, body(payment_token="tok_other"))
    assert response.status_code == 422
    assert "different order" in response.json()["error"]["message"]
    assert Order.objects.count() == 1


def test_keys_are_per_customer(api, mouse):
    post(api, body())
    other = client_for(UserFactory())
    assert post(other, body()).status_code == 202
    assert Order.objects.count() == 2


@pytest.mark.parametrize(
    ("key", "message"), [(None, "required"), ("", "required"), ("x" * 256, "1 to 255"), ("ké", "1 to 255")]
)
def test_idempotency_key_is_required_and_bounded(api, mouse, key, message):
    response = post(api, body(), key=key)
    assert response.status_code == 400
    assert message in response.json()["error"]["fields"]["Idempotency-Key"][0]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (body(lines=[{"sku": "NOPE", "quantity": 1}]), "lines[0].sku"),
        (body(lines=[{"sku": "OLD", "quantity": 1}]), "lines[0].sku"),
        (body(lines=[{"sku": "MOUSE-01", "quantity": 0}]), "lines[0].quantity"),
        (body(lines=[{"sku": "MOUSE-01", "quantity": -1}]), "lines[0].quantity"),
        (body(lines=[{"sku": "MOUSE-01", "quantity": 10**12}]), "lines[0].quantity"),
        (body(lines=[{"sku": "MOUSE-01", "quantity": "two"}]), "lines[0].quantity"),
        (body(lines=[{"sku": "MOUSE-01", "quantity": 1.5}]), "lines[0].quantity"),
        (body(lines=[{"sku": "MOUSE-01"}]), "lines[0].quantity"),
        (body(lines=[]), "lines"),
        (body(lines="MOUSE-01"), "lines"),
        (body(lines=[{"sku": "MOUSE-01", "quantity": 1}] * 2), "lines"),
        (body(lines=[{"sku": f"S{i}", "quantity": 1} for i in range(51)]), "lines"),
        (body(lines=[{"sku": "MOUSE-01", "quantity": 1, "unit_price": "0.01"}]), "lines[0].unit_price"),
        (body(total="0.001"), "total"),
        (body(total="abc"), "total"),
        (body(status="confirmed"), "status"),
        (body(shipping_address=ADDRESS | {"country": "XX"}), "shipping_address.country"),
        (body(shipping_address=ADDRESS | {"country": "Germany"}), "shipping_address.country"),
        (body(shipping_address={k: v for k, v in ADDRESS.items() if k != "city"}), "shipping_address.city"),
        (body(shipping_address="London"), "shipping_address"),
        (body(payment_token=""), "payment_token"),
        (body(payment_token=None), "payment_token"),
    ],
)
def test_bad_orders_are_400_with_field_errors(api, mouse, data, field):
    ProductFactory(sku="OLD", active=False)
    response = post(api, data)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["fields"], error["fields"]
    assert Order.objects.count() == 0


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b'"text"', b"null"])
def test_malformed_bodies_are_400(api, mouse, raw):
    response = api.post("/api/v1/orders/", raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k")
    assert response.status_code == 400


def test_a_body_over_the_limit_is_413(api, mouse, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = post(api, body(payment_token="x" * 2000))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_posts_with_one_key_create_one_order(mouse, monkeypatch):
    from rest_framework.throttling import ScopedRateThrottle

    assert connection.vendor == "postgresql"
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "orders_create", "100/min")
    customer = UserFactory()
    clients = [client_for(customer) for _ in range(20)]
    barrier = threading.Barrier(20)
    results = []

    def place(client):
        try:
            barrier.wait()
            response = post(client, body(), key="same-key")
            results.append((response.status_code, response.json()["id"]))
        finally:
            connection.close()

    threads = [threading.Thread(target=place, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert Order.objects.count() == 1
    assert sorted(code for code, _ in results) == [200] * 19 + [202]
    assert len({order_id for _, order_id in results}) == 1


def test_list_shows_own_orders_newest_first_with_a_status_filter(api, customer, mouse):
    mine = [place_order(customer=customer, products=[mouse]) for _ in range(3)]
    place_order(products=[mouse])  # someone else's
    Order.objects.filter(pk=mine[0].pk).update(status="cancelled")

    body_ = api.get("/api/v1/orders/").json()
    assert [o["id"] for o in body_["results"]] == [str(o.public_id) for o in reversed(mine)]
    cancelled = api.get("/api/v1/orders/", {"status": "cancelled"}).json()
    assert [o["id"] for o in cancelled["results"]] == [str(mine[0].public_id)]
    assert api.get("/api/v1/orders/", {"status": "lost"}).status_code == 400
    assert len(api.get("/api/v1/orders/", {"page_size": 2}).json()["results"]) == 2


def test_another_customers_order_is_404(api, mouse):
    theirs = place_order(products=[mouse])
    for url in (f"/api/v1/orders/{theirs.public_id}/", f"/api/v1/orders/{theirs.public_id}/cancel/"):
        response = api.get(url) if url.endswith("/") and "cancel" not in url else api.post(url)
        assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == "pending"


def test_detail_shows_saga_progress_with_customer_safe_errors(api, customer, mouse):
    order = place_order(customer=customer, products=[mouse])
    saga = order.saga
    saga.steps.filter(name="reserve_inventory").update(status="succeeded", attempts=1)
    saga.steps.filter(name="process_payment").update(status="failed", attempts=1, error="card_declined: internal")
    SagaRun.objects.filter(pk=saga.pk).update(status="compensated", failure_reason="Your payment was declined.")

    detail = api.get(f"/api/v1/orders/{order.public_id}/").json()
    steps = {s["name"]: s for s in detail["saga"]["steps"]}
    assert steps["reserve_inventory"]["status"] == "succeeded"
    assert steps["process_payment"]["error"] == "Your payment was declined."
    assert "internal" not in str(detail)


def test_cancel_a_pending_order(api, customer, mouse):
    order = place_order(customer=customer, products=[mouse])
    response = api.post(f"/api/v1/orders/{order.public_id}/cancel/")
    assert response.status_code == 202
    # Every step's compensation runs even when no step seems to have started (a claim lost in a
    # database crash looks the same); the order is cancelled once they have run.
    assert response.json()["status"] == "compensating"
    assert response.json()["cancel_reason"] == "Cancelled at your request."


def test_cancel_a_shipped_order_is_409(api, customer, mouse):
    order = place_order(customer=customer, products=[mouse])
    Order.objects.filter(pk=order.pk).update(status="shipped")
    response = api.post(f"/api/v1/orders/{order.public_id}/cancel/")
    assert response.status_code == 409
    assert "only until it ships" in response.json()["error"]["message"]


def test_order_creation_is_throttled_with_retry_after(api, mouse, settings):
    for i in range(10):
        assert post(api, body(), key=f"k{i}").status_code == 202
    response = post(api, body(), key="k10")
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert response.json()["error"]["retry_after"] > 0
    assert api.get("/api/v1/orders/").status_code == 200  # reads have their own budget


# --- staff ------------------------------------------------------------------------
def confirmed(order):
    from shipping.models import Shipment

    Order.objects.filter(pk=order.pk).update(status="confirmed")

    reserve_stock(order)
    Shipment.objects.create(order=order, carrier="fake", tracking_number="FK1", idempotency_key=str(order.pk))


def test_staff_ship_and_deliver(staff_api, api, customer, mouse):
    order = place_order(customer=customer, products=[mouse])
    assert staff_api.post(f"/api/v1/orders/{order.public_id}/ship/").status_code == 409
    confirmed(order)
    assert api.post(f"/api/v1/orders/{order.public_id}/ship/").status_code == 403

    shipped = staff_api.post(f"/api/v1/orders/{order.public_id}/ship/")
    assert shipped.status_code == 200
    assert (shipped.json()["status"], shipped.json()["tracking_number"]) == ("shipped", "FK1")
    assert api.get(f"/api/v1/orders/{order.public_id}/").json()["tracking_number"] == "FK1"
    assert staff_api.post(f"/api/v1/orders/{order.public_id}/deliver/").json()["status"] == "delivered"
    assert staff_api.post(f"/api/v1/orders/{order.public_id}/deliver/").status_code == 409


def test_staff_list_and_retry_sagas(staff_api, api, mouse, no_broker):
    order = place_order(products=[mouse])
    SagaRun.objects.filter(pk=order.saga.pk).update(status="failed")
    Order.objects.filter(pk=order.pk).update(status="needs_attention")
    place_order(products=[mouse])

    assert api.get("/api/v1/sagas/").status_code == 403
    failed = staff_api.get("/api/v1/sagas/", {"status": "failed"}).json()
    assert [s["order_id"] for s in failed["results"]] == [str(order.public_id)]
    assert staff_api.get("/api/v1/sagas/", {"status": "bogus"}).status_code == 400

    response = staff_api.post(f"/api/v1/sagas/{order.saga.pk}/retry/")
    assert response.status_code == 202
    assert response.json()["detail"] == "retrying from reserve_inventory"
    SagaRun.objects.filter(pk=order.saga.pk).update(status="completed")
    assert staff_api.post(f"/api/v1/sagas/{order.saga.pk}/retry/").status_code == 409
    assert staff_api.post("/api/v1/sagas/999999/retry/").status_code == 404


def test_staff_can_read_any_order(staff_api, mouse):
    order = place_order(products=[mouse])
    assert staff_api.get(f"/api/v1/orders/{order.public_id}/").status_code == 200


def test_unknown_order_id_is_404(api):
    assert api.get("/api/v1/orders/00000000-0000-0000-0000-000000000000/").status_code == 404
    assert APIClient().get("/api/v1/orders/not-a-uuid/").status_code in (401, 404)


def test_cancel_an_order_under_review_is_409_with_its_own_message(api, customer, mouse):
    order = place_order(customer=customer, products=[mouse])
    Order.objects.filter(pk=order.pk).update(status="needs_attention")
    response = api.post(f"/api/v1/orders/{order.public_id}/cancel/")
    assert response.status_code == 409
    assert "Our staff are looking into this order" in response.json()["error"]["message"]
