"""A confirmation the saga gave up on is never sent after the cancellation (real worker)."""

import smtplib
from datetime import timedelta

import pytest
from django.core.mail.backends.locmem import EmailBackend
from django.utils import timezone

from notifications import tasks
from notifications.models import Notification
from tests.factories import ProductFactory, place_order

from .saga_helpers import assert_invariants, wait_for_saga, wait_until

pytestmark = [pytest.mark.saga, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("saga_worker")]


class OutageBackend(EmailBackend):
    """The mail server is unreachable while ``down``; then it takes messages again."""

    down = True

    def send_messages(self, messages):
        if OutageBackend.down:
            raise smtplib.SMTPServerDisconnected("the mail server is down")
        return super().send_messages(messages)


@pytest.fixture
def mail_outage(settings, monkeypatch):
    monkeypatch.setattr(OutageBackend, "down", True)
    settings.EMAIL_BACKEND = "tests.orders.test_truthful_emails.OutageBackend"
    return OutageBackend


def test_a_confirmation_the_saga_gave_up_on_is_withdrawn_and_only_the_cancellation_is_sent(
    mail_outage, mailoutbox, monkeypatch
):
    order = place_order(products=[ProductFactory()])

    saga = wait_for_saga(order)

    assert saga.status == "compensated"
    step = saga.steps.get(name="send_confirmation")
    assert step.status == "failed" and "gave up" in step.error
    confirmation = Notification.objects.get(order=order, template="order_confirmed")
    # Once queued, it is what the retry job used to send after the cancellation; the compensation
    # (send_cancellation) has closed its key since, and the send-time check would refuse it too.
    assert confirmation.status == "failed" and confirmation.last_error.startswith("voided")

    # The mail server is back; the retry job runs (its messages here, at once).
    mail_outage.down = False
    Notification.objects.update(updated_at=timezone.now() - timedelta(minutes=11))
    monkeypatch.setattr(tasks.send_notification, "delay", lambda pk: tasks.send_notification(pk))
    tasks.retry_queued_notifications()
    wait_until(
        lambda: Notification.objects.filter(order=order, template="order_cancelled", status="sent").exists(),
        message="the cancellation sent",
    )

    confirmation.refresh_from_db()
    assert confirmation.status == "failed"
    assert [m.subject.split("…")[1].strip() for m in mailoutbox] == ["was cancelled"]
    assert_invariants()
