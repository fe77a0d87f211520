"""`make run`'s database: the embedded PostgreSQL (config/embedded_db.py), started for real from its wheel."""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT
from tests.deploy.test_settings import clean_env

# What `make run` runs inside the wrapper, in short: the settings' database, then the schema and demo data.
CHECK = (
    "import io, django; django.setup(); "
    "from django.db import connection; from django.core.management import call_command; "
    "call_command('migrate', verbosity=0); call_command('seed_demo', stdout=io.StringIO()); "
    "from catalog.models import Product; "
    "s = connection.settings_dict; "
    "print(connection.vendor, s['NAME'], s['USER'], s['HOST'], Product.objects.count())"
)


@pytest.fixture
def var_dir():
    # Not under pytest's tmp_path: as root the server runs as another user, which must be able to
    # reach its data directory, and pytest keeps its own temporary root private (0700).
    top = Path(tempfile.mkdtemp(prefix="fulfilment-embedded-pg-"))
    yield top / "var"
    stop = [sys.executable, "-m", "config.embedded_db", "stop"]
    subprocess.run(stop, cwd=ROOT, env=clean_env(VAR_DIR=str(top / "var")), capture_output=True)
    shutil.rmtree(top, ignore_errors=True)


def embedded_db(var_dir, *args):
    return subprocess.run(
        [sys.executable, "-m", "config.embedded_db", *args],
        cwd=ROOT,
        env=clean_env(VAR_DIR=str(var_dir)),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_starts_the_embedded_server_migrates_and_seeds_on_it_then_stops_it(var_dir):
    result = embedded_db(var_dir, "run", "--", sys.executable, "-c", CHECK)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["postgresql", "fulfilment", "postgres", str(var_dir / "postgres"), "3"]
    assert "embedded PostgreSQL: created database fulfilment" in result.stderr
    assert "embedded PostgreSQL: stopped" in result.stderr
    assert not (var_dir / "postgres" / "postmaster.pid").exists()
    log = (var_dir / "postgres" / "log").read_text()
    assert f'listening on Unix socket "{var_dir / "postgres" / ".s.PGSQL.5432"}"' in log
    assert "IPv4" not in log and "IPv6" not in log  # no TCP port: nothing on 127.0.0.1:5432
    assert embedded_db(var_dir, "status").returncode == 3


def test_run_leaves_a_server_it_did_not_start_running(var_dir):
    assert embedded_db(var_dir, "start").returncode == 0

    result = embedded_db(var_dir, "run", "--", sys.executable, "-c", "print('done')")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    assert "already running" in result.stderr
    assert "stopped" not in result.stderr
    assert embedded_db(var_dir, "status").returncode == 0
    assert "stopped" in embedded_db(var_dir, "stop").stderr
    assert embedded_db(var_dir, "status").returncode == 3


def test_run_with_another_database_url_only_runs_the_command(tmp_path):
    env = clean_env(VAR_DIR=str(tmp_path / "var"), DATABASE_URL="postgres://postgres@127.0.0.1:5432/elsewhere")

    result = subprocess.run(
        [sys.executable, "-m", "config.embedded_db", "run", "--", sys.executable, "-c", "raise SystemExit(7)"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )

    assert result.returncode == 7
    assert result.stderr == ""
    assert not (tmp_path / "var").exists()


def test_run_ends_the_command_when_the_server_stops_under_it(var_dir):
    # The command stops the server itself, then would wait a minute: `run` ends it within seconds.
    command = "import subprocess, sys, time; subprocess.run([sys.executable, '-m', 'config.embedded_db', 'stop']); "
    command += "time.sleep(60)"

    result = embedded_db(var_dir, "run", "--", sys.executable, "-c", command)

    assert result.returncode == 128 + 15, result.stderr  # SIGTERM
    assert "the server stopped" in result.stderr
