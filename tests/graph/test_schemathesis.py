"""Generated requests from our own OpenAPI document (schemathesis): never a 5xx, and every answer,
success or error, conforms to the response schema the route declares."""

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import content_type_conformance, response_schema_conformance, status_code_conformance
from schemathesis.core.failures import FailureGroup

from tests.graph.conftest import FIXTURE_CONFIG

CONFIG = {**FIXTURE_CONFIG, "ingress": {"max_batch_images": 3}}


def test_no_server_errors_for_any_operation(serve_app):
    base, _ = serve_app
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    failures = []
    calls = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            response = case.call(timeout=60)
            calls.append(response.status_code)
            if response.status_code >= 500 or (response.status_code >= 400 and set(response.json()) != {"error"}):
                failures.append((case.method, case.path, response.status_code, response.text[:200]))
            try:
                case.validate_response(response, checks=[response_schema_conformance, status_code_conformance, content_type_conformance])
            except (AssertionError, FailureGroup) as exc:  # schemathesis raises a group of the failed checks
                failures.append((case.method, case.path, response.status_code, str(exc)[:300]))

        check()
    assert len(calls) >= 8 * 5
    assert failures == []
