"""Settings, read from the environment with local defaults that need no setup.

Every knob a deployment turns is an environment variable; the README's Configuration
table lists them. Local development gets SQLite, the local disk for media and a Redis
on 127.0.0.1. Production sets DEBUG=0, SECRET_KEY, DATABASE_URL and ALLOWED_HOSTS.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


# --- Core -------------------------------------------------------------------------

DEBUG = env_bool("DEBUG", True)
# Public (it is in this file), so it signs nothing that matters: the web server refuses
# it unless it listens on loopback only (platform_site.serving, gunicorn.conf.py).
DEVELOPMENT_SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production-0123456789abcdef"
SECRET_KEY = env("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = DEVELOPMENT_SECRET_KEY

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
SITE_URL = env("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_rq",
    "accounts",
    "billing",
    "imaging",
]

MIDDLEWARE = [
    "platform_site.serving.DevelopmentKeyGuard",
    "platform_site.middleware.RequestIdMiddleware",
    "platform_site.metrics.RequestMetricsMiddleware",
    "platform_site.middleware.ApiErrorShapeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "platform_site.static_files.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "platform_site.middleware.StaffLogContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "platform_site.urls"
WSGI_APPLICATION = "platform_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "billing.context_processors.verification_notice",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
# SQLite by default (zero setup); PostgreSQL when DATABASE_URL is set. Row locks
# (select_for_update) are no-ops on SQLite, so CI runs the suite on PostgreSQL.

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite is for one machine (production runs PostgreSQL), but it must hold under a
    # customer's fan-out there too. Row locks are no-ops on SQLite, so every transaction
    # takes the write lock when it begins (IMMEDIATE): a reserve's read-check-write can
    # then never interleave with another's, and a writer never meets SQLITE_BUSY halfway
    # through (which a busy timeout cannot retry). WAL lets readers go on meanwhile, and
    # the busy timeout makes writers queue instead of failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update({
        "transaction_mode": "IMMEDIATE",
        "timeout": env_float("SQLITE_BUSY_TIMEOUT_SECONDS", 30.0),
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    })
elif env_int("DB_POOL_MAX_SIZE", 8) > 0:
    # PostgreSQL through a connection pool per process (psycopg_pool), not one
    # persistent connection per thread: under the ASGI server each request's
    # synchronous work runs in a thread of its own, and a render's wait holds no
    # connection at all. DB_POOL_MAX_SIZE bounds what one web process can open
    # (2 processes x 8 stay far below PostgreSQL's default max_connections of 100);
    # a request finding all of them busy waits DB_POOL_TIMEOUT_SECONDS for one.
    # Pooling replaces persistent connections (Django refuses both), so
    # DB_CONN_MAX_AGE applies only with DB_POOL_MAX_SIZE=0.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env_int("DB_POOL_MIN_SIZE", 1),
        "max_size": env_int("DB_POOL_MAX_SIZE", 8),
        "timeout": env_float("DB_POOL_TIMEOUT_SECONDS", 10.0),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "console:overview"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static and media -------------------------------------------------------------

STATIC_URL = "static/"
STATIC_ROOT = Path(env("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "platform_site" / "static"]

# Inputs, outputs and mattes. The GPU worker reads the same variables
# (gpu_worker.storage), so both sides agree on where a storage key lives.
STORAGE_DIR = Path(env("STORAGE_DIR", str(BASE_DIR / "var" / "media")))
# Files both sides write are readable by the other (the worker and the web server may
# run as different users on one shared disk); the GPU worker reads the same variable.
FILE_UPLOAD_PERMISSIONS = int(env("STORAGE_FILE_MODE", "0644"), 8)
S3_BUCKET = env("S3_BUCKET")
S3_ENDPOINT_URL = env("S3_ENDPOINT_URL")
S3_REGION = env("S3_REGION")
S3_ACCESS_KEY_ID = env("S3_ACCESS_KEY_ID")
S3_SECRET_ACCESS_KEY = env("S3_SECRET_ACCESS_KEY")

STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(STORAGE_DIR)},
    },
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
if S3_BUCKET:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": S3_ENDPOINT_URL or None,
            "region_name": S3_REGION or None,
            "access_key": S3_ACCESS_KEY_ID or None,
            "secret_key": S3_SECRET_ACCESS_KEY or None,
            "default_acl": None,
            "querystring_auth": True,
            "file_overwrite": False,
            "signature_version": "s3v4",
        },
    }

# --- Redis and RQ -----------------------------------------------------------------

REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6379/0")
# Explicit on every client (imaging.redis_clients; the GPU worker reads the same names):
# a black-holed Redis costs a request seconds, not minutes, and blocking reads get a
# read timeout above their block time whatever the client library defaults to.
REDIS_CONNECT_TIMEOUT_SECONDS = env_float("REDIS_CONNECT_TIMEOUT_SECONDS", 2.0)
REDIS_SOCKET_TIMEOUT_SECONDS = env_float("REDIS_SOCKET_TIMEOUT_SECONDS", 5.0)
RQ_JOB_TIMEOUT = env_int("RQ_JOB_TIMEOUT", 300)
_RQ_URL = f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}" + (
    f"socket_connect_timeout={REDIS_CONNECT_TIMEOUT_SECONDS:g}&socket_timeout={REDIS_SOCKET_TIMEOUT_SECONDS:g}")
RQ_QUEUES = {
    # Django-side jobs (settlement, housekeeping).
    "default": {"URL": _RQ_URL, "DEFAULT_TIMEOUT": 60, "SERIALIZER": "rq.serializers.JSONSerializer"},
    # Renders; consumed by `python -m gpu_worker`, which never imports Django.
    "gpu": {"URL": _RQ_URL, "DEFAULT_TIMEOUT": RQ_JOB_TIMEOUT, "SERIALIZER": "rq.serializers.JSONSerializer"},
}

# --- E-mail ---------------------------------------------------------------------------

EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "PixelAPI <no-reply@localhost>")
# The sign-up grant waits for the address to be verified through a signed link.
EMAIL_VERIFICATION_MAX_AGE_SECONDS = env_int("EMAIL_VERIFICATION_MAX_AGE_SECONDS", 3 * 24 * 3600)

# --- Limits on the account forms (accounts.throttle; 429 with Retry-After) -------------
# Counted per client address (see TRUSTED_PROXY_COUNT) and per account or address.

TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
LOGIN_FAILURES_PER_IP = env_int("LOGIN_FAILURES_PER_IP", 20)
LOGIN_FAILURES_PER_ACCOUNT = env_int("LOGIN_FAILURES_PER_ACCOUNT", 5)
LOGIN_LOCKOUT_SECONDS = env_int("LOGIN_LOCKOUT_SECONDS", 900)
SIGNUPS_PER_IP_PER_HOUR = env_int("SIGNUPS_PER_IP_PER_HOUR", 10)
SIGNUPS_PER_ADDRESS_PER_HOUR = env_int("SIGNUPS_PER_ADDRESS_PER_HOUR", 3)
PASSWORD_RESETS_PER_IP_PER_HOUR = env_int("PASSWORD_RESETS_PER_IP_PER_HOUR", 10)
PASSWORD_RESETS_PER_ACCOUNT_PER_HOUR = env_int("PASSWORD_RESETS_PER_ACCOUNT_PER_HOUR", 3)
VERIFICATION_EMAILS_PER_ACCOUNT_PER_HOUR = env_int("VERIFICATION_EMAILS_PER_ACCOUNT_PER_HOUR", 3)

# --- API ------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "platform_site.api_errors.exception_handler",
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "platform_site.api_errors.JsonDespiteAccept",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "PixelAPI",
    "DESCRIPTION": "Replace the background of an image: exact subject, generated scene.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Both readers are served from this site (drf-spectacular-sidecar) and make no
    # request elsewhere; templates/drf_spectacular/ drops Redoc's Google Fonts link.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # validatorUrl: None: Swagger UI would otherwise ask validator.swagger.io about the schema.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    # Redoc's default theme names Montserrat and Roboto; the site's own system fonts instead.
    "REDOC_UI_SETTINGS": {
        "theme": {
            "typography": {
                "fontFamily": 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif',
                "headings": {"fontFamily": 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", '
                                           'Arial, sans-serif'},
                "code": {"fontFamily": 'ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", '
                                       'monospace'},
            },
        },
    },
    # The request's output_format and the render's format are one choice set, one name.
    "ENUM_NAME_OVERRIDES": {"OutputFormatEnum": "imaging.models.OutputFormat"},
}

# API keys: a user may hold at most this many active keys.
API_KEY_PREFIX = "pxl_live_"
MAX_ACTIVE_API_KEYS = env_int("MAX_ACTIVE_API_KEYS", 10)
API_KEY_LAST_USED_RESOLUTION_SECONDS = env_int("API_KEY_LAST_USED_RESOLUTION_SECONDS", 300)

# --- Credits --------------------------------------------------------------------------

CREDITS_PER_RENDER = 22
SIGNUP_GRANT_CREDITS = env_int("SIGNUP_GRANT_CREDITS", 220)
HOLD_TTL_SECONDS = env_int("HOLD_TTL_SECONDS", 900)

STRIPE_SECRET_KEY = env("STRIPE_SECRET_KEY")
STRIPE_WEBHOOK_SECRET = env("STRIPE_WEBHOOK_SECRET")
STRIPE_API_VERSION = "2026-10-28.endive"

# --- Security -------------------------------------------------------------------------

SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Preloading is a commitment for the whole domain and every subdomain, made by the
# domain's owner at hstspreload.org, not a default a project can take for them; so
# `check --deploy` is not asked to nag about it (security.W021) unless it is opted in.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY", False) else None
)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# LOG_FORMAT=json: one JSON object per line; else readable text. Either way each line
# carries the request id, render id and (staff) user id of its context (gpu_worker.logs
# is standard-library only, shared with the worker).
LOG_FORMAT = env("LOG_FORMAT", "text")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "gpu_worker.logs.ContextFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s%(context)s"},
        "json": {"()": "gpu_worker.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["context"],
                             "formatter": "json" if LOG_FORMAT.strip().lower() == "json" else "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
}

# /metrics (platform_site.metrics): 404 while empty, else needs "Authorization: Bearer <token>".
METRICS_TOKEN = env("METRICS_TOKEN", "")

# --- Fetching image_url (imaging.fetch) ---------------------------------------------
# The server fetches URLs that strangers chose: only public unicast addresses, unless
# this development-only switch is on (`check --deploy` warns about it).

FETCH_ALLOW_PRIVATE_ADDRESSES = env_bool("FETCH_ALLOW_PRIVATE_ADDRESSES", False)
# Empty: any public host. Else only these names (".example.com": its subdomains), checked
# before any DNS lookup; the live fuzz run sets one that never resolves.
FETCH_ALLOWED_HOSTS = env_list("FETCH_ALLOWED_HOSTS", "")
FETCH_ALLOWED_PORTS = [int(p) for p in env_list("FETCH_ALLOWED_PORTS", "80,443")]
FETCH_TIMEOUT_SECONDS = env_float("FETCH_TIMEOUT_SECONDS", 10.0)
FETCH_CONNECT_TIMEOUT_SECONDS = env_float("FETCH_CONNECT_TIMEOUT_SECONDS", 3.0)
FETCH_MAX_BYTES = env_int("FETCH_MAX_BYTES", 25_000_000)
FETCH_MAX_REDIRECTS = env_int("FETCH_MAX_REDIRECTS", 3)
MAX_IMAGE_PIXELS = env_int("MAX_IMAGE_PIXELS", 40_000_000)
MAX_IMAGE_SIDE = env_int("MAX_IMAGE_SIDE", 12_000)

# --- Renders (imaging) ---------------------------------------------------------------

RENDER_SYNC_WINDOW_SECONDS = env_float("RENDER_SYNC_WINDOW_SECONDS", 55.0)
RENDER_DEADLINE_SECONDS = env_int("RENDER_DEADLINE_SECONDS", 600)
OUTPUT_URL_TTL_SECONDS = env_int("OUTPUT_URL_TTL_SECONDS", 24 * 3600)
RETENTION_DAYS = env_int("RETENTION_DAYS", 30)
IDEMPOTENCY_TTL_SECONDS = 24 * 3600
API_RATE_LIMIT_PER_MINUTE = env_int("API_RATE_LIMIT_PER_MINUTE", 6000)
API_MAX_RENDERS_IN_FLIGHT_PER_KEY = env_int("API_MAX_RENDERS_IN_FLIGHT_PER_KEY", 64)
# Across all of a customer's keys (and the playground): by default a customer gets what
# one key gets, however many keys they make.
API_RATE_LIMIT_PER_MINUTE_PER_CUSTOMER = env_int(
    "API_RATE_LIMIT_PER_MINUTE_PER_CUSTOMER", API_RATE_LIMIT_PER_MINUTE)
API_MAX_RENDERS_IN_FLIGHT_PER_CUSTOMER = env_int(
    "API_MAX_RENDERS_IN_FLIGHT_PER_CUSTOMER", API_MAX_RENDERS_IN_FLIGHT_PER_KEY)
# Requests whose well-formed key is unknown, per client address, before the address is
# refused without a database lookup.
API_UNKNOWN_KEYS_PER_MINUTE_PER_IP = env_int("API_UNKNOWN_KEYS_PER_MINUTE_PER_IP", 30)
# The sweeper re-enqueues an open render whose job Redis no longer has, once it is
# this old (younger ones may be between their commit and their enqueue).
RENDER_REQUEUE_AFTER_SECONDS = env_float("RENDER_REQUEUE_AFTER_SECONDS", 30.0)
# How long the settle job waits for rq to record the outcome of the job that queued it.
RENDER_SETTLE_WAIT_SECONDS = env_float("RENDER_SETTLE_WAIT_SECONDS", 10.0)

# Webhooks
# Signed completion webhooks (imaging.webhooks): delivered by the Django-side rq worker
# through the image fetcher's address guard; retried on this schedule (seconds, the
# last step repeating, ±10 % jitter) until WEBHOOK_RETRY_HOURS after each delivery began.
WEBHOOK_TIMEOUT_SECONDS = env_float("WEBHOOK_TIMEOUT_SECONDS", 5.0)
WEBHOOK_RETRY_HOURS = env_float("WEBHOOK_RETRY_HOURS", 24.0)
WEBHOOK_RETRY_SCHEDULE = [10, 30, 120, 600, 1800, 3600, 7200]
WEBHOOK_RETENTION_DAYS = env_int("WEBHOOK_RETENTION_DAYS", 30)
WEBHOOK_PREVIOUS_SECRET_HOURS = env_float("WEBHOOK_PREVIOUS_SECRET_HOURS", 24.0)
WEBHOOK_MAX_ENDPOINTS = env_int("WEBHOOK_MAX_ENDPOINTS", 10)
