"""The Celery application.

Workers: ``celery -A config worker``; beat: ``celery -A config beat``. Every
``CELERY_*`` Django setting configures it (see ``config/settings.py``).
"""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


# Connected before the app exists, so it runs before Celery's Django fixup sets Django up (and
# the metrics module opens its files) when a worker or beat starts.
@signals.import_modules.connect(dispatch_uid="config.celery.runtime_dirs")
def _runtime_dirs(**kwargs):
    from config.runtime import ensure_runtime_dirs

    ensure_runtime_dirs()


@signals.worker_init.connect(dispatch_uid="config.celery.tracing_worker")
@signals.beat_init.connect(dispatch_uid="config.celery.tracing_beat")
def _tracing(**kwargs):
    """OTEL_TRACING: a worker (before its pool forks) or beat instruments itself (config/tracing.py)."""
    from config.tracing import configure_tracing_if_enabled

    configure_tracing_if_enabled()


app = Celery("fulfilment")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_prerun.connect(dispatch_uid="config.celery.close_old_connections_before")
@signals.task_postrun.connect(dispatch_uid="config.celery.close_old_connections_after")
def _close_old_connections(**kwargs):
    """Treat every task like a request: drop broken or expired connections.

    Celery's fixup keeps connections open because ``CELERY_DB_REUSE_MAX`` is
    set; this applies Django's ``CONN_MAX_AGE`` and ``CONN_HEALTH_CHECKS`` so a
    worker survives a database restart.
    """
    from django.db import close_old_connections

    close_old_connections()
