from django.core.management.base import BaseCommand, CommandError

from orders.invariants import CHECKS


class Command(BaseCommand):
    help = (
        "Verify across the database that stock is conserved, no order is charged twice, every cancelled "
        "order that was charged is refunded, and every saga is terminal or within its deadline. Prints each "
        "violation; exits 1 if there is any."
    )

    def handle(self, *args, **options):
        violations = []
        for check in CHECKS:
            found = check()
            name = check.__name__.replace("_", " ")
            if found:
                self.stdout.write(self.style.ERROR(f"FAIL  {name}: {len(found)}"))
                for violation in found:
                    self.stdout.write(f"      {violation}")
            else:
                self.stdout.write(self.style.SUCCESS(f"ok    {name}"))
            violations += found
        if violations:
            raise CommandError(f"{len(violations)} invariant violation(s)")
