import pytest
from django.core.cache import cache
from knox.models import AuthToken
from rest_framework.test import APIClient


@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    """API tests run no worker: saga chains are recorded instead of sent."""
    from orders.saga import engine

    sent = []
    monkeypatch.setattr(engine, "dispatch", lambda saga_id, names: sent.append((saga_id, names)))
    return sent


def client_for(user):
    client = APIClient()
    _, token = AuthToken.objects.create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def api(customer):
    return client_for(customer)


@pytest.fixture
def staff_api(staff):
    return client_for(staff)
