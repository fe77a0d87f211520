"""Sentry: off without a DSN; with one, an error in a saga step reaches it (a fake transport here)."""

import json
import subprocess
import sys
import threading
from decimal import Decimal

import pytest
import sentry_sdk

from config.celery import app
from config.sentry import init_sentry
from orders import signals
from tests.deploy.conftest import ROOT
from tests.factories import ProductFactory, place_order
from tests.orders.saga_helpers import wait_for_saga, wait_until

PROBE = (
    "import django, json, sentry_sdk; django.setup(); c = sentry_sdk.get_client();"
    "print(json.dumps([c.is_active(), sorted(c.integrations), c.options['environment']]))"
)


def sentry_state(**env):
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("SENTRY_")}
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "config.settings_test", **env},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_sentry_is_off_without_a_dsn():
    assert sentry_state()[0] is False


def test_sentry_starts_with_the_django_celery_and_logging_integrations_when_a_dsn_is_set():
    active, integrations, environment = sentry_state(
        SENTRY_DSN="https://public@sentry.invalid/1", SENTRY_ENVIRONMENT="staging"
    )

    assert active is True
    assert {"django", "celery", "logging"} <= set(integrations)
    assert environment == "staging"


class FakeTransport(sentry_sdk.Transport):
    def __init__(self):
        super().__init__()
        self.events = []
        self.lock = threading.Lock()

    def capture_envelope(self, envelope):
        event = envelope.get_event()
        if event is not None:
            with self.lock:
                self.events.append(event)


@pytest.fixture
def sentry_events():
    """Sentry on in this process (the test worker runs in a thread of it), sending to a list."""
    transport = FakeTransport()
    init_sentry("https://public@sentry.invalid/1", environment="test", transport=transport)
    for task in app.tasks.values():
        task.__trace__ = None  # rebuilt on the next run, now through Sentry's Celery integration
    yield transport.events
    sentry_sdk.get_client().close()
    sentry_sdk.init()  # no DSN: off again


def exception_types(events):
    return [value["type"] for event in events for value in event.get("exception", {}).get("values", [])]


@pytest.mark.saga
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("saga_worker")
def test_an_exception_raised_by_a_step_task_reaches_sentry(sentry_events, monkeypatch, settings):
    settings.EMAIL_BACKEND = "notifications.backends.FakeEmailBackend"
    from orders.saga import store

    real_claim = store.claim

    def broken_claim(**kwargs):
        if kwargs["name"] == "process_payment":
            raise RuntimeError("a bug in the payment step")
        return real_claim(**kwargs)

    monkeypatch.setattr(store, "claim", broken_claim)
    place_order(products=[ProductFactory(price=Decimal("5.00"))], quantity=1)

    wait_until(lambda: "RuntimeError" in exception_types(sentry_events), message="the step's error in Sentry")

    event = next(e for e in sentry_events if "RuntimeError" in exception_types([e]))
    assert event["exception"]["values"][-1]["value"] == "a bug in the payment step"
    assert event["transaction"] == "orders.saga.process_payment"
    assert event["environment"] == "test"


@pytest.mark.saga
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("saga_worker")
def test_a_failing_receiver_during_a_step_is_logged_and_reaches_sentry_while_the_saga_goes_on(sentry_events, settings):
    settings.EMAIL_BACKEND = "notifications.backends.FakeEmailBackend"
    settings.SAGA_SIGNALS_RAISE = False  # production: a failing receiver is logged, the saga goes on

    def broken_receiver(step=None, **kwargs):
        if step == "create_shipment":
            raise ValueError("the warehouse feed is down")

    signals.step_succeeded.connect(broken_receiver, dispatch_uid="test-broken-receiver")
    try:
        order = place_order(products=[ProductFactory(price=Decimal("5.00"))], quantity=1)
        assert wait_for_saga(order).status == "completed"
        wait_until(lambda: "ValueError" in exception_types(sentry_events), message="the receiver's error in Sentry")
    finally:
        signals.step_succeeded.disconnect(dispatch_uid="test-broken-receiver")

    # Django's send_robust logs it first, then the engine; Sentry keeps one event per exception.
    (event,) = [e for e in sentry_events if "ValueError" in exception_types([e])]
    assert event["logger"] in {"django.dispatch", "orders.saga"}
    assert event["level"] == "error"
    assert event["exception"]["values"][-1]["value"] == "the warehouse feed is down"
