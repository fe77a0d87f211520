import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from orders.cleanup import RetentionError, cleanup

UNITS = {"h": "hours", "d": "days"}


class Command(BaseCommand):
    help = (
        "Delete, in batches, what settled orders (delivered or cancelled) left behind and is older than "
        "--older-than: step rows of their sagas, sent notifications, expired and released reservations; audit "
        "events only with --include-audit and never younger than AUDIT_RETENTION_DAYS."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", required=True, help="Age, e.g. 90d or 36h.")
        parser.add_argument("--include-audit", action="store_true", help="Also delete old audit events.")
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")
        parser.add_argument("--batch-size", type=int, default=1000)

    def handle(self, *args, older_than, include_audit, dry_run, batch_size, **options):
        match = re.fullmatch(r"(\d+)([hd])", older_than)
        if not match:
            raise CommandError(f"--older-than {older_than!r}: use a number and h or d (e.g. 90d).")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        age = timedelta(**{UNITS[match[2]]: int(match[1])})
        try:
            counts = cleanup(older_than=age, include_audit=include_audit, dry_run=dry_run, batch_size=batch_size)
        except RetentionError as exc:
            raise CommandError(str(exc)) from exc
        verb = "would delete" if dry_run else "deleted"
        for name, count in counts.items():
            self.stdout.write(f"{verb} {count} {name}")
