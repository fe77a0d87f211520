"""Throttles and login lockout cannot be dodged with a client-sent X-Forwarded-For."""

import pytest
from rest_framework.test import APIClient

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

TOKEN_URL = "/api/v1/auth/token/"


def login(client, username, password, forwarded_for=None):
    extra = {"HTTP_X_FORWARDED_FOR": forwarded_for} if forwarded_for else {}
    return client.post(TOKEN_URL, {"username": username, "password": password}, format="json", **extra)


def test_25_wrong_passwords_with_a_new_forwarded_for_each_are_throttled():
    UserFactory(username="shop", password="s3cret-pass")
    client = APIClient()

    statuses = [login(client, "shop", f"guess-{i}", forwarded_for=f"203.0.113.{i}").status_code for i in range(25)]

    assert set(statuses) <= {400, 429}
    first_refusal = statuses.index(429)
    assert first_refusal <= 10  # THROTTLE_AUTH is 10/min
    assert statuses[first_refusal:] == [429] * (25 - first_refusal)


def test_a_throttled_login_says_when_to_retry_in_the_error_shape():
    client = APIClient()
    for i in range(10):
        login(client, f"nobody{i}", "x", forwarded_for=f"198.51.100.{i}")
    response = login(client, "nobody", "x", forwarded_for="198.51.100.99")
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    error = response.json()["error"]
    assert error["status"] == 429 and error["retry_after"] > 0


def test_with_one_trusted_proxy_the_last_forwarded_for_hop_is_the_caller(settings):
    settings.TRUSTED_PROXY_COUNT = 1
    client = APIClient()
    # The client writes "10.0.0.N" itself; the proxy appends what it saw: 192.0.2.7.
    statuses = [login(client, f"nobody{i}", "x", forwarded_for=f"10.0.0.{i}, 192.0.2.7").status_code for i in range(11)]
    assert statuses == [400] * 10 + [429]
    # Another caller behind the same proxy has its own budget.
    assert login(client, "nobody", "x", forwarded_for="10.0.0.1, 192.0.2.8").status_code == 400


@pytest.mark.parametrize(
    ("proxies", "forwarded_for", "expected"),
    [
        (0, "203.0.113.5", "127.0.0.1"),
        (0, None, "127.0.0.1"),
        (1, None, "127.0.0.1"),
        (1, "203.0.113.5", "203.0.113.5"),
        (1, "10.1.1.1, 203.0.113.5", "203.0.113.5"),
        (2, "10.1.1.1, 203.0.113.5, 192.0.2.1", "203.0.113.5"),
        (2, "203.0.113.5", "203.0.113.5"),
        (1, "10.1.1.1, 2001:db8::1", "2001:db8::1"),
        (1, "10.1.1.1, not-an-address", "127.0.0.1"),
    ],
)
def test_client_ip_reads_as_many_forwarded_for_hops_as_there_are_trusted_proxies(
    settings, rf, proxies, forwarded_for, expected
):
    from config.auth import client_ip

    settings.TRUSTED_PROXY_COUNT = proxies
    extra = {"HTTP_X_FORWARDED_FOR": forwarded_for} if forwarded_for else {}
    assert client_ip(rf.post(TOKEN_URL, REMOTE_ADDR="127.0.0.1", **extra)) == expected
