"""Settings of the shop site, read from environment variables.

=============================  ==================================================================
variable                       meaning (default)
=============================  ==================================================================
JIANSUO_DATA_DIR               folder for the database, media, index and query uploads (``./var``)
JIANSUO_SECRET_KEY             Django's secret key (required unless JIANSUO_DEBUG is on)
JIANSUO_DEBUG                  1 for development: tracebacks, relaxed security (0)
JIANSUO_ALLOWED_HOSTS          comma-separated host names (``localhost,127.0.0.1``)
JIANSUO_CSRF_TRUSTED_ORIGINS   comma-separated origins, e.g. ``https://shop.example.com``
DATABASE_URL                   any dj-database-url URL (``sqlite:///$JIANSUO_DATA_DIR/db.sqlite3``);
                               ``postgres://...`` (with pgvector) selects the pgvector search backend
JIANSUO_MEDIA_ROOT             product photos (``$JIANSUO_DATA_DIR/media``)
JIANSUO_STATIC_ROOT            ``collectstatic`` target (``$JIANSUO_DATA_DIR/static``)
JIANSUO_INDEX                  the search index folder (``$JIANSUO_DATA_DIR/catalog.idx``)
JIANSUO_MODEL                  feature extractor of a new index (``efficientnet-lite0``)
JIANSUO_PRECISION              its network precision: ``fp32`` or ``int8`` (the quantised network;
                               see the README); unset: the model's default (int8 for
                               efficientnet-lite0); a store of the other precision must be rebuilt
JIANSUO_PUBLIC_SEARCH          1 lets visitors search without an account (0)
JIANSUO_MAX_UPLOAD_MB          largest accepted upload, in MB (10)
JIANSUO_HTTPS                  1 when served over HTTPS: secure cookies, HSTS, redirect (= not DEBUG)
JIANSUO_SERVE_FILES            1 makes the site serve /media/ (product photos) itself (= DEBUG); in
                               production a web server (nginx) serves them. /static/ is served by
                               WhiteNoise from STATIC_ROOT (``serve`` collects it)
JIANSUO_DRAIN_MAX_MB           an oversized upload is read and discarded up to this size before its
                               413 answer, so the client is not cut off mid-send (64)
JIANSUO_PROXY_SSL_HEADER       1 trusts X-Forwarded-Proto from a reverse proxy (0)
JIANSUO_DEMO                   1 shows the "demo catalogue" banner (0)
JIANSUO_EMAIL_HOST, _PORT,     SMTP server for password-reset mail; without a host, mail is
_USER, _PASSWORD, _USE_TLS     printed on the console
JIANSUO_FROM_EMAIL             sender address (``jiansuo@localhost``)
JIANSUO_SEARCH_MODE            how searches run, as the CLI's ``--mode``: ``auto`` (exact for a small
                               catalogue, the store's ANN index from JIANSUO_ANN_THRESHOLD photos),
                               ``exact``, ``ann``, ``hash``; PostgreSQL also ``pca`` (``auto``)
JIANSUO_SEARCH_EF              ANN beam width, the recall/speed knob (0: the store's default, 128 for
                               an index folder, 40 for PostgreSQL's ``hnsw.ef_search``)
JIANSUO_SEARCH_CANDIDATES      candidates re-ranked by ann/hash/pca searches (0: the mode's default)
JIANSUO_PG_TABLE               PostgreSQL: the vector store's table (``jiansuo_vectors``)
JIANSUO_EMBED_BATCH            query photos a web process embeds in one network call when its
                               request threads embed at the same time (8; 1: one at a time)
JIANSUO_EMBED_WAIT_MS          how long a query photo waits for others to share its call (0: it takes
                               the photos already waiting, so a photo alone never waits)
JIANSUO_BROKER_URL             Celery broker (e.g. ``redis://host:6379/0``); set, photos are embedded
                               by worker processes; unset, in the process that stores them
JIANSUO_TASK_QUEUE             the workers' queue name (``jiansuo-index``)
JIANSUO_TASK_PHOTOS            photos per indexing task (64)
JIANSUO_TASK_VISIBILITY_TIMEOUT  seconds after which a task of a vanished worker runs again (900)
JIANSUO_HISTORY_DAYS           days a signed-in user's past searches ("My searches") are kept (30)
JIANSUO_MIN_SIMILARITY         cosine similarity a result needs to be shown on the site's pages (search
                               results, "similar products"), and the API's default ``min_score``;
                               below it a product is no close match. -1 shows everything (0.62)
JIANSUO_VERY_SIMILAR           cosine similarity from which a result is labelled "very similar" rather
                               than "similar" (0.91)
JIANSUO_CAPTCHA_AUDIO          1 offers the registration captcha as speech too, when ``flite`` is
                               installed (1)
=============================  ==================================================================
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def _env_bool(name: str, default: bool) -> bool:
    value = _env(name)
    if not value:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be 1 or 0, not {value!r}")


def _env_list(name: str, default: str) -> list[str]:
    return [v.strip() for v in _env(name, default).split(",") if v.strip()]


PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = Path(_env("JIANSUO_DATA_DIR", "var")).resolve()

DEBUG = _env_bool("JIANSUO_DEBUG", False)
SECRET_KEY = _env("JIANSUO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "set JIANSUO_SECRET_KEY (e.g. to the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`), or JIANSUO_DEBUG=1 for development"
        )
    SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"

ALLOWED_HOSTS = _env_list("JIANSUO_ALLOWED_HOSTS", "localhost,127.0.0.1")
CSRF_TRUSTED_ORIGINS = _env_list("JIANSUO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    # Before django.contrib.admin, so our registration/ templates win over the admin's.
    "jiansuo.web.accounts",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc as static files of the site (no CDN)
    "jiansuo.web.catalog",
    "jiansuo.web.api",
    "captcha",
    "jiansuo.web.history",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files from STATIC_ROOT (``serve`` collects them), compressed and cached, without DEBUG.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    # Before anything reads the request body (CSRF does), so an oversized upload is refused unread.
    "jiansuo.web.catalog.middleware.UploadLimitMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "jiansuo.web.catalog.middleware.StoreErrorMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "jiansuo.web.urls"
WSGI_APPLICATION = "jiansuo.web.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [PACKAGE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "jiansuo.web.catalog.context.site",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        _env("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}"), conn_max_age=60,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Imports write while the site reads: wait for the lock instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 30})
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    if DATABASES["default"]["NAME"] != ":memory:":
        Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The pgvector tables are created on PostgreSQL only (SQLite keeps its vectors in the index folder).
DATABASE_ROUTERS = ["jiansuo.web.catalog.routers.PgVectorTablesRouter"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "catalog:home"
LOGOUT_REDIRECT_URL = "catalog:home"

# ---------------------------------------------------------------- languages
LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("zh-hans", _("Simplified Chinese"))]
LOCALE_PATHS = [PACKAGE_DIR / "locale"]
USE_I18N = True
USE_TZ = True
TIME_ZONE = _env("JIANSUO_TIME_ZONE", "Asia/Shanghai")

# ---------------------------------------------------------------- files
STATIC_URL = "static/"
STATICFILES_DIRS = [PACKAGE_DIR / "static"]
STATIC_ROOT = Path(_env("JIANSUO_STATIC_ROOT", str(DATA_DIR / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
MEDIA_URL = "media/"
MEDIA_ROOT = Path(_env("JIANSUO_MEDIA_ROOT", str(DATA_DIR / "media")))
JIANSUO_SERVE_FILES = _env_bool("JIANSUO_SERVE_FILES", DEBUG)

JIANSUO_MAX_UPLOAD_BYTES = int(float(_env("JIANSUO_MAX_UPLOAD_MB", "10")) * 1024 * 1024)
JIANSUO_DRAIN_MAX_BYTES = int(float(_env("JIANSUO_DRAIN_MAX_MB", "64")) * 1024 * 1024)
# Uploads bigger than this go to a temporary file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_PERMISSIONS = 0o644

# ---------------------------------------------------------------- search
JIANSUO_INDEX_PATH = Path(_env("JIANSUO_INDEX", str(DATA_DIR / "catalog.idx")))
JIANSUO_MODEL = _env("JIANSUO_MODEL", "efficientnet-lite0")
JIANSUO_MODEL_WEIGHTS = _env("JIANSUO_MODEL_WEIGHTS") or None
# Empty: the model's own default (int8 for efficientnet-lite0).
JIANSUO_PRECISION = _env("JIANSUO_PRECISION") or None
if JIANSUO_PRECISION not in (None, "fp32", "int8"):
    raise ImproperlyConfigured(f"JIANSUO_PRECISION must be fp32 or int8, not {JIANSUO_PRECISION!r}")
# Uploaded query photos live here (not under MEDIA_ROOT: they are private to the session).
JIANSUO_QUERY_DIR = DATA_DIR / "queries"
JIANSUO_QUERY_TTL_SECONDS = 24 * 3600
JIANSUO_PUBLIC_SEARCH = _env_bool("JIANSUO_PUBLIC_SEARCH", False)
JIANSUO_RESULTS = 24
JIANSUO_MAX_K = 100
JIANSUO_DEFAULT_CURRENCY = _env("JIANSUO_DEFAULT_CURRENCY", "CNY")
JIANSUO_DEMO = _env_bool("JIANSUO_DEMO", False)
# How the store searches (jiansuo.search: the same modes as the CLI's --mode).
JIANSUO_SEARCH_MODE = _env("JIANSUO_SEARCH_MODE", "auto")
if JIANSUO_SEARCH_MODE not in ("auto", "exact", "ann", "hash", "pca"):
    raise ImproperlyConfigured(f"JIANSUO_SEARCH_MODE must be auto, exact, ann, hash or pca, not {JIANSUO_SEARCH_MODE!r}")
JIANSUO_SEARCH_EF = int(_env("JIANSUO_SEARCH_EF", "0"))
JIANSUO_SEARCH_CANDIDATES = int(_env("JIANSUO_SEARCH_CANDIDATES", "0"))
JIANSUO_PG_TABLE = _env("JIANSUO_PG_TABLE", "jiansuo_vectors")  # the CLI reads the same variable
# Honest similarity: the pages show only results at or above JIANSUO_MIN_SIMILARITY (else "no close
# match"), labelled "very similar" from JIANSUO_VERY_SIMILAR and "similar" below it. The defaults are
# calibrated for the default model by bench/similarity.py (cosines of edited copies of a product,
# other products of its category, other categories and unrelated photos; see its section of
# bench/RESULTS.md): rerun it after a model or preprocessing change and update them here.
JIANSUO_CALIBRATED_MIN_SIMILARITY = 0.64
JIANSUO_CALIBRATED_VERY_SIMILAR = 0.88  # also the core ranking's jiansuo.search.ranking.SAME_SCORE
JIANSUO_MIN_SIMILARITY = float(_env("JIANSUO_MIN_SIMILARITY", str(JIANSUO_CALIBRATED_MIN_SIMILARITY)))
JIANSUO_VERY_SIMILAR = float(_env("JIANSUO_VERY_SIMILAR", str(JIANSUO_CALIBRATED_VERY_SIMILAR)))
if not -1.0 <= JIANSUO_MIN_SIMILARITY <= JIANSUO_VERY_SIMILAR <= 1.0:
    raise ImproperlyConfigured("need -1 <= JIANSUO_MIN_SIMILARITY <= JIANSUO_VERY_SIMILAR <= 1, not "
                               f"{JIANSUO_MIN_SIMILARITY} and {JIANSUO_VERY_SIMILAR}")
JIANSUO_EMBED_BATCH = int(_env("JIANSUO_EMBED_BATCH", "8"))
JIANSUO_EMBED_WAIT_MS = float(_env("JIANSUO_EMBED_WAIT_MS", "0"))

# ---------------------------------------------------------------- accounts
# Profile photos are private files (served to their owner by a view), like query photos.
JIANSUO_PROFILE_PHOTO_DIR = DATA_DIR / "profiles"
# Registration and password-reset captcha (django-simple-captcha), generated here, no outside service.
CAPTCHA_CHALLENGE_FUNCT = "jiansuo.web.accounts.captcha.challenge"
CAPTCHA_LENGTH = 5
CAPTCHA_FONT_SIZE = 34
CAPTCHA_TIMEOUT = 15  # minutes to fill in the form
CAPTCHA_2X_IMAGE = False
# The audio version spells the characters with flite (an apt package); without it, no audio link.
CAPTCHA_FLITE_PATH = shutil.which("flite") if _env_bool("JIANSUO_CAPTCHA_AUDIO", True) else None

# Each signed-in user's past searches: kept this long, with their own copy of the query photo.
JIANSUO_HISTORY_DAYS = int(_env("JIANSUO_HISTORY_DAYS", "30"))
if JIANSUO_HISTORY_DAYS < 1:
    raise ImproperlyConfigured(f"JIANSUO_HISTORY_DAYS must be at least 1, not {JIANSUO_HISTORY_DAYS}")
JIANSUO_HISTORY_DIR = DATA_DIR / "history"

# ---------------------------------------------------------------- indexing workers (Celery)
# Without a broker, photos are embedded in the process that stores them (the embedded default).
# With one, they are queued as tasks for `celery -A jiansuo.web worker` processes on any machine.
CELERY_BROKER_URL = _env("JIANSUO_BROKER_URL") or _env("CELERY_BROKER_URL")
CELERY_TASK_DEFAULT_QUEUE = _env("JIANSUO_TASK_QUEUE", "jiansuo-index")
CELERY_TASK_ACKS_LATE = True               # acknowledge a message after its work, not before
CELERY_TASK_REJECT_ON_WORKER_LOST = True   # a killed worker process hands its task back
CELERY_WORKER_PREFETCH_MULTIPLIER = 1      # a busy worker does not hoard tasks others could run
CELERY_TASK_IGNORE_RESULT = True           # outcomes are recorded in the database (IndexTask)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # A task unacknowledged this long (its worker machine died) is delivered again. Must exceed the
    # longest task plus retry delay (tasks of JIANSUO_TASK_PHOTOS photos take seconds).
    "visibility_timeout": int(_env("JIANSUO_TASK_VISIBILITY_TIMEOUT", "900")),
    # Look for such tasks every 10 s.
    "unacked_restore_interval": 10,
    "unacked_restore_throttle": 1,
}
# Photos per task: small enough to spread over workers and retry cheaply, large enough to batch.
JIANSUO_TASK_PHOTOS = int(_env("JIANSUO_TASK_PHOTOS", "64"))

# ---------------------------------------------------------------- API
REST_FRAMEWORK = {
    # Token first: a request without credentials gets 401 with a WWW-Authenticate header.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["jiansuo.web.api.permissions.CanSearch"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "jiansuo.web.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": _env("JIANSUO_API_ANON_RATE", "60/min"),
        "user": _env("JIANSUO_API_USER_RATE", "600/min"),
    },
}
# The site's own font stack (static/jiansuo/site.css): fonts of the reader's system, none downloaded.
_SYSTEM_FONTS = ('system-ui, -apple-system, "Segoe UI", "PingFang SC", "Hiragino Sans GB", "Microsoft YaHei", '
                 '"Noto Sans CJK SC", "Noto Sans SC", sans-serif')
SPECTACULAR_SETTINGS = {
    "TITLE": "Jiansuo API",
    "DESCRIPTION": "Search a product catalogue by photo.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # /api/docs (Swagger UI) and /api/redoc load nothing from another host (jiansuo.web.api.docs).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None, "displayRequestDuration": True},
    "REDOC_UI_SETTINGS": {
        "expandResponses": "200",
        "theme": {"typography": {
            "fontFamily": _SYSTEM_FONTS, "headings": {"fontFamily": _SYSTEM_FONTS},
            "code": {"fontFamily": 'ui-monospace, "SFMono-Regular", Menlo, monospace'},
        }},
    },
}

# ---------------------------------------------------------------- mail
if _env("JIANSUO_EMAIL_HOST"):
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = _env("JIANSUO_EMAIL_HOST")
    EMAIL_PORT = int(_env("JIANSUO_EMAIL_PORT", "587"))
    EMAIL_HOST_USER = _env("JIANSUO_EMAIL_USER")
    EMAIL_HOST_PASSWORD = _env("JIANSUO_EMAIL_PASSWORD")
    EMAIL_USE_TLS = _env_bool("JIANSUO_EMAIL_USE_TLS", True)
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = _env("JIANSUO_FROM_EMAIL", "jiansuo@localhost")

# ---------------------------------------------------------------- security
JIANSUO_HTTPS = _env_bool("JIANSUO_HTTPS", not DEBUG)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = JIANSUO_HTTPS
SECURE_SSL_REDIRECT = JIANSUO_HTTPS
SECURE_HSTS_SECONDS = int(_env("JIANSUO_HSTS_SECONDS", "31536000" if JIANSUO_HTTPS else "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_PRELOAD = JIANSUO_HTTPS
if _env_bool("JIANSUO_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"jiansuo": {"handlers": ["console"], "level": _env("JIANSUO_LOG_LEVEL", "INFO")}},
}
