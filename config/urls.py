from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.api_views import LogoutView, TokenCreateView
from config.health import healthz, readyz
from config.metrics import metrics_view

admin.site.site_header = "Fulfilment back office"
admin.site.site_title = "Fulfilment back office"
admin.site.index_title = "Operations"

api_v1 = [
    path("auth/token/", TokenCreateView.as_view(), name="auth-token"),
    path("auth/logout/", LogoutView.as_view(), name="auth-logout"),
    path("", include("orders.api.urls")),
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]

handler400 = "config.api.bad_request"
handler403 = "config.api.permission_denied"
handler404 = "config.api.not_found"
handler500 = "config.api.server_error"
