"""``edgevision serve`` against a hostile client: decode bombs, idle and slow connections, malformed parameters,
log injection, probing without the token, malformed HTTP and multipart. Each defect is checked with the probe's
example and at least one other input of the same class, on a real server on 127.0.0.1; every socket loop is
bounded in count and time."""

from __future__ import annotations

import json
import re
import socket
import time
import uuid

import numpy as np
import pytest

from tests.runtime import bombs
from tests.serve.conftest import asgi_get

pytestmark = pytest.mark.slow

TOKEN = "3f9a0c1e5b7d2f4a6c8e0b1d3f5a7c9e"


def _recv_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed (monotonic seconds)."""
    sock.settimeout(timeout)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            break
        except TimeoutError:
            raise AssertionError(f"the server kept the connection open for {timeout} s (got {out[:200]!r})") from None
        if not chunk:
            break
        out += chunk
    return out, time.monotonic()


def _json_answer(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), raw[:300]
    return status, json.loads(body)


def _parts(fields: list[tuple[str, tuple[str, bytes, str] | str]]) -> tuple[bytes, str]:
    """A multipart body from a list, so a field name can repeat."""
    boundary = uuid.uuid4().hex
    out = b""
    for name, value in fields:
        if isinstance(value, str):
            out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        else:
            fname, data, ctype = value
            out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{fname}"\r\n'
                    f"Content-Type: {ctype}\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _metric(s, name: str, **labels: str) -> float:
    text = s.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).body.decode()
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(want + " "))


# ---------------------------------------------------------------------------------------------- 3. decode bombs
def test_decode_bombs_are_refused_from_the_header_in_every_format(start_server, bbox_files) -> None:
    """The probe: a 639-byte JPEG declaring 12000x12000 behind a truncated Adobe APP14 segment, which Pillow cannot
    open, was decoded by OpenCV (RSS 201 -> 1,031 MB) and answered 200. Now every format is sized from its own
    header before decoding: that JPEG, the same trick on JFIF, TIFF tiles / APNG / GIF frames larger than the image,
    and a bomb in each other format the decoder accepts."""
    s = start_server(bbox_files["model"])
    part = bbox_files["part"].read_bytes()
    assert s.detect(part).status == 200  # the first inference's allocations happen before the baseline
    _, peak_before = s.memory_mb()
    for name, (data, _) in bombs.BOMBS.items():
        r = s.detect(data, ctype="application/octet-stream")
        assert r.status == 400, (name, r.status, r.body[:300])
        err = r.json["error"]
        assert err["code"] == "image_too_large" and "--max-pixels-mp" in err["message"], (name, err)
        assert "\n" not in err["message"] and len(err["message"]) < 300
    probe = bombs.jpeg_truncated_app14()
    r = s.detect(probe, ctype="image/jpeg")
    assert r.json["error"]["message"].startswith("JPEG image is 12000x12000 = 144.0 MP, above this server's limit of "
                                                 "100 MP"), r.body
    body, ctype = _parts([("image", ("probe.jpg", probe, "image/jpeg"))])
    r = s.request("POST", "/v1/detect", body, {"Content-Type": ctype})
    assert r.status == 400 and r.json["error"]["code"] == "image_too_large"
    _, peak_after = s.memory_mb()
    assert peak_after - peak_before < 100, (peak_before, peak_after)  # decoding the probe alone took +830 MB

    # what cannot be sized safely is refused, not decoded
    for data, why in [(b"\0\0\0\x18ftypavif\0\0\0\0avifmif1" + b"\0" * 64, "AVIF"),
                      (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 12000 +X 12000\n" + b"\0" * 64, "float")]:
        r = s.detect(data, ctype="application/octet-stream")
        assert r.status == 400 and r.json["error"]["code"] == "bad_image" and why in r.json["error"]["message"]
    assert len(s.detect(part).json["detections"]) == 1  # still serving
    rc, out = s.stop()
    assert rc == 0 and "Traceback" not in out


def test_pixel_limit_holds_for_real_images_in_every_format(start_server, bbox_files) -> None:
    """Not only crafted headers: with --max-pixels-mp 0.01 (10,000 pixels) a real 128x96 image (12,288 pixels) is
    refused in each format, and a 64x64 one passes."""
    import cv2

    s = start_server(bbox_files["model"], "--max-pixels-mp", "0.01")
    big = cv2.imread(str(bbox_files["part"]))
    small = np.ascontiguousarray(big[:64, 40:104])
    for ext in (".png", ".jpg", ".bmp", ".tiff", ".webp", ".gif", ".ppm", ".jp2", ".sr"):
        ok, data = cv2.imencode(ext, big)
        assert ok
        r = s.detect(data.tobytes(), ctype="application/octet-stream")
        assert r.status == 400 and r.json["error"]["code"] == "image_too_large", (ext, r.body)
        assert "128x96 = 0.0 MP" in r.json["error"]["message"]
        ok, data = cv2.imencode(ext, small)
        assert s.detect(data.tobytes(), ctype="application/octet-stream").status == 200, ext


# ---------------------------------------------------------------------------------------------- 4. connections
def test_idle_connections_are_closed_and_capped_below_the_descriptor_limit(start_server, bbox_files) -> None:
    """The probe: 1,100 connections that never send a request exhausted 1,024 descriptors; real requests timed out.
    Here the process may open 512 files: at most 256 connections are held (the other descriptors stay the
    process's), more are answered 503 at once, idle ones are closed after the idle timeout (set through its
    environment variable), the descriptors never run out, and real clients get an answer, not a timeout."""
    import threading

    s = start_server(bbox_files["model"], env={"EDGEVISION_IDLE_TIMEOUT_S": "2"}, nofile=512)
    assert "at most 256 open (from RLIMIT_NOFILE 512); idle ones closed after 2 s" in s.text
    peak, done = [0], threading.Event()

    def watch_fds() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], s.open_fds())

    watcher = threading.Thread(target=watch_fds, daemon=True)
    watcher.start()
    t0 = time.monotonic()
    socks = [socket.create_connection(("127.0.0.1", s.port), timeout=10) for _ in range(400)]
    connected = time.monotonic()
    r = s.request("GET", "/healthz")  # a real client during the flood: a prompt JSON answer
    assert r.status == 503 and r.json["error"]["code"] == "too_many_connections" and r.headers["retry-after"] == "1"
    refused = idle_closed = 0
    for sock in socks:
        raw, closed_at = _recv_until_closed(sock, 8)
        sock.close()
        if raw:
            status, doc = _json_answer(raw)
            assert status == 503 and doc["error"]["code"] == "too_many_connections", raw[:300]
            refused += 1
        else:
            idle_closed += 1
            assert closed_at - connected < 6
    done.set()
    watcher.join()
    assert refused + idle_closed == 400 and refused >= 100, (refused, idle_closed)
    if connected - t0 < 1.5:  # no slot was freed by the idle timeout while connecting: exactly the cap was held
        assert idle_closed == 256, (idle_closed, refused)
    assert peak[0] < 480, peak  # cap + the process's own + connections being refused, below the 512 limit
    assert len(s.detect(bbox_files["part"].read_bytes()).json["detections"]) == 1
    # between the requests of a keep-alive connection the idle timeout applies too
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    t1 = time.monotonic()
    raw, closed_at = _recv_until_closed(sock, 8)
    sock.close()
    assert raw.startswith(b"HTTP/1.1 200") and 1.8 < closed_at - t1 < 5
    assert _metric(s, "edgevision_connections_closed_total", reason="too_many_connections") == refused + 1
    assert _metric(s, "edgevision_connections_closed_total", reason="idle_timeout") >= idle_closed
    rc, out = s.stop()
    assert rc == 0 and "Too many open files" not in out and "out of system resource" not in out
    assert out.count("new connection(s) with 503") < 5  # rate-limited: not one line per connection


def test_slow_requests_are_cut_at_the_request_timeout(start_server, bbox_files) -> None:
    """The probe: a body trickled at 1 byte/s stayed open indefinitely; bodies sent one byte short held their memory.
    With --request-timeout-s 1.5: a trickled request line, headers, fixed-length or chunked body, and bodies one byte
    short all get a JSON 408 and are closed; a request that arrives in time in pieces still works."""
    s = start_server(bbox_files["model"], "--request-timeout-s", "1.5", "--idle-timeout-s", "5",
                     env={"EDGEVISION_MAX_CONNECTIONS": "50"})
    assert "at most 50 open (RLIMIT_NOFILE" in s.text and "a request must arrive within 1.5 s" in s.text
    part = bbox_files["part"].read_bytes()

    def trickle(head: bytes, drip: bytes) -> tuple[int, dict, float]:
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        t0 = time.monotonic()
        sock.sendall(head)
        sock.settimeout(0.2)
        raw = b""
        for byte in drip[:40]:  # at most 40 x 0.2 s
            try:
                sock.sendall(bytes([byte]))
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            raw += chunk
            if not chunk or b"}" in raw:
                break
        raw += _recv_until_closed(sock, 5)[0]
        sock.close()
        status, doc = _json_answer(raw)
        return status, doc, time.monotonic() - t0

    header = (f"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {len(part)}\r\n\r\n"
              .encode())
    cases = {
        "request line": (b"P", b"OST /v1/detect HTTP/1.1\r\n"),
        "headers": (b"POST /v1/detect HTTP/1.1\r\nHost: x\r\n", b"X-Slow: " + b"a" * 60),
        "fixed-length body": (header, part),
        "chunked body": (b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n", b"1\r\nx\r\n" * 10),
    }
    for what, (head, drip) in cases.items():
        status, doc, took = trickle(head, drip)
        assert status == 408 and doc["error"]["code"] == "request_timeout", (what, doc)
        assert 1.3 < took < 4, (what, took)
    # bodies one byte short, several at once (the probe's 10 x 19 MiB held 206 MB): all cut, memory released
    socks = []
    body = bytes(2_000_000)
    for _ in range(6):
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        sock.sendall(f"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: "
                     f"{len(body) + 1}\r\n\r\n".encode() + body)
        socks.append(sock)
    for sock in socks:
        status, doc = _json_answer(_recv_until_closed(sock, 6)[0])
        assert status == 408 and doc["request_id"], doc
        sock.close()
    # a request that arrives within the deadline, in pieces, is fine
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    for piece in (header, part[:200], part[200:]):
        sock.sendall(piece)
        time.sleep(0.3)
    raw = sock.recv(65536)
    sock.close()
    assert raw.startswith(b"HTTP/1.1 200"), raw[:200]
    assert _metric(s, "edgevision_connections_closed_total", reason="request_timeout") == len(cases) + 6
    rc, out = s.stop()
    assert rc == 0 and "Traceback" not in out
    assert out.count("408") >= 7 and "(request_timeout)" in out  # the access log names the reason


def test_connection_limit_follows_the_descriptor_limit(monkeypatch) -> None:
    """In-process: the default cap leaves the process its reserve; a larger explicit cap raises the soft limit up to
    the hard one, and one above the hard limit is a configuration error (before anything is bound)."""
    import resource

    from edgevision.core.errors import ConfigError
    from edgevision.serve.server import connection_limit

    raised: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "setrlimit", lambda _, limits: raised.append(limits))
    for soft, hard, requested, expected in [(1024, 4096, None, 704), (256, 4096, None, 128), (8192, 8192, None, 1024),
                                            (1024, 4096, 600, 600)]:
        monkeypatch.setattr(resource, "getrlimit", lambda _, s=soft, h=hard: (s, h))
        assert connection_limit(requested)[0] == expected, (soft, requested)
    assert raised == []
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    limit, note = connection_limit(2000)
    assert limit == 2000 and raised == [(2320, 4096)] and "raised from 1024 to 2320" in note
    with pytest.raises(ConfigError, match="--max-connections 5000: needs about 5714 file descriptors.*at most 4096"):
        connection_limit(5000)


# ---------------------------------------------------------------------------------------------- 6, 7, 9. parameters
MALFORMED = [
    "classes=%C2%B2",              # the probe: a superscript two ('²'.isdigit() is True, int('²') fails)
    "classes=%D9%A3",              # an Arabic-Indic digit three
    "classes=" + "7" * 5000,       # the probe: 5,000 digits (int() refuses > 4,300)
    "classes=" + "9" * 40,         # a long id within the length limit
    "classes=,",                   # the probe: an empty list turned reject into accept
    "classes=",
    "classes=%20",
    "classes=scratch,,",
    "classes=,scratch",
    "classes=0,",
    "cof=0.5",                     # a typo, silently ignored before
    "conf=0.5&conf=0.6",           # repeated
    "conf=nan", "conf=inf", "conf=", "iou=", "max_det=1e3", "max_det=" + "9" * 5000, "name=" + "n" * 300,
]


def test_malformed_parameters_are_400_never_500_nor_a_changed_decision(start_server, bbox_files) -> None:
    s = start_server(bbox_files["model"])
    part = bbox_files["part"].read_bytes()
    assert s.detect(part).json["decision"] == "reject"
    for query in MALFORMED:
        r = s.detect(part, query)
        assert r.status == 400, (query[:40], r.status, r.body[:300])
        err = r.json["error"]
        assert err["code"] == "bad_parameter" and "\n" not in err["message"] and len(err["message"]) < 400, err
    assert "did you mean 'conf'" in s.detect(part, "cof=0.5").json["error"]["message"]
    assert "empty list" in s.detect(part, "classes=,").json["error"]["message"]
    assert s.detect(part, "classes=scratch,0").json["decision"] == "reject"  # valid lists still work
    rc, out = s.stop()
    assert rc == 0 and "Traceback" not in out and '" 500 ' not in out


# ---------------------------------------------------------------------------------------------- 8. log injection
def test_client_strings_cannot_forge_log_lines(start_server, bbox_files) -> None:
    s = start_server(bbox_files["model"])
    part = bbox_files["part"].read_bytes()
    paths = ["/v1/det%0AFORGED line one",  # the probe: %0A in the path
             "/v1/detect%0D%0AFORGED line two", "/x%E2%80%A8FORGED line three", "/x%C2%85FORGED line four",
             '/x%22 200 0.1 ms%0AFORGED line five']
    for path in paths:
        assert s.request("POST", path.replace(" ", "%20"), part, {"Content-Type": "image/png"}).status == 404
    r = s.detect(part, "name=cam%0AFORGED%20line%20six")
    assert r.status == 200 and r.json["image"]["name"] == "cam?FORGED line six"
    r = s.detect(part, "name=x%20accept%200%20det%20id%3Dforged")  # spaces cannot fake the summary fields
    assert r.status == 200
    r = s.request("GET", "/nowhere", headers={"X-Forwarded-For": '10.0.0.1" "GET /admin'})
    assert r.status == 404
    rc, out = s.stop()
    assert rc == 0
    lines = out.splitlines()  # splitlines also splits at U+2028 and U+0085: forged lines would show
    assert not [ln for ln in lines if ln.startswith("FORGED")], out
    assert '"POST /v1/det\\nFORGED line one" 404' in out and '"POST /v1/detect\\r\\nFORGED line two"' in out
    assert "\\u2028FORGED" in out and "\\x85FORGED" in out and '/x\\" 200 0.1 ms\\nFORGED line five"' in out
    assert 'cam\\nFORGED line six" reject' in out and '"x accept 0 det id=forged" reject 1 det' in out
    assert '10.0.0.1\\" \\"GET /admin' in out


# ---------------------------------------------------------------------------------------------- 9. auth first
def test_token_is_checked_before_parameters_paths_and_bodies(start_server, bbox_files, tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    s = start_server(bbox_files["model"], "--token-file", str(token_file), "--request-timeout-s", "2")
    part = bbox_files["part"].read_bytes()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for query in ("conf=abc", "classes=%C2%B2", "cof=1", "classes=,"):  # the probe: 400s came before the 401
        r = s.detect(part, query)
        assert r.status == 401 and r.json["error"]["code"] == "unauthorized", (query, r.body)
    assert s.request("POST", "/v1/detect", b"{}", {"Content-Type": "application/json"}).status == 401  # not 415
    assert s.detect(b"\0" * 5000, ctype="image/png", **{"Content-Length": "999999999"}).status == 401  # not 413
    for path in ("/openapi.json", "/readyz", "/v1/model", "/metrics", "/nowhere", "/v1/detect"):
        assert s.request("GET", path).status == 401, path
    assert s.request("GET", "/healthz").status == 200  # liveness reveals nothing
    ready = s.request("GET", "/readyz", headers=auth)
    assert ready.status == 200 and len(ready.json["sha256"]) == 64
    assert s.request("GET", "/openapi.json", headers=auth).json["info"]["title"]
    assert s.detect(part, "conf=abc", **auth).status == 400
    # an early 401 does not wait for a body that never comes: the request timeout closes the connection
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    sock.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 10000000\r\n\r\n")
    t0 = time.monotonic()
    raw, closed_at = _recv_until_closed(sock, 6)
    sock.close()
    assert raw.startswith(b"HTTP/1.1 401") and closed_at - t0 < 4
    rc, out = s.stop()
    assert rc == 0 and TOKEN not in out


def test_public_info_opens_readyz_and_openapi_only(start_server, bbox_files, tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    s = start_server(bbox_files["model"], "--token-file", str(token_file), env={"EDGEVISION_PUBLIC_INFO": "true"})
    assert s.request("GET", "/readyz").status == 200 and s.request("GET", "/openapi.json").status == 200
    for path in ("/v1/model", "/metrics", "/nowhere"):
        assert s.request("GET", path).status == 401, path
    assert s.detect(bbox_files["part"].read_bytes()).status == 401


# ---------------------------------------------------------------------------------------------- 9. HTTP and multipart
def test_malformed_http_and_multipart_get_json_400(start_server, bbox_files) -> None:
    s = start_server(bbox_files["model"])
    part = bbox_files["part"].read_bytes()
    for raw_request in (b"GARBAGE\r\n\r\n",  # the probe: uvicorn answered plain text
                        b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
                        b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                        b"GET /he\x01lthz HTTP/1.1\r\nHost: x\r\n\r\n",
                        b"\r\n\r\n"):
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        sock.sendall(raw_request)
        raw, _ = _recv_until_closed(sock, 5)
        sock.close()
        status, doc = _json_answer(raw)
        assert status == 400 and doc["error"]["code"] == "bad_request", (raw_request[:30], doc)
    png_file = ("part.png", part, "image/png")
    for fields, message in [
        ([("image", png_file), ("other", ("notes.png", part, "image/png"))], "2 files"),  # the probe: accepted
        ([("image", png_file), ("image", ("second.png", part, "image/png"))], "2 files"),  # the probe: used the last
        ([("a", png_file), ("b", png_file), ("c", png_file)], "3 files"),
        ([("image", "not a file")], "is text, not a file"),
    ]:
        body, ctype = _parts(fields)
        r = s.request("POST", "/v1/detect", body, {"Content-Type": ctype})
        assert r.status == 400 and r.json["error"]["code"] == "bad_multipart", (fields[0][0], r.body)
        assert message in r.json["error"]["message"], r.json
    body, ctype = _parts([("image", png_file), ("note", "station 3")])  # text fields beside the one file are fine
    assert s.request("POST", "/v1/detect", body, {"Content-Type": ctype}).status == 200
    rc, out = s.stop()
    assert rc == 0 and "Traceback" not in out


# ---------------------------------------------------------------------------------------------- 6. one traceback
def test_an_internal_error_is_logged_once_on_escaped_lines(bbox_files, caplog) -> None:
    """In-process: an unexpected exception is answered with the JSON 500 and logged once (the probe saw the
    traceback twice: the app's handler, then uvicorn), its client-quoted text escaped."""

    from edgevision.runtime import Detector
    from edgevision.serve import ServeConfig, create_app
    from edgevision.serve.server import _AnsweredOnce

    app = create_app(Detector(bbox_files["model"]), ServeConfig(model=bbox_files["model"]))

    @app.get("/boom")
    async def boom() -> None:
        raise ValueError("bad value '\nFORGED line'")

    with caplog.at_level("ERROR"):
        status, raw = asgi_get(_AnsweredOnce(app), "/boom")  # does not raise: the answer was sent
    assert status == 500
    body = json.loads(raw)
    assert body["error"]["code"] == "internal"
    records = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(records) == 1, [r.getMessage() for r in records]
    message = records[0].getMessage()
    assert "ValueError: bad value '\\nFORGED line'" in message and "Traceback" not in message
    assert not re.search(r"^FORGED", message, re.M)
