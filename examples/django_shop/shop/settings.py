"""Settings of the example shop: a Django project whose background work runs on kongtaskd.

The database comes from the environment (SHOP_DB_NAME and libpq's PGHOST, PGPORT, PGUSER,
PGPASSWORD), so the test suite can point it at a throwaway database.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "shop.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "kongtaskd.contrib.django",
    "orders",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("SHOP_DB_NAME", "django_shop"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
        # Persistent connections in the daemon's children too: closed after a job only
        # when older than this (close_old_connections, as after a request).
        "CONN_MAX_AGE": 60,
    }
}

# django.tasks (Django 6; the django-tasks backport on Django 5.2): tasks are kongtaskd jobs,
# enqueued in the view's transaction.
TASKS = {
    "default": {
        "BACKEND": "kongtaskd.contrib.django.KongtaskdBackend",
        "QUEUES": ["default", "emails"],
        "OPTIONS": {"max_attempts": 3},
    }
}

# The YAML file's keys; the connection defaults to DATABASES["default"].
KONGTASKD = {
    "concurrency": 2,
    "shutdown_timeout": 10,
    # A plain kongtaskd handler next to the django.tasks ones (it uses the ORM too).
    "tasks": {"orders.audit": "orders.handlers:audit"},
}
