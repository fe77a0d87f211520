import threading
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from catalog.models import Reservation, StockLevel
from catalog.services import (
    OutOfStock,
    reservation_commit,
    reservation_expire,
    reservation_hold,
    reservation_release,
    stock_reserve,
)
from tests.factories import ProductFactory, UserFactory, place_order, reserve_stock

pytestmark = pytest.mark.django_db


def stock(product):
    return StockLevel.objects.get(product=product)


@pytest.mark.parametrize(
    ("on_hand", "reserved", "constraint"),
    [
        (-1, 0, "stock_on_hand_non_negative"),
        (5, -1, "stock_reserved_non_negative"),
        (5, 6, "stock_reserved_within_on_hand"),
    ],
)
def test_database_refuses_an_impossible_stock_level(on_hand, reserved, constraint):
    product = ProductFactory(on_hand=5)
    with pytest.raises(IntegrityError, match=constraint), transaction.atomic():
        StockLevel.objects.filter(product=product).update(on_hand=on_hand, reserved=reserved)
    assert (stock(product).on_hand, stock(product).reserved) == (5, 0)


def test_database_refuses_a_negative_price():
    product = ProductFactory()
    with pytest.raises(IntegrityError, match="product_price_non_negative"), transaction.atomic():
        type(product).objects.filter(pk=product.pk).update(price=-1)


def test_reserving_holds_every_line():
    laptop, mouse = ProductFactory(on_hand=3), ProductFactory(on_hand=10)
    order = place_order(products=[laptop, mouse], quantity=2)

    reservation = reserve_stock(order)

    assert reservation.status == "active"
    assert reservation.expires_at > timezone.now()
    assert sorted(reservation.lines.values_list("product_id", "quantity")) == [(laptop.pk, 2), (mouse.pk, 2)]
    assert (stock(laptop).reserved, stock(laptop).available) == (2, 1)
    assert (stock(mouse).reserved, stock(mouse).available) == (2, 8)


def test_reserving_is_all_or_nothing():
    plenty, scarce = ProductFactory(on_hand=10), ProductFactory(on_hand=1, sku="SCARCE")
    order = place_order(products=[plenty, scarce], quantity=2)

    with pytest.raises(OutOfStock) as excinfo:
        reserve_stock(order)

    assert excinfo.value.skus == ["SCARCE"]
    assert stock(plenty).reserved == 0
    assert stock(scarce).reserved == 0
    assert not Reservation.objects.exists()


def test_reserving_leaves_stock_of_other_products_alone():
    wanted, other = ProductFactory(on_hand=5), ProductFactory(on_hand=5)
    reserve_stock(place_order(products=[wanted], quantity=3))
    assert (stock(wanted).reserved, stock(other).reserved) == (3, 0)


def test_reserving_a_product_without_a_stock_row_is_out_of_stock():
    product = ProductFactory(on_hand=5, sku="NOSTOCK")
    order = place_order(products=[product], quantity=1)
    StockLevel.objects.filter(product=product).delete()
    with pytest.raises(OutOfStock) as excinfo:
        reserve_stock(order)
    assert excinfo.value.skus == ["NOSTOCK"]
    assert not Reservation.objects.exists()


def test_reserving_twice_for_one_order_holds_once():
    product = ProductFactory(on_hand=5)
    order = place_order(products=[product], quantity=2)
    first = reserve_stock(order)
    second = reserve_stock(order)
    assert first.pk == second.pk
    assert stock(product).reserved == 2


def test_release_gives_units_back_once():
    product = ProductFactory(on_hand=5)
    reservation = reserve_stock(place_order(products=[product], quantity=2))

    assert reservation_release(reservation=reservation) is True
    assert reservation_release(reservation=reservation) is False

    reservation.refresh_from_db()
    assert reservation.status == "released"
    assert (stock(product).on_hand, stock(product).reserved) == (5, 0)


def test_commit_takes_units_off_the_shelf():
    product = ProductFactory(on_hand=5)
    reservation = reserve_stock(place_order(products=[product], quantity=2))

    assert reservation_commit(reservation=reservation) is True
    assert reservation_release(reservation=reservation) is False  # committed stock is not released

    reservation.refresh_from_db()
    assert reservation.status == "committed"
    assert (stock(product).on_hand, stock(product).reserved) == (3, 0)


def test_expire_only_after_the_hold_ran_out():
    product = ProductFactory(on_hand=5)
    reservation = reserve_stock(place_order(products=[product], quantity=2))
    assert reservation_expire(reservation=reservation) is False

    Reservation.objects.filter(pk=reservation.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert reservation_expire(reservation=reservation) is True

    reservation.refresh_from_db()
    assert reservation.status == "expired"
    assert stock(product).reserved == 0


def test_a_held_reservation_never_expires():
    product = ProductFactory(on_hand=5)
    reservation = reserve_stock(place_order(products=[product], quantity=2))
    reservation_hold(order=reservation.order)
    reservation.refresh_from_db()
    assert reservation.expires_at is None
    assert reservation_expire(reservation=reservation) is False


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_reservations_of_ten_units_sell_exactly_ten():
    product = ProductFactory(on_hand=10)
    orders = [place_order(customer=UserFactory(), products=[product], quantity=1) for _ in range(20)]
    barrier = threading.Barrier(len(orders))
    outcomes = []

    def reserve(order):
        try:
            barrier.wait()
            reserve_stock(order)
            outcomes.append("reserved")
        except OutOfStock:
            outcomes.append("out_of_stock")
        finally:
            connection.close()

    threads = [threading.Thread(target=reserve, args=(order,)) for order in orders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes.count("reserved") == 10
    assert outcomes.count("out_of_stock") == 10
    level = stock(product)
    assert (level.on_hand, level.reserved, level.available) == (10, 10, 0)
    assert Reservation.objects.count() == 10


def test_the_catalog_reserves_the_lines_it_is_given_not_the_orders_rows():
    laptop, mouse = ProductFactory(on_hand=3), ProductFactory(on_hand=10)
    order = place_order(products=[laptop, mouse], quantity=2)

    reservation = stock_reserve(order=order, lines=[(mouse.pk, 1), (mouse.pk, 2)])

    assert list(reservation.lines.values_list("product_id", "quantity")) == [(mouse.pk, 3)]  # one row per product
    assert (stock(laptop).reserved, stock(mouse).reserved) == (0, 3)
