import pytest
from django.contrib.auth.models import Permission
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
    from orders.saga import events as saga_events

    sent = []
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: sent.append((saga_id, names)))
    return sent


def client_for(user):
    client = APIClient()
    _, token = AuthToken.objects.create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def api(customer):
    return client_for(customer)


# What the staff endpoints ask for (the admin's own permissions).
OPERATOR_PERMISSIONS = ["view_order", "ship_order", "deliver_order", "cancel_order", "view_sagarun", "retry_saga"]


@pytest.fixture
def staff_api(staff):
    """An operator: staff holding every permission the staff endpoints ask for."""
    staff.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="orders", codename__in=OPERATOR_PERMISSIONS)
    )
    return client_for(staff)
