"""Property-based fuzzing of the OpenAPI schema with schemathesis (hypothesis).

Every documented operation is called through the real WSGI application with
generated input, as an authenticated customer; no response may be a 5xx, and
every response must match the schema (documented status code, declared body).
"""

import json

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from config.wsgi import application
from tests.factories import ProductFactory, UserFactory

from .conftest import client_for

schema = schemathesis.openapi.from_dict(
    json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))
)
schema.app = application


@pytest.fixture
def auth_header(transactional_db, monkeypatch):
    """A customer's token, data to order, and throttles out of the way.

    transactional_db: each WSGI call ends with Django closing its connection,
    which a test wrapped in one transaction would not survive.
    """
    from rest_framework.throttling import ScopedRateThrottle

    for scope in ScopedRateThrottle.THROTTLE_RATES:
        monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, scope, "100000/min")
    ProductFactory(sku="MOUSE-01", on_hand=10)
    ProductFactory(sku="OLD", active=False)
    return {"Authorization": client_for(UserFactory())._credentials["HTTP_AUTHORIZATION"]}


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_breaks_the_api(case, auth_header):
    # Excluded: "schema-valid request rejected". Business rules the schema cannot
    # express (a sku must exist, a country code must be assigned, credentials must
    # match) rightly turn schema-valid input into a 400.
    case.call_and_validate(headers=auth_header, excluded_checks=[positive_data_acceptance])
