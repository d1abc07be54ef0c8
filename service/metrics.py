"""Prometheus metrics, in the spirit of Triton's nv_inference_* family, under the ortserve_ prefix.

One registry per app (not the process-global default), so several apps in one process (tests) do not
collide. With worker processes (--workers), prometheus-client's multiprocess mode adds up every worker's
counters and gauges (PROMETHEUS_MULTIPROC_DIR, set by the service), so one scrape still sees everything.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple, object] = {}
        model = ["model", "version", "variant"]
        self.requests = Counter("ortserve_http_requests", "HTTP requests by route, model and status",
                                ["endpoint", "method", "model", "status"], registry=self.registry)
        self.grpc_requests = Counter("ortserve_grpc_requests", "gRPC calls by method, model and status code",
                                     ["rpc", "model", "code"], registry=self.registry)
        self.request_seconds = Histogram("ortserve_http_request_duration_seconds", "HTTP request latency",
                                         ["endpoint", "method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inference_success = Counter("ortserve_inference_request_success", "Inference requests answered",
                                         model, registry=self.registry)
        self.inference_failure = Counter("ortserve_inference_request_failure", "Inference requests failed (5xx)",
                                         model, registry=self.registry)
        self.inference_count = Counter("ortserve_inference_count", "Rows inferred (items, not requests)",
                                       model, registry=self.registry)
        self.exec_count = Counter("ortserve_inference_exec_count", "Session runs (batches)", model, registry=self.registry)
        self.batch_size = Histogram("ortserve_batch_size", "Rows per session run", model, buckets=BATCH_BUCKETS,
                                    registry=self.registry)
        self.queue_seconds = Histogram("ortserve_queue_duration_seconds", "Longest wait of a row before its batch ran",
                                       model, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.compute_seconds = Histogram("ortserve_compute_duration_seconds", "Session run time per batch",
                                         model, buckets=LATENCY_BUCKETS, registry=self.registry)
        # With workers: ready only where every live worker serves it; the queue and the requests added up.
        self.ready = Gauge("ortserve_model_ready", "1 when the model version serves", [*model, "provider"],
                           registry=self.registry, multiprocess_mode="livemin")
        # Autoscaling signals (deploy/kubernetes: KEDA, or an HPA through prometheus-adapter).
        self.queued_rows = Gauge("ortserve_queued_rows", "Rows waiting for a batch", model, registry=self.registry,
                                 multiprocess_mode="livesum")
        self.inflight = Gauge("ortserve_inflight_requests", "Inference requests admitted and not yet answered", model,
                              registry=self.registry, multiprocess_mode="livesum")
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_ENV))

    def child(self, metric, *labels: str):
        """metric.labels(*labels), looked up once: prometheus_client takes a lock and builds a key per call."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def set_readiness(self, registry) -> None:
        """The readiness gauge from the model registry (at scrape time, or, with workers, when it changes)."""
        if not self.multiprocess:
            self.ready.clear()  # versions no longer known go; with workers their files keep their last value
        for entry in registry.entries.values():
            provider = entry.model.providers[0] if entry.model else "none"
            self.ready.labels(entry.name, entry.version, entry.variant or "none", provider).set(1 if entry.ready else 0)

    def render(self, registry) -> tuple[bytes, str]:
        """The exposition text: this process's, or every worker's added up."""
        if not self.multiprocess:
            self.set_readiness(registry)
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        workers = CollectorRegistry()
        MultiProcessCollector(workers)
        return generate_latest(workers), CONTENT_TYPE_LATEST

    def process_ended(self) -> None:
        """A worker that stops takes its live gauges with it."""
        if self.multiprocess:
            mark_process_dead(os.getpid())


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNKNOWN_MODEL = "_unknown"  # every model name the registry does not know shares this label
OTHER_METHOD = "OTHER"


class RequestMetrics:
    """ASGI middleware: count and time every HTTP request by its route template, not its raw path.

    No label takes a value from the client unchecked: a model name in the path that the registry does not
    know is labelled `_unknown`, an unusual method `OTHER`, so random names cannot grow the exposition.
    A request whose client disconnected before its answer started counts as 499, whatever came after."""

    def __init__(self, app, metrics: Metrics, known_model: Callable[[str], bool] = lambda name: True):
        self.app = app
        self.metrics = metrics
        self.known_model = known_model

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 499, "gone": False}  # no answer sent: the client went away first (nginx's 499)

        async def observe_receive():
            message = await receive()
            if message["type"] == "http.disconnect" and status["code"] == 499:
                status["gone"] = True
            return message

        async def observe_send(message):
            if message["type"] == "http.response.start" and not status["gone"]:
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, observe_receive, observe_send)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            # A task endpoint serves one model (service/endpoints.py); a V2 route names its model in the path.
            model = getattr(route, "model", "")  # a task endpoint's, from the endpoint table
            named = scope.get("path_params", {}).get("name") if not model else None
            if named:  # a name from the client: labelled only when the registry knows it
                model = named if self.known_model(named) else UNKNOWN_MODEL
            method = scope.get("method", "")
            if method not in METHODS:
                method = OTHER_METHOD
            self.metrics.child(self.metrics.requests, endpoint, method, model, str(status["code"])).inc()
            self.metrics.child(self.metrics.request_seconds, endpoint, method).observe(time.perf_counter() - started)
