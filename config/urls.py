from django.contrib import admin
from django.urls import path

admin.site.site_header = "Fulfilment back office"
admin.site.site_title = "Fulfilment back office"
admin.site.index_title = "Operations"

urlpatterns = [
    path("admin/", admin.site.urls),
]
