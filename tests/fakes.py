"""Test adapters whose books live in Redis, outside PostgreSQL.

The bundled fakes (``payments.gateways.FakeGateway``, ``shipping.carriers.FakeCarrier``)
keep their books in our own database, committed synchronously: a lost asynchronous
commit of ours can never lose or undo them, but their tables still sit next to ours.
These two keep them where a real gateway or carrier does, somewhere a crash of our
database cannot touch, so a test can lose our rows and still see what the outside world
did. Select them with ``settings.PAYMENT_GATEWAY = "tests.fakes.RedisGateway"`` and
``settings.SHIPPING_CARRIER = "tests.fakes.RedisCarrier"``; ``redis_books()`` empties
their books. Every call is one Lua script: atomic, as the real systems' own records are.

They honour idempotency keys, closing a key (``void`` / ``cancel`` before anything
happened refuses a later charge or booking with it) and ``books()``; any payment token
succeeds and every address is accepted.
"""

import hashlib
from decimal import Decimal
from functools import cache

import redis
from django.conf import settings
from django.db import connection

from payments.gateways import ChargeResult, PaymentDeclined, PaymentGateway
from shipping.carriers import BookingCancelled, Carrier

PREFIX = "tests.fakes:"


@cache
def _client(url):
    return redis.Redis.from_url(url, decode_responses=True)


def client():
    return _client(settings.CELERY_BROKER_URL)


def redis_books_clear():
    """Forget everything both adapters remember."""
    keys = list(client().scan_iter(match=f"{PREFIX}*", count=1000))
    if keys:
        client().delete(*keys)


def _guard():
    if connection.in_atomic_block:
        raise RuntimeError("An external system must not be called inside a database transaction.")


def _script(source):
    return client().register_script(source)


def _reference(prefix, key):
    return f"{prefix}_{hashlib.sha256(key.encode()).hexdigest()[:20]}"


# A key's hash: state (charged | void | refunded), kind (charge | refund), reference, amount, currency.
_CHARGE = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'void' then return {'void'} end
if not state then
  redis.call('HSET', KEYS[1], 'kind', 'charge', 'state', 'charged', 'reference', ARGV[1], 'amount', ARGV[2],
             'currency', ARGV[3])
  redis.call('SET', KEYS[2], ARGV[4])
end
return {'charged', redis.call('HGET', KEYS[1], 'reference'), redis.call('HGET', KEYS[1], 'amount'),
        redis.call('HGET', KEYS[1], 'currency')}
"""
_VOID = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'charged' then
  return {'charged', redis.call('HGET', KEYS[1], 'reference'), redis.call('HGET', KEYS[1], 'amount'),
          redis.call('HGET', KEYS[1], 'currency')}
end
redis.call('HSET', KEYS[1], 'kind', 'charge', 'state', 'void')
return {'void'}
"""
_REFUND = """
if not redis.call('GET', KEYS[2]) then return {'no_such_charge'} end
if not redis.call('HGET', KEYS[1], 'state') then
  redis.call('HSET', KEYS[1], 'kind', 'refund', 'state', 'refunded', 'reference', ARGV[1], 'amount', ARGV[2],
             'currency', ARGV[3], 'charge', ARGV[4])
end
return {'refunded', redis.call('HGET', KEYS[1], 'reference')}
"""


class RedisGateway(PaymentGateway):
    name = "redis-fake"

    def _charge_result(self, answer):
        return ChargeResult(answer[1], Decimal(answer[2]), answer[3]) if answer[0] == "charged" else None

    def charge(self, *, idempotency_key, token, amount, currency):
        _guard()
        reference = _reference("ch", idempotency_key)
        answer = _script(_CHARGE)(
            keys=[PREFIX + "gw:" + idempotency_key, PREFIX + "gw-ref:" + reference],
            args=[reference, str(amount), currency, idempotency_key],
        )
        if answer[0] == "void":
            raise PaymentDeclined("charge_voided", "A void under this key came first: the charge was not made.")
        return self._charge_result(answer)

    def find_charge(self, *, idempotency_key):
        _guard()
        book = client().hgetall(PREFIX + "gw:" + idempotency_key)
        if book.get("kind") != "charge" or book.get("state") != "charged":
            return None
        return ChargeResult(book["reference"], Decimal(book["amount"]), book["currency"])

    def void(self, *, idempotency_key):
        _guard()
        return self._charge_result(_script(_VOID)(keys=[PREFIX + "gw:" + idempotency_key]))

    def refund(self, *, idempotency_key, charge_reference, amount, currency):
        _guard()
        reference = _reference("re", idempotency_key)
        answer = _script(_REFUND)(
            keys=[PREFIX + "gw:" + idempotency_key, PREFIX + "gw-ref:" + charge_reference],
            args=[reference, str(amount), currency, charge_reference],
        )
        if answer[0] == "no_such_charge":
            raise PaymentDeclined("no_such_charge", f"No charge {charge_reference}.")
        return answer[1]

    def books(self):
        entries = []
        for key in client().scan_iter(match=f"{PREFIX}gw:*", count=1000):
            book = client().hgetall(key)
            if book.get("state") in ("charged", "refunded"):
                entries.append((key.removeprefix(PREFIX + "gw:"), book["kind"]))
        return entries


# A key's hash: booked (0/1), cancelled (0/1), tracking.
_BOOK = """
if redis.call('HGET', KEYS[1], 'cancelled') == '1' then return {'cancelled'} end
if redis.call('HGET', KEYS[1], 'booked') ~= '1' then
  redis.call('HSET', KEYS[1], 'booked', '1', 'cancelled', '0', 'tracking', ARGV[1])
end
return {'booked', redis.call('HGET', KEYS[1], 'tracking')}
"""


class RedisCarrier(Carrier):
    name = "redis-fake"

    def book(self, *, idempotency_key, address, parcels):
        _guard()
        tracking_number = "RK" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:12].upper()
        answer = _script(_BOOK)(keys=[PREFIX + "carrier:" + idempotency_key], args=[tracking_number])
        if answer[0] == "cancelled":
            raise BookingCancelled("The booking under this key was cancelled before it was made.")
        return answer[1]

    def cancel(self, *, idempotency_key):
        _guard()
        client().hset(PREFIX + "carrier:" + idempotency_key, "cancelled", "1")

    def books(self):
        entries = []
        for key in client().scan_iter(match=f"{PREFIX}carrier:*", count=1000):
            book = client().hgetall(key)
            if book.get("booked") == "1":
                entries.append((key.removeprefix(PREFIX + "carrier:"), book.get("cancelled") == "1"))
        return entries
