"""Each customer holds at most API_TOKEN_LIMIT_PER_USER live API tokens: a new login revokes the oldest."""

from datetime import timedelta

import pytest
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def log_in(username="shop", password="s3cret-pass"):
    response = APIClient().post("/api/v1/auth/token/", {"username": username, "password": password}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["token"]


def works(token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client.get("/api/v1/products/").status_code == 200


def test_logging_in_beyond_the_cap_revokes_the_oldest_token(settings):
    settings.API_TOKEN_LIMIT_PER_USER = 3
    user = UserFactory(username="shop", password="s3cret-pass")
    tokens = [log_in() for _ in range(4)]

    assert AuthToken.objects.filter(user=user).count() == 3
    assert not works(tokens[0])
    assert all(works(token) for token in tokens[1:])


def test_the_cap_counts_each_customer_separately(settings):
    settings.API_TOKEN_LIMIT_PER_USER = 1
    UserFactory(username="shop", password="s3cret-pass")
    UserFactory(username="other", password="other-pass")
    mine, theirs = log_in(), log_in("other", "other-pass")
    assert works(mine) and works(theirs)


def test_expired_tokens_are_removed_and_do_not_count(settings):
    settings.API_TOKEN_LIMIT_PER_USER = 2
    user = UserFactory(username="shop", password="s3cret-pass")
    current = log_in()
    for _ in range(3):
        AuthToken.objects.create(user=user, expiry=timedelta(days=1))
    AuthToken.objects.filter(user=user).exclude(digest=AuthToken.objects.get(token_key=current[:15]).digest).update(
        expiry=timezone.now() - timedelta(seconds=1)
    )

    newest = log_in()

    assert AuthToken.objects.filter(user=user).count() == 2  # before knox's own clean-up on authentication
    assert works(current) and works(newest)


def test_zero_means_no_cap(settings):
    settings.API_TOKEN_LIMIT_PER_USER = 0
    user = UserFactory(username="shop", password="s3cret-pass")
    tokens = [log_in() for _ in range(3)]
    assert AuthToken.objects.filter(user=user).count() == 3 and all(works(t) for t in tokens)


@pytest.mark.django_db(transaction=True)
def test_concurrent_logins_of_one_customer_never_exceed_the_cap(settings):
    import threading

    from django.db import connection

    settings.API_TOKEN_LIMIT_PER_USER = 2
    user = UserFactory(username="shop", password="s3cret-pass")
    barrier = threading.Barrier(6)
    statuses = []

    def login():
        try:
            barrier.wait()
            response = APIClient().post(
                "/api/v1/auth/token/", {"username": "shop", "password": "s3cret-pass"}, format="json"
            )
            statuses.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=login) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [200] * 6
    assert AuthToken.objects.filter(user=user).count() == 2
