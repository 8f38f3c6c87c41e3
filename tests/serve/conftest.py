"""The real ``edgevision serve`` in a child process on a loopback port, and a stdlib HTTP client for it."""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.helpers import blocked_env, network_attempts
from tests.runtime.conftest import bbox_model, make_meta

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def multipart(fields: dict[str, tuple[str, bytes, str] | str]) -> tuple[bytes, str]:
    """A multipart/form-data body: value (filename, bytes, content type) for a file, str for a plain field."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        if isinstance(value, str):
            head = f'Content-Disposition: form-data; name="{name}"\r\n\r\n'
            parts.append(f"--{boundary}\r\n{head}".encode() + value.encode() + b"\r\n")
        else:
            fname, data, ctype = value
            head = f'Content-Disposition: form-data; name="{name}"; filename="{fname}"\r\nContent-Type: {ctype}\r\n\r\n'
            parts.append(f"--{boundary}\r\n{head}".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Server:
    """``python -m edgevision serve MODEL --port 0 ARGS`` with outbound network blocked (and logged).

    ``python``, ``cwd``: the interpreter and folder (default this one and the checkout; tests/deploy runs an
    installed runtime from outside the checkout). ``nofile``: the child's soft RLIMIT_NOFILE (file descriptors).
    """

    def __init__(self, model: Path, *args: str, tmp: Path, env: dict[str, str] | None = None,
                 use_model_arg: bool = True, python: str = sys.executable, cwd: Path | None = None,
                 nofile: int | None = None) -> None:
        block = tmp / f"netblock-{uuid.uuid4().hex[:6]}"
        self.block = block
        full_env = blocked_env(block, dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200", NO_COLOR="1", TERM="dumb"))
        full_env.update(env or {})
        cmd = [python, "-m", "edgevision", "serve", *([str(model)] if use_model_arg else []), *args]
        if "--port" not in args and "EDGEVISION_PORT" not in (env or {}):
            cmd += ["--port", "0"]
        def limit_files() -> None:
            import resource

            assert nofile is not None
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env,
                                     cwd=cwd, preexec_fn=limit_files if nofile is not None else None)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._stopped: tuple[int, str] | None = None
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.port = self._wait_for_port()
        self.host = "127.0.0.1"

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def _wait_for_port(self, timeout: float = 90) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"server exited ({self.proc.wait()}):\n{self.text}")
            if "serving " in line and " on http://" in line:
                port = int(line.rsplit(":", 1)[1].strip().rstrip("/"))
                self._wait_ready(port)
                return port
        self.proc.kill()
        raise AssertionError(f"server did not start in {timeout} s:\n{self.text}")

    def _wait_ready(self, port: int) -> None:
        for _ in range(200):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/readyz")
                if c.getresponse().status in (200, 401):  # 401: answered, but /readyz needs the token
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("server never became ready")

    @property
    def text(self) -> str:
        return "".join(self.output)

    def memory_mb(self) -> tuple[float, float]:
        """The server process's resident memory now and its peak so far (VmRSS, VmHWM), in MiB (Linux)."""
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    def open_fds(self) -> int:
        """File descriptors the server process holds now (Linux)."""
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def request(self, method: str, path: str, body: bytes | Iterable[bytes] | None = None,
                headers: dict[str, str] | None = None, chunked: bool = False) -> Reply:
        c = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            c.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
            r = c.getresponse()
            return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            c.close()

    def detect(self, image: bytes, query: str = "", ctype: str = "image/png", **headers: str) -> Reply:
        return self.request("POST", "/v1/detect" + (f"?{query}" if query else ""), image,
                            {"Content-Type": ctype, **headers})

    def stop(self, timeout: float = 30) -> tuple[int, str]:
        if self._stopped is not None:
            return self._stopped
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        try:  # the pump has read everything once it sends None
            while self.lines.get(timeout=10) is not None:
                pass
        except queue.Empty:
            pass
        self._stopped = (rc, self.text)
        return self._stopped

    def network_attempts(self) -> list[str]:
        return network_attempts(self.block)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Any]:
    """``start_server(model, *args, env=None)`` -> a running `Server`; all are stopped at teardown."""
    servers: list[Server] = []

    def _start(model: Path, *args: str, **kw: Any) -> Server:
        s = Server(model, *args, tmp=tmp_path, **kw)
        servers.append(s)
        return s

    yield _start
    for s in servers:
        s.stop()


def png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def bbox_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A bbox model (one class 'scratch', the box of the bright pixels, score 0.9) and images."""
    t = tmp_path_factory.mktemp("serve")
    bbox_model(t / "model.onnx", make_meta(["scratch"], size_hw=(64, 64)), score=0.9)
    part = np.full((96, 128, 3), 20, np.uint8)
    part[10:40, 50:90] = 255
    cv2.imwrite(str(t / "part.png"), part)
    cv2.imwrite(str(t / "blank.png"), np.full((96, 128, 3), 20, np.uint8))
    return {"model": t / "model.onnx", "part": t / "part.png", "blank": t / "blank.png", "dir": t}


def asgi_get(app, path: str) -> tuple[int, bytes]:
    """One GET through the ASGI app itself (no server, no socket)."""
    import asyncio

    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": [],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
