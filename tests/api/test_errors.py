"""Bad input is a 4xx in the documented error shape, never a 500; the unexpected is a JSON 500."""

import logging
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from orders.models import Order
from tests.factories import ProductFactory

from .conftest import client_for
from .test_orders import body, post

pytestmark = pytest.mark.django_db


def assert_error(response, status, code=None):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["status"] == status and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


# --- request bodies -----------------------------------------------------------------
@pytest.mark.parametrize("depth", [100_000, 1_000, 40])
def test_a_deeply_nested_body_is_a_400(api, depth):
    raw = b"[" * depth + b"]" * depth
    response = api.post("/api/v1/orders/", raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k")
    error = assert_error(response, 400, "parse_error")
    assert "nested" in error["message"]


def test_a_deeply_nested_field_is_a_400_and_places_nothing(api):
    ProductFactory(sku="MOUSE-01")
    raw = body(payment_token={"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]})
    assert_error(post(api, raw), 400)
    assert Order.objects.count() == 0


def test_a_deeply_nested_login_body_is_a_400():
    raw = b"{" + b'"a":{' * 30_000 + b"}" * 30_001
    response = APIClient().post("/api/v1/auth/token/", raw, content_type="application/json")
    assert_error(response, 400, "parse_error")


def test_ordinary_nesting_is_still_accepted(api):
    ProductFactory(sku="MOUSE-01")
    assert post(api, body()).status_code == 202


def test_a_page_number_longer_than_any_page_is_a_400(api):
    # Python refuses to turn more than 4300 digits into an int (ValueError): no 500 for it.
    response = api.get("/api/v1/products/", {"page": "9" * 5000})
    assert_error(response, 400, "invalid")


# --- path parameters ------------------------------------------------------------------
@pytest.mark.parametrize("saga_id", ["true", "1.5", "-1", "99999999999999999999", "%00", "9" * 5000])
def test_a_saga_id_that_is_not_a_saga_id_is_a_404(staff_api, saga_id):
    assert_error(staff_api.post(f"/api/v1/sagas/{saga_id}/retry/"), 404, "not_found")


@pytest.mark.parametrize("sku", ["A%00B", "%00", "x" * 65])
def test_a_sku_no_product_can_have_is_a_404(api, sku):
    assert_error(api.get(f"/api/v1/products/{sku}/"), 404, "not_found")


def test_a_nul_byte_in_the_product_search_is_a_400(api):
    error = assert_error(api.get("/api/v1/products/", {"search": "a\x00b"}), 400, "invalid")
    assert "search" in error["fields"]


@pytest.mark.parametrize("order_id", ["------------------------------------", "0" * 36, "g" * 36])
def test_an_order_id_that_is_not_a_uuid_is_a_404(api, order_id):
    assert_error(api.get(f"/api/v1/orders/{order_id}/"), 404, "not_found")


# --- amounts ------------------------------------------------------------------------------
def test_a_line_total_over_the_column_is_a_400_field_error(api):
    ProductFactory(sku="YACHT", price=Decimal("9999999999.99"))
    error = assert_error(post(api, body(lines=[{"sku": "YACHT", "quantity": 2}])), 400, "invalid")
    assert "lines[0].quantity" in error["fields"], error
    assert Order.objects.count() == 0


def test_an_order_total_over_the_column_is_a_400_field_error(api):
    ProductFactory(sku="YACHT", price=Decimal("6000000000.00"))
    ProductFactory(sku="PLANE", price=Decimal("6000000000.00"))
    lines = [{"sku": "YACHT", "quantity": 1}, {"sku": "PLANE", "quantity": 1}]
    error = assert_error(post(api, body(lines=lines)), 400, "invalid")
    assert "lines" in error["fields"], error
    assert Order.objects.count() == 0


def test_the_largest_total_that_fits_is_accepted(api):
    ProductFactory(sku="YACHT", price=Decimal("9999999999.99"))
    response = post(api, body(lines=[{"sku": "YACHT", "quantity": 1}]))
    assert response.status_code == 202, response.content
    assert response.json()["total"] == "9999999999.99"


# --- the unexpected -------------------------------------------------------------------------
@pytest.fixture
def broken_products(monkeypatch):
    from catalog.api import views

    def explode(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(views, "product_list", explode)


def test_an_unexpected_error_under_the_api_is_a_logged_json_500(broken_products, customer, caplog):
    api = client_for(customer)
    api.raise_request_exception = False
    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = api.get("/api/v1/products/")
    error = assert_error(response, 500, "server_error")
    assert "boom" not in response.content.decode()  # no internals leak
    [record] = [r for r in caplog.records if r.name == "django.request" and r.levelno == logging.ERROR]
    assert record.exc_info and isinstance(record.exc_info[1], RuntimeError)
    assert error["status"] == 500


def test_an_unexpected_error_still_fails_loudly_in_tests(broken_products, api):
    with pytest.raises(RuntimeError, match="boom"):
        api.get("/api/v1/products/")


def test_a_server_error_outside_the_api_stays_an_html_page(client, monkeypatch):
    from config import health

    monkeypatch.setattr(health, "JsonResponse", None)  # healthz then fails
    client.raise_request_exception = False
    response = client.get("/healthz")
    assert response.status_code == 500
    assert not response["Content-Type"].startswith("application/json")


def test_a_bad_host_under_the_api_is_a_json_400(api):
    assert_error(api.get("/api/v1/products/", HTTP_HOST="evil.example"), 400, "bad_request")
