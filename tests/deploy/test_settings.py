"""Settings read from the environment, checked in fresh interpreters (settings are read once per process)."""

import json
import re
import shutil
import subprocess
import sys

from tests.deploy.conftest import ROOT, production_env

SHOW = (
    "import json, sys; from django.conf import settings as s; "
    "print(json.dumps({n: str(getattr(s, n, None)) for n in sys.argv[1:]}))"
)


def clean_env(**extra):
    """The environment of a developer who set nothing: every setting at its default."""
    import os

    keep = ("PATH", "HOME", "LANG", "SYSTEMROOT")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", **extra)
    return env


def settings_values(env, *names, cwd=ROOT):
    result = subprocess.run([sys.executable, "-c", SHOW, *names], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_var_dir_may_be_set_in_the_env_file(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(ROOT / "config", project / "config", ignore=shutil.ignore_patterns("__pycache__"))
    (project / ".env").write_text(f"VAR_DIR={tmp_path / 'state'}\n")

    values = settings_values(clean_env(), "VAR_DIR", "STATIC_ROOT", "PROMETHEUS_MULTIPROC_DIR", cwd=project)

    assert values == {
        "VAR_DIR": str(tmp_path / "state"),
        "STATIC_ROOT": str(tmp_path / "state" / "static"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "state" / "prometheus"),
    }


def test_the_environment_wins_over_the_env_file(tmp_path):
    env_file = tmp_path / "settings.env"
    env_file.write_text("TIME_ZONE=Europe/Paris\nVAR_DIR=/from/the/file\n")

    values = settings_values(clean_env(DJANGO_ENV_FILE=str(env_file), VAR_DIR=str(tmp_path)), "TIME_ZONE", "VAR_DIR")

    assert values == {"TIME_ZONE": "Europe/Paris", "VAR_DIR": str(tmp_path)}


def test_importing_the_settings_creates_no_directory(tmp_path):
    var_dir = tmp_path / "var"

    values = settings_values(clean_env(VAR_DIR=str(var_dir)), "DATABASES", "CELERY_BROKER_URL")

    assert str(var_dir / "postgres") in values["DATABASES"]
    assert values["CELERY_BROKER_URL"] == "filesystem://"
    assert not var_dir.exists()


def test_the_default_database_is_the_embedded_postgresql_under_var_dir(tmp_path):
    code = "import json; from django.conf import settings; print(json.dumps(settings.DATABASES['default']))"
    env = clean_env(VAR_DIR=str(tmp_path / "my state"))

    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)

    assert result.returncode == 0, result.stderr
    database = json.loads(result.stdout)
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["NAME"], database["USER"], database["PORT"]) == ("fulfilment", "postgres", "")
    assert database["HOST"] == str(tmp_path / "my state" / "postgres")  # a socket directory, not a TCP host
    assert "host" not in database["OPTIONS"]


def test_a_database_url_that_is_not_postgresql_stops_start_up_with_a_message(tmp_path):
    env = clean_env(VAR_DIR=str(tmp_path), DATABASE_URL="mysql://root@127.0.0.1:3306/fulfilment")

    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True)

    assert result.returncode != 0
    assert "DATABASE_URL must name a PostgreSQL database" in result.stderr


def test_a_command_creates_the_directories_of_the_embedded_default(tmp_path):
    var_dir = tmp_path / "var"

    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=clean_env(VAR_DIR=str(var_dir)), capture_output=True
    )

    assert result.returncode == 0, result.stderr
    assert {p.name for p in var_dir.iterdir()} == {"broker", "prometheus"}
    assert {p.name for p in (var_dir / "broker").iterdir()} == {"queue", "processed", "control"}


def test_a_celery_worker_creates_them_before_django_is_set_up(tmp_path):
    var_dir = tmp_path / "var"
    code = "from config.celery import app; app.loader.import_default_modules(); import config.metrics"

    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean_env(VAR_DIR=str(var_dir)), capture_output=True
    )

    assert result.returncode == 0, result.stderr
    assert (var_dir / "prometheus").is_dir()
    assert (var_dir / "broker" / "queue").is_dir()


def test_the_time_zone_comes_from_the_environment_and_drives_the_beat_schedule(tmp_path):
    values = settings_values(
        clean_env(VAR_DIR=str(tmp_path), TIME_ZONE="America/New_York"), "TIME_ZONE", "CELERY_TIMEZONE"
    )

    assert values == {"TIME_ZONE": "America/New_York", "CELERY_TIMEZONE": "America/New_York"}


def test_production_security_settings_have_safe_defaults(tmp_path):
    names = ["DEBUG", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS"]
    names += ["SECURE_HSTS_PRELOAD", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_PROXY_SSL_HEADER"]
    names += ["USE_X_FORWARDED_HOST"]

    values = settings_values(production_env(tmp_path), *names)

    assert values == {
        "DEBUG": "False",
        "SECURE_SSL_REDIRECT": "True",
        "SECURE_HSTS_SECONDS": str(365 * 24 * 3600),
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": "True",
        "SECURE_HSTS_PRELOAD": "False",
        "SESSION_COOKIE_SECURE": "True",
        "CSRF_COOKIE_SECURE": "True",
        "SECURE_PROXY_SSL_HEADER": "('HTTP_X_FORWARDED_PROTO', 'https')",
        "USE_X_FORWARDED_HOST": "False",
    }


def test_production_security_settings_come_from_the_environment(tmp_path):
    env = production_env(
        tmp_path,
        DJANGO_SECURE_SSL_REDIRECT="false",
        DJANGO_SECURE_HSTS_SECONDS="600",
        DJANGO_SECURE_HSTS_PRELOAD="true",
        DJANGO_SECURE_PROXY_SSL_HEADER="X-Forwarded-Ssl: on",
        DJANGO_USE_X_FORWARDED_HOST="true",
    )

    values = settings_values(
        env, "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_PRELOAD", "SECURE_PROXY_SSL_HEADER"
    )

    assert values == {
        "SECURE_SSL_REDIRECT": "False",
        "SECURE_HSTS_SECONDS": "600",
        "SECURE_HSTS_PRELOAD": "True",
        "SECURE_PROXY_SSL_HEADER": "('HTTP_X_FORWARDED_SSL', 'on')",
    }


def test_a_malformed_proxy_header_setting_stops_start_up_with_a_message(tmp_path):
    env = production_env(tmp_path, DJANGO_SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto")

    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True)

    assert result.returncode != 0
    assert "DJANGO_SECURE_PROXY_SSL_HEADER must look like 'X-Forwarded-Proto: https'" in result.stderr


def test_the_deploy_check_is_clean_with_the_production_environment(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=production_env(tmp_path),
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_env_example_lists_every_variable_the_settings_read():
    files = [ROOT / "config" / "settings.py", ROOT / "gunicorn.conf.py", *(ROOT / "config").glob("tracing.py")]
    source = "\n".join(path.read_text() for path in files)
    read = set(re.findall(r"""(?:env(?:\.\w+)?|_int)\(\s*["']([A-Z][A-Z0-9_]+)["']""", source))
    read |= set(re.findall(r"""os\.environ(?:\.get|\.setdefault|\[)\(?\s*["']([A-Z][A-Z0-9_]+)["']""", source))
    read -= {"DJANGO_SETTINGS_MODULE"}  # chosen by the command (manage.py, wsgi, celery), not configuration
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))

    assert read - listed == set()
    assert listed - read == set()


def test_a_bad_log_format_or_trace_exporter_stops_start_up_with_a_message(tmp_path):
    for extra, message in [
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be plain or json"),
        (
            {"OTEL_TRACING": "true", "OTEL_TRACES_EXPORTER": "zipkin"},
            "OTEL_TRACES_EXPORTER must be otlp, console or none",
        ),
    ]:
        result = subprocess.run(
            [sys.executable, "manage.py", "check"],
            cwd=ROOT,
            env=clean_env(VAR_DIR=str(tmp_path), **extra),
            capture_output=True,
            text=True,
        )

        assert result.returncode != 0
        assert message in result.stderr
