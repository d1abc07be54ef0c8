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
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from service.app import create_app
from service.settings import Settings
from tests.conftest import MODEL_NAMES, start_server

EXAMPLES_PER_OPERATION = 50


@pytest.fixture(scope="module")
def fuzzed_server(api_repository, tmp_path_factory):
    """A server of its own: what the fuzzer sends never reaches the counters other tests read."""
    with start_server(api_repository, tmp_path_factory.mktemp("fuzz") / "server.log", "--max-request-mb", "2") as running:
        yield running


def app_schema() -> dict:
    """The schema as the app builds it (nothing starts: the lifespan runs only when served)."""
    return create_app(Settings()).api.openapi()


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
schema = schemathesis.openapi.from_dict(with_known_names(app_schema())).exclude(path_regex=r"^/v2/repository")


def test_the_server_serves_the_schema_that_is_fuzzed(fuzzed_server):
    with fuzzed_server.client() as client:
        assert client.get("/openapi.json").json() == app_schema()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # a failure is reported as found; shrinking would only cost time
    suppress_health_check=list(HealthCheck),
)
def test_api(case, fuzzed_server):
    case.call_and_validate(
        base_url=fuzzed_server.url, timeout=60, checks=[not_a_server_error, response_schema_conformance]
    )
