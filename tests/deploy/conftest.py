"""Helpers for tests that start the real production server (gunicorn) in a subprocess."""

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def production_env(var_dir, **extra):
    """The environment of the README's production steps, with a private VAR_DIR."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST", "SENTRY_", "OTEL_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_ENV="production",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        VAR_DIR=str(var_dir),
        PROMETHEUS_MULTIPROC_DIR=str(var_dir / "prometheus"),
    )
    env.update(extra)
    return env


def fetch(url, headers=None):
    """(status, headers, body) of a GET; the proxy in front of gunicorn says it was HTTPS."""
    request = urllib.request.Request(url, headers={"X-Forwarded-Proto": "https", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


class Gunicorn:
    def __init__(self, env, port, log_path):
        self.env, self.port, self.log_path = env, port, log_path
        self.url = f"http://127.0.0.1:{port}"

    def log(self):
        return self.log_path.read_text() if self.log_path.exists() else ""


@pytest.fixture
def gunicorn_server(tmp_path):
    """Start ``gunicorn config.wsgi`` as the README says; yields a function (env) -> running server."""
    started = []

    def start(env, workers=1):
        port = free_port()
        log_path = tmp_path / f"gunicorn-{port}.log"
        log = log_path.open("wb")
        process = subprocess.Popen(
            [str(BIN / "gunicorn"), "config.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((process, log))
        server = Gunicorn(env, port, log_path)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"gunicorn exited with {process.returncode}:\n{server.log()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return server
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"gunicorn did not listen on {port}:\n{server.log()}")

    yield start
    for process, log in started:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
