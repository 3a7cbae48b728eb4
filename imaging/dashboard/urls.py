"""The console's pages, and the site's landing page and favicon. Mount at the site
root before accounts.urls, whose placeholder overview (/dashboard/) and docs (/docs/)
these replaced."""

from django.urls import path

from imaging.dashboard.views import docs, overview, playground, renders, site, staff
from imaging.webhooks import views as webhooks

app_name = "console"

urlpatterns = [
    path("", site.landing, name="landing"),
    path("favicon.ico", site.favicon, name="favicon"),
    path("dashboard/", overview.overview, name="overview"),
    path("dashboard/renders/", renders.gallery, name="renders"),
    path("dashboard/renders/<str:public_id>/", renders.detail, name="render-detail"),
    path("dashboard/renders/<str:public_id>/status", renders.status, name="render-status"),
    path("dashboard/renders/<str:public_id>/input.png", renders.input_image, name="render-input"),
    path("dashboard/playground/", playground.playground, name="playground"),
    path("dashboard/webhooks/", webhooks.endpoints, name="webhooks"),
    path("dashboard/webhooks/<str:public_id>/", webhooks.detail, name="webhook-detail"),
    path("dashboard/webhooks/<str:public_id>/roll-secret", webhooks.roll_secret, name="webhook-roll-secret"),
    path("dashboard/webhooks/<str:public_id>/toggle", webhooks.toggle, name="webhook-toggle"),
    path("dashboard/webhooks/<str:public_id>/delete", webhooks.delete, name="webhook-delete"),
    path("dashboard/webhooks/<str:public_id>/test", webhooks.send_test, name="webhook-test"),
    path("dashboard/webhooks/<str:public_id>/deliveries/<int:delivery_id>/send-again", webhooks.send_again,
         name="webhook-send-again"),
    path("docs/", docs.docs, name="docs"),
    path("staff/usage/", staff.usage, name="staff-usage"),
    path("staff/accounts/<int:user_id>/", staff.account, name="staff-account"),
]
