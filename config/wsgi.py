import os

from django.core.wsgi import get_wsgi_application

from config.runtime import ensure_runtime_dirs
from config.tracing import configure_tracing_if_enabled

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

ensure_runtime_dirs()  # the web server is starting: the metrics directory must exist
configure_tracing_if_enabled()  # before the middleware is loaded (OTEL_TRACING)
application = get_wsgi_application()
