from django.db import models
from django_fsm import FSMField, FSMModelMixin, transition


class NotificationStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class Channel(models.TextChoices):
    EMAIL = "email", "Email"


class Notification(FSMModelMixin, models.Model):
    """One outgoing message. ``idempotency_key`` makes it exist (and send) once."""

    order = models.ForeignKey(
        "orders.Order", null=True, blank=True, on_delete=models.SET_NULL, related_name="notifications"
    )
    template = models.CharField(max_length=64)
    recipient = models.CharField(max_length=254)
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.EMAIL)
    context = models.JSONField(default=dict, blank=True)
    status = FSMField(
        max_length=16,
        choices=NotificationStatus.choices,
        default=NotificationStatus.QUEUED,
        protected=True,
        db_index=True,
    )
    idempotency_key = models.CharField(max_length=128, unique=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.template} to {self.recipient} ({self.status})"

    @transition(field=status, source=NotificationStatus.QUEUED, target=NotificationStatus.SENT)
    def mark_sent(self, when, batch=None):
        """``batch``: the ``config.sql.Batch`` the audit event of this transition joins (``audit.receivers``)."""
        self.sent_at = when
        self.last_error = ""

    @transition(field=status, source=NotificationStatus.QUEUED, target=NotificationStatus.FAILED)
    def mark_failed(self, error, batch=None):
        self.last_error = error

    @transition(field=status, source=NotificationStatus.FAILED, target=NotificationStatus.QUEUED)
    def requeue(self):
        pass
