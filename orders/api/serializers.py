from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config.api import QuerySerializer
from orders.countries import ISO_3166_ALPHA2
from orders.models import Order, OrderLine, OrderStatus, SagaRun, SagaStatus, SagaStep, StepStatus
from shipping.models import ShipmentStatus


# --- input ------------------------------------------------------------------------
class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know, so a client sending a price learns it is not honoured."""

    refuses_unknown_fields = True  # the schema says additionalProperties: false (config.api.AutoSchema)

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {field: ["Unknown field; prices, totals and status are set by the server."] for field in unknown}
                )
        return super().to_internal_value(data)


class OrderLineInputSerializer(StrictSerializer):
    sku = serializers.CharField(max_length=64)
    quantity = serializers.IntegerField(min_value=1, max_value=settings.ORDER_MAX_QUANTITY)


@extend_schema_field(
    {
        "type": "string",
        "enum": sorted(ISO_3166_ALPHA2),
        "description": "ISO 3166-1 alpha-2, e.g. DE (lower case is accepted and stored upper case).",
    }
)
class CountryField(serializers.CharField):
    pass


class AddressSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200)
    line1 = serializers.CharField(max_length=200)
    line2 = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    city = serializers.CharField(max_length=100)
    region = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    postal_code = serializers.CharField(max_length=20)
    country = CountryField(min_length=2, max_length=2)

    def validate_country(self, value):
        if value.upper() not in ISO_3166_ALPHA2:
            raise serializers.ValidationError("Use an ISO 3166-1 alpha-2 country code, such as 'DE'.")
        return value.upper()


class OrderCreateSerializer(StrictSerializer):
    """What a storefront sends. Prices are never sent: they come from the catalog."""

    lines = OrderLineInputSerializer(many=True, allow_empty=False, min_length=1, max_length=settings.ORDER_MAX_LINES)
    shipping_address = AddressSerializer()
    payment_token = serializers.CharField(max_length=64, help_text="From the payment provider's client SDK.")

    def validate_lines(self, lines):
        seen = set()
        for line in lines:
            if line["sku"] in seen:
                raise serializers.ValidationError(f"Duplicate sku {line['sku']!r}: put the whole quantity on one line.")
            seen.add(line["sku"])
        return lines


# --- output -----------------------------------------------------------------------
class OrderLineSerializer(serializers.ModelSerializer):
    class Meta:
        model = OrderLine
        fields = ["sku", "name", "unit_price", "quantity", "line_total"]
        read_only_fields = fields


class SagaStepSerializer(serializers.ModelSerializer):
    error = serializers.SerializerMethodField(help_text="Safe to show the customer.")

    class Meta:
        model = SagaStep
        fields = ["name", "status", "attempts", "started_at", "finished_at", "error"]
        read_only_fields = fields

    def get_error(self, step) -> str:
        return step.saga.failure_reason if step.status == StepStatus.FAILED else ""


class SagaProgressSerializer(serializers.ModelSerializer):
    steps = serializers.SerializerMethodField()

    class Meta:
        model = SagaRun
        fields = ["status", "failure_reason", "steps", "compensations"]
        read_only_fields = fields

    compensations = serializers.SerializerMethodField()

    def _steps(self, saga, kind):
        steps = [step for step in saga.steps.all() if step.kind == kind]
        for step in steps:
            step.saga = saga
        return SagaStepSerializer(sorted(steps, key=lambda s: s.position), many=True).data

    def get_steps(self, saga) -> list[dict]:
        return self._steps(saga, "forward")

    def get_compensations(self, saga) -> list[dict]:
        return self._steps(saga, "compensation")


class OrderSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    lines = OrderLineSerializer(many=True, read_only=True)
    shipping_address = serializers.SerializerMethodField()
    tracking_number = serializers.SerializerMethodField(help_text="Set once the order has shipped.")
    saga = SagaProgressSerializer(read_only=True)

    class Meta:
        model = Order
        fields = [
            "id",
            "status",
            "currency",
            "total",
            "lines",
            "shipping_address",
            "tracking_number",
            "cancel_reason",
            "saga",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_shipping_address(self, order) -> AddressSerializer:
        return order.shipping_address

    def get_tracking_number(self, order) -> str | None:
        if order.status not in (OrderStatus.SHIPPED, OrderStatus.DELIVERED):
            return None
        for shipment in order.shipments.all():
            if shipment.status in (ShipmentStatus.DISPATCHED, ShipmentStatus.DELIVERED):
                return shipment.tracking_number
        return None


class OrderSummarySerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)

    class Meta:
        model = Order
        fields = ["id", "status", "currency", "total", "created_at", "updated_at"]
        read_only_fields = fields


class OrderQuerySerializer(QuerySerializer):
    status = serializers.ChoiceField(choices=OrderStatus.choices, required=False, allow_blank=True)


class StaffSagaStepSerializer(serializers.ModelSerializer):
    class Meta:
        model = SagaStep
        fields = ["kind", "name", "status", "attempts", "deliveries", "started_at", "finished_at", "error"]
        read_only_fields = fields


class StaffSagaSerializer(serializers.ModelSerializer):
    order_id = serializers.UUIDField(source="order.public_id", read_only=True)
    steps = StaffSagaStepSerializer(many=True, read_only=True)

    class Meta:
        model = SagaRun
        fields = [
            "id",
            "order_id",
            "definition",
            "version",
            "status",
            "cancel_requested",
            "failure_reason",
            "error",
            "redrives",
            "deadline_at",
            "created_at",
            "started_at",
            "finished_at",
            "updated_at",
            "steps",
        ]
        read_only_fields = fields


class SagaQuerySerializer(QuerySerializer):
    status = serializers.ChoiceField(choices=SagaStatus.choices, required=False, allow_blank=True)


class ActionResultSerializer(serializers.Serializer):
    detail = serializers.CharField()


class AuditEventSerializer(serializers.Serializer):
    at = serializers.DateTimeField(source="created_at")
    actor_type = serializers.CharField()
    actor = serializers.CharField(source="actor_label")
    object_type = serializers.CharField()
    object_id = serializers.CharField()
    event = serializers.CharField()
    from_state = serializers.CharField()
    to_state = serializers.CharField()
    payload = serializers.JSONField()


class AnalyticsQuerySerializer(QuerySerializer):
    days = serializers.IntegerField(min_value=1, max_value=366, required=False, default=30)
    top = serializers.IntegerField(min_value=1, max_value=100, required=False, default=10)


class DayStatsSerializer(serializers.Serializer):
    day = serializers.DateField()
    currency = serializers.CharField()
    placed = serializers.IntegerField()
    confirmed = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    revenue = serializers.DecimalField(max_digits=14, decimal_places=2)


class TopProductSerializer(serializers.Serializer):
    sku = serializers.CharField()
    name = serializers.CharField()
    units = serializers.IntegerField()
    revenue = serializers.DecimalField(max_digits=14, decimal_places=2)


class FailureRateSerializer(serializers.Serializer):
    failures = serializers.IntegerField()
    rate = serializers.FloatField()


class OrderAnalyticsSerializer(serializers.Serializer):
    status_breakdown = serializers.DictField(child=serializers.IntegerField())
    days = DayStatsSerializer(many=True)
    average_order_value = serializers.DictField(child=serializers.DecimalField(max_digits=14, decimal_places=2))
    top_products = TopProductSerializer(many=True)
    sagas_started = serializers.IntegerField()
    failure_rate_by_step = serializers.DictField(child=FailureRateSerializer())
