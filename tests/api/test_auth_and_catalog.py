import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from tests.factories import ProductFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_token_login_then_logout_revokes_it():
    UserFactory(username="shop", password="s3cret-pass")
    anon = APIClient()
    response = anon.post("/api/v1/auth/token/", {"username": "shop", "password": "s3cret-pass"}, format="json")
    assert response.status_code == 200
    token = response.json()["token"]
    assert response.json()["expiry"]

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/products/").status_code == 200
    assert client.post("/api/v1/auth/logout/").status_code == 204
    assert client.get("/api/v1/products/").status_code == 401


def test_wrong_password_is_a_400_in_the_error_shape():
    UserFactory(username="shop", password="s3cret-pass")
    response = APIClient().post("/api/v1/auth/token/", {"username": "shop", "password": "nope"}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and error["status"] == 400
    assert "Unable to log in" in error["fields"]["non_field_errors"][0]


@pytest.mark.parametrize("url", ["/api/v1/products/", "/api/v1/orders/", "/api/v1/sagas/"])
def test_unauthenticated_calls_get_401(url):
    response = APIClient().get(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["error"]["code"] == "not_authenticated"


def test_session_auth_enforces_csrf(customer):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(customer)
    assert client.get("/api/v1/products/").status_code == 200
    response = client.post("/api/v1/orders/", {}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]["message"]


def test_products_list_shows_active_products_with_availability(api):
    ProductFactory(sku="B-MOUSE", name="Mouse", price="29.99", on_hand=5)
    ProductFactory(sku="A-LAPTOP", name="Laptop", price="999.99", on_hand=0)
    ProductFactory(sku="C-OLD", active=False)

    body = api.get("/api/v1/products/").json()

    assert body["count"] == 2
    assert body["results"] == [
        {"sku": "A-LAPTOP", "name": "Laptop", "price": "999.99", "currency": "USD", "available": 0, "in_stock": False},
        {"sku": "B-MOUSE", "name": "Mouse", "price": "29.99", "currency": "USD", "available": 5, "in_stock": True},
    ]


@pytest.mark.parametrize(
    ("query", "skus"),
    [
        ({"search": "mou"}, ["B-MOUSE"]),
        ({"search": "a-lap"}, ["A-LAPTOP"]),
        ({"in_stock": "true"}, ["B-MOUSE"]),
        ({"in_stock": "false"}, ["A-LAPTOP"]),
        ({"ordering": "-price"}, ["A-LAPTOP", "B-MOUSE"]),
        ({"ordering": "price"}, ["B-MOUSE", "A-LAPTOP"]),
    ],
)
def test_products_filters_and_ordering(api, query, skus):
    ProductFactory(sku="B-MOUSE", name="Mouse", price="29.99", on_hand=5)
    ProductFactory(sku="A-LAPTOP", name="Laptop", price="999.99", on_hand=0)
    assert [p["sku"] for p in api.get("/api/v1/products/", query).json()["results"]] == skus


@pytest.mark.parametrize(
    ("query", "field"),
    [({"ordering": "cost"}, "ordering"), ({"in_stock": "maybe"}, "in_stock"), ({"search": "x" * 101}, "search")],
)
def test_bad_product_query_is_a_400(api, query, field):
    response = api.get("/api/v1/products/", query)
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_page_size_is_capped(api):
    for _ in range(105):
        ProductFactory()
    body = api.get("/api/v1/products/", {"page_size": 1000}).json()
    assert body["count"] == 105 and len(body["results"]) == 100
    assert api.get("/api/v1/products/", {"page": 99}).status_code == 404


def test_product_detail_by_sku(api):
    ProductFactory(sku="MOUSE-01", on_hand=3)
    ProductFactory(sku="GONE", active=False)
    assert api.get("/api/v1/products/MOUSE-01/").json()["available"] == 3
    assert api.get("/api/v1/products/GONE/").status_code == 404
    assert api.get("/api/v1/products/NOPE/").json()["error"]["code"] == "not_found"


def test_schema_and_docs_are_served_without_a_cdn(api):
    schema = api.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/orders/{id}/cancel/" in schema.content
    client = APIClient()
    docs = client.get(reverse("api-docs"))
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html and "/static/drf_spectacular_sidecar/" in html
    assert "cdn" not in html.lower()
