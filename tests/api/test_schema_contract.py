"""The OpenAPI document says what the server does (what the fuzz run found, pinned)."""

import pytest

from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(api):
    return api.get("/api/schema/?format=json").json()


def parameters(schema, path, method="get"):
    return {p["name"]: p for p in schema["paths"][path][method].get("parameters", [])}


@pytest.mark.parametrize("path", ["/api/v1/products/", "/api/v1/orders/", "/api/v1/sagas/"])
def test_page_and_page_size_are_documented_from_one_to_the_largest_accepted(schema, path):
    params = parameters(schema, path)
    largest = 10**18 - 1  # 18 digits: a longer number is refused (found by the fuzz run)
    assert params["page"]["schema"] == {"type": "integer", "minimum": 1, "maximum": largest}
    assert params["page_size"]["schema"] == {"type": "integer", "minimum": 1, "maximum": largest}


def test_the_largest_documented_page_is_accepted_and_one_more_refused(api):
    assert api.get(f"/api/v1/products/?page={10**18 - 1}").status_code == 404  # past the end
    assert api.get(f"/api/v1/products/?page={10**18}").status_code == 400


@pytest.mark.parametrize(
    "query",
    ["page=0", "page_size=0", "page=1&page=2", "page_size=5&page_size=6", "page=x", "in_stock=true&in_stock=false"],
)
def test_what_the_schema_refuses_in_a_query_is_a_400(api, query):
    response = api.get(f"/api/v1/products/?{query}")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["fields"]


def test_a_page_past_the_end_is_still_a_404(api):
    ProductFactory()
    assert api.get("/api/v1/products/?page=2").status_code == 404


def test_an_order_body_is_documented_as_the_server_checks_it(schema):
    components = schema["components"]["schemas"]
    order = components["OrderCreateRequest"]
    assert (order["properties"]["lines"]["minItems"], order["properties"]["lines"]["maxItems"]) == (1, 50)
    for name in ("OrderCreateRequest", "OrderLineInputRequest", "AddressRequest"):
        assert components[name]["additionalProperties"] is False, name
    [country] = components["AddressRequest"]["properties"]["country"]["allOf"]
    codes = components[country["$ref"].rsplit("/", 1)[1]]["enum"]
    assert "GB" in codes and "XX" not in codes
    key = parameters(schema, "/api/v1/orders/", "post")["Idempotency-Key"]["schema"]
    assert (key["minLength"], key["maxLength"]) == (1, 255)


@pytest.mark.parametrize(
    ("path", "method", "statuses"),
    [
        ("/api/v1/orders/{id}/history/", "get", {"200", "401", "403", "404", "429"}),
        ("/api/v1/orders/{id}/ship/", "post", {"200", "401", "403", "404", "409", "429"}),
        ("/api/v1/orders/{id}/deliver/", "post", {"200", "401", "403", "404", "409", "429"}),
        ("/api/v1/orders/{id}/cancel/", "post", {"202", "401", "403", "404", "409", "429"}),
        ("/api/v1/sagas/{id}/retry/", "post", {"202", "401", "403", "404", "409", "429"}),
    ],
)
def test_staff_actions_document_their_error_answers(schema, path, method, statuses):
    assert set(schema["paths"][path][method]["responses"]) == statuses


def test_a_staff_action_on_an_id_that_is_not_a_uuid_is_a_404(staff_api):
    for action in ("ship", "deliver", "history"):
        method = staff_api.get if action == "history" else staff_api.post
        response = method(f"/api/v1/orders/{'0' * 36}/{action}/")
        assert response.status_code == 404, (action, response.content)


def test_text_that_is_only_whitespace_or_holds_a_nul_is_documented_as_refused(schema, api):
    from .test_orders import body, post

    ProductFactory(sku="MOUSE-01")
    name = schema["components"]["schemas"]["AddressRequest"]["properties"]["name"]
    assert "pattern" in name
    import re

    whitespace = "".join(chr(c) for c in range(0x3001) if chr(c).isspace())
    assert re.search(name["pattern"], whitespace) is None and re.search(name["pattern"], " a ")
    assert re.search(name["pattern"], "a\x00") is None
    response = post(api, body(shipping_address={**body()["shipping_address"], "name": " \x1f "}))
    assert response.status_code == 400 and "shipping_address.name" in response.json()["error"]["fields"]


def test_a_saga_id_is_documented_as_a_whole_number(schema):
    assert parameters(schema, "/api/v1/sagas/{id}/retry/", "post")["id"]["schema"] == {"type": "integer", "minimum": 0}
