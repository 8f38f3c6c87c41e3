"""``edgevision serve``: the real server on a loopback port, driven over HTTP (network otherwise blocked)."""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgevision.runtime import Detector, read_metadata
from edgevision.runtime.metadata import METADATA_KEY
from tests.helpers import run_cli
from tests.runtime.conftest import bbox_model, make_meta
from tests.serve.conftest import asgi_get, multipart, png

pytestmark = pytest.mark.slow


def expected(model: Path, image: Path, **kw: object) -> list[dict]:
    return Detector(model)(image, **kw).to_dict()["detections"]


# ---------------------------------------------------------------------------------------------- detect
def test_detect_raw_and_multipart_give_the_runtime_answer(start_server, bbox_files) -> None:
    s = start_server(bbox_files["model"])
    part, blank = bbox_files["part"].read_bytes(), bbox_files["blank"].read_bytes()

    r = s.detect(part, "name=cam1-0001.png", **{"X-Request-ID": "line3-0001"})
    assert r.status == 200, r.body
    doc = r.json
    assert doc["schema"] == "edgevision.detect/1"
    assert doc["detections"] == expected(bbox_files["model"], bbox_files["part"])
    assert doc["detections"][0]["xyxy"] == [50.0, 10.0, 90.0, 40.0] and doc["detections"][0]["class"] == "scratch"
    assert doc["image_size"] == [96, 128] and doc["image"] == {"name": "cam1-0001.png", "bytes": len(part)}
    assert doc["decision"] == "reject"
    assert doc["request_id"] == "line3-0001" and r.headers["x-request-id"] == "line3-0001"
    assert doc["model"]["sha256"] == hashlib.sha256(bbox_files["model"].read_bytes()).hexdigest()
    assert set(doc["timing_ms"]) == {"decode", "detect", "total"} and doc["timing_ms"]["total"] > 0

    body, ctype = multipart({"image": ("part.png", part, "image/png"), "note": "station 3"})
    r2 = s.request("POST", "/v1/detect", body, {"Content-Type": ctype})
    assert r2.status == 200, r2.body
    assert r2.json["detections"] == doc["detections"] and r2.json["image"]["name"] == "part.png"
    assert len(r2.json["request_id"]) == 16  # generated when the client sends none

    r3 = s.detect(blank, ctype="application/octet-stream")
    assert r3.status == 200 and r3.json["detections"] == [] and r3.json["decision"] == "accept"

    # grey and 16-bit images are normal inputs (the model's declared conversion), not errors
    grey = cv2.cvtColor(cv2.imread(str(bbox_files["part"])), cv2.COLOR_BGR2GRAY)
    for img in (grey, grey.astype(np.uint16) * 257):
        r4 = s.detect(png(img))
        assert r4.status == 200, r4.body
        assert [d["xyxy"] for d in r4.json["detections"]] == [[50.0, 10.0, 90.0, 40.0]]

    info = s.request("GET", "/v1/model").json
    assert info["metadata"]["names"] == ["scratch"] and info["sha256"] == doc["model"]["sha256"]
    assert info["operating_points"]["classes"] == {"scratch": 0.25}
    rc, out = s.stop()
    assert rc == 0, out
    assert s.network_attempts() == []  # the service never reaches out
    assert '"POST /v1/detect" 200' in out and "cam1-0001.png reject 1 det id=line3-0001" in out  # access log


def test_decision_is_at_the_operating_points_whatever_conf_returns(start_server, tmp_path) -> None:
    img = np.full((64, 64, 3), 0, np.uint8)
    img[8:20, 8:30] = 255
    image = png(img)
    meta = make_meta(["dent"], size_hw=(64, 64))
    meta = dataclasses.replace(meta, thresholds={"schema": "edgevision.thresholds/1", "classes": {"dent": 0.7}})
    weak = bbox_model(tmp_path / "weak.onnx", meta, score=0.6)
    strong = bbox_model(tmp_path / "strong.onnx", meta, score=0.9)
    s = start_server(weak)
    assert s.request("GET", "/v1/model").json["operating_points"]["rules"] == {"dent": "set by hand (no rule recorded)"}
    r = s.detect(image).json
    assert r["detections"] == [] and r["decision"] == "accept"
    assert r["thresholds"]["decision"] == "the model's operating points"
    low = s.detect(image, "conf=0.5").json  # shows the weak detection, the decision stays at 0.7
    assert [round(d["score"], 4) for d in low["detections"]] == [0.6] and low["decision"] == "accept"
    assert low["thresholds"]["detections"] == "conf 0.5 (request)"
    s2 = start_server(strong)
    assert s2.detect(image).json["decision"] == "reject"
    high = s2.detect(image, "conf=0.95").json  # hides the detection, the image is still rejected
    assert high["detections"] == [] and high["decision"] == "reject"


def test_class_filter(start_server, bbox_files) -> None:
    s = start_server(bbox_files["model"])
    part = bbox_files["part"].read_bytes()
    assert len(s.detect(part, "classes=scratch").json["detections"]) == 1
    assert len(s.detect(part, "classes=0").json["detections"]) == 1
    r = s.detect(part, "classes=scrach")
    assert r.status == 400 and "did you mean 'scratch'" in r.json["error"]["message"]
    r = s.detect(part, "classes=3")
    assert r.status == 400 and "out of range" in r.json["error"]["message"]


# ---------------------------------------------------------------------------------------------- auth
def test_bearer_token(start_server, bbox_files, tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("3f9a0c1e5b7d2f4a6c8e0b1d3f5a7c9e\n")
    token_file.chmod(0o600)
    s = start_server(bbox_files["model"], "--token-file", str(token_file))
    part = bbox_files["part"].read_bytes()
    r = s.detect(part)
    assert r.status == 401 and r.json["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = s.detect(part, Authorization="Bearer nope")
    assert r.status == 401 and "invalid_token" in r.headers["www-authenticate"]
    r = s.detect(part, Authorization="Basic 3f9a0c1e5b7d2f4a6c8e0b1d3f5a7c9e")
    assert r.status == 401
    ok = s.detect(part, Authorization="Bearer 3f9a0c1e5b7d2f4a6c8e0b1d3f5a7c9e")
    assert ok.status == 200 and len(ok.json["detections"]) == 1
    assert s.request("GET", "/metrics").status == 401
    assert s.request("GET", "/v1/model").status == 401
    assert s.request("GET", "/metrics", headers={"Authorization": "Bearer 3f9a0c1e5b7d2f4a6c8e0b1d3f5a7c9e"}).status == 200
    assert s.request("GET", "/healthz").status == 200  # liveness stays open
    assert s.request("GET", "/readyz").status == 401  # readiness names the model: protected (see --public-info)
    rc, out = s.stop()
    assert rc == 0 and "3f9a0c1e5b7d2f4a6c8e0b1d3f5a7c9e" not in out  # the token never reaches the log


def test_configured_from_environment_variables(start_server, bbox_files, tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("env-token-0123456789abcdef0123456789")
    token_file.chmod(0o640)
    s = start_server(bbox_files["model"], use_model_arg=False,
                     env={"EDGEVISION_MODEL": str(bbox_files["model"]), "EDGEVISION_PORT": "0",
                          "EDGEVISION_TOKEN_FILE": str(token_file), "EDGEVISION_MAX_BODY_MB": "0.001",
                          "EDGEVISION_ACCESS_LOG": "false"})
    auth = {"Authorization": "Bearer env-token-0123456789abcdef0123456789"}
    assert s.detect(bbox_files["part"].read_bytes(), **auth).status == 200
    assert s.detect(b"\0" * 2000, ctype="application/octet-stream", **auth).status == 413  # 0.001 MiB = 1048 bytes
    rc, out = s.stop()
    assert rc == 0 and '"POST /v1/detect"' not in out


# ---------------------------------------------------------------------------------------------- limits and bad input
def test_body_size_limit(start_server, bbox_files) -> None:
    s = start_server(bbox_files["model"], "--max-body-mb", "0.01")  # 10,485 bytes
    rng = np.random.default_rng(0)
    noisy = png(rng.integers(0, 255, (120, 120, 3), dtype=np.uint8))  # ~43 KB, incompressible
    assert len(noisy) > 20_000
    r = s.detect(noisy)
    assert r.status == 413 and r.json["error"]["code"] == "too_large" and "--max-body-mb" in r.json["error"]["message"]
    # no Content-Length (chunked): refused as soon as the count passes the limit
    chunks = [noisy[i:i + 4096] for i in range(0, len(noisy), 4096)]
    r = s.request("POST", "/v1/detect", iter(chunks), {"Content-Type": "image/png"}, chunked=True)
    assert r.status == 413 and r.json["error"]["code"] == "too_large"
    # a small image in chunks is fine
    small = bbox_files["part"].read_bytes()
    r = s.request("POST", "/v1/detect", iter([small[:100], small[100:]]), {"Content-Type": "image/png"}, chunked=True)
    assert r.status == 200 and len(r.json["detections"]) == 1


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header declares w x h (valid CRC) followed by a tiny, truncated body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_bad_images_get_400_and_the_server_keeps_serving(start_server, bbox_files, tmp_path) -> None:
    s = start_server(bbox_files["model"], "--max-pixels-mp", "50")
    part = bbox_files["part"].read_bytes()
    cases = {
        "garbage": (b"this is not an image", "application/octet-stream", "bad_image"),
        "empty": (b"", "image/png", "bad_image"),
        "truncated png": (part[: len(part) // 2], "image/png", "bad_image"),
        "a 40000x40000 png header (decompression bomb)": (_png_header_only(40000, 40000), "image/png",
                                                         "image_too_large"),
    }
    for what, (data, ctype, code) in cases.items():
        r = s.detect(data, ctype=ctype)
        assert r.status == 400, (what, r.status, r.body)
        err = r.json["error"]
        assert err["code"] == code, (what, err)
        assert "\n" not in err["message"] and len(err["message"]) < 400
    # multipart without a file, with a text file, with two files
    body, ctype = multipart({"note": "no image here"})
    r = s.request("POST", "/v1/detect", body, {"Content-Type": ctype})
    assert r.status == 400 and r.json["error"]["code"] == "bad_multipart"
    body, ctype = multipart({"image": ("notes.txt", b"hello", "text/plain")})
    r = s.request("POST", "/v1/detect", body, {"Content-Type": ctype})
    assert r.status == 400 and r.json["error"]["code"] == "bad_image"
    body, ctype = multipart({"a": ("a.png", part, "image/png"), "b": ("b.png", part, "image/png")})
    r = s.request("POST", "/v1/detect", body, {"Content-Type": ctype})
    assert r.status == 400 and "one image per request" in r.json["error"]["message"]
    r = s.request("POST", "/v1/detect", b"--x\r\nbroken", {"Content-Type": "multipart/form-data; boundary=x"})
    assert r.status == 400 and r.json["error"]["code"] in ("bad_multipart", "bad_image")
    # not an image type, bad parameters, unknown endpoints, wrong method: JSON errors, never a 500
    r = s.request("POST", "/v1/detect", b"{}", {"Content-Type": "application/json"})
    assert r.status == 415 and r.json["error"]["code"] == "unsupported_media_type"
    for query in ("conf=2", "conf=abc", "max_det=0", "iou=-1"):
        r = s.detect(part, query)
        assert r.status == 400 and r.json["error"]["code"] == "bad_parameter", (query, r.body)
        assert r.json["error"]["message"].split(":")[0] in query
    r = s.request("GET", "/v2/detect")
    assert r.status == 404 and r.json["error"]["code"] == "not_found"
    r = s.request("GET", "/v1/detect")
    assert r.status == 405 and r.json["error"]["code"] == "method_not_allowed"
    # a name with control characters cannot forge log lines
    r = s.detect(part, "name=a%0Afake%20log%20line")
    assert r.status == 200 and r.json["image"]["name"] == "a?fake log line"
    # a client that goes away mid-upload is not a server error
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    sock.sendall(f"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Length: {len(part)}\r\n\r\n".encode() + part[:50])
    sock.close()
    time.sleep(0.5)
    # still serving, and nothing was a 500
    assert s.request("GET", "/healthz").status == 200
    assert len(s.detect(part).json["detections"]) == 1
    rc, out = s.stop()
    assert rc == 0 and "Traceback" not in out and '" 500 ' not in out


# ---------------------------------------------------------------------------------------------- metrics
def _families(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def _value(fam: dict[str, list], sample: str, **labels: str) -> float:
    name = sample.removesuffix("_total").removesuffix("_count").removesuffix("_bucket")
    for s in fam.get(name, []):
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return 0.0


def test_metrics_count_what_happened(start_server, bbox_files) -> None:
    s = start_server(bbox_files["model"])
    part, blank = bbox_files["part"].read_bytes(), bbox_files["blank"].read_bytes()
    for _ in range(3):
        assert s.detect(part).status == 200
    assert s.detect(blank).status == 200
    assert s.detect(b"junk", ctype="application/octet-stream").status == 400
    assert s.request("GET", "/nowhere").status == 404
    r = s.request("GET", "/metrics")
    assert r.status == 200 and r.headers["content-type"].startswith("text/plain")
    fam = _families(r.body.decode())
    assert _value(fam, "edgevision_requests_total", endpoint="/v1/detect", status="200") == 4
    assert _value(fam, "edgevision_requests_total", endpoint="/v1/detect", status="400") == 1
    assert _value(fam, "edgevision_requests_total", endpoint="other", status="404") == 1
    assert _value(fam, "edgevision_request_errors_total", endpoint="/v1/detect", reason="bad_image") == 1
    assert _value(fam, "edgevision_request_duration_seconds_count", endpoint="/v1/detect") == 5
    assert _value(fam, "edgevision_inference_duration_seconds_count") == 4  # the junk never reached the model
    assert _value(fam, "edgevision_decisions_total", decision="reject") == 3
    assert _value(fam, "edgevision_decisions_total", decision="accept") == 1
    assert _value(fam, "edgevision_detections_total", **{"class": "scratch"}) == 3
    assert _value(fam, "edgevision_ready") == 1 and _value(fam, "edgevision_inflight_requests") == 0
    info = fam["edgevision_model_info"][0]
    assert info.labels["sha256"] == hashlib.sha256(bbox_files["model"].read_bytes()).hexdigest()
    assert info.labels["precision"] == "fp32" and info.labels["classes"] == "1"
    assert _value(fam, "process_resident_memory_bytes") > 10e6
    buckets = [x for x in fam["edgevision_request_duration_seconds"]
               if x.name.endswith("_bucket") and x.labels["endpoint"] == "/v1/detect"]
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 5
    assert all(a.value <= b.value for a, b in zip(buckets, buckets[1:]))


# ---------------------------------------------------------------------------------------------- concurrency
def _sample_images(sample: Path, n: int) -> list[Path]:
    files = sorted(p for p in sample.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    assert len(files) >= n
    return files[:n]


def test_parallel_clients_get_the_serial_results(start_server, learned) -> None:
    """The really trained sample model: 8 clients at once, 3 inference slots, one shared session."""
    model = learned["onnx"]
    images = _sample_images(learned["sample"], 12)
    s = start_server(model, "--concurrency", "3", "--threads", "1", "--max-queue", "64")
    serial = [s.detect(p.read_bytes(), "conf=0.01").json for p in images]
    assert len({len(d["detections"]) for d in serial}) > 2  # the images really differ in what is found
    direct = [Detector(model, threads=1)(p, conf=0.01).to_dict()["detections"] for p in images]
    assert [d["detections"] for d in serial] == direct  # the service returns the runtime's answer

    jobs = [i % len(images) for i in range(48)]
    start = threading.Barrier(8)

    def client(k: int) -> list[tuple[int, dict]]:
        start.wait()
        return [(i, s.detect(images[i].read_bytes(), "conf=0.01").json) for i in jobs[k::8]]

    with ThreadPoolExecutor(8) as pool:
        results = [r for part in pool.map(client, range(8)) for r in part]
    assert len(results) == 48
    for i, doc in results:
        assert doc["detections"] == serial[i]["detections"] and doc["decision"] == serial[i]["decision"]
    fam = _families(s.request("GET", "/metrics").body.decode())
    assert _value(fam, "edgevision_requests_total", endpoint="/v1/detect", status="200") == 60


def test_full_queue_answers_503_with_retry_after(start_server, learned) -> None:
    model = learned["onnx"]
    s = start_server(model, "--concurrency", "1", "--threads", "1", "--max-queue", "0")
    big = png(np.random.default_rng(1).integers(0, 255, (1500, 1500, 3), dtype=np.uint8))  # slow decode + resize
    for _attempt in range(5):
        barrier = threading.Barrier(6)

        def client(_: int, barrier: threading.Barrier = barrier) -> tuple[int, dict[str, str], bytes]:
            barrier.wait()
            r = s.detect(big)
            return r.status, r.headers, r.body

        with ThreadPoolExecutor(6) as pool:
            got = list(pool.map(client, range(6)))
        statuses = sorted(st for st, _, _ in got)
        assert set(statuses) <= {200, 503}, statuses
        assert 200 in statuses
        if 503 in statuses:
            _, headers, body = next(g for g in got if g[0] == 503)
            assert headers["retry-after"] == "1" and b"overloaded" in body
            break
    else:
        pytest.fail("six simultaneous requests on one slot and no queue never gave a 503")
    assert s.detect(big).status == 200  # and it recovers


# ---------------------------------------------------------------------------------------------- stop
def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(start_server, bbox_files) -> None:
    s = start_server(bbox_files["model"])
    part = bbox_files["part"].read_bytes()
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
    head = (f"POST /v1/detect?name=in-flight HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(part)}\r\n\r\n").encode()
    sock.sendall(head + part[:100])  # the request is in flight: headers read, body half sent
    time.sleep(0.3)
    s.proc.send_signal(15)
    time.sleep(0.8)
    with pytest.raises(OSError):  # the listening socket is closed: new clients are refused at once
        socket.create_connection(("127.0.0.1", s.port), timeout=2).close()
    assert s.proc.poll() is None  # still draining
    sock.sendall(part[100:])
    reply = b""
    while not reply.endswith(b"}") or b"\r\n\r\n" not in reply:
        chunk = sock.recv(65536)
        if not chunk:
            break
        reply += chunk
    sock.close()
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert b'"name":"in-flight"' in reply and b'"decision":"reject"' in reply
    rc, out = s.stop()
    assert rc == 0, out
    assert "received SIGTERM: draining 1 in-flight request(s)" in out
    assert "stopped on SIGTERM: 1 image(s) served" in out


def test_readiness_follows_startup_and_drain(bbox_files) -> None:
    """In-process: /readyz is 503 until the app started, 200 when ready, 503 once the drain begins."""
    from edgevision.serve import ServeConfig, create_app

    app = create_app(Detector(bbox_files["model"]), ServeConfig(model=bbox_files["model"]))
    state = app.state.service
    status, body = asgi_get(app, "/readyz")
    assert status == 503 and b'"starting"' in body
    state.set_ready(True)
    assert asgi_get(app, "/readyz")[0] == 200
    state.begin_drain("test")
    status, body = asgi_get(app, "/readyz")
    assert status == 503 and b'"draining"' in body
    assert b"edgevision_ready 0.0" in asgi_get(app, "/metrics")[1]
    assert asgi_get(app, "/healthz")[0] == 200  # alive while draining


# ---------------------------------------------------------------------------------------------- bad configuration
def test_bad_configuration_fails_in_one_line_before_binding(bbox_files, tmp_path) -> None:
    empty = tmp_path / "empty-token"
    empty.write_text("  \n")
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_text("not a model")
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(bbox_files["model"].read_bytes())
    import onnx

    m = onnx.load(str(foreign))
    del m.metadata_props[:]
    onnx.save(m, str(foreign))
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = str(busy.getsockname()[1])
    try:
        cases = [
            ((tmp_path / "missing.onnx",), "model file not found"),
            ((not_onnx,), "not an ONNX model"),
            ((foreign,), f"no EdgeVision metadata (key '{METADATA_KEY}')"),
            ((bbox_files["model"], "--token-file", tmp_path / "nope"), "token file not found"),
            ((bbox_files["model"], "--token-file", empty), "token file is empty"),
            ((bbox_files["model"], "--port", port), f"--port {port}: already in use"),
            ((bbox_files["model"], "--host", "203.0.113.9", "--port", "0"), "cannot listen there"),
            ((bbox_files["model"], "--log-level", "loud"), "--log-level"),
        ]
        for args, message in cases:
            r = run_cli("serve", *args, timeout=60)
            assert r.returncode == 2, (args, r.stdout, r.stderr)
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            assert len(lines) == 1 and message in lines[0], (args, r.stderr)
            assert "Traceback" not in r.stderr
    finally:
        busy.close()
    assert read_metadata(bbox_files["model"]).names == ["scratch"]  # the model file is untouched


def test_accepted_connections_have_tcp_nodelay() -> None:
    """Without TCP_NODELAY every keep-alive answer stalls ~40 ms (Nagle against delayed ACK): asyncio sets it on
    accepted sockets only when the listening socket says IPPROTO_TCP, which `bind_socket` must do."""
    import asyncio

    from edgevision.serve.server import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    assert sock.proto == socket.IPPROTO_TCP
    seen: list[int] = []

    async def main() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=sock)
        _, w = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        w.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
    assert seen and seen[0] != 0
