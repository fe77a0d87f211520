import getpass
import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from audit.context import acting_as
from orders.models import SagaRun, SagaStatus
from orders.saga.recovery import SagaActionError, saga_retry

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def duration(value):
    match = re.fullmatch(r"(\d+)([smhd])", value)
    if not match:
        raise ValueError(value)
    return timedelta(**{UNITS[match[2]]: int(match[1])})


class Command(BaseCommand):
    help = (
        "Re-drive many sagas from their recorded state (the same function as replay_saga and the admin's "
        "retry), e.g. replay_sagas --status failed --since 2h --limit 100. Prints one line per saga and a summary."
    )

    def add_arguments(self, parser):
        parser.add_argument("--status", required=True, choices=[s for s, _ in SagaStatus.choices])
        parser.add_argument("--since", default=None, help="Only sagas updated within this window: 30m, 2h, 7d.")
        parser.add_argument("--limit", type=int, default=100, help="At most this many sagas (default 100).")
        parser.add_argument("--dry-run", action="store_true", help="List what would be replayed; change nothing.")

    def handle(self, *args, status, since, limit, dry_run, **options):
        if limit < 1:
            raise CommandError("--limit must be at least 1.")
        sagas = SagaRun.objects.filter(status=status).select_related("order").order_by("updated_at")
        if since:
            try:
                sagas = sagas.filter(updated_at__gte=timezone.now() - duration(since))
            except ValueError:
                raise CommandError(f"--since {since!r}: use a number and s, m, h or d (e.g. 2h).") from None
        sagas = list(sagas[:limit])
        outcomes = {}
        with acting_as(label=f"command:replay_sagas ({getpass.getuser()})"):
            for saga in sagas:
                if dry_run:
                    outcome = "would replay"
                else:
                    try:
                        outcome = saga_retry(saga.pk)
                    except SagaActionError as exc:
                        outcome = f"refused: {exc}"
                self.stdout.write(f"saga {saga.pk} (order {saga.order.public_id}): {outcome}")
                key = outcome.split(" from ")[0].split(":")[0]
                outcomes[key] = outcomes.get(key, 0) + 1
        summary = ", ".join(f"{n} {what}" for what, n in sorted(outcomes.items())) or "nothing to replay"
        self.stdout.write(self.style.SUCCESS(f"{len(sagas)} saga(s): {summary}"))
        if any(key == "refused" for key in outcomes):
            raise CommandError("some sagas could not be replayed")
