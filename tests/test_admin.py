import pytest
from django.contrib import admin
from django.urls import reverse

from audit.services import audit_record
from tests.factories import ProductFactory, place_order

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


def test_every_model_is_registered():
    from django.apps import apps

    ours = [m for m in apps.get_models() if m._meta.app_label in {"catalog", "orders", "payments", "shipping"}]
    missing = {m.__name__ for m in ours if m not in admin.site._registry}
    inline = {"ReservationLine", "OrderLine", "SagaStep"}
    internal = {"FakeGatewayCharge", "FakeCarrierBooking"}  # the fake adapters' own books
    read_models = {"DailyOrderStats", "OrderStatusCount", "ProductSalesStats", "StepFailureStats"}  # via the API
    assert missing <= inline | internal | read_models


@pytest.mark.parametrize("model", list(admin.site._registry), ids=lambda m: m._meta.label)
def test_changelist_and_change_pages_render(superuser_client, model):
    order = place_order(products=[ProductFactory()])
    audit_record(obj=order, event="placed")
    type(order.saga).objects.filter(pk=order.saga.pk).update(status="failed")  # so FailedSaga lists it
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    assert superuser_client.get(url).status_code == 200
    assert superuser_client.get(url, {"q": "x"}).status_code == 200
    obj = model.objects.first()
    if obj is not None:
        change = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[obj.pk])
        assert superuser_client.get(change).status_code == 200


def test_audit_events_are_read_only_even_for_superusers(superuser_client):
    event = audit_record(object_type="x", object_id="1", event="e")
    change = reverse("admin:audit_auditevent_change", args=[event.pk])
    delete = reverse("admin:audit_auditevent_delete", args=[event.pk])

    page = superuser_client.get(change)
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert superuser_client.post(change, {"event": "forged"}).status_code == 403
    assert superuser_client.post(delete, {"post": "yes"}).status_code == 403
    assert superuser_client.get(reverse("admin:audit_auditevent_add")).status_code == 403
    event.refresh_from_db()
    assert event.event == "e"
