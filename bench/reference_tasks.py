"""The saga benchmark's reference: a bare chain of four tasks, each one UPDATE in its own transaction.

The table is created with raw SQL by ``bench/saga_throughput.py`` (no Django model); the
worker imports this module with ``-I bench.reference_tasks``.
"""

from celery import shared_task
from django.db import connection, transaction

UPDATE = "UPDATE bench_chain SET step = step + 1 WHERE id = %s"


def _step(row_id):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(UPDATE, [row_id])


@shared_task(name="bench.ref_1")
def ref_1(row_id):
    _step(row_id)


@shared_task(name="bench.ref_2")
def ref_2(row_id):
    _step(row_id)


@shared_task(name="bench.ref_3")
def ref_3(row_id):
    _step(row_id)


@shared_task(name="bench.ref_4")
def ref_4(row_id):
    _step(row_id)


REFERENCE_CHAIN = (ref_1, ref_2, ref_3, ref_4)
