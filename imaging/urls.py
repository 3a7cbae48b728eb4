"""The render API, signed file links, and the OpenAPI schema and docs."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from imaging.api import RenderDetailView, replace_background
from imaging.schema import SCHEMA_SETTINGS
from imaging.views import SignedFileView

app_name = "imaging"

urlpatterns = [
    path("v1/image/replace-background", replace_background, name="replace-background"),
    path("v1/renders/<str:render_id>", RenderDetailView.as_view(), name="render-detail"),
    # Two segments, as every servable key has (imaging.storage_keys): deeper paths are 404.
    path("v1/files/<str:folder>/<str:name>", SignedFileView.as_view(), name="signed-file"),
    path("v1/schema/", SpectacularAPIView.as_view(custom_settings=SCHEMA_SETTINGS), name="schema"),
    path("v1/docs/", SpectacularSwaggerView.as_view(url_name="imaging:schema"), name="docs"),
    path("v1/redoc/", SpectacularRedocView.as_view(url_name="imaging:schema"), name="redoc"),
]
