"""Property-based fuzzing of the OpenAPI schema with schemathesis (hypothesis).

Every documented operation is called through the real WSGI application with
generated input, as an operator (staff with every permission the staff
endpoints ask for), with every schemathesis check: no 5xx, every status code,
header and body as documented, schema-valid input accepted (positive data) and
schema-invalid input refused (negative data), unsupported methods refused,
required headers enforced, authentication not ignored. Then the stateful
phase chains operations through the links schemathesis infers (an order's
``Location``, its ``id``) and checks the same.

Bounded for CI (``FUZZ_MAX_EXAMPLES`` examples per operation and phase, 25 by
default; ``FUZZ_STATEFUL_SCENARIOS`` scenarios, 40 by default). Run it longer::

    FUZZ_MAX_EXAMPLES=500 FUZZ_STATEFUL_SCENARIOS=500 FUZZ_TIMEOUT=7200 FUZZ_SEED=7 pytest tests/api/test_schema_fuzz.py

Only positive data is completed with what no schema can know (the test's own
catalog: skus that exist, one line per sku, a fresh ``Idempotency-Key`` per
order); negative data is sent as generated.
"""

import itertools
import json
import os

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation

from config.wsgi import application
from tests.factories import ProductFactory, StaffFactory

from .conftest import OPERATOR_PERMISSIONS, client_for

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "25"))
STATEFUL_SCENARIOS = int(os.environ.get("FUZZ_STATEFUL_SCENARIOS", "40"))
# Per test; one operation's phases take about a minute on a loaded machine at the default size.
pytestmark = pytest.mark.timeout(int(os.environ.get("FUZZ_TIMEOUT", "600")))
SKUS = [f"FUZZ-{n:02d}" for n in range(60)]  # more than an order's 50 lines

config = schemathesis.Config.from_dict(
    {
        "seed": int(os.environ.get("FUZZ_SEED", "20261202")),
        "generation": {
            "mode": "all",  # positive and negative data
            "max-examples": MAX_EXAMPLES,
        },
        "checks": {"enabled": True},  # every check, positive_data_acceptance and negative_data_rejection too
        "phases": {"stateful": {"enabled": True}},
        "operations": [
            {
                # Credentials that match no user are a 400: no schema can know the passwords.
                "include-name": "POST /api/v1/auth/token/",
                "checks": {
                    "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "403", "404", "429"]}
                },
            },
        ],
    }
)
schema = schemathesis.openapi.from_dict(
    json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True))),
    config=config,
)
schema.app = application
_keys = itertools.count()


def with_real_data(case):
    """Complete positive order bodies with data from the test's catalog and a fresh key."""
    if case.operation.label != "POST /api/v1/orders/" or case.meta is None:
        return case
    if not case.meta.is_negative_at(ParameterLocation.BODY) and isinstance(case.body, dict):
        for sku, line in zip(SKUS, case.body.get("lines") or [], strict=False):
            line["sku"] = sku
    if not case.meta.is_negative_at(ParameterLocation.HEADER):
        case.headers = {**(case.headers or {}), "Idempotency-Key": f"fuzz-{next(_keys)}"}
    return case


@pytest.fixture
def operator_header(transactional_db, monkeypatch):
    """An operator's token, a catalog to order from, and throttles out of the way.

    transactional_db: each WSGI call ends with Django closing its connection,
    which a test wrapped in one transaction would not survive.
    """
    from django.contrib.auth.models import Permission
    from rest_framework.throttling import ScopedRateThrottle

    from orders.saga import events as saga_events

    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: None)  # no broker: sagas stay pending
    for scope in ScopedRateThrottle.THROTTLE_RATES:
        monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, scope, "100000/min")
    for sku in SKUS:
        ProductFactory(sku=sku, on_hand=10**6)
    ProductFactory(sku="OLD", active=False)
    operator = StaffFactory()
    operator.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="orders", codename__in=OPERATOR_PERMISSIONS)
    )
    return {"Authorization": client_for(operator)._credentials["HTTP_AUTHORIZATION"]}


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_does_what_the_schema_says(case, operator_header):
    with_real_data(case)
    case.call_and_validate(headers=operator_header)


def test_chained_operations_do_what_the_schema_says(operator_header):
    class Workflow(schema.as_state_machine()):
        def before_call(self, case):
            with_real_data(case)

        def get_call_kwargs(self, case):
            return {"headers": operator_header}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            # As call_and_validate does: the checks learn which credentials were ours.
            case.validate_response(
                response,
                additional_checks=additional_checks,
                headers=operator_header,
                transport_kwargs=kwargs or None,
                recorder=self.recorder,
            )

    Workflow.run(
        settings=settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )
