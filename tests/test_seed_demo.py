from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from knox.auth import TokenAuthentication
from knox.models import AuthToken

from catalog.models import Product, StockLevel

pytestmark = pytest.mark.django_db


def seed():
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def test_seed_demo_is_idempotent_and_prints_working_logins():
    seed()
    output = seed()

    assert Product.objects.count() == 3
    assert StockLevel.objects.get(product__sku="LAPTOP-15").on_hand == 100
    User = get_user_model()
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.check_password("admin")
    assert "user admin  password admin" in output
    for username in ("alice", "bob"):
        assert AuthToken.objects.filter(user__username=username).count() == 1
    token = output.split("alice / customer  API token ")[1].split()[0]
    user, _ = TokenAuthentication().authenticate_credentials(token.encode())
    assert user.username == "alice"
