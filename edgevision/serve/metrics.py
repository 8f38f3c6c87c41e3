"""Prometheus metrics of one service, on its own registry (so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

__all__ = ["CONTENT_TYPE", "Metrics"]

# Seconds: from a few ms (small INT8 model) to seconds (a large image on a slow box).
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
ENDPOINTS = ("/v1/detect", "/v1/model", "/healthz", "/readyz", "/metrics")


class Metrics:
    """The service's counters, histograms and gauges.

    ``edgevision_requests_total{endpoint, status}``, ``edgevision_request_errors_total{endpoint, reason}``,
    ``edgevision_request_duration_seconds{endpoint}`` (whole request, histogram),
    ``edgevision_inference_duration_seconds`` (decode + detect of one image, histogram),
    ``edgevision_queue_wait_seconds`` (time waiting for a free inference slot),
    ``edgevision_inflight_requests``, ``edgevision_ready``,
    ``edgevision_decisions_total{decision}``, ``edgevision_detections_total{class}``,
    ``edgevision_open_connections``, ``edgevision_connections_closed_total{reason}`` (closed by the server:
    ``idle_timeout``, ``request_timeout``, ``too_many_connections``),
    ``edgevision_model_info{...}`` and the process / platform / GC collectors of prometheus_client.
    Unknown paths count under ``endpoint="other"`` so a scanner cannot blow up the label set.
    """

    def __init__(self, model_info: dict[str, str]) -> None:
        disable_created_metrics()  # the *_created series only double the text a scrape carries
        self.registry = r = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.requests = Counter("edgevision_requests", "HTTP requests by endpoint and status code.",
                                ["endpoint", "status"], registry=r)
        self.errors = Counter("edgevision_request_errors", "Refused or failed requests by endpoint and reason.",
                              ["endpoint", "reason"], registry=r)
        self.duration = Histogram("edgevision_request_duration_seconds", "Whole-request latency.", ["endpoint"],
                                  buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("edgevision_inference_duration_seconds",
                                   "Decode + pre-process + session.run + post-process of one image.",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("edgevision_queue_wait_seconds", "Time a request waited for an inference slot.",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.inflight = Gauge("edgevision_inflight_requests", "Detect requests being read, queued or inferred.",
                              registry=r)
        self.ready = Gauge("edgevision_ready", "1 when the service accepts work (model loaded and warmed up, "
                           "not draining).", registry=r)
        self.decisions = Counter("edgevision_decisions", "Image-level decisions at the model's operating points.",
                                 ["decision"], registry=r)
        self.detections = Counter("edgevision_detections", "Detections returned, by class.", ["class"], registry=r)
        self.connections = Gauge("edgevision_open_connections", "TCP connections open now.", registry=r)
        self.connections_closed = Counter("edgevision_connections_closed", "Connections the server closed: idle, "
                                          "too slow to send a request, or over the connection limit.", ["reason"],
                                          registry=r)
        info = Info("edgevision_model", "The model being served.", registry=r)
        info.info(model_info)
        for d in ("accept", "reject"):  # export zeros so rates work from the first scrape
            self.decisions.labels(d)
        for reason in ("idle_timeout", "request_timeout", "too_many_connections"):
            self.connections_closed.labels(reason)

    @staticmethod
    def endpoint(path: str) -> str:
        return path if path in ENDPOINTS else "other"

    def observe(self, path: str, status: int, seconds: float, reason: str | None = None) -> None:
        ep = self.endpoint(path)
        self.requests.labels(ep, str(status)).inc()
        self.duration.labels(ep).observe(seconds)
        if status >= 400:
            self.errors.labels(ep, reason or f"http_{status}").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def count_result(self, decision: str, class_names: list[str]) -> None:
        self.decisions.labels(decision).inc()
        for name in class_names:
            self.detections.labels(name).inc()
