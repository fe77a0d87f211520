"""Saga signals, sent after the transaction that caused them commits.

Every signal carries ``saga``, ``order``, ``step`` (name or None) and ``error``
(operator text or ""). Receivers must not raise: in production a failing
receiver is logged and the saga goes on (``settings.SAGA_SIGNALS_RAISE`` makes
them fail loudly in tests).
"""

import django.dispatch

saga_started = django.dispatch.Signal()
step_succeeded = django.dispatch.Signal()
step_failed = django.dispatch.Signal()
saga_completed = django.dispatch.Signal()
saga_compensated = django.dispatch.Signal()
saga_failed = django.dispatch.Signal()
