"""The analytics read model's incremental updates, statement by statement (no worker)."""

from decimal import Decimal

import pytest

from orders import analytics
from orders.models import DailyOrderStats, OrderStatusCount, ProductSalesStats
from tests.factories import ProductFactory, place_order

pytestmark = pytest.mark.django_db


def counts():
    return dict(OrderStatusCount.objects.exclude(count=0).values_list("status", "count"))


def test_placing_and_moving_create_the_rows_they_need():
    OrderStatusCount.objects.all().delete()  # a migration seeds one per status: start without
    order = place_order(products=[ProductFactory(price=Decimal("5.00"))])
    assert counts() == {"pending": 1}
    assert DailyOrderStats.objects.get().placed == 1

    analytics.order_moved(order, "pending", "reserved")
    analytics.order_moved(order, "reserved", "paid")

    assert counts() == {"paid": 1}
    assert set(OrderStatusCount.objects.values_list("status", flat=True)) == {"pending", "reserved", "paid"}


def test_confirming_counts_revenue_and_units_and_a_cancellation_takes_them_off():
    mouse, laptop = ProductFactory(price=Decimal("10.00")), ProductFactory(price=Decimal("100.00"))
    order = place_order(products=[mouse, laptop], quantity=2)

    analytics.order_moved(order, "shipment_created", "confirmed")
    day = DailyOrderStats.objects.get()
    assert (day.placed, day.confirmed, day.cancelled, day.revenue) == (1, 1, 0, Decimal("220.00"))
    sales = dict(ProductSalesStats.objects.values_list("product_id", "units"))
    assert sales == {mouse.pk: 2, laptop.pk: 2}
    assert ProductSalesStats.objects.get(product=laptop).revenue == Decimal("200.00")

    # Both changes of the day's row (one confirmed less, one cancelled more) land.
    analytics.order_moved(order, "confirmed", "cancelled")
    day.refresh_from_db()
    assert (day.placed, day.confirmed, day.cancelled, day.revenue) == (1, 0, 1, Decimal("0.00"))
    assert set(ProductSalesStats.objects.values_list("units", "revenue")) == {(0, Decimal("0.00"))}
    assert counts() == {"pending": 1, "shipment_created": -1, "cancelled": 1}
