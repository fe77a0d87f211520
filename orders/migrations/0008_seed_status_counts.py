from django.db import migrations

STATUSES = [
    "pending", "reserved", "paid", "shipment_created", "confirmed", "shipped", "delivered",
    "compensating", "cancelled", "needs_attention",
]  # fmt: skip


def seed(apps, schema_editor):
    OrderStatusCount = apps.get_model("orders", "OrderStatusCount")
    Order = apps.get_model("orders", "Order")
    for status in STATUSES:
        OrderStatusCount.objects.get_or_create(status=status, defaults={"count": Order.objects.filter(status=status).count()})


class Migration(migrations.Migration):
    dependencies = [("orders", "0007_orderline_sku_index")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
