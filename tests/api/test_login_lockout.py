"""Throttles and login lockout cannot be dodged with a client-sent X-Forwarded-For."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
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
        (1, "10.1.1.1, 203.0.113.5:4711", "127.0.0.1"),
        (1, "10.1.1.1, fe80::1%eth0", "fe80::1"),
        (1, "10.1.1.1,", "127.0.0.1"),
    ],
)
def test_client_ip_reads_as_many_forwarded_for_hops_as_there_are_trusted_proxies(
    settings, rf, proxies, forwarded_for, expected
):
    from config.auth import client_ip

    settings.TRUSTED_PROXY_COUNT = proxies
    extra = {"HTTP_X_FORWARDED_FOR": forwarded_for} if forwarded_for else {}
    assert client_ip(rf.post(TOKEN_URL, REMOTE_ADDR="127.0.0.1", **extra)) == expected


@pytest.mark.parametrize("remote_addr", ["", "/run/gunicorn.sock", "unix:"])
def test_a_failed_login_from_a_server_that_gives_no_ip_address_is_still_a_400(remote_addr):
    response = login(APIClient(REMOTE_ADDR=remote_addr), "shop", "wrong")
    assert response.status_code == 400


# --- lockout (django-axes) ---------------------------------------------------------
def fail_until_locked(client, username="shop", **kwargs):
    from django.conf import settings

    return [login(client, username, f"guess-{i}", **kwargs) for i in range(settings.AXES_FAILURE_LIMIT)]


def expire_lockouts():
    """Move every recorded failure back past the cool-off, as if the time had passed."""
    from axes.models import AccessAttempt
    from django.conf import settings

    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))


def test_the_failure_limit_locks_the_login_with_a_429_that_says_when_to_retry(settings):
    UserFactory(username="shop", password="s3cret-pass")
    responses = fail_until_locked(APIClient())

    assert [r.status_code for r in responses[:-1]] == [400] * (settings.AXES_FAILURE_LIMIT - 1)
    locked = responses[-1]
    assert locked.status_code == 429
    error = locked.json()["error"]
    assert error["code"] == "login_locked_out" and error["status"] == 429
    assert "too many failed logins" in error["message"].lower()
    cool_off = int(settings.AXES_COOLOFF_TIME.total_seconds())
    assert cool_off - 5 <= error["retry_after"] <= cool_off
    assert int(locked["Retry-After"]) == error["retry_after"]


def test_a_correct_password_after_lockout_is_refused_until_the_cool_off_ends():
    UserFactory(username="shop", password="s3cret-pass")
    client = APIClient()
    fail_until_locked(client)

    refused = login(client, "shop", "s3cret-pass")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "login_locked_out"
    assert "token" not in refused.json()

    expire_lockouts()
    assert login(client, "shop", "s3cret-pass").status_code == 200


def test_a_lockout_does_not_block_the_same_user_elsewhere_or_others_here():
    UserFactory(username="shop", password="s3cret-pass")
    UserFactory(username="other", password="other-pass")
    fail_until_locked(APIClient(REMOTE_ADDR="203.0.113.9"))

    assert login(APIClient(REMOTE_ADDR="203.0.113.9"), "other", "other-pass").status_code == 200
    assert login(APIClient(REMOTE_ADDR="198.51.100.4"), "shop", "s3cret-pass").status_code == 200


def test_a_successful_login_clears_earlier_failures(settings):
    UserFactory(username="shop", password="s3cret-pass")
    client = APIClient()
    for i in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(client, "shop", f"guess-{i}").status_code == 400
    assert login(client, "shop", "s3cret-pass").status_code == 200
    assert login(client, "shop", "one-more-typo").status_code == 400


def test_the_lockout_follows_the_trusted_proxy_count(settings):
    from axes.models import AccessAttempt

    settings.TRUSTED_PROXY_COUNT = 1
    UserFactory(username="shop", password="s3cret-pass")
    client = APIClient()
    fail_until_locked(client, forwarded_for="10.9.9.9, 192.0.2.7")

    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"192.0.2.7"}
    assert login(client, "shop", "s3cret-pass", forwarded_for="10.0.0.1, 192.0.2.7").status_code == 429
    assert login(client, "shop", "s3cret-pass", forwarded_for="192.0.2.7, 192.0.2.8").status_code == 200


def test_a_username_longer_than_any_account_is_a_400_not_a_500():
    response = login(APIClient(), "u" * 300, "x")
    assert response.status_code == 400
    assert "username" in response.json()["error"]["fields"]


# --- admin login --------------------------------------------------------------------
def admin_login(client, password):
    return client.post("/admin/login/?next=/admin/", {"username": "boss", "password": password})


def test_the_admin_login_locks_out_after_the_failure_limit_with_a_clear_page(settings, django_user_model):
    django_user_model.objects.create_superuser("boss", "boss@example.com", "boss-pass")
    client = Client()
    for i in range(settings.AXES_FAILURE_LIMIT - 1):
        assert admin_login(client, f"guess-{i}").status_code == 200  # the form again, with its error

    locked = admin_login(client, "guess-last")
    assert locked.status_code == 429
    assert int(locked["Retry-After"]) > 0
    page = locked.content.decode()
    assert "Too many failed logins" in page and "Fulfilment back office" in page

    refused = admin_login(client, "boss-pass")
    assert refused.status_code == 429
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302  # still not logged in

    expire_lockouts()
    assert admin_login(client, "boss-pass").status_code == 302
    assert client.get("/admin/").status_code == 200


def settings_with(**env):
    """The lockout settings as a fresh process computes them from these environment variables."""
    import json
    import os
    import subprocess
    import sys

    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.AXES_LOCKOUT_PARAMETERS, s.AXES_RESET_ON_SUCCESS, s.AXES_FAILURE_LIMIT]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test", **env},
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout) if result.returncode == 0 else result.stderr


def test_lockout_parameters_come_from_the_environment():
    assert settings_with() == [[["username", "ip_address"]], True, 5]
    assert settings_with(LOGIN_LOCKOUT_PARAMETERS="ip_address,username+user_agent", LOGIN_FAILURE_LIMIT="3") == [
        ["ip_address", ["username", "user_agent"]],
        False,  # a login by one valid account must not clear an address's failures
        3,
    ]
    assert "LOGIN_LOCKOUT_PARAMETERS" in settings_with(LOGIN_LOCKOUT_PARAMETERS="ip")
