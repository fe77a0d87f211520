from decimal import Decimal

import factory
from django.contrib.auth import get_user_model

from catalog.models import Product, StockLevel
from orders.services import order_place


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"customer{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("secret-pass")


class StaffFactory(UserFactory):
    username = factory.Sequence(lambda n: f"staff{n}")
    is_staff = True


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Product
        skip_postgeneration_save = True

    sku = factory.Sequence(lambda n: f"SKU-{n:05d}")
    name = factory.Faker("word")
    price = Decimal("10.00")
    currency = "USD"
    active = True

    @factory.post_generation
    def on_hand(product, create, extracted, **kwargs):
        if create:
            StockLevel.objects.create(product=product, on_hand=100 if extracted is None else extracted)


ADDRESS = {
    "name": "Ada Lovelace",
    "line1": "12 St James's Square",
    "city": "London",
    "postal_code": "SW1Y 4JH",
    "country": "GB",
}


def place_order(customer=None, products=None, quantity=1, payment_token="tok_visa", address=None, **kwargs):
    """An order through the real service, one line per product."""
    customer = customer or UserFactory()
    products = products or [ProductFactory()]
    return order_place(
        customer=customer,
        lines=[{"sku": p.sku, "quantity": quantity} for p in products],
        shipping_address=address or ADDRESS,
        payment_token=payment_token,
        **kwargs,
    )


def reserve_stock(order, **kwargs):
    """``stock_reserve`` for every line of ``order``, as the saga's reserve step calls it."""
    from catalog.services import stock_reserve
    from orders.selectors import order_stock_lines

    return stock_reserve(order=order, lines=order_stock_lines(order), **kwargs)
