"""Body limits that hold however a client sends: counted as bodies stream in, parts kept in memory."""

import copy
import os
import select
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from tests.fixture_models import draw_squares
from facegraph.models.imaging import encode_jpeg
from tests.graph.conftest import FIXTURE_CONFIG

LIMIT = 8 * 2**20
CONFIG = copy.deepcopy(FIXTURE_CONFIG)
CONFIG["ingress"] = {"max_body_bytes": LIMIT, "max_batch_images": 2}
TIMEOUT = 120


ONE = encode_jpeg(draw_squares(640, 480, [(200, 150, 280, 230)]), 90)


def post(base, path, data, ctype="image/jpeg", **params):
    return httpx.post(f"{base}{path}", content=data, headers={"content-type": ctype}, params=params, timeout=TIMEOUT)


def models(base) -> dict:
    return httpx.get(f"{base}/v1/models", timeout=TIMEOUT).json()


def multipart(name: str, data: bytes, boundary: str = "fgboundary") -> tuple[bytes, str]:
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# An uploader at 256 MiB/s (a fast network, not loopback's memory copy): how much it has sent when the
# 413 arrives measures the service, not how fast this process can fill the proxy's buffers.
MIB_PER_S = 256


def _raw_chunked(base: str, path: str, ctype: str, first: bytes, total: int) -> tuple[int, int, bytes]:
    """Send ``first`` then zeros, chunked, until the server answers: (status, bytes sent, answer)."""
    url = urlparse(base)
    sock = socket.create_connection((url.hostname, url.port), timeout=TIMEOUT)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {url.hostname}\r\nContent-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    chunk, sent, answer = b"\0" * 2**20, 0, b""
    try:
        pieces = [first] if first else []
        while sent < total:
            data = pieces.pop() if pieces else chunk
            sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n")
            sent += len(data)
            if select.select([sock], [], [], len(data) / (MIB_PER_S * 2**20))[0]:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        while b"\r\n\r\n" not in answer:
            got = sock.recv(65536)
            if not got:
                break
            answer += got
    except (ConnectionResetError, socket.timeout):
        pass
    sock.close()
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0, sent, answer


def test_chunked_bodies_are_refused_as_they_pass_the_limit(serve_app):
    base, _ = serve_app
    head, ctype = multipart("image", b"")
    opened = head[: -len("\r\n--fgboundary--\r\n")]
    # Warm every path first, so the peak measured below is the big body's alone.
    assert post(base, "/v1/analyze", ONE).status_code == 200
    assert _raw_chunked(base, "/v1/analyze", "image/jpeg", b"", 2 * LIMIT)[0] == 413
    assert _raw_chunked(base, "/v1/analyze", ctype, opened, 2 * LIMIT)[0] == 413
    peak_before = models(base)["ingress"]["peak_rss_mb"]
    status, sent, _ = _raw_chunked(base, "/v1/analyze", "image/jpeg", b"", 2 * 2**30)
    assert status == 413 and sent < 2 * 2**30
    status, sent_multipart, _ = _raw_chunked(base, "/v1/analyze", ctype, opened, 2 * 2**30)
    assert status == 413 and sent_multipart < 2 * 2**30, "a chunked multipart body over the limit must be refused"
    grown = models(base)["ingress"]["peak_rss_mb"] - peak_before
    print(
        f"chunked 2 GB bodies: raw refused after {sent / 2**20:.0f} MiB sent, multipart after {sent_multipart / 2**20:.0f} MiB; "
        f"ingress peak memory grew {grown:.1f} MiB (limit {LIMIT / 2**20:.0f} MiB)"
    )
    # The ingress itself reads at most the limit; Ray Serve's receive proxy also buffers whatever the
    # HTTP proxy forwarded before the 413 went out (0 to 289 MiB on 2 cores, by load). What must hold
    # is that a refused body costs a bounded amount, far from its size.
    assert sent < 2**31 / 4 and sent_multipart < 2**31 / 4
    assert grown < 2**31 / 4 / 2**20, grown
    assert post(base, "/v1/analyze", ONE).status_code == 200


def _open_files(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            out.add(os.readlink(fd))
        except OSError:
            pass
    return out


def test_a_5_mb_upload_never_touches_a_temporary_file(serve_app):
    import tempfile

    base, _ = serve_app
    pid = models(base)["ingress"]["replica_pid"]
    temp = tempfile.gettempdir()
    baseline, listed = _open_files(pid), set(os.listdir(temp))
    body, ctype = multipart("image", ONE + b"\0" * (5 * 2**20))  # a JPEG reader stops at its end marker
    seen: set[str] = set()
    done = threading.Event()

    def watch():
        while not done.is_set():
            seen.update(_open_files(pid) - baseline)
            seen.update(f"{temp}/{name}" for name in set(os.listdir(temp)) - listed)
            time.sleep(0.002)

    def slowly():
        for i in range(0, len(body), 2**18):
            yield body[i : i + 2**18]
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        r = httpx.post(f"{base}/v1/analyze", content=slowly(), headers={"content-type": ctype}, timeout=TIMEOUT)
    finally:
        done.set()
        watcher.join()
    assert r.status_code == 200, r.text[:300]
    assert len(r.json()["faces"]) == 1
    spooled = sorted(p for p in seen if p.startswith(temp) or p.endswith("(deleted)"))
    assert spooled == [], spooled


@pytest.mark.parametrize("route", ["/v1/identify", "/v1/subjects/x/faces", "/v1/analyze/batch", "/v1/verify"])
def test_every_body_route_refuses_an_unannounced_body_over_the_limit(serve_app, route):
    base, _ = serve_app
    head, ctype = multipart("images" if route.endswith("batch") else "image", b"")
    status, _, answer = _raw_chunked(base, route, ctype, head[: -len("\r\n--fgboundary--\r\n")], 3 * LIMIT)
    assert status == 413, answer[:300]
