"""Email backends."""

import logging
import smtplib

from django.core import mail
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend

logger = logging.getLogger(__name__)


class FakeEmailBackend(LocmemBackend):
    """Keeps messages in ``django.core.mail.outbox`` and logs one line each.

    Deterministic failures for demos and tests, by recipient address:
    ``...+reject@...`` is refused for good; ``...+down@...`` fails as if the
    SMTP server were unreachable (a transient error). Only the last
    ``OUTBOX_LIMIT`` messages are kept: a worker runs for weeks.
    """

    OUTBOX_LIMIT = 1000

    def send_messages(self, messages):
        for message in messages:
            for recipient in message.recipients():
                local = recipient.split("@", 1)[0]
                if local.endswith("+reject"):
                    raise smtplib.SMTPRecipientsRefused({recipient: (550, b"mailbox unavailable")})
                if local.endswith("+down"):
                    raise smtplib.SMTPServerDisconnected("connection unexpectedly closed")
        sent = super().send_messages(messages)
        del mail.outbox[: -self.OUTBOX_LIMIT]
        for message in messages:
            logger.info("email sent to %s: %s", ", ".join(message.recipients()), message.subject)
        return sent
