"""replay_saga, check_invariants and the admin's saga actions (no worker: dispatch is captured)."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from catalog.models import StockLevel
from orders.models import SagaRun
from orders.saga import events as saga_events
from orders.tasks import redrive_idle_sagas
from tests.factories import ProductFactory, place_order

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    calls = []
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: calls.append((saga_id, names)))
    return calls


def failed_saga(order):
    """A saga whose payment step kept crashing its worker."""
    saga = order.saga
    saga.steps.filter(name="reserve_inventory").update(status="succeeded")
    saga.steps.filter(name="process_payment").update(status="failed", deliveries=11, error="crashed")
    SagaRun.objects.filter(pk=saga.pk).update(status="failed", error="process_payment was delivered 11 times")
    type(order).objects.filter(pk=order.pk).update(status="needs_attention")
    return saga


def test_replay_saga_retries_a_failed_saga_by_order_id(sent, django_capture_on_commit_callbacks):
    order = place_order()
    saga = failed_saga(order)
    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("replay_saga", str(order.public_id), stdout=out)

    assert "retrying from process_payment" in out.getvalue()
    assert sent[-1] == (saga.pk, ["process_payment", "create_shipment", "send_confirmation"])
    order.refresh_from_db()
    saga.refresh_from_db()
    assert (order.status, saga.status) == ("reserved", "running")
    assert saga.steps.get(name="process_payment").deliveries == 0


def test_replay_saga_by_saga_id_redrives_an_active_saga(sent, django_capture_on_commit_callbacks):
    order = place_order()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("replay_saga", str(order.saga.pk), stdout=StringIO())
    assert sent[-1][1][0] == "reserve_inventory"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("not-an-id", "neither an order id"),
        ("999999", "No saga found"),
        ("00000000-0000-0000-0000-000000000000", "No saga found"),
    ],
)
def test_replay_saga_refuses_bad_targets(target, message):
    with pytest.raises(CommandError, match=message):
        call_command("replay_saga", target)


def test_replay_saga_refuses_a_finished_saga():
    order = place_order()
    SagaRun.objects.filter(pk=order.saga.pk).update(status="completed")
    with pytest.raises(CommandError, match="only failed or stuck sagas"):
        call_command("replay_saga", str(order.public_id))


def test_check_invariants_passes_on_a_clean_database_and_reports_violations():
    product = ProductFactory(on_hand=5)
    place_order(products=[product])
    out = StringIO()
    call_command("check_invariants", stdout=out)
    assert "FAIL" not in out.getvalue()

    StockLevel.objects.filter(product=product).update(reserved=2)
    out = StringIO()
    with pytest.raises(CommandError, match="1 invariant violation"):
        call_command("check_invariants", stdout=out)
    assert f"{product.sku} has reserved=2 but active reservations hold 0" in out.getvalue()


def test_check_invariants_reports_a_saga_past_its_deadline():
    from datetime import timedelta

    from django.utils import timezone

    order = place_order()
    SagaRun.objects.filter(pk=order.saga.pk).update(deadline_at=timezone.now() - timedelta(hours=1))
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("check_invariants", stdout=out)
    assert "past its deadline" in out.getvalue()


def test_beat_task_redrives_idle_sagas(sent, settings, django_capture_on_commit_callbacks):
    settings.SAGA_REDRIVE_IDLE_SECONDS = 0
    order = place_order()
    with django_capture_on_commit_callbacks(execute=True):
        assert redrive_idle_sagas() == {"redriven from reserve_inventory": 1}
    assert sent == [(order.saga.pk, ["reserve_inventory", "process_payment", "create_shipment", "send_confirmation"])]


@pytest.fixture
def admin_client_with_perm(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


def test_admin_retry_action_calls_the_same_recovery(sent, admin_client_with_perm, django_capture_on_commit_callbacks):
    order = place_order()
    saga = failed_saga(order)
    url = reverse("admin:orders_sagarun_changelist")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_with_perm.post(url, {"action": "retry", "_selected_action": [saga.pk]}, follow=True)
    assert f"Saga {saga.pk}: retrying from process_payment" in response.content.decode()
    assert sent[-1][1][0] == "process_payment"


def test_admin_compensate_action_starts_compensation(sent, admin_client_with_perm, django_capture_on_commit_callbacks):
    order = place_order()
    saga = failed_saga(order)
    url = reverse("admin:orders_sagarun_changelist")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client_with_perm.post(url, {"action": "compensate", "_selected_action": [saga.pk]})
    saga.refresh_from_db()
    order.refresh_from_db()
    assert (saga.status, order.status) == ("compensating", "compensating")
    assert sent[-1][1] == [
        "send_cancellation",
        "cancel_shipment",
        "refund_payment",
        "release_inventory",
    ]  # every step's, whatever the rows say


def test_staff_without_the_permission_cannot_retry(sent, client, django_user_model):
    user = django_user_model.objects.create_user("clerk", password="pw", is_staff=True)
    from django.contrib.auth.models import Permission

    user.user_permissions.add(Permission.objects.get(codename="view_sagarun"))
    client.force_login(user)
    order = place_order()
    saga = failed_saga(order)
    client.post(reverse("admin:orders_sagarun_changelist"), {"action": "retry", "_selected_action": [saga.pk]})
    saga.refresh_from_db()
    assert saga.status == "failed"
    assert sent == []


def test_replay_sagas_dry_run_changes_nothing_then_replays(sent, django_capture_on_commit_callbacks):
    sagas = [failed_saga(place_order()) for _ in range(3)]
    out = StringIO()
    call_command("replay_sagas", "--status", "failed", "--since", "2h", "--limit", "2", "--dry-run", stdout=out)
    assert out.getvalue().count("): would replay") == 2 and "2 saga(s): 2 would replay" in out.getvalue()
    assert SagaRun.objects.filter(status="failed").count() == 3 and sent == []

    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("replay_sagas", "--status", "failed", stdout=out)
    assert "3 saga(s): 3 retrying" in out.getvalue()
    assert {names[0] for _, names in sent} == {"process_payment"}
    assert not SagaRun.objects.filter(pk__in=[s.pk for s in sagas], status="failed").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--status", "lost"], "invalid choice"),
        (["--status", "failed", "--since", "two hours"], "use a number"),
        (["--status", "failed", "--limit", "0"], "at least 1"),
    ],
)
def test_replay_sagas_refuses_bad_arguments(argv, message):
    with pytest.raises(CommandError, match=message):
        call_command("replay_sagas", *argv)


def test_replay_saga_dry_run_and_from_step(sent):
    order = place_order()
    saga = failed_saga(order)
    out = StringIO()
    call_command("replay_saga", str(order.public_id), "--dry-run", stdout=out)
    assert "would replay from process_payment" in out.getvalue()
    saga.refresh_from_db()
    assert saga.status == "failed" and sent == []
    with pytest.raises(CommandError, match="has not succeeded yet"):
        call_command("replay_saga", str(order.public_id), "--from-step", "create_shipment")
    with pytest.raises(CommandError, match="the saga's steps are"):
        call_command("replay_saga", str(order.public_id), "--from-step", "teleport")
    call_command("replay_saga", str(order.public_id), "--from-step", "process_payment", stdout=StringIO())
    saga.refresh_from_db()
    assert saga.status == "running"
