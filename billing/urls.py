from django.urls import path

from billing import views

app_name = "billing"
urlpatterns = [
    path("dashboard/billing/", views.index, name="index"),
    path("dashboard/billing/checkout/", views.checkout, name="checkout"),
    path("dashboard/billing/ledger.csv", views.ledger_csv, name="ledger_csv"),
    path("dashboard/billing/purchases/<str:reference>/", views.purchase_status, name="purchase"),
    path("billing/stripe/webhook/", views.stripe_webhook, name="stripe_webhook"),
]
