from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from knox.models import AuthToken

from catalog.models import Product, StockLevel
from catalog.services import product_create

DEMO_CATALOG = [
    ("LAPTOP-15", "Laptop", Decimal("999.99"), 100),
    ("MOUSE-01", "Mouse", Decimal("29.99"), 500),
    ("KEYBOARD-01", "Keyboard", Decimal("149.99"), 200),
]
DEMO_CUSTOMERS = [("alice", "alice@example.com"), ("bob", "bob@example.com")]


class Command(BaseCommand):
    help = (
        "Load the demo catalog, a staff superuser and two customers with API tokens. "
        "Safe to run again: existing rows are kept, passwords reset to the printed ones and "
        "each demo customer gets one fresh API token (the previous demo token is revoked)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--admin-password", default="admin", help="Password for the 'admin' superuser.")
        parser.add_argument("--customer-password", default="customer", help="Password for the demo customers.")

    @transaction.atomic
    def handle(self, *args, admin_password, customer_password, **options):
        for sku, name, price, on_hand in DEMO_CATALOG:
            if not Product.objects.filter(sku=sku).exists():
                product_create(sku=sku, name=name, price=price, on_hand=on_hand)
            else:
                StockLevel.objects.get_or_create(product=Product.objects.get(sku=sku), defaults={"on_hand": on_hand})

        User = get_user_model()
        admin, _ = User.objects.get_or_create(username="admin", defaults={"email": "admin@example.com"})
        admin.is_staff = admin.is_superuser = True
        admin.set_password(admin_password)
        admin.save()

        tokens = []
        for username, email in DEMO_CUSTOMERS:
            user, _ = User.objects.get_or_create(username=username, defaults={"email": email})
            user.set_password(customer_password)
            user.save()
            AuthToken.objects.filter(user=user).delete()
            _, token = AuthToken.objects.create(user=user, expiry=None)
            tokens.append((username, token))

        self.stdout.write(self.style.SUCCESS("Demo data ready."))
        self.stdout.write(f"  Admin:     http://127.0.0.1:8000/admin/  user admin  password {admin_password}")
        for username, token in tokens:
            self.stdout.write(f"  Customer:  {username} / {customer_password}  API token {token}")
        self.stdout.write("  Products:  " + ", ".join(f"{sku} ({name})" for sku, name, _, _ in DEMO_CATALOG))
