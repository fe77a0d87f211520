"""gunicorn's configuration: `gunicorn config.wsgi` reads it from the working directory.

Everything comes from the environment (README, "Production"); command-line flags still win.
Logs (gunicorn's own and the access log) use the application's formatters (``LOG_FORMAT``), and
the Prometheus multiprocess directory is emptied when the server starts and cleaned of each
worker that exits.
"""

import multiprocessing
import os
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.conf import settings


def _int(name, default):
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError:
        raise SystemExit(f"gunicorn.conf.py: {name} must be a whole number, not {value!r}") from None


bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000").split(",")
# WEB_CONCURRENCY is also gunicorn's own name for it.
workers = _int("WEB_CONCURRENCY", min(2 * multiprocessing.cpu_count() + 1, 8))
threads = _int("GUNICORN_THREADS", 1)  # more than 1: the gthread worker
timeout = _int("GUNICORN_TIMEOUT", 30)  # a worker silent this long is killed and replaced
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _int("GUNICORN_KEEPALIVE", 5)
# Restart a worker after this many requests (plus up to the jitter), against slow leaks; 0 = never.
max_requests = _int("GUNICORN_MAX_REQUESTS", 1000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 100)
# Trust X-Forwarded-* only from these addresses (the proxy in front); comma-separated.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR") or None  # /dev/shm in read-only containers
# gunicorn's control socket (`gunicornc`) only where asked for: its default lives in $HOME.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "")
control_socket_disable = not control_socket
preload_app = False  # each worker imports the app itself (tracing and Sentry start per process)

loglevel = settings.LOGGING["root"]["level"].lower()
_json = settings.LOG_FORMAT == "json"
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "app": {"()": "config.logs.JSONFormatter"}
        if _json
        else {"()": "config.logs.PlainFormatter", "format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "access": {"()": "config.logs.GunicornAccessJSONFormatter"}
        if _json
        else {"()": "config.logs.PlainFormatter", "format": "%(asctime)s INFO gunicorn.access %(message)s"},
    },
    "handlers": {
        "app": {"class": "logging.StreamHandler", "formatter": "app", "stream": "ext://sys.stderr"},
        "access": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout"},
    },
    "root": {"level": loglevel.upper(), "handlers": ["app"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["app"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
    },
}
# The plain access line: request id, then the Apache combined format and the duration.
access_log_format = '[%({x-request-id}o)s] %(h)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms'


def on_starting(server):
    """In the master, before any worker: create the runtime directories, empty the metrics one."""
    from config.runtime import ensure_runtime_dirs

    ensure_runtime_dirs()
    for path in Path(settings.PROMETHEUS_MULTIPROC_DIR).glob("*.db"):
        path.unlink(missing_ok=True)


def child_exit(server, worker):
    """A worker exited: drop its live-gauge files so /metrics stops counting it."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, settings.PROMETHEUS_MULTIPROC_DIR)
