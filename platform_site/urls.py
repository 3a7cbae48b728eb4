"""Root URLs. Each app owns its own urls module; this file only mounts them and names
the error handlers (styled pages for people, the JSON error shape under /v1/)."""

from django.contrib import admin
from django.urls import include, path, re_path

from imaging.dashboard.views.errors import api_not_found
from platform_site.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("", include("imaging.urls")),
    path("", include("billing.urls")),
    # The console (landing page, overview, renders, playground, docs, staff) before accounts.
    path("", include("imaging.dashboard.urls")),
    path("", include("accounts.urls")),
    # Last: any other /v1/ path is the API's JSON 404, never an HTML page or a redirect.
    re_path(r"^v1/(?P<rest>.*)$", api_not_found),
]

handler403 = "imaging.dashboard.views.errors.permission_denied"
handler404 = "imaging.dashboard.views.errors.page_not_found"
handler500 = "imaging.dashboard.views.errors.server_error"
