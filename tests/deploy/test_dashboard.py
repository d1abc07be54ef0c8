"""The Grafana dashboard asks only for metrics and labels the service really exposes."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import Metrics
from tests.deploy.conftest import ROOT

DASHBOARD = ROOT / "deploy" / "monitoring" / "grafana" / "dashboards" / "ortserve.json"
DIGIT = ROOT / "tests" / "data" / "digit-7.png"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
PROMQL_WORDS = {"le"}  # the histogram bucket label PromQL itself groups by


def declared() -> dict[str, set[str]]:
    """Sample name -> label names, for every collector of service.metrics.Metrics, observed or not."""
    samples: dict[str, set[str]] = {}
    for collector in vars(Metrics()).values():
        if isinstance(collector, MetricWrapperBase):
            for family in collector.describe():
                for suffix in SUFFIXES[family.type]:
                    samples[family.name + suffix] = set(collector._labelnames) | ({"le"} if suffix == "_bucket" else set())
    return samples


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def problems(expr: str, samples: dict[str, set[str]]) -> list[str]:
    """Metric names not exposed, and labels that none of the expression's metrics carry."""
    names = set(re.findall(r"\b(ortserve_[a-z_]+)\b", expr))
    found = [f"unknown metric {name}" for name in sorted(names - set(samples))]
    known = names & set(samples)
    labels = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", expr))
    for group in re.findall(r"by\s*\(([^)]*)\)", expr):
        labels.update(label.strip() for label in group.split(","))
    carried = set().union(*(samples[name] for name in known)) if known else set()
    if known:
        found += [f"label {label} is on none of {sorted(known)}" for label in sorted(labels - carried - PROMQL_WORDS)]
    return found


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
    for wanted in ("requests/s", "p99", "batch size", "queue time"):
        assert wanted in titles
    assert dashboard["templating"]["list"][0]["name"] == "model"


def test_the_service_exposes_what_metrics_declares(scraped):
    """So checking the dashboard against the declarations checks it against the running service."""
    samples = declared()
    assert set(scraped) <= set(samples)
    for name, labels in scraped.items():
        assert labels == samples[name], name
    # after one image: requests, latency, batches, queue and compute time, readiness all have samples
    for name in ("ortserve_http_requests_total", "ortserve_batch_size_bucket", "ortserve_queue_duration_seconds_bucket",
                 "ortserve_compute_duration_seconds_bucket", "ortserve_http_request_duration_seconds_bucket", "ortserve_model_ready"):
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
