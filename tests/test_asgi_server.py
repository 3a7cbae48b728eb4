"""The rest of the site under the ASGI server: pages, static files, admin, Stripe's webhook.

The render API's async wait is tested in ``test_render_wait_async.py``; this is the
promise that everything else keeps working unchanged on the same server (gunicorn with
uvicorn workers, DEBUG off, collected static files, as in production).
"""

from __future__ import annotations

import json
import subprocess

import pytest
from django.db import connection

from tests.fault_scenarios import BASE_ENV
from tests.live_platform import PY, ROOT, Platform, database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

_SESSION = """
import json
from django.test import Client
from accounts.models import User
user = User.objects.create_user("asgi-pages@example.com", "correct horse battery")
client = Client()
client.force_login(user)
print(json.dumps({"session": client.cookies["sessionid"].value}))
"""


def test_the_dashboard_admin_static_files_and_stripe_webhook_answer_under_the_asgi_server(tmp_path):
    static_root = tmp_path / "static"
    platform = Platform(tmp_path, database_url(connection.settings_dict), STATIC_ROOT=str(static_root),
                        STRIPE_WEBHOOK_SECRET="whsec_asgi_test", **BASE_ENV)
    subprocess.run([PY, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=platform.env, check=True,
                   timeout=120)
    session = json.loads(subprocess.run([PY, "manage.py", "shell", "-c", _SESSION], cwd=ROOT, env=platform.env,
                                        check=True, capture_output=True, text=True,
                                        timeout=120).stdout.strip().splitlines()[-1])["session"]
    manifest = json.loads((static_root / "staticfiles.json").read_text())["paths"]
    static_path = "/static/" + next(iter(manifest.values()))
    try:
        platform.start_redis()
        platform.start_web(workers=1)
        cookie = {"Cookie": f"sessionid={session}"}
        dashboard = platform.request("GET", "/dashboard/", headers=cookie)
        keys = platform.request("GET", "/dashboard/keys/", headers=cookie)
        signed_out = platform.request("GET", "/dashboard/")
        admin = platform.request("GET", "/admin/login/")
        static = platform.request("GET", static_path)
        stripe = platform.request("POST", "/billing/stripe/webhook/", body=b"{}",
                                  headers={"Content-Type": "application/json", "Stripe-Signature": "t=1,v1=bad"})
        landing = platform.request("GET", "/")
    finally:
        platform.stop()
    assert dashboard.status == 200, dashboard.describe()  # signed in: the same page redirects signed out
    assert keys.status == 200, keys.describe()
    assert signed_out.status == 302 and "login" in signed_out.headers["location"]
    assert admin.status == 200, admin.describe()
    assert static.status == 200 and static.headers.get("cache-control"), static.describe()
    assert stripe.status == 400, stripe.describe()  # refused signature: not a 500, not a redirect
    assert landing.status == 200, landing.describe()
