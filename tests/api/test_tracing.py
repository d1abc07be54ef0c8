"""OpenTelemetry tracing (--otel): a span per request with its stages as children and the trace id as the
request id, over HTTP and gRPC; and without --otel, no tracer, no middleware, no SDK."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import tritonclient.grpc as triton

from tests.conftest import ROOT, free_port, start_server

pytestmark = pytest.mark.slow  # a server of its own

CLIENT_TRACE, CLIENT_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def spans_in(log_text: str) -> list[dict]:
    return [json.loads(line) for line in log_text.splitlines() if line.startswith('{"name"')]


def spans_of(server, trace_id: str, count: int) -> list[dict]:
    """The spans of one trace, once `count` of them have been exported (the server span ends last)."""
    deadline = time.monotonic() + 10
    while len(found := [s for s in spans_in(server.output()) if s["context"]["trace_id"] == "0x" + trace_id]) < count:
        assert time.monotonic() < deadline, found
        time.sleep(0.05)
    return found


@pytest.fixture(scope="module")
def traced(api_repository, tmp_path_factory):
    port = free_port()
    with start_server(api_repository, tmp_path_factory.mktemp("traced") / "log", "--otel", "--grpc-port", str(port),
                      env={"OTEL_TRACES_EXPORTER": "console"}) as server:
        yield server


def test_a_request_is_a_server_span_with_its_stages_and_its_trace_id_is_the_request_id(traced):
    with traced.client() as client:
        answer = client.post("/sentiment", json={"texts": ["A lovely film.", "Dreadful."]})
    assert answer.status_code == 200
    trace_id = answer.headers["x-request-id"]
    assert len(trace_id) == 32
    spans = spans_of(traced, trace_id, 5)
    server = next(s for s in spans if s["kind"] == "SpanKind.SERVER")
    assert server["name"] == "POST /sentiment" and server["attributes"]["http.response.status_code"] == 200
    stages = {s["name"]: s for s in spans if s["parent_id"] == server["context"]["span_id"]}
    assert set(stages) == {"decode", "queue", "compute", "encode"}
    assert stages["compute"]["attributes"]["model"] == "sentiment-transformer"
    ordered = [stages[name] for name in ("decode", "queue", "compute", "encode")]
    assert all(a["end_time"] <= b["start_time"] or a["name"] == "queue" for a, b in zip(ordered, ordered[1:]))
    assert server["start_time"] <= ordered[0]["start_time"] and ordered[-1]["end_time"] <= server["end_time"]


def test_the_clients_traceparent_is_continued(traced):
    with traced.client() as client:
        answer = client.post("/predict-sequence", json={"series": list(range(1, 40)), "horizon": 3},
                             headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
    assert answer.status_code == 200 and answer.headers["x-request-id"] == CLIENT_TRACE
    server = next(s for s in spans_of(traced, CLIENT_TRACE, 5) if s["kind"] == "SpanKind.SERVER")
    assert server["parent_id"] == "0x" + CLIENT_SPAN and server["name"] == "POST /predict-sequence"


def test_a_clients_own_request_id_is_kept_and_noted_on_its_span(traced):
    with traced.client() as client:
        answer = client.post("/sentiment", json={"text": "Fine."}, headers={"x-request-id": "order-42"})
        traced_id = client.post("/sentiment", json={"text": "Fine."},
                                headers={"x-request-id": "order-43", "traceparent": f"00-{CLIENT_TRACE[1:]}1-{CLIENT_SPAN}-01"})
    assert answer.status_code == 200 and answer.headers["x-request-id"] == "order-42"
    assert traced_id.headers["x-request-id"] == "order-43"
    server = next(s for s in spans_of(traced, CLIENT_TRACE[1:] + "1", 5) if s["kind"] == "SpanKind.SERVER")
    assert server["attributes"]["request.id"] == "order-43"


def test_grpc_calls_are_traced_too(traced):
    client = triton.InferenceServerClient(traced.grpc_address)
    text = triton.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"Splendid."], dtype=object))
    client.infer("sentiment-transformer", [text], headers={"traceparent": f"00-{CLIENT_TRACE[::-1]}-{CLIENT_SPAN}-01"})
    client.close()
    spans = spans_of(traced, CLIENT_TRACE[::-1], 5)
    assert {s["name"] for s in spans} >= {"gRPC ModelInfer", "queue", "compute"}


def test_without_otel_no_tracer_exists_and_the_sdk_is_not_even_imported():
    """(FastAPI itself imports OpenTelemetry's API when it is installed; the service keeps FastAPI's own
    telemetry off and sets up no SDK, no middleware and no tracer.)"""
    probe = ("import sys; from service.app import create_app; from service.settings import Settings; "
             "app = create_app(Settings()); print(app.state.tracer, type(app.entry).__name__, "
             "any(m.startswith('opentelemetry.sdk') for m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert loaded.split() == ["None", "RequestContext", "False"]
