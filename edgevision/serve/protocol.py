"""`guarded_protocol`: uvicorn's h11 HTTP/1.1 protocol with the limits a service on a plant network needs.

uvicorn (0.54, ``protocols/http/h11_impl.py``) arms its keep-alive timer only after a response, so a
connection that never sends a request, sends half a request line, or trickles a body one byte a second
is held forever, and nothing caps how many connections are open: 1,100 idle sockets exhaust 1,024 file
descriptors and real clients time out. This subclass adds:

* **idle timeout**: the keep-alive timer (``timeout_keep_alive`` = ``idle_timeout_s``) is also armed when
  the connection is made, and again whenever the connection falls back to idle (uvicorn forgets it when
  a body ends after an early answer such as 401 or 413). An idle connection is closed silently.
* **request deadline**: from a request's first byte to the last byte of its body, ``request_timeout_s``.
  A request still arriving then is answered 408 (JSON) and its connection closed; the application sees a
  disconnect (``scope["state"]["receive_timeout"]`` tells it why).
* **connection cap**: beyond ``max_connections`` open connections, a new one is answered 503 (JSON,
  ``Retry-After``) and closed at once, so descriptors stay available for real clients and the process.
* **JSON for malformed HTTP**: uvicorn's plain-text "Invalid HTTP request received." becomes the API's
  ``{"error": {"code": "bad_request", ...}, "request_id": null}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from edgevision.serve.metrics import Metrics

__all__ = ["ConnectionLimits", "guarded_protocol"]

log = logging.getLogger("edgevision.serve")


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-connection limits (see the module docstring); ``metrics`` counts what they close."""

    idle_timeout_s: float
    request_timeout_s: float
    max_connections: int
    metrics: Metrics | None = None


def _raw_response(status: int, reason: str, code: str, message: str, request_id: str | None = None,
                  headers: dict[str, str] | None = None) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 answer in the API's error format, written past h11 (the
    connection is closed right after, whatever state h11 is in)."""
    body = json.dumps({"error": {"code": code, "message": message}, "request_id": request_id},
                      separators=(",", ":")).encode()
    head = {"content-type": "application/json", "content-length": str(len(body)), "connection": "close",
            **(headers or {})}
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in head.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def guarded_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``, bound to ``limits``."""

    class GuardedH11Protocol(H11Protocol):
        _refused_since_log = 0
        _refused_logged_at = 0.0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)  # timeout_keep_alive: uvicorn.Config's, set to idle_timeout_s
            self._deadline: asyncio.TimerHandle | None = None

        # ------------------------------------------------------------ connection
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if limits.metrics is not None:
                limits.metrics.connections.inc()
            if len(self.connections) > limits.max_connections:
                self._refuse_connection()
                return
            self._arm_timers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_deadline()
            if limits.metrics is not None:
                limits.metrics.connections.dec()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._arm_timers()

        def _refuse_connection(self) -> None:
            cls = type(self)
            cls._refused_since_log += 1
            now = time.monotonic()
            if now - cls._refused_logged_at >= 10:  # one line per 10 s under a flood, not one per connection
                log.warning("%d open connections, the limit (--max-connections %d): refused %d new connection(s) "
                            "with 503", len(self.connections) - 1, limits.max_connections, cls._refused_since_log)
                cls._refused_since_log, cls._refused_logged_at = 0, now
            self._closed("too_many_connections")
            self.transport.write(_raw_response(
                503, "Service Unavailable", "too_many_connections",
                f"this server already holds {limits.max_connections} connections; retry shortly",
                headers={"retry-after": "1"}))
            self.transport.close()

        # ------------------------------------------------------------ timers
        def _arm_timers(self) -> None:
            """After every event: the request deadline runs while a request is arriving, the idle timer while
            nothing is (uvicorn's own keep-alive timer, which it does not arm on connect nor after a late body)."""
            if self.transport.is_closing():
                self._cancel_deadline()
                return
            their = self.conn.their_state
            partial = their is h11.IDLE and bool(self.conn.trailing_data[0])
            if their is h11.SEND_BODY or partial:
                if self._deadline is None:
                    self._deadline = self.loop.call_later(limits.request_timeout_s, self._deadline_passed)
            else:
                self._cancel_deadline()
            if their is h11.IDLE and self.conn.our_state is h11.IDLE and not partial \
                    and self.timeout_keep_alive_task is None:
                self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                    self.timeout_keep_alive_handler)

        def _cancel_deadline(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def timeout_keep_alive_handler(self) -> None:
            self.timeout_keep_alive_task = None
            if not self.transport.is_closing():
                self._closed("idle_timeout")
            super().timeout_keep_alive_handler()

        def _deadline_passed(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            self._closed("request_timeout")
            cycle, request_id = self.cycle, None
            if self.conn.their_state is h11.SEND_BODY and cycle is not None:
                if cycle.response_started:  # answered early (401, 413...): the rest of the body is not awaited
                    self.transport.close()
                    return
                # the application waits for the rest of the body: it gets a disconnect, the client the 408
                state = self.scope.get("state", {})
                state["receive_timeout"] = True
                request_id = state.get("request_id")
                cycle.disconnected = True
                cycle.message_event.set()
            self.transport.write(_raw_response(
                408, "Request Timeout", "request_timeout",
                f"the request was not received within {limits.request_timeout_s:g} s; send the headers and the "
                "body without pauses (or raise --request-timeout-s for slow links)", request_id))
            self.transport.close()

        def _closed(self, reason: str) -> None:
            if limits.metrics is not None:
                limits.metrics.connections_closed.labels(reason).inc()

        # ------------------------------------------------------------ malformed HTTP
        def send_400_response(self, msg: str) -> None:
            self._cancel_deadline()
            self.transport.write(_raw_response(
                400, "Bad Request", "bad_request", "invalid HTTP request (malformed request line or headers, or "
                "headers above 16 KiB); send one valid HTTP/1.1 request"))
            self.transport.close()

    return GuardedH11Protocol
