from django.core.management.base import BaseCommand

from orders import analytics


class Command(BaseCommand):
    help = (
        "Rebuild the order analytics read model (daily totals, status counts, product sales, step "
        "failures) from the orders and the audit trail, in one transaction."
    )

    def handle(self, *args, **options):
        analytics.rebuild()
        figures = analytics.snapshot()
        self.stdout.write(
            self.style.SUCCESS(
                f"Rebuilt: {len(figures['days'])} day rows, {len(figures['statuses'])} statuses, "
                f"{len(figures['products'])} products, {len(figures['failures'])} failing steps."
            )
        )
