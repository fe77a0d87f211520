import getpass
import uuid

from django.core.management.base import BaseCommand, CommandError

from audit.context import acting_as
from orders.models import SagaRun
from orders.saga.recovery import SagaActionError, saga_retry


class Command(BaseCommand):
    help = (
        "Re-drive one saga from its recorded state: a failed saga is retried from where it failed, an "
        "active one has its next step (or compensation) sent again. Safe to repeat: every step is idempotent."
    )

    def add_arguments(self, parser):
        parser.add_argument("target", help="The order's public id (UUID) or the saga's numeric id.")

    def handle(self, *args, target, **options):
        try:
            lookup = {"order__public_id": uuid.UUID(target)}
        except ValueError:
            if not target.isdigit():
                raise CommandError(f"{target!r} is neither an order id (UUID) nor a saga id (number).") from None
            lookup = {"pk": int(target)}
        saga = SagaRun.objects.filter(**lookup).first()
        if saga is None:
            raise CommandError(f"No saga found for {target}.")
        try:
            with acting_as(label=f"command:replay_saga ({getpass.getuser()})"):
                outcome = saga_retry(saga.pk)
        except SagaActionError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"saga {saga.pk} (order {saga.order.public_id}): {outcome}")
