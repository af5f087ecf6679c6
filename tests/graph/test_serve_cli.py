"""``facegraph serve`` as a user starts it: the default config and serving mode, over real HTTP.

Every HTTP listener stays on loopback, a picture of ``ingress.max_body_bytes`` is answered and one
byte more is refused, another driver's handle answers, and Ctrl-C stops everything within 10 s.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from facegraph.graph.config import FacegraphConfig
from facegraph.models.imaging import encode_jpeg
from tests.graph.conftest import free_port, listeners, release_shared

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180
LOOPBACK = ("127.", "::1", "::ffff:127.")


def _answers_http1(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            return conn.recv(16).startswith(b"HTTP/1.")
        except OSError:
            return False


def noise_png(max_bytes: int) -> bytes:
    """A PNG of random pixels (incompressible) just under ``max_bytes``."""
    import cv2

    side = int((max_bytes / 3) ** 0.5)
    pixels = np.random.default_rng(7).integers(0, 256, (side, side, 3), dtype=np.uint8)
    while True:
        ok, data = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 0])
        assert ok
        if len(data) <= max_bytes:
            return data.tobytes()
        pixels = pixels[: -max(1, (len(data) - max_bytes) // (3 * side) + 1)]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    release_shared()  # the CLI starts its own Ray in this namespace
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "facegraph.graph.cli", "serve", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while b"facegraph is serving" not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"facegraph serve did not start: {log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)
    yield {"base": f"http://127.0.0.1:{port}", "process": process, "log": log}
    if process.poll() is None:
        process.kill()
        process.wait()


def test_every_http_listener_is_on_loopback(service):
    from skimage import data

    r = httpx.post(f"{service['base']}/v1/analyze", content=encode_jpeg(data.astronaut(), 90), headers={"content-type": "image/jpeg"}, timeout=60)
    assert r.status_code == 200 and len(r.json()["faces"]) == 1, r.text
    found = listeners()
    haproxy = [(a, p) for a, p, _, command in found if "haproxy" in command]
    assert len(haproxy) >= 3, found  # the service port, stats and Prometheus
    outside = [(a, p, pid, command) for a, p, pid, command in found if not a.startswith(LOOPBACK)]
    for address, port, pid, command in outside:
        # Only Ray's own inter-deployment gRPC server, which each Serve replica binds on [::]:0 in every mode.
        assert "ray::ServeReplica" in command, (address, port, command)
        assert not _answers_http1(port), (address, port, command)
    owners = [pid for _, _, pid, _ in outside]
    assert len(owners) == len(set(owners)), outside  # one each


def test_a_picture_of_the_body_limit_is_answered_and_one_byte_more_is_refused(service):
    limit = FacegraphConfig().ingress.max_body_bytes
    picture = noise_png(limit)
    assert limit - len(picture) < 64 * 1024
    r = httpx.post(f"{service['base']}/v1/analyze", content=picture, headers={"content-type": "image/png"}, timeout=120)
    assert r.status_code == 200, r.text
    assert (r.json()["width"], r.json()["height"]) != (0, 0)
    over = picture + b"\0" * (limit + 1 - len(picture))
    r = httpx.post(f"{service['base']}/v1/analyze", content=over, headers={"content-type": "image/png"}, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


def test_another_drivers_handle_answers(service):
    script = (
        "import ray, sys\n"
        "from ray import serve\n"
        "from skimage import data\n"
        "from models.imaging import encode_jpeg\n"
        "ray.init(address='auto', log_to_driver=False)\n"
        "answer = serve.get_app_handle('facegraph').analyze.remote(encode_jpeg(data.astronaut(), 90)).result(timeout_s=60)\n"
        "print('faces', len(answer['faces']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    run = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "faces 1" in run.stdout, run.stderr[-3000:]


def test_ctrl_c_stops_cleanly_within_10_s(service):
    process = service["process"]
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    returncode = process.wait(timeout=60)
    took = time.monotonic() - started
    assert returncode == 0, service["log"].read_text(errors="replace")[-3000:]
    assert took < 10, f"stopped in {took:.1f} s"
    assert not [entry for entry in listeners() if "haproxy" in entry[3] or "ray::" in entry[3]]
