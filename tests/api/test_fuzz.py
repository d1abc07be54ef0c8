"""Property-based fuzzing of the whole HTTP API from its own OpenAPI schema (schemathesis), against a
real server: for every operation, generated requests (valid and invalid) never get a 5xx, and every
answer matches the schema declared for its status.

Left out, each for a reason: /v2/repository/* (model control: an unload would take a model away from
the rest of the run; it has its own tests), and GET / and /metrics are not in the schema (an HTML
page and Prometheus text). Examples per operation are bounded and derandomised, so a run is
repeatable and takes well under a minute.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.conftest import MODEL_NAMES, start_server

pytestmark = pytest.mark.slow  # a server of its own, fuzzed

EXAMPLES_PER_OPERATION = 50


@pytest.fixture(scope="module")
def fuzzed_server(api_repository, tmp_path_factory):
    """A server of its own: what the fuzzer sends never reaches the counters other tests read."""
    with start_server(api_repository, tmp_path_factory.mktemp("fuzz") / "server.log", "--max-request-mb", "2") as running:
        yield running


def with_known_names(document: dict) -> dict:
    """Model names and versions drawn from those served plus unknown ones, so that generated requests
    reach the models instead of stopping at 404 (negative generation still sends anything)."""
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in KNOWN_PATH_VALUES:
                    parameter["schema"] = {"type": "string", "enum": KNOWN_PATH_VALUES[parameter["name"]]}
    return document


KNOWN_PATH_VALUES = {"name": [*MODEL_NAMES, "no-such-model"], "version": ["1", "2"]}


@pytest.fixture(scope="module")
def served_schema(fuzzed_server):
    """The schema as the running server serves it: the task endpoints come from its model repository."""
    with fuzzed_server.client() as client:
        document = client.get("/openapi.json").json()
    assert {"/classify-image", "/sentiment", "/predict-sequence"} <= set(document["paths"])
    return schemathesis.openapi.from_dict(with_known_names(document)).exclude(path_regex=r"^/v2/repository")


def test_every_operation_against_its_schema(served_schema, fuzzed_server):
    """Each operation, valid and invalid requests (the schema is the served one, so this test generates its
    cases itself rather than through schemathesis' pytest collection, which needs the schema at import)."""
    failures, calls = [], []
    for result in served_schema.get_all_operations():
        operation = result.ok()
        for mode in GenerationMode:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION // 2,
                derandomize=True,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],  # a failure is reported as found; shrinking would only cost time
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case):
                calls.append(operation.label)
                case.call_and_validate(
                    base_url=fuzzed_server.url, timeout=60, checks=[not_a_server_error, response_schema_conformance]
                )

            try:
                fuzz()
            except Unsatisfiable:  # an operation that takes nothing has no invalid request to make
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as exc:  # noqa: BLE001 - every operation is fuzzed; all failures are reported
                failures.append(f"{operation.label} ({mode.value}): {str(exc)[:2000]}")
    assert not failures, "\n\n".join(failures)
    fuzzed = {label for label in calls}
    assert {"POST /sentiment", "POST /classify-image", "POST /predict-sequence"} <= fuzzed, fuzzed
    assert len(calls) >= 10 * len(fuzzed), len(calls)
