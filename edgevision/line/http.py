"""The line's HTTP endpoints: ``GET /metrics`` (Prometheus text) and ``GET /healthz`` (JSON: 200 healthy, 503
not), on ``http.host:port``; TLS (HTTPS) when ``http.certificate`` and ``http.private_key`` are given.

Metrics: ``edgevision_line_parts_total{decision}``, ``edgevision_line_unreadable_total``,
``edgevision_line_dropped_total``, ``edgevision_line_queue``, ``edgevision_line_inference_ms`` (last),
``edgevision_line_healthy``, ``edgevision_line_source_up{source}``, ``edgevision_line_trigger_up{source,protocol}``,
``edgevision_line_triggers_total{source,fate}`` (received / taken / stale / invalid),
``edgevision_line_triggers_pending{source}``, ``edgevision_line_sink_up{sink}``,
``edgevision_line_sink_pending{sink}``, ``edgevision_line_sink_failed_total{sink}``,
``edgevision_line_drift_alarm``, ``edgevision_line_drift_shift{stat}`` (see `edgevision.line.drift`).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edgevision.core.errors import ConfigError
from edgevision.line.config import HttpConfig

log = logging.getLogger(__name__)

__all__ = ["LineHttp"]


def _metrics_text(status: dict[str, Any]) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class _Collector:
        def collect(self) -> Iterator[Any]:
            s = status["stats"]
            parts = CounterMetricFamily("edgevision_line_parts", "Parts recorded, by decision.", labels=["decision"])
            parts.add_metric(["OK"], s["ok"])
            parts.add_metric(["NG"], s["ng"])
            yield parts
            yield CounterMetricFamily("edgevision_line_unreadable", "Images that could not be inspected (NG).",
                                      value=s["unreadable"])
            yield CounterMetricFamily("edgevision_line_dropped", "Images dropped by back-pressure (drop_oldest).",
                                      value=s["dropped"])
            yield GaugeMetricFamily("edgevision_line_queue", "Images waiting for inference.", value=status["queue"])
            yield GaugeMetricFamily("edgevision_line_inference_ms", "Decode + detect of the last part (ms).",
                                    value=s["last_inference_ms"])
            yield GaugeMetricFamily("edgevision_line_healthy", "1 when every source is up.",
                                    value=1 if status["healthy"] else 0)
            up = GaugeMetricFamily("edgevision_line_source_up", "1 when the source is up.", labels=["source"])
            for src in status["sources"]:
                up.add_metric([src["name"]], 1 if src["state"] in ("up", "finished") else 0)
            yield up
            trig = [(src["name"], src["trigger"]) for src in status["sources"] if src.get("trigger")]
            if trig:
                tup = GaugeMetricFamily("edgevision_line_trigger_up", "1 while the source's trigger subscription "
                                        "is up.", labels=["source", "protocol"])
                tcount = CounterMetricFamily("edgevision_line_triggers", "Triggers by fate: received, taken by an "
                                             "image, stale (no image in time), invalid (no part id).",
                                             labels=["source", "fate"])
                tpend = GaugeMetricFamily("edgevision_line_triggers_pending", "Fresh triggers waiting for an image.",
                                          labels=["source"])
                for name, t in trig:
                    tup.add_metric([name, t["protocol"]], 1 if t["state"] == "up" else 0)
                    for fate in ("received", "taken", "stale", "invalid"):
                        tcount.add_metric([name, fate], t[fate])
                    tpend.add_metric([name], t["pending"])
                yield tup
                yield tcount
                yield tpend
            sup = GaugeMetricFamily("edgevision_line_sink_up", "1 when the sink's peer answers.", labels=["sink"])
            pend = GaugeMetricFamily("edgevision_line_sink_pending", "Messages waiting (durable sinks).",
                                     labels=["sink"])
            fail = CounterMetricFamily("edgevision_line_sink_failed", "Failed deliveries.", labels=["sink"])
            for sink in status["sinks"]:
                sup.add_metric([sink["name"]], 1 if sink["state"] == "up" else 0)
                pend.add_metric([sink["name"]], sink["pending"])
                fail.add_metric([sink["name"]], sink["failed"])
            yield sup
            yield pend
            yield fail
            drift = status.get("drift")
            if drift is not None:
                yield GaugeMetricFamily("edgevision_line_drift_alarm", "1 while an incoming-image statistic has "
                                        "drifted from the reference.", value=1 if drift["alarm"] else 0)
                eff = GaugeMetricFamily("edgevision_line_drift_shift", "Shift of each statistic's window mean "
                                        "from the reference (images, scores: in reference standard deviations; "
                                        "images_with_detections: absolute).", labels=["stat"])
                for stat, v in drift["effects"].items():
                    eff.add_metric([stat], v)
                yield eff

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())  # type: ignore[arg-type]
    return generate_latest(registry)


class LineHttp:
    """A small threaded HTTP(S) server over ``status()`` (`edgevision.line.pipeline.Line.status`)."""

    def __init__(self, cfg: HttpConfig, status: Callable[[], dict[str, Any]]) -> None:
        self.cfg, self._status = cfg, status
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            server_version = "edgevision-line"
            sys_version = ""

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype, code = _metrics_text(outer._status()), "text/plain; version=0.0.4", 200
                elif path == "/healthz":
                    st = outer._status()
                    body = json.dumps(st, default=str).encode()
                    ctype, code = "application/json", 200 if st["healthy"] else 503
                else:
                    body, ctype, code = b'{"error": "not found: GET /metrics or /healthz"}', "application/json", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("http: " + fmt, *args)

        try:
            self.server = ThreadingHTTPServer((cfg.host, cfg.port), _Handler)
        except OSError as e:
            raise ConfigError(f"http: cannot listen on {cfg.host}:{cfg.port} ({e.strerror}); choose another http.port")\
                from None
        self.server.daemon_threads = True
        if cfg.certificate is not None or cfg.private_key is not None:
            if cfg.certificate is None or cfg.private_key is None:
                raise ConfigError("http: TLS needs both certificate and private_key")
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                ctx.load_cert_chain(str(cfg.certificate), str(cfg.private_key))
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(f"http: cannot load {cfg.certificate} / {cfg.private_key} ({e})") from None
            # the handshake happens on the first read, in the request's own thread: a slow client blocks nobody
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=False)
        self.port = int(self.server.server_address[1])
        self.scheme = "https" if cfg.certificate is not None else "http"
        self._thread = threading.Thread(target=self.server.serve_forever, name="line-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
