from django.urls import path
from rest_framework.routers import SimpleRouter

from catalog.api.views import ProductViewSet

from .views import OrderAnalyticsView, OrderViewSet, SagaViewSet

router = SimpleRouter()
router.register("products", ProductViewSet, basename="product")
router.register("orders", OrderViewSet, basename="order")
router.register("sagas", SagaViewSet, basename="saga")
urlpatterns = [
    path("analytics/orders/", OrderAnalyticsView.as_view(), name="order-analytics"),
    *router.urls,
]
