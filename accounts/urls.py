"""Account pages, the dashboard shell and GET /v1/account.

Mounted after billing's and imaging's URLs, so /dashboard/billing/ belongs to billing
(and ``/``, the landing page, to the console).
URL names are global (no namespace) because templates across apps link to them.
"""

from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.generic import RedirectView

from accounts import views
from accounts.api import AccountView

urlpatterns = [
    path("v1/account", AccountView.as_view(), name="api-account"),
    path("signup/", views.signup, name="signup"),
    path("verify-email/send/", views.send_verification, name="send-verification"),
    path("verify-email/<str:token>/", views.verify_email, name="verify-email"),
    path("login/", views.ThrottledLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password-reset/", views.ThrottledPasswordResetView.as_view(), name="password_reset"),
    path(
        "password-reset/sent/",
        auth_views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "password-reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(post_reset_login=False),
        name="password_reset_confirm",
    ),
    path(
        "password-reset/complete/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("dashboard/keys/", views.keys, name="keys"),
    path("dashboard/keys/<int:key_id>/revoke/", views.revoke, name="revoke-key"),
    # Issue 2's "Usage" page became the console overview; old links keep working.
    path("dashboard/usage/", RedirectView.as_view(pattern_name="console:overview"), name="usage"),
]
