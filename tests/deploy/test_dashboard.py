"""The Grafana dashboard asks only for metrics and labels the service really exposes."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.conftest import ROOT
from tests.deploy.promql import declared, problems

DASHBOARD = ROOT / "deploy" / "monitoring" / "grafana" / "dashboards" / "ortserve.json"
DIGIT = ROOT / "tests" / "data" / "digit-7.png"


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


@pytest.fixture(scope="module")
def scraped(server) -> dict[str, set[str]]:
    """The real service's /metrics after one inference: sample name -> label names."""
    with server.client() as client:
        response = client.post("/classify-image", files={"file": ("digit.png", DIGIT.read_bytes(), "image/png")})
        assert response.status_code == 200, response.text
        text = client.get("/metrics").text
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


def test_dashboard_has_the_panels_asked_for():
    dashboard = json.loads(DASHBOARD.read_text())
    titles = " | ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for wanted in ("requests/s", "p99", "batch size", "queue time", "queued rows", "in-flight", "queue wait p50/p90", "503"):
        assert wanted in titles
    assert dashboard["templating"]["list"][0]["name"] == "model"


def test_dashboard_shows_the_autoscaling_signals():
    """The gauges and the queue-wait quantiles the autoscalers act on, each on a panel of its own."""
    by_title = {panel["title"]: [t["expr"] for t in panel["targets"]] for panel in json.loads(DASHBOARD.read_text())["panels"]}
    assert any("ortserve_queued_rows{" in expr for expr in by_title["Queued rows per model"])
    assert any("ortserve_inflight_requests{" in expr for expr in by_title["In-flight requests per model"])
    waits = " ".join(by_title["Queue wait p50/p90 per model"])
    for quantile in ("0.50", "0.90"):
        assert f"histogram_quantile({quantile}, sum by (le, model) (rate(ortserve_queue_duration_seconds_bucket" in waits


def test_the_service_exposes_what_metrics_declares(scraped):
    """So checking the dashboard against the declarations checks it against the running service."""
    samples = declared()
    assert set(scraped) <= set(samples)
    for name, labels in scraped.items():
        assert labels == samples[name], name
    # after one image: requests, latency, batches, queue and compute time, readiness all have samples
    for name in ("ortserve_http_requests_total", "ortserve_batch_size_bucket", "ortserve_queue_duration_seconds_bucket",
                 "ortserve_compute_duration_seconds_bucket", "ortserve_http_request_duration_seconds_bucket", "ortserve_model_ready",
                 "ortserve_queued_rows", "ortserve_inflight_requests"):
        assert name in scraped


def test_every_metric_and_label_in_the_dashboard_exists():
    samples = declared()
    found = {expr: problems(expr, samples) for expr in expressions()}
    assert not {expr: p for expr, p in found.items() if p}


def test_the_check_catches_wrong_names():
    samples = declared()
    assert problems("sum by (model) (rate(ortserve_requests_total[1m]))", samples) == ["unknown metric ortserve_requests_total"]
    assert problems("sum by (endpoint) (rate(ortserve_batch_size_count[1m]))", samples) == [
        "label endpoint is on none of ['ortserve_batch_size_count']"
    ]
    assert problems('sum(ortserv_queued_rows{model="mnist-cnn"})', samples) == ["unknown metric ortserv_queued_rows"]
    assert problems('sum(ortserve_queued_rows{pod=~"ortserve-.*"})', samples) == [
        "label pod is on none of ['ortserve_queued_rows']"
    ]
