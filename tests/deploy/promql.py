"""What a PromQL expression asks of the service, checked against what service.metrics.Metrics declares: used
for the Grafana dashboard, the KEDA triggers and the prometheus-adapter rules alike."""

from __future__ import annotations

import re

from prometheus_client.metrics import MetricWrapperBase

from service.metrics import Metrics

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
PROMQL_WORDS = {"le"}  # the histogram bucket label PromQL itself groups by
# Target labels Prometheus attaches to every series it scrapes from a pod in Kubernetes (the prometheus-community
# chart's kubernetes-pods job, a PodMonitor): autoscaling queries select the pods by them.
KUBERNETES_TARGET_LABELS = frozenset({"namespace", "pod"})
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def declared() -> dict[str, set[str]]:
    """Sample name -> label names, for every collector of service.metrics.Metrics, observed or not."""
    samples: dict[str, set[str]] = {}
    for collector in vars(Metrics()).values():
        if isinstance(collector, MetricWrapperBase):
            for family in collector.describe():
                for suffix in SUFFIXES[family.type]:
                    samples[family.name + suffix] = set(collector._labelnames) | ({"le"} if suffix == "_bucket" else set())
    return samples


def metric_names(expr: str) -> set[str]:
    """Every ortserve_ name, and every name in front of a selector's braces (a misspelt prefix included)."""
    bare = STRING.sub('""', expr)  # a regex such as [a-z]{5} inside a matcher is not a selector
    return set(re.findall(r"\b(ortserve_[a-z_]+)\b", bare)) | set(re.findall(r"\b([a-zA-Z_:][\w:]*)\s*\{", bare))


def problems(expr: str, samples: dict[str, set[str]], target_labels: frozenset[str] = frozenset()) -> list[str]:
    """Metric names not exposed, and labels that none of the expression's metrics carry (besides
    `target_labels`, those the scrape adds)."""
    names = metric_names(expr)
    found = [f"unknown metric {name}" for name in sorted(names - set(samples))]
    known = names & set(samples)
    bare = STRING.sub('""', expr)
    labels = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", bare))
    for group in re.findall(r"\bby\s*\(([^)]*)\)", bare):
        labels.update(label.strip() for label in group.split(","))
    carried = set().union(*(samples[name] for name in known)) if known else set()
    if known:
        unknown_labels = labels - carried - PROMQL_WORDS - target_labels
        found += [f"label {label} is on none of {sorted(known)}" for label in sorted(unknown_labels)]
    return found
