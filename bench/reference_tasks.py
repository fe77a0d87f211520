"""The saga benchmark's reference: a bare chain of four tasks, each one ORM UPDATE in its own transaction.

The table is created with raw SQL by ``bench/saga_throughput.py``; the model below is unmanaged
(no migration) and exists only in processes that import this module: the bench itself and the
worker it starts with ``-I bench.reference_tasks``.
"""

from celery import shared_task
from django.db import models, transaction
from django.db.models import F


class BenchChain(models.Model):
    step = models.IntegerField(default=0)

    class Meta:
        app_label = "orders"  # an installed app is required; managed=False keeps it out of migrations
        db_table = "bench_chain"
        managed = False

    def __str__(self):
        return f"chain {self.pk} at step {self.step}"


def _step(row_id):
    with transaction.atomic():
        BenchChain.objects.filter(pk=row_id).update(step=F("step") + 1)


# Four tasks, one per link of the chain, so the worker routes and acknowledges four messages as for a saga.
REFERENCE_CHAIN = tuple(shared_task(name=f"bench.ref_{i}")(_step) for i in range(1, 5))
