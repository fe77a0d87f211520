"""The README's production steps, run for real: collectstatic, then gunicorn with DJANGO_ENV=production."""

import json
import re
import runpy
import subprocess
import sys
import time
from types import SimpleNamespace

from django.conf import settings

from tests.deploy.conftest import BIN, ROOT, fetch, production_env


def collectstatic(env):
    result = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_gunicorn_in_production_serves_the_admin_styles_and_the_swagger_ui_scripts(tmp_path, gunicorn_server):
    env = production_env(tmp_path / "var")
    collectstatic(env)
    server = gunicorn_server(env)

    status, _, page = fetch(f"{server.url}/admin/login/")
    assert status == 200, page[:500]
    css = re.findall(rb'href="(/static/admin/css/[^"]+\.css)"', page)
    assert css
    for path in css:
        status, headers, body = fetch(server.url + path.decode())
        assert (status, headers.get_content_type()) == (200, "text/css"), path
        assert body

    status, _, page = fetch(f"{server.url}/api/docs/")
    assert status == 200, page[:500]
    scripts = re.findall(rb'src="(/static/[^"]+\.js)"', page)
    assert any(b"swagger-ui-bundle" in path for path in scripts), scripts
    for path in scripts:
        status, headers, body = fetch(server.url + path.decode())
        assert status == 200, path
        assert headers.get_content_type() in {"text/javascript", "application/javascript"}
        assert body


def print_config(env):
    result = subprocess.run(
        [str(BIN / "gunicorn"), "--print-config", "config.wsgi"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    pairs = (line.split(" = ", 1) for line in result.stdout.splitlines() if " = " in line)
    return {name.strip(): value.strip() for name, value in pairs}


def test_gunicorn_takes_workers_threads_and_timeouts_from_the_environment(tmp_path):
    env = production_env(
        tmp_path,
        WEB_CONCURRENCY="3",
        GUNICORN_THREADS="4",
        GUNICORN_TIMEOUT="45",
        GUNICORN_GRACEFUL_TIMEOUT="20",
        GUNICORN_BIND="127.0.0.1:9001",
    )

    config = print_config(env)

    assert (config["workers"], config["threads"], config["timeout"], config["graceful_timeout"]) == (
        "3",
        "4",
        "45",
        "20",
    )
    assert config["bind"] == "['127.0.0.1:9001']"


def test_a_malformed_gunicorn_variable_stops_it_with_a_message(tmp_path):
    result = subprocess.run(
        [str(BIN / "gunicorn"), "--check-config", "config.wsgi"],
        cwd=ROOT,
        env=production_env(tmp_path, GUNICORN_THREADS="many"),
        capture_output=True,
        text=True,
    )

    assert result.returncode != 0
    assert "GUNICORN_THREADS must be a whole number, not 'many'" in result.stdout + result.stderr


def test_the_access_log_is_json_like_the_application_logs_with_the_request_id(tmp_path, gunicorn_server):
    server = gunicorn_server(production_env(tmp_path, LOG_FORMAT="json"))

    status, headers, _ = fetch(f"{server.url}/healthz?probe=1", headers={"X-Request-ID": "req-access-1"})
    assert status == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "req-access-1" not in server.log():
        time.sleep(0.1)

    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "gunicorn.access"]
    assert len(access) == 1
    assert access[0] | {"time": "-", "duration_ms": 0, "bytes": 0} == {
        "time": "-",
        "level": "INFO",
        "logger": "gunicorn.access",
        "message": "GET /healthz 200",
        "request_id": "req-access-1",
        "method": "GET",
        "path": "/healthz",
        "query": "probe=1",
        "status": 200,
        "bytes": 0,
        "duration_ms": 0,
        "remote_addr": "127.0.0.1",
        "user_agent": "Python-urllib/3.11",
        "referer": "-",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", access[0]["time"])
    assert all(set(line) >= {"time", "level", "logger", "message", "request_id"} for line in lines)
    assert any(line["logger"] == "gunicorn.error" and "Booting worker" in line["message"] for line in lines)


def test_gunicorn_empties_the_metrics_directory_when_it_starts(tmp_path, gunicorn_server):
    env = production_env(tmp_path)
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    (metrics_dir / "counter_99999.db").write_bytes(b"stale samples of an earlier run")

    server = gunicorn_server(env)
    assert fetch(f"{server.url}/healthz")[0] == 200

    assert not (metrics_dir / "counter_99999.db").exists()


def test_a_worker_that_exits_has_its_live_gauge_files_removed(tmp_path, monkeypatch):
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    for name in ("gauge_livesum_4242.db", "gauge_liveall_4242.db", "counter_4242.db", "gauge_livesum_7.db"):
        (metrics_dir / name).write_bytes(b"")
    monkeypatch.setattr(settings, "PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    config = runpy.run_path(str(ROOT / "gunicorn.conf.py"))

    config["child_exit"](server=None, worker=SimpleNamespace(pid=4242))

    assert sorted(p.name for p in metrics_dir.iterdir()) == ["counter_4242.db", "gauge_livesum_7.db"]
