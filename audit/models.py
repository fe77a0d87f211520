from django.conf import settings
from django.db import models


class ActorType(models.TextChoices):
    CUSTOMER = "customer", "Customer"
    STAFF = "staff", "Staff"
    SYSTEM = "system", "System"


class AuditEvent(models.Model):
    """One thing that happened, append-only: rows are never updated or deleted."""

    actor_type = models.CharField(max_length=16, choices=ActorType.choices, default=ActorType.SYSTEM)
    # No database constraint and no cascade: deleting a user must not rewrite history.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    actor_label = models.CharField(max_length=150, blank=True, default="")
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    order_id = models.UUIDField(null=True, blank=True, help_text="The order this event belongs to (public id).")
    event = models.CharField(max_length=64)
    from_state = models.CharField(max_length=32, blank=True, default="")
    to_state = models.CharField(max_length=32, blank=True, default="")
    payload = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=128, blank=True, default="", db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["object_type", "object_id", "created_at"], name="audit_object_idx"),
            models.Index(fields=["order_id", "created_at"], name="audit_order_idx"),
        ]

    def __str__(self):
        return f"{self.object_type}:{self.object_id} {self.event}"
