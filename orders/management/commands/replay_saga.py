import getpass
import uuid

from django.core.management.base import BaseCommand, CommandError

from audit.context import acting_as
from orders.models import SagaRun, StepKind, StepStatus
from orders.saga.recovery import SagaActionError, saga_retry


class Command(BaseCommand):
    help = (
        "Re-drive one saga from its recorded state: a failed saga is retried from where it failed, an "
        "active one has its next step (or compensation) sent again. Safe to repeat: every step is idempotent."
    )

    def add_arguments(self, parser):
        parser.add_argument("target", help="The order's public id (UUID) or the saga's numeric id.")
        parser.add_argument(
            "--from-step",
            help="Check that the saga resumes at this step (or an earlier one, whose rerun is a no-op); "
            "refused if an earlier step has not succeeded.",
        )
        parser.add_argument("--dry-run", action="store_true", help="Say what would happen; change nothing.")

    def handle(self, *args, target, from_step=None, dry_run=False, **options):
        try:
            lookup = {"order__public_id": uuid.UUID(target)}
        except ValueError:
            if not target.isdigit():
                raise CommandError(f"{target!r} is neither an order id (UUID) nor a saga id (number).") from None
            lookup = {"pk": int(target)}
        saga = SagaRun.objects.filter(**lookup).first()
        if saga is None:
            raise CommandError(f"No saga found for {target}.")
        forward = list(saga.steps.filter(kind=StepKind.FORWARD).order_by("position").values_list("name", "status"))
        next_step = next((name for name, status in forward if status != StepStatus.SUCCEEDED), None)
        if from_step is not None:
            names = [name for name, _ in forward]
            if from_step not in names:
                raise CommandError(f"--from-step {from_step!r}: the saga's steps are {', '.join(names)}.")
            if next_step is not None and names.index(from_step) > names.index(next_step):
                raise CommandError(f"--from-step {from_step}: {next_step} has not succeeded yet; start there.")
        if dry_run:
            self.stdout.write(
                f"saga {saga.pk} (order {saga.order.public_id}) is {saga.status}; "
                f"would replay from {next_step or 'its compensations'} (dry run: nothing changed)"
            )
            return
        try:
            with acting_as(label=f"command:replay_saga ({getpass.getuser()})"):
                outcome = saga_retry(saga.pk)
        except SagaActionError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"saga {saga.pk} (order {saga.order.public_id}): {outcome}")
