"""Before the suite: are PostgreSQL and Redis up? Say how to start them if not."""

import os
import socket
import sys
from urllib.parse import urlparse

SERVICES = [
    (
        "PostgreSQL",
        os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/fulfilment"),
        5432,
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    ),
    (
        "Redis",
        os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15"),
        6379,
        'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
    ),
]

down = []
for name, url, default_port, start in SERVICES:
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or default_port
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        down.append(f"{name} is not reachable at {host}:{port} ({exc}).\n  Start it with: {start}")
if down:
    print("The test suite needs a running PostgreSQL and Redis.\n" + "\n".join(down), file=sys.stderr)
    sys.exit(1)
