"""Finding and re-driving sagas whose chain was lost, and operator actions.

Celery is treated as at-least-once and possibly lossy: the chain message is
the only copy of what runs next, and a crash between commit and enqueue loses
the first one. The database knows where every saga is, so ``saga_redrive``
can always send the right step again; duplicates are harmless because every
step is idempotent.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from orders.models import ACTIVE_SAGA_STATUSES, CANCELLABLE, OrderStatus, SagaRun, SagaStatus, StepKind, StepStatus
from orders.selectors import order_stock_lines
from orders.transitions import order_move

from . import engine

log = logging.getLogger("orders.saga")


class SagaActionError(Exception):
    """The saga is not in a state that allows this action; the message says why."""


def sagas_idle(*, idle_seconds=None, now=None):
    """Active sagas with no recorded progress for ``idle_seconds``."""
    now = now or timezone.now()
    idle = settings.SAGA_REDRIVE_IDLE_SECONDS if idle_seconds is None else idle_seconds
    return SagaRun.objects.filter(status__in=ACTIVE_SAGA_STATUSES, updated_at__lte=now - timedelta(seconds=idle))


def saga_redrive(saga_id, *, now=None) -> str:
    """Send an idle saga's next step (or compensation) again. Returns what it did."""
    with transaction.atomic():
        saga = engine.lock_saga(saga_id)
        if saga is None:
            raise SagaActionError(f"No saga {saga_id}.")
        now = now or timezone.now()
        if not saga.is_active:
            return f"nothing to do: saga is {saga.status}"
        if saga.status == SagaStatus.COMPENSATING:
            step = saga.steps.filter(kind=StepKind.COMPENSATION).exclude(status=StepStatus.SUCCEEDED).first()
            if step is None:
                engine.finish_compensation(saga, now)
                return "compensation finished"
            if engine.in_flight(saga, step, now):
                return f"waiting: {step.name} is in progress"
            names = engine.pending_compensations(saga)
        else:
            step = saga.steps.filter(kind=StepKind.FORWARD).exclude(status=StepStatus.SUCCEEDED).first()
            if step is None:
                return "nothing to do: every step succeeded"
            if engine.in_flight(saga, step, now):
                return f"waiting: {step.name} is in progress"
            if saga.cancel_requested or now >= saga.deadline_at:
                engine.compensate_for_stop(saga, now)
                return "compensating: " + ("cancel requested" if saga.cancel_requested else "deadline passed")
            names = engine.forward_names(saga, step.name)
        saga.redrives += 1
        saga.save(update_fields=["redrives", "updated_at"])
        engine.dispatch_on_commit(saga.pk, names)
    log.warning("saga redriven saga=%s order=%s from=%s", saga.pk, saga.order.public_id, names[0])
    return f"redriven from {names[0]}"


def redrive_idle_sagas(*, idle_seconds=None, limit=500) -> dict:
    """The beat job: re-drive every idle saga. Returns a count per outcome."""
    counts = {}
    for saga_id in sagas_idle(idle_seconds=idle_seconds).order_by("updated_at").values_list("pk", flat=True)[:limit]:
        outcome = saga_redrive(saga_id).split(":")[0]
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def saga_retry(saga_id) -> str:
    """Operator: run a failed saga again from where it failed.

    A saga that failed while compensating retries its compensations; one that
    failed going forward (a step kept crashing) resumes from that step with a
    fresh deadline. Either way the order leaves ``needs_attention``.

    A saga that goes forward again first holds its order's stock again if that
    hold ended while it waited (expired, released or deleted): the order never
    reaches paid or confirmed without stock. When the stock is gone meanwhile the
    saga is compensated instead (the order ends ``cancelled``).
    """
    with transaction.atomic():
        saga = engine.lock_saga(saga_id)
        if saga is None:
            raise SagaActionError(f"No saga {saga_id}.")
        if saga.status != SagaStatus.FAILED:
            if saga.is_active:
                return saga_redrive(saga.pk)
            raise SagaActionError(f"Saga is {saga.status}: only failed or stuck sagas can be retried.")
        order = engine.lock_order(saga)
        compensations = saga.steps.filter(kind=StepKind.COMPENSATION)
        if compensations.exists():
            for step in compensations.filter(status__in=[StepStatus.FAILED, StepStatus.RUNNING]):
                step.status, step.deliveries, step.attempts, step.task_id = StepStatus.PENDING, 0, 0, ""
                step.save(update_fields=["status", "deliveries", "attempts", "task_id"])
            saga.status, saga.finished_at = SagaStatus.COMPENSATING, None
            saga.save(update_fields=["status", "finished_at", "updated_at"])
            order_move(order, "start_compensation", order.cancel_reason)
            names = engine.pending_compensations(saga)
        else:
            if not _hold_stock_again(saga, order):
                engine.begin_compensation(
                    saga,
                    reason="Sorry, the items of your order are no longer in stock.",
                    error="retried by an operator, but the stock its hold had given back is gone",
                )
                log.warning("saga retried by operator saga=%s: stock gone, compensating", saga.pk)
                return "compensating: the stock is no longer available"
            step = saga.steps.filter(kind=StepKind.FORWARD).exclude(status=StepStatus.SUCCEEDED).first()
            step.status, step.deliveries, step.attempts, step.task_id = StepStatus.PENDING, 0, 0, ""
            step.save(update_fields=["status", "deliveries", "attempts", "task_id"])
            saga.status, saga.finished_at, saga.error = SagaStatus.RUNNING, None, ""
            saga.deadline_at = timezone.now() + timedelta(seconds=settings.SAGA_DEADLINE_SECONDS)
            saga.save(update_fields=["status", "finished_at", "error", "deadline_at", "updated_at"])
            order_move(order, "resume", resume_state(saga))
            names = engine.forward_names(saga, step.name)
        engine.dispatch_on_commit(saga.pk, names)
    log.warning("saga retried by operator saga=%s from=%s", saga.pk, names[0])
    return f"retrying from {names[0]}"


def _hold_stock_again(saga, order) -> bool:
    """Before a failed saga goes forward again: hold the stock it had reserved. False if the stock is gone."""
    from catalog.services import OutOfStock, reservation_renew

    state = resume_state(saga)
    if state == OrderStatus.PENDING:
        return True  # it never reserved: its reserve step runs again
    try:
        reservation_renew(order=order, lines=order_stock_lines(order), paid=state != OrderStatus.RESERVED)
    except OutOfStock:
        return False
    return True


def resume_state(saga):
    """The order state that matches the saga's last succeeded forward step."""
    state = OrderStatus.PENDING
    transitions = {
        "mark_reserved": OrderStatus.RESERVED,
        "mark_paid": OrderStatus.PAID,
        "mark_shipment_created": OrderStatus.SHIPMENT_CREATED,
    }
    definition = engine.definition_of(saga)
    for step in saga.steps.filter(kind=StepKind.FORWARD, status=StepStatus.SUCCEEDED).order_by("position"):
        state = transitions.get(definition.step(step.name).advance, state)
    return state


def saga_compensate(saga_id, *, reason) -> str:
    """Operator: give up on a saga and undo what it did (order ends ``cancelled``).

    Saga and order are locked together, so the order's state is checked as it is
    now: a ship that committed first makes this a clear refusal, not a crash.
    """
    with transaction.atomic():
        saga = engine.lock_saga(saga_id, with_order=True)
        if saga is None:
            raise SagaActionError(f"No saga {saga_id}.")
        if saga.status == SagaStatus.COMPENSATING:
            raise SagaActionError("The saga is already compensating.")
        if saga.status == SagaStatus.COMPENSATED:
            raise SagaActionError("The saga was already compensated.")
        if saga.order.status not in [*CANCELLABLE, OrderStatus.NEEDS_ATTENTION]:
            raise SagaActionError(f"The order is {saga.order.status}: it can no longer be cancelled.")
        running = saga.steps.filter(kind=StepKind.FORWARD, status=StepStatus.RUNNING)
        if any(engine.in_flight(saga, step, timezone.now()) for step in running):
            saga.cancel_requested = True
            saga.save(update_fields=["cancel_requested", "updated_at"])
            return "cancel requested: compensation starts when the running step finishes"
        engine.begin_compensation(saga, reason=reason, error="compensation started by an operator")
    return "compensating"


def saga_resolve(saga_id, *, note) -> str:
    """Operator: a failed saga was settled by hand; close it with a note (order ``cancelled``).

    The gateway is asked first (the payment key closed, so nothing still on its way can
    charge) and any parcel booked under the order's key is cancelled at the carrier.
    Refused while the customer's money is still out: a charge the gateway holds that our
    books do not show refunded, or a payment still authorized or captured (the saga's
    compensations, retried, refund by key); the stock it still holds is released.

    The note is internal: it goes to the audit trail (and the admin shows it from
    there), never into the order. The customer is told ``RESOLVED_REASON``.
    """
    from audit.services import audit_record
    from catalog.models import Reservation, ReservationStatus
    from catalog.services import reservation_release
    from payments.selectors import payment_refunded, payments_not_refunded
    from shipping.selectors import shipments_booked

    note = (note or "").strip()
    if not note:
        raise SagaActionError("A note saying what was done by hand is required.")
    saga = SagaRun.objects.select_related("order").filter(pk=saga_id).first()
    if saga is None:
        raise SagaActionError(f"No saga {saga_id}.")
    if saga.status != SagaStatus.FAILED:
        raise SagaActionError(f"Saga is {saga.status}: only failed sagas can be marked resolved.")
    charge_key, charge = _close_outside(saga.order)
    with transaction.atomic():
        saga = engine.lock_saga(saga_id)
        if saga.status != SagaStatus.FAILED:
            raise SagaActionError(f"Saga is {saga.status}: only failed sagas can be marked resolved.")
        order = engine.lock_order(saga)
        if charge is not None and not payment_refunded(order=order, idempotency_key=charge_key):
            raise SagaActionError(
                f"Not resolved: the gateway holds charge {charge.reference} for this order and it was not "
                "refunded. Retry the saga once the gateway answers (its refund asks by key), or refund it "
                "there and retry."
            )
        # The order ends cancelled: what it still holds outside must have been settled (refunded,
        # cancelled) first, through the saga or by hand; our own stock hold we give back here.
        unsettled = [f"payment {p.pk} is still {p.status}" for p in payments_not_refunded(order=order)]
        unsettled += [f"parcel {s.tracking_number} is still booked" for s in shipments_booked(order=order)]
        if unsettled:
            raise SagaActionError(
                f"Not resolved: {'; '.join(unsettled)}. Retry the saga once the gateway or carrier answers "
                "again (its compensations refund and cancel by key), then resolve what is left."
            )
        reservation = Reservation.objects.filter(order=order, status=ReservationStatus.ACTIVE).first()
        if reservation is not None:
            reservation_release(reservation=reservation)
        order_move(order, "resolve")
        saga.status, saga.finished_at = SagaStatus.RESOLVED, timezone.now()
        saga.save(update_fields=["status", "finished_at", "updated_at"])
        audit_record(
            obj=saga, event="saga_resolved", to_state=saga.status, payload={"note": note}, order_id=order.public_id
        )
    return "resolved"


def _close_outside(order):
    """Before resolving (outside any transaction, as compensations call out): close the order's
    payment key at the gateway, so no charge still on its way can land, and learn what it took;
    cancel at the carrier any parcel booked under the order's key. Returns (payment key, the
    charge the gateway holds or None). A gateway or carrier that cannot be asked refuses it.
    """
    from payments.gateways import get_gateway
    from payments.services import payment_due
    from shipping.services import shipment_cancel

    charge_key = engine.step_key(order, "process_payment")
    try:
        charge = get_gateway().void(idempotency_key=charge_key) if payment_due(order) else None
        shipment_cancel(order=order, idempotency_key=engine.step_key(order, "create_shipment"))
    except Exception as exc:
        raise SagaActionError(f"Not resolved: the gateway or carrier could not be asked ({exc}); try again.") from exc
    return charge_key, charge


def expire_reservations(*, limit=500) -> dict:
    """The beat job: unpaid holds past ``expires_at`` end.

    A saga still working on the order is compensated (its release_inventory
    gives the stock back); otherwise the reservation simply expires. The saga row
    is locked while deciding, so an operator's retry or compensation of the same
    saga goes first or after, never in between; under that lock the hold is read
    again, so one renewed (a retry) or kept (a payment) since this job listed it
    is left alone. A failed saga's hold expires too: retrying that saga holds the
    stock again (``saga_retry``).
    """
    from catalog.models import Reservation, ReservationStatus

    now = timezone.now()
    counts = {"compensating": 0, "expired": 0, "skipped": 0}
    overdue = Reservation.objects.filter(status=ReservationStatus.ACTIVE, expires_at__lte=now).select_related(
        "order__saga"
    )
    for reservation in overdue.order_by("expires_at")[:limit]:
        counts[_expire_one(reservation)] += 1
    return counts


def _expire_one(reservation) -> str:
    from catalog.services import reservation_expire, reservation_still_overdue

    saga = getattr(reservation.order, "saga", None)
    with transaction.atomic():
        saga = engine.lock_saga(saga.pk) if saga is not None else None
        if not reservation_still_overdue(reservation=reservation):
            return "skipped"  # renewed by a retry, or kept by a payment, since the job read it
        if saga is not None and saga.status in (SagaStatus.PENDING, SagaStatus.RUNNING):
            try:
                saga_compensate(saga.pk, reason="We could not complete your order in time.")
            except SagaActionError:
                return "skipped"
            return "compensating"
        if saga is not None and saga.status == SagaStatus.COMPENSATING:
            return "skipped"  # its release_inventory is on the way
        return "expired" if reservation_expire(reservation=reservation) else "skipped"
