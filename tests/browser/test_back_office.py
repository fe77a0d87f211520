"""The back office in a real headless Chromium (Playwright), against a live server and a real worker.

An operator logs in, sees the dashboard, finds the failed saga, retries it from
the order page, and watches the order reach ``confirmed``. Screenshots go to
``artifacts/screenshots/`` (git-ignored).
"""

import os
import shutil
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from orders.models import Order, SagaRun
from orders.saga import events as saga_events
from tests.factories import ProductFactory, place_order

SCREENSHOTS = Path(settings.BASE_DIR) / "artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("saga_worker")]


@pytest.fixture
def page(monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(15000)
        yield page
        browser.close()


def a_failed_order():
    """An order whose first step kept crashing its worker: the saga is failed, nothing was done."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(saga_events, "dispatch", lambda saga_id, names: None)
        order = place_order(products=[ProductFactory(sku="MOUSE-01", on_hand=10)])
    saga = order.saga
    saga.steps.filter(name="reserve_inventory").update(
        status="failed", deliveries=11, attempts=11, error="reserve_inventory was delivered 11 times without finishing"
    )
    SagaRun.objects.filter(pk=saga.pk).update(
        status="failed", error="reserve_inventory was delivered 11 times without finishing", finished_at=timezone.now()
    )
    Order.objects.filter(pk=order.pk).update(status="needs_attention")
    from orders import analytics

    analytics.rebuild()
    return order


def test_operator_finds_a_failed_saga_retries_it_and_sees_the_order_confirmed(
    page, live_server, django_user_model, settings
):
    settings.EMAIL_BACKEND = "notifications.backends.FakeEmailBackend"
    assert os.access(CHROMIUM, os.X_OK), "chromium is missing: make test installs it (apt-get install chromium)"
    django_user_model.objects.create_superuser("operator", "op@example.com", "op-password")
    order = a_failed_order()

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "op-password")
    page.click("input[type=submit]")
    page.wait_for_selector("#dashboard")
    assert "1 order needs attention" in page.inner_text("#needs-attention")
    page.screenshot(path=SCREENSHOTS / "dashboard.png", full_page=True)

    page.click("#needs-attention a")
    page.wait_for_selector("#result_list")
    assert "reserve_inventory (forward)" in page.inner_text("#result_list")
    page.screenshot(path=SCREENSHOTS / "failed-sagas.png", full_page=True)

    page.click(f"#result_list a:has-text('{order.public_id}')")
    page.wait_for_selector("#saga-timeline")
    page.click("a.order-action[data-action=retry]")
    page.click("#confirm-action")
    assert "retrying from reserve_inventory" in page.inner_text(".messagelist")

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        order.refresh_from_db()
        if order.status == "confirmed":
            break
        time.sleep(0.2)
    page.reload()
    assert "Confirmed" in page.inner_text(".field-status")
    assert page.inner_text("#saga-timeline").count("succeeded") == 4
    page.screenshot(path=SCREENSHOTS / "order.png", full_page=True)
