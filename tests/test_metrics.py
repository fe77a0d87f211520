"""/metrics: bounded label values, and an optional bearer token."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def samples(body):
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line and line[0] != "#"
    }


def http_request_series(client, **headers):
    body = client.get("/metrics", **headers).content.decode()
    return [key for key in samples(body) if key.startswith("fulfilment_http_requests_total{")]


def test_an_unknown_http_method_is_counted_as_other():
    client = Client()
    for method in ("BREW", "PROPFIND", "X" * 50):
        client.generic(method, "/healthz")
    client.get("/healthz")

    series = http_request_series(client)

    assert not [key for key in series if "BREW" in key or "PROPFIND" in key or "XXXX" in key]
    assert any('method="other"' in key and 'route="healthz"' in key for key in series)
    assert any('method="GET"' in key and 'route="healthz"' in key for key in series)


def test_metrics_are_open_when_no_token_is_set(settings):
    settings.METRICS_TOKEN = ""
    response = Client().get("/metrics")
    assert response.status_code == 200
    assert b"fulfilment_sagas_in_progress" in response.content


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Bearer ", "Token s3cret-metrics-token", "s3cret-metrics-token", "Bearer s3cret"],
)
def test_with_a_token_set_metrics_need_that_bearer_token(settings, authorization):
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization is not None else {}
    response = Client().get("/metrics", **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"fulfilment_" not in response.content


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_the_right_bearer_token_gets_the_metrics(settings, scheme):
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"{scheme} s3cret-metrics-token")
    assert response.status_code == 200
    assert b"fulfilment_sagas_in_progress" in response.content
