"""A link to an order's admin page, for every admin that shows rows belonging to an order."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html


def order_admin_link(obj):
    """``obj.order`` as a link to its admin page (select ``order`` with the row), or a dash."""
    if obj.order_id is None:
        return "—"
    url = reverse("admin:orders_order_change", args=[obj.order_id])
    return format_html('<a href="{}">{}</a>', url, obj.order.public_id)


class OrderLinkMixin:
    """Adds the ``order_link`` column; list it in ``list_display`` with ``list_select_related = ["order"]``."""

    @admin.display(description="order")
    def order_link(self, obj):
        return order_admin_link(obj)
