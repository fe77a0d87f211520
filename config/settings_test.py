"""Settings for the test suite: real PostgreSQL and Redis on localhost.

Environment variables still win, so CI or a developer can point elsewhere.
"""

import os
import tempfile

os.environ.setdefault("DJANGO_ENV", "test")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/fulfilment")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
# Close connections after every task: the test worker thread must not keep one
# open while pytest-django flushes or drops the test database.
os.environ.setdefault("CONN_MAX_AGE", "0")
os.environ.setdefault("SAGA_RETRY_BACKOFF_BASE", "0.05")
os.environ.setdefault("SAGA_RETRY_BACKOFF_MAX", "0.2")
# A fresh metrics directory per test run: samples of earlier runs must not count.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fulfilment-metrics-")

from .settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
