"""The benchmark's reference: four tasks, each one ORM-level UPDATE in its own transaction."""

from celery import shared_task
from django.db import connection, transaction

SQL_FIRST = "UPDATE bench_chain SET step = step + 1, started_at = clock_timestamp() WHERE id = %s"
SQL_NEXT = "UPDATE bench_chain SET step = step + 1 WHERE id = %s"
SQL_LAST = "UPDATE bench_chain SET step = step + 1, finished_at = clock_timestamp() WHERE id = %s"


def _update(sql, row_id):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, [row_id])


@shared_task(name="bench.ref_1")
def ref_1(row_id):
    _update(SQL_FIRST, row_id)


@shared_task(name="bench.ref_2")
def ref_2(row_id):
    _update(SQL_NEXT, row_id)


@shared_task(name="bench.ref_3")
def ref_3(row_id):
    _update(SQL_NEXT, row_id)


@shared_task(name="bench.ref_4")
def ref_4(row_id):
    _update(SQL_LAST, row_id)
