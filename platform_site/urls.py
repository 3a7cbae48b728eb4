"""Root URLs. Each app owns its own urls module; this file only mounts them."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("imaging.urls")),
    path("", include("billing.urls")),
    # The console (overview, renders, playground, docs, staff) before accounts.
    path("", include("imaging.dashboard.urls")),
    path("", include("accounts.urls")),
]
