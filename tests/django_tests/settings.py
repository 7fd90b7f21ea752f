"""Django settings of the kongtaskd.contrib.django tests (in-process and for manage.py runs).

The database is ``KT_DJANGO_DB`` (a libpq key=value string made by the test fixtures), so
every test session has a throwaway database of its own.
"""

from __future__ import annotations

import os

from psycopg2.extensions import parse_dsn

_db = parse_dsn(os.environ.get("KT_DJANGO_DB", "dbname=kt_django_unset"))

SECRET_KEY = "tests-only"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "kongtaskd.contrib.django",
    "tests.django_tests.testapp",
]

# The admin (tests/django_tests/test_admin.py), with Django's test client.
ROOT_URLCONF = "tests.django_tests.urls"
ALLOWED_HOSTS = ["testserver"]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

_postgres = {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": _db.get("dbname"),
    "HOST": _db.get("host", ""),
    "PORT": _db.get("port", ""),
    "USER": _db.get("user", ""),
    "CONN_MAX_AGE": 0,
}
DATABASES = {
    "default": _postgres,
    # The same database under a password (trust auth ignores it): the password must never
    # show in messages.
    "with_password": {**_postgres, "PASSWORD": "pw-Zq81-never-shown"},
    "sqlite": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
}
TASKS = {
    "default": {
        "BACKEND": "kongtaskd.contrib.django.KongtaskdBackend",
        "QUEUES": ["default", "emails", "slow"],
        "OPTIONS": {"max_attempts": 1},
    },
}
KONGTASKD = {
    "concurrency": 2,
    "poll_interval": 0.5,
    "shutdown_timeout": 5,
    "tasks": {
        "testapp.plain": "tests.django_tests.testapp.handlers:plain",
        "testapp.note_and_follow_up": "tests.django_tests.testapp.handlers:note_and_follow_up",
    },
}
