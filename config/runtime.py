"""Directories a process needs at run time, created when it starts, never when settings are imported.

Importing the settings must work on a read-only file system (a container image, ``collectstatic``
at build time, ``check --deploy`` in CI). ``manage.py`` commands, gunicorn (``gunicorn.conf.py``),
the WSGI application (``config/wsgi.py``) and Celery (``config/celery.py``) call
:func:`ensure_runtime_dirs` as they start.
"""

from pathlib import Path


def ensure_runtime_dirs():
    """Create ``settings.RUNTIME_DIRS`` (embedded database, filesystem broker, metrics directory)."""
    from django.conf import settings

    for path in settings.RUNTIME_DIRS:
        Path(path).mkdir(parents=True, exist_ok=True)
