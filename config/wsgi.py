import os

from django.core.wsgi import get_wsgi_application

from config.runtime import ensure_runtime_dirs

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

ensure_runtime_dirs()  # the web server is starting: the metrics directory must exist
application = get_wsgi_application()
