"""GET /metrics after known traffic, parsed with prometheus-client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels) -> float:
    return sum(v for (n, l), v in found.items() if n == name and all(dict(l).get(k) == w for k, w in labels.items()))


def test_counts_follow_known_traffic(client):
    before = samples(client)
    for _ in range(3):
        assert client.post("/sentiment", json={"texts": ["Lovely.", "Awful.", "Fine."]}).status_code == 200
    assert client.post("/sentiment", json={"text": ""}).status_code == 422
    assert client.post("/predict-sequence", json={"series": list(range(1, 40)), "horizon": 3}).status_code == 200
    after = samples(client)

    def delta(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    sentiment = {"model": "sentiment-transformer"}
    assert delta("ortserve_http_requests_total", endpoint="/sentiment", status="200", **sentiment) == 3
    assert delta("ortserve_http_requests_total", endpoint="/sentiment", status="422", **sentiment) == 1
    assert delta("ortserve_http_requests_total", endpoint="/predict-sequence", status="200", model="forecast-lstm") == 1
    assert delta("ortserve_inference_request_success_total", **sentiment) == 3
    assert delta("ortserve_inference_count_total", **sentiment) == 9  # rows, not requests
    assert delta("ortserve_batch_size_sum", **sentiment) == 9
    assert 3 <= delta("ortserve_inference_exec_count_total", **sentiment) <= 9  # 3 requests of 3 rows, batched or not
    assert delta("ortserve_inference_exec_count_total", **sentiment) == delta("ortserve_batch_size_count", **sentiment)
    assert delta("ortserve_compute_duration_seconds_count", **sentiment) == delta("ortserve_batch_size_count", **sentiment)
    assert delta("ortserve_http_request_duration_seconds_count", endpoint="/sentiment") == 4
    assert delta("ortserve_inference_request_failure_total", **sentiment) == 0


def test_readiness_and_the_provider_are_labels(client):
    found = samples(client)
    ready = {dict(labels)["model"]: (v, dict(labels)) for (name, labels), v in found.items() if name == "ortserve_model_ready"}
    assert set(ready) == {"mnist-cnn", "sentiment-transformer", "forecast-lstm"}
    for model, (v, labels) in ready.items():
        assert v == 1 and labels["provider"] == "CPUExecutionProvider" and labels["variant"]


def test_unknown_paths_do_not_create_a_label_per_path(client):
    for path in ("/nope-1", "/nope-2", "/nope-3"):
        assert client.get(path).status_code == 404
    found = samples(client)
    endpoints = {dict(labels).get("endpoint") for (name, labels) in found if name == "ortserve_http_requests_total"}
    assert not any(e and e.startswith("/nope") for e in endpoints)
