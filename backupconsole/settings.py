"""Settings for backupconsole.

Two ways to run with one code path:

* **embedded** (the default, no environment needed): SQLite in WAL mode inside the data directory,
  an in-process Celery broker and worker, the in-memory channel layer. ``make run`` uses this.
* **production** (``BACKUPCONSOLE_MODE=production``): PostgreSQL, Redis channel layer, Redis or
  RabbitMQ Celery broker, separate ``celery worker`` proxies and ``celery beat``. Required settings
  fail fast; see docs/deploy.md for every variable.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from backupconsole import env

BASE_DIR = Path(__file__).resolve().parent.parent
MODE = env.get_choice("BACKUPCONSOLE_MODE", "embedded", ("embedded", "production"))
PRODUCTION = MODE == "production"
EMBEDDED = not PRODUCTION

DATA_DIR = Path(env.get_str("BACKUPCONSOLE_DATA_DIR", str(BASE_DIR / "data")) or "data")
if EMBEDDED:
    (DATA_DIR / "static").mkdir(parents=True, exist_ok=True)


def _embedded_secret(filename: str, nbytes: int) -> str:
    """A secret generated on first start and kept (mode 0600) in the data directory."""
    path = DATA_DIR / filename
    if path.exists():
        return path.read_text().strip()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    path.touch(mode=0o600)
    path.write_text(value)
    return value


def _secret(name: str, filename: str, nbytes: int) -> str:
    if PRODUCTION:
        return env.require_str(name)
    return env.get_str(name) or _embedded_secret(filename, nbytes)


SECRET_KEY = _secret("BACKUPCONSOLE_SECRET_KEY", "secret_key", 50)
# Keys that encrypt hypervisor and repository credentials at rest. The first one encrypts; all
# are tried when decrypting, so a key is rotated by putting a new one first.
if PRODUCTION:
    CREDENTIAL_KEYS = env.get_list("BACKUPCONSOLE_CREDENTIAL_KEYS", [])
    if not CREDENTIAL_KEYS:
        raise ImproperlyConfigured(
            "BACKUPCONSOLE_CREDENTIAL_KEYS must hold at least one key (see docs/deploy.md)."
        )
else:
    CREDENTIAL_KEYS = env.get_list("BACKUPCONSOLE_CREDENTIAL_KEYS", []) or [
        _embedded_secret("credential_key", 32)
    ]

DEBUG = env.get_bool("BACKUPCONSOLE_DEBUG", default=False)
ALLOWED_HOSTS = env.get_list(
    "BACKUPCONSOLE_ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost", "[::1]"]
)
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("BACKUPCONSOLE_ALLOWED_HOSTS must name the console's host names.")
CSRF_TRUSTED_ORIGINS = env.get_list("BACKUPCONSOLE_CSRF_TRUSTED_ORIGINS", [])

# No django.contrib.admin: it would write tables behind the services (no validation, no audit).
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_celery_beat",
    "backupconsole",
    "inventory",
    "storage",
    "jobs",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "backupconsole.audit.AuditContextMiddleware",
    "frontend.middleware.TimeZoneMiddleware",  # times in the browser's zone (a cookie)
]

ROOT_URLCONF = "backupconsole.urls"
ASGI_APPLICATION = "backupconsole.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "frontend.context_processors.navigation",
            ],
        },
    },
]

# --- database --------------------------------------------------------------------------------
_database_url = env.get_str("DATABASE_URL")
if PRODUCTION and not _database_url:
    raise ImproperlyConfigured("DATABASE_URL must point at PostgreSQL in production mode.")
if _database_url:
    DATABASES = {"default": dj_database_url.parse(_database_url, conn_max_age=60)}
    if PRODUCTION and DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured("Production mode needs PostgreSQL (DATABASE_URL=postgres://…).")
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DATA_DIR / "backupconsole.sqlite3"),
            "OPTIONS": {
                # WAL lets the web server read while worker threads write; IMMEDIATE avoids
                # "database is locked" when a read transaction later upgrades to a write.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- channels (live progress) ----------------------------------------------------------------
REDIS_URL = env.get_str("REDIS_URL")
if PRODUCTION and not REDIS_URL:
    raise ImproperlyConfigured("REDIS_URL must be set in production mode (the channel layer).")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 reads with a 5 s socket timeout by default, which aborts the layer's
            # blocking 5 s BZPOPMIN and crashes idle websocket consumers (redis-py#4091).
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30}],
                "prefix": "backupconsole",
            },
        }
    }
else:
    # Embedded mode: worker threads of this process publish to it (see embedded.py).
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "backupconsole.embedded.ThreadSafeInMemoryChannelLayer"}
    }

# --- celery (backup proxies) -----------------------------------------------------------------
CELERY_BROKER_URL = env.get_str("CELERY_BROKER_URL", None if PRODUCTION else "memory://")
if not CELERY_BROKER_URL:
    raise ImproperlyConfigured("CELERY_BROKER_URL must name Redis or RabbitMQ in production mode.")
CELERY_TASK_IGNORE_RESULT = True  # run state lives in the database, not in a result backend
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = False  # a lost run is failed by the heartbeat, not replayed
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "console"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Embedded mode: how many worker threads the all-in-one process runs.
EMBEDDED_WORKER_THREADS = env.get_int("BACKUPCONSOLE_WORKER_THREADS", 4, minimum=1)
PROXY_HEARTBEAT_SECONDS = env.get_int("BACKUPCONSOLE_PROXY_HEARTBEAT_SECONDS", 30, minimum=5)
# vSphere transports this proxy offers besides the network (inventory/vmware/transports.py):
# HotAdd needs the proxy's own VM (moref, BIOS/instance UUID, or "auto"); SAN needs read-only
# mounts of datastores' LUNs, "datastore=/path,…".
VMWARE_HOTADD_VM = env.get_str("BACKUPCONSOLE_VMWARE_HOTADD_VM", "") or ""
VMWARE_SAN_PATHS = dict(
    item.split("=", 1) for item in env.get_list("BACKUPCONSOLE_VMWARE_SAN_PATHS", []) if "=" in item
)
# At most this many VMs are backed up at once per hypervisor host, and write to one repository.
HOST_MAX_VMS = env.get_int("BACKUPCONSOLE_HOST_MAX_VMS", 2, minimum=1)
REPOSITORY_MAX_WRITERS = env.get_int("BACKUPCONSOLE_REPOSITORY_MAX_WRITERS", 4, minimum=1)
# A proxy reads remote KVM hosts' backup exports over NBD with TLS, authenticating with the
# client certificate in this directory (ca-cert.pem, client-cert.pem, client-key.pem).
KVM_NBD_TLS_DIR = env.get_str("BACKUPCONSOLE_KVM_NBD_TLS_DIR", "/etc/pki/backupconsole/nbd")

# --- auth, API -------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "frontend:login"
LOGIN_REDIRECT_URL = "frontend:home"
LOGOUT_REDIRECT_URL = "frontend:login"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["backupconsole.api.permissions.RestrictedPermission"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "backupconsole.api.exceptions.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "backupconsole API",
    "DESCRIPTION": "Inventory, protection policies, runs, repositories and restore points.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI served from the installed sidecar package: the console works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "backupconsole.api.schema.drop_backend_integer_limits",
    ],
    "ENUM_NAME_OVERRIDES": {"RoleEnum": "backupconsole.roles.Role"},
}

# --- i18n, static ----------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = EMBEDDED

# --- security --------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # HTMX reads the token from the cookie
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    # TLS is terminated by the reverse proxy in front of the console (docs/deploy.md).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.get_bool("BACKUPCONSOLE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.get_int("BACKUPCONSOLE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.get_bool("BACKUPCONSOLE_HSTS_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.get_bool("BACKUPCONSOLE_HSTS_PRELOAD", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
        raise ImproperlyConfigured(
            "BACKUPCONSOLE_SECRET_KEY must be at least 50 random characters."
        )

# --- logging ---------------------------------------------------------------------------------
LOG_LEVEL = env.get_choice(
    "BACKUPCONSOLE_LOG_LEVEL", "info", ("debug", "info", "warning", "error")
).upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# Default options for protection policies, overridden by a policy, then per VM.
POLICY_OPTION_DEFAULTS = {
    "consistency": "application",
    "transport_order": ["hotadd", "san", "nbdssl", "nbd"],
    "max_parallel_vms": 4,
    "bandwidth_limit_mbps": None,
}
# Bound on how long testing a hypervisor connection may take.
CONNECTION_TEST_TIMEOUT_SECONDS = env.get_int(
    "BACKUPCONSOLE_CONNECTION_TEST_TIMEOUT", 10, minimum=1
)

# How often due policy schedules are looked for; cron has minute resolution, so a firing is at
# most this late.
SCHEDULE_TICK_SECONDS = env.get_int("BACKUPCONSOLE_SCHEDULE_TICK_SECONDS", 20, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "dispatch-due-schedules": {
        "task": "jobs.tasks.dispatch_schedules",
        "schedule": float(SCHEDULE_TICK_SECONDS),
    },
    "reap-lost-runs": {"task": "jobs.tasks.reap_lost_runs", "schedule": 30.0},
    "sweep-artifacts": {"task": "jobs.tasks.sweep_artifacts", "schedule": 120.0},
    "sync-inventory": {"task": "inventory.tasks.sync_all", "schedule": 900.0},
}
