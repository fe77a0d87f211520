from rest_framework.routers import SimpleRouter

from catalog.api.views import ProductViewSet

from .views import OrderViewSet, SagaViewSet

router = SimpleRouter()
router.register("products", ProductViewSet, basename="product")
router.register("orders", OrderViewSet, basename="order")
router.register("sagas", SagaViewSet, basename="saga")
urlpatterns = router.urls
