"""Errors you hear about: Sentry, switched on only when ``SENTRY_DSN`` is set (``config/settings.py``).

Django (requests; no personal data is sent, the SDK's default), Celery (a task that raises, and
beat's schedule as cron monitors: a periodic job that stops running or fails is reported) and
logging (every ``ERROR`` line becomes an event, e.g. a saga that needs an operator or a failing
signal receiver; lower levels become breadcrumbs).
"""


def init_sentry(dsn, *, environment, release=None, traces_sample_rate=0.0, transport=None):
    import logging

    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release or None,
        integrations=[
            DjangoIntegration(),
            CeleryIntegration(monitor_beat_tasks=True),
            LoggingIntegration(level=logging.INFO, event_level=logging.ERROR),
        ],
        # Performance tracing is OpenTelemetry's job here (OTEL_TRACING); Sentry only for errors.
        traces_sample_rate=traces_sample_rate,
        transport=transport,
    )
