"""Test settings: the real settings plus isolation (own Redis, own storage, one thread)."""

import os
import tempfile

# Oversubscription on 2 cores slowed tiny-model runs 30-70x: one thread everywhere.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tests.redis_server import test_redis_url  # noqa: E402

os.environ["REDIS_URL"] = test_redis_url()
# Subprocesses (the GPU worker) inherit these, so both sides see the same storage.
os.environ["STORAGE_DIR"] = tempfile.mkdtemp(prefix="test-storage-")
os.environ.pop("S3_BUCKET", None)

from platform_site.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# The suite signs up, signs in and sends unknown keys from 127.0.0.1 far more often than
# a person would; the limits stay in the path (their Redis calls run) but out of reach.
# Tests of those limits set their own.
for _limit in ("LOGIN_FAILURES_PER_IP", "LOGIN_FAILURES_PER_ACCOUNT", "SIGNUPS_PER_IP_PER_HOUR",
               "SIGNUPS_PER_ADDRESS_PER_HOUR", "PASSWORD_RESETS_PER_IP_PER_HOUR",
               "PASSWORD_RESETS_PER_ACCOUNT_PER_HOUR", "VERIFICATION_EMAILS_PER_ACCOUNT_PER_HOUR",
               "API_UNKNOWN_KEYS_PER_MINUTE_PER_IP"):
    globals()[_limit] = 1_000_000
STRIPE_SECRET_KEY = ""
STRIPE_WEBHOOK_SECRET = ""
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Static files are served from the finders in tests; no collectstatic run needed.
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True
# The GPU worker processes tests start render scenes with the tiny untrained models
# (no weights can be downloaded here), on a small canvas to keep them fast.
os.environ.setdefault("SCENE_MODEL", "tiny-demo")
os.environ.setdefault("SCENE_WORKING_PIXELS", "65536")

# SQLite: a file, not the shared in-memory database Django's test runner would use, so
# that the real processes some tests start (gunicorn, the rq workers, the sweeper)
# share the test database with the test, as they would on PostgreSQL.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": os.path.join(tempfile.mkdtemp(prefix="test-db-"), "test.sqlite3"),
    }
