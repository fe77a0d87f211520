"""The storefront's order endpoints and the staff saga endpoints."""

import hashlib
import json

from django.db import IntegrityError
from django.shortcuts import get_object_or_404
from django_fsm import TransitionNotAllowed
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.selectors import audit_trail
from config.api import Conflict, Unprocessable
from config.api_views import COMMON_ERRORS, error
from orders.analytics import order_analytics
from orders.models import Order
from orders.saga.recovery import SagaActionError, saga_retry
from orders.selectors import order_detail_queryset, order_list, saga_list
from orders.services import OrderActionRefused, order_cancel, order_deliver, order_place, order_ship

from .permissions import StaffActionPermission, can_see_every_order
from .serializers import (
    ActionResultSerializer,
    AnalyticsQuerySerializer,
    AuditEventSerializer,
    OrderAnalyticsSerializer,
    OrderCreateSerializer,
    OrderQuerySerializer,
    OrderSerializer,
    OrderSummarySerializer,
    SagaQuerySerializer,
    StaffSagaSerializer,
)

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
    OpenApiParameter.HEADER,
    required=True,
    description="Unique per order attempt (1-255 printable characters). The same key and body again returns "
    "the same order (200); the same key with another body is refused (422).",
)


def fingerprint(data):
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def idempotency_key(request):
    key = request.headers.get("Idempotency-Key", "")
    if not key:
        raise ValidationError({"Idempotency-Key": ["This header is required."]})
    if len(key) > 255 or not key.isprintable() or not key.isascii():
        raise ValidationError({"Idempotency-Key": ["Use 1 to 255 printable ASCII characters."]})
    return key


def staff_transition_schema(*, conflict):
    """The documented answers of a staff-only action that moves an order on."""
    return extend_schema(
        request=None,
        responses={
            200: OrderSerializer,
            403: error("Staff with the permission only."),
            404: error("No such order."),
            409: error(conflict),
            **COMMON_ERRORS,
        },
    )


@extend_schema(tags=["orders"])
class OrderViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The caller's own orders. Staff with ``orders.view_order`` see every order."""

    permission_classes = [StaffActionPermission]
    staff_permissions = {
        "ship": "orders.ship_order",
        "deliver": "orders.deliver_order",
        "history": "orders.view_order",
    }
    foreign_object_permissions = {"cancel": "orders.cancel_order"}
    lookup_field = "public_id"
    lookup_url_kwarg = "id"
    lookup_value_regex = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"

    def get_queryset(self):
        # A customer only ever sees their own orders: another's is a 404.
        customer = None if can_see_every_order(self.request.user) else self.request.user
        if self.action == "list":
            query = OrderQuerySerializer(data=self.request.query_params)
            query.is_valid(raise_exception=True)
            return order_list(customer=customer, status=query.validated_data.get("status"))
        return order_detail_queryset(customer=customer)

    def get_serializer_class(self):
        return OrderSummarySerializer if self.action == "list" else OrderSerializer

    @property
    def throttle_scope(self):
        return {"create": "orders_create", "list": "orders_read", "retrieve": "orders_read"}.get(
            self.action, "orders_write"
        )

    def _detail(self, order, status_code, headers=None):
        order = order_detail_queryset().get(pk=order.pk)
        return Response(OrderSerializer(order).data, status=status_code, headers=headers)

    def _location(self, order):
        return {"Location": self.request.build_absolute_uri(f"/api/v1/orders/{order.public_id}/")}

    @extend_schema(
        parameters=[OrderQuerySerializer],
        responses={
            200: OrderSummarySerializer(many=True),
            400: error("Bad query parameter."),
            404: error("No such page."),
            **COMMON_ERRORS,
        },
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(responses={200: OrderSerializer, 404: error("No such order of yours."), **COMMON_ERRORS})
    def retrieve(self, request, *args, **kwargs):
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(
        parameters=[IDEMPOTENCY_KEY],
        request=OrderCreateSerializer,
        responses={
            202: OpenApiResponse(OrderSerializer, description="Accepted: the saga runs; poll the Location."),
            200: OpenApiResponse(OrderSerializer, description="The order this Idempotency-Key already created."),
            400: error("Invalid body or header; see fields."),
            413: error("Body too large."),
            422: error("This Idempotency-Key was used with another body."),
            **COMMON_ERRORS,
        },
    )
    def create(self, request):
        key = idempotency_key(request)
        digest = fingerprint(request.data)
        existing = Order.objects.filter(customer=request.user, idempotency_key=key).first()
        if existing is not None:
            return self._replay(existing, digest)
        serializer = OrderCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            order = order_place(
                customer=request.user,
                idempotency_key=key,
                request_fingerprint=digest,
                **serializer.validated_data,
            )
        except IntegrityError:
            # A concurrent request with the same key committed first.
            existing = Order.objects.filter(customer=request.user, idempotency_key=key).first()
            if existing is None:
                raise
            return self._replay(existing, digest)
        return self._detail(order, status.HTTP_202_ACCEPTED, self._location(order))

    def _replay(self, order, digest):
        if order.request_fingerprint != digest:
            raise Unprocessable("This Idempotency-Key was already used for a different order.")
        return self._detail(order, status.HTTP_200_OK, self._location(order))

    @extend_schema(
        request=None,
        responses={
            202: OpenApiResponse(OrderSerializer, description="Cancelling: compensations run."),
            403: error("Another customer's order: staff with orders.cancel_order only."),
            404: error("No such order of yours."),
            409: error("The order can no longer be cancelled."),
            **COMMON_ERRORS,
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, id=None):
        order = self.get_object()
        try:
            order = order_cancel(order=order)
        except OrderActionRefused as exc:
            raise Conflict(str(exc)) from exc
        return self._detail(order, status.HTTP_202_ACCEPTED)

    def _staff_transition(self, service, verb):
        order = get_object_or_404(Order, public_id=self.kwargs["id"])
        try:
            order = service(order=order)
        except OrderActionRefused as exc:
            raise Conflict(str(exc)) from exc
        except (TransitionNotAllowed, Order.DoesNotExist) as exc:
            raise Conflict(f"Order is {order.status}: it cannot be {verb} now.") from exc
        return self._detail(order, status.HTTP_200_OK)

    @extend_schema(
        responses={
            200: AuditEventSerializer(many=True),
            403: error("Staff with orders.view_order only."),
            404: error("No such order."),
            **COMMON_ERRORS,
        },
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def history(self, request, id=None):
        """Staff with ``orders.view_order``: the order's whole audit trail, oldest first.

        Order, stock, payment, shipment and saga events.
        """
        order = get_object_or_404(Order, public_id=self.kwargs["id"])
        return Response(AuditEventSerializer(audit_trail(order_id=order.public_id), many=True).data)

    @staff_transition_schema(conflict="Not confirmed.")
    @action(detail=True, methods=["post"])
    def ship(self, request, id=None):
        """Staff with ``orders.ship_order``: the parcel left the warehouse (stock is committed)."""
        return self._staff_transition(order_ship, "shipped")

    @staff_transition_schema(conflict="Not shipped.")
    @action(detail=True, methods=["post"])
    def deliver(self, request, id=None):
        """Staff with ``orders.deliver_order``: the carrier delivered the parcel."""
        return self._staff_transition(order_deliver, "delivered")


@extend_schema(tags=["sagas"])
class SagaViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Staff: sagas by status, and retrying a failed or stuck one."""

    permission_classes = [StaffActionPermission]
    staff_permissions = {"list": "orders.view_sagarun", "retry": "orders.retry_saga"}
    lookup_value_regex = "[0-9]{1,18}"  # "true" (or 5000 digits) is no saga id: a 404, not a ValueError
    serializer_class = StaffSagaSerializer
    throttle_scope = "staff"

    def get_queryset(self):
        query = SagaQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        return saga_list(status=query.validated_data.get("status"))

    @extend_schema(
        parameters=[SagaQuerySerializer],
        responses={
            200: StaffSagaSerializer(many=True),
            400: error("Bad query parameter."),
            404: error("No such page."),
            403: error("Staff with orders.view_sagarun only."),
            **COMMON_ERRORS,
        },
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(
        parameters=[OpenApiParameter("id", {"type": "integer", "minimum": 0}, OpenApiParameter.PATH)],
        request=None,
        responses={
            202: ActionResultSerializer,
            403: error("Staff with orders.retry_saga only."),
            404: error("No such saga."),
            409: error("Nothing to retry."),
            **COMMON_ERRORS,
        },
    )
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        saga = get_object_or_404(saga_list(), pk=pk)
        try:
            outcome = saga_retry(saga.pk)
        except SagaActionError as exc:
            raise Conflict(str(exc)) from exc
        return Response({"detail": outcome}, status=status.HTTP_202_ACCEPTED)


@extend_schema(tags=["analytics"])
class OrderAnalyticsView(APIView):
    """Staff: order figures from the read model (no scan of the orders per request)."""

    permission_classes = [IsAdminUser]
    throttle_scope = "staff"

    @extend_schema(
        parameters=[AnalyticsQuerySerializer],
        responses={
            200: OrderAnalyticsSerializer,
            400: error("Bad query parameter."),
            403: error("Staff only."),
            **COMMON_ERRORS,
        },
    )
    def get(self, request):
        query = AnalyticsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(OrderAnalyticsSerializer(order_analytics(**query.validated_data)).data)
