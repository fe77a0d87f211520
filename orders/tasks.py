"""Celery tasks of the saga: thin wrappers that call the engine.

One task per step and per compensation, each with the step's time limit. The
engine decides what happens next; the task only turns its answer into Celery
terms (retry, or drop the rest of the chain).
"""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from .saga import engine, recovery
from .saga.steps import ORDER_FULFILMENT

STEP_TASKS = {}  # by step name; the engine sends them by task name (``orders.saga.<step>``)


def _run(task, runner, saga_id, name):
    outcome = runner(saga_id, name, task_id=task.request.id)
    if isinstance(outcome, engine.Retry):
        raise task.retry(countdown=outcome.countdown)
    if outcome == engine.STOP:
        task.request.chain = None  # the saga log decided: the rest of this chain must not run
    return outcome


def _make_task(name, runner, time_limit):
    def run(self, saga_id):
        return _run(self, runner, saga_id, name)

    run.__name__ = run.__qualname__ = name
    return shared_task(
        bind=True,
        name=f"orders.saga.{name}",
        max_retries=None,  # the engine counts attempts in the database
        soft_time_limit=time_limit,
        time_limit=time_limit + 15,
        # The database itself failed (restart, network): retry the whole task;
        # the step's recorded state tells the next delivery where it stands.
        autoretry_for=(OperationalError, InterfaceError),
        retry_backoff=True,
        retry_backoff_max=60,
        retry_jitter=True,
    )(run)


for _step in ORDER_FULFILMENT.steps:
    STEP_TASKS[_step.name] = _make_task(_step.name, engine.run_forward, _step.time_limit)
    STEP_TASKS[_step.compensation] = _make_task(_step.compensation, engine.run_compensation, _step.time_limit)


@shared_task(name="orders.redrive_idle_sagas", soft_time_limit=120, time_limit=150)
def redrive_idle_sagas():
    """Beat: re-drive sagas whose chain was lost (worker killed, broker restarted)."""
    return recovery.redrive_idle_sagas()


@shared_task(name="orders.expire_reservations", soft_time_limit=120, time_limit=150)
def expire_reservations():
    """Beat: end unpaid stock holds past their expiry (compensating their sagas)."""
    return recovery.expire_reservations()


@shared_task(name="orders.nightly_cleanup", soft_time_limit=3000, time_limit=3300)
def nightly_cleanup():
    """Beat: the retention cleanup (``CLEANUP_OLDER_THAN_DAYS``; audit events are left alone)."""
    from datetime import timedelta

    from django.conf import settings

    from .cleanup import cleanup

    return cleanup(older_than=timedelta(days=settings.CLEANUP_OLDER_THAN_DAYS))
