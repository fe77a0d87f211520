"""Who is acting right now, for the audit trail.

The middleware records the current request; DRF sets ``request.user`` on the
underlying Django request once it authenticates a token, so the actor is
resolved when an event is written, not when the request arrives. Commands
and other code wrap their work in ``acting_as``; anything else (Celery
workers, beat) is the system.
"""

import contextvars
from contextlib import contextmanager

from .models import ActorType

_current = contextvars.ContextVar("audit_actor", default=None)


@contextmanager
def acting_as(user=None, label=""):
    token = _current.set({"user": user, "label": label})
    try:
        yield
    finally:
        _current.reset(token)


def current_actor():
    """``(actor_type, user or None, label)`` for the code running now."""
    value = _current.get()
    if value is None:
        return ActorType.SYSTEM, None, "system"
    if isinstance(value, dict):
        user, label = value["user"], value["label"]
    else:  # a request
        user, label = getattr(value, "user", None), ""
        if user is None or not user.is_authenticated:
            return ActorType.SYSTEM, None, "anonymous"
    if user is None:
        return ActorType.SYSTEM, None, label or "system"
    actor_type = ActorType.STAFF if user.is_staff else ActorType.CUSTOMER
    return actor_type, user, label or user.get_username()


class AuditActorMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _current.set(request)
        try:
            return self.get_response(request)
        finally:
            _current.reset(token)
