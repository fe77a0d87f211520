"""Who is calling, and may they log in: the client address, throttles, login lockout, API tokens.

One rule for the caller's address (``client_ip``), used by the API throttles and by
django-axes alike, driven by one setting, ``TRUSTED_PROXY_COUNT``.
"""

import ipaddress
import math

from django.conf import settings
from django.db import transaction
from rest_framework import throttling


def _ip(value):
    """``value`` as a normalised IP address (no IPv6 zone), or None if it is not one."""
    try:
        return str(ipaddress.ip_address((value or "").strip().split("%", 1)[0]))
    except ValueError:
        return None


def client_ip(request):
    """The caller's IP address, or None if the server gave none.

    With ``TRUSTED_PROXY_COUNT = 0`` (the default) it is ``REMOTE_ADDR`` and any
    ``X-Forwarded-For`` is ignored: a client could write anything there. Behind *n*
    proxies that each append the address they saw, it is the *n*-th address from the
    right of ``X-Forwarded-For`` (with one proxy: the last hop), as DRF's
    ``NUM_PROXIES`` reads it; an entry that is not an IP address falls back to
    ``REMOTE_ADDR``. Always a valid address or None: django-axes stores it in an
    ``inet`` column.
    """
    remote_addr = _ip(request.META.get("REMOTE_ADDR"))
    proxies = settings.TRUSTED_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies <= 0 or not forwarded.strip():
        return remote_addr
    hops = forwarded.split(",")
    return _ip(hops[-min(proxies, len(hops))]) or remote_addr


class AnonRateThrottle(throttling.AnonRateThrottle):
    """DRF's anonymous throttle, keyed by ``client_ip``."""

    def get_ident(self, request):
        return client_ip(request)


class ScopedRateThrottle(throttling.ScopedRateThrottle):
    """DRF's per-view scoped throttle, keyed by ``client_ip`` for anonymous callers."""

    def get_ident(self, request):
        return client_ip(request)


def lockout_seconds_left(request, credentials=None):
    """Seconds until a locked-out login may try again (django-axes' database handler).

    A login is locked while its recent failures reach the limit; once the cool-off has
    passed since the last recorded failure, none is recent any more.
    """
    from axes.handlers.proxy import AxesProxyHandler
    from axes.helpers import get_cool_off
    from django.db.models import Max
    from django.utils import timezone

    cool_off = get_cool_off(request)
    handler = AxesProxyHandler.get_implementation()
    if not hasattr(handler, "get_user_attempts"):  # not the database handler: the whole cool-off
        return max(1, math.ceil(cool_off.total_seconds()))
    last = [
        attempts.aggregate(last=Max("attempt_time"))["last"]
        for attempts in handler.get_user_attempts(request, credentials)
    ]
    last_failure = max((t for t in last if t is not None), default=timezone.now())
    return max(1, math.ceil((last_failure + cool_off - timezone.now()).total_seconds()))


def admin_lockout_response(request, original_response=None, credentials=None):
    """django-axes' lockout answer for a form login (the admin): a page in the admin's look, 429."""
    from django.contrib import admin
    from django.template.response import TemplateResponse

    seconds = lockout_seconds_left(request, credentials)
    context = {**admin.site.each_context(request), "title": "Login locked", "minutes": math.ceil(seconds / 60)}
    response = TemplateResponse(request, "admin/login_locked_out.html", context, status=429)
    response["Retry-After"] = str(seconds)
    return response.render()


@transaction.atomic
def api_token_create(*, user):
    """A new API token for ``user``: ``(AuthToken, token string)``.

    At most ``API_TOKEN_LIMIT_PER_USER`` live tokens per user (0: no cap): a login
    beyond it revokes the user's oldest tokens, so logging in on a new device always
    works and the session least likely still in use ends. (knox's own
    ``TOKEN_LIMIT_PER_USER`` would refuse the login instead, and the customer, with no
    way to revoke a lost device's token, would wait up to ``API_TOKEN_TTL_HOURS``.)
    Expired tokens of the user are deleted on the way. Concurrent logins of one user
    queue on the user's row, so the cap holds.
    """
    from django.contrib.auth import get_user_model
    from django.utils import timezone
    from knox.models import get_token_model

    AuthToken = get_token_model()
    get_user_model().objects.select_for_update().filter(pk=user.pk).exists()
    tokens = AuthToken.objects.filter(user=user)
    tokens.filter(expiry__lte=timezone.now()).delete()
    limit = settings.API_TOKEN_LIMIT_PER_USER
    if limit > 0:
        keep = list(tokens.order_by("-created").values_list("digest", flat=True)[: limit - 1])
        tokens.exclude(digest__in=keep).delete()
    return AuthToken.objects.create(user=user)
