"""Baseline (b): one plain Starlette/uvicorn service per model, chained over HTTP by a gateway.

No Ray and no batching: each model service runs one request per session call in
Starlette's thread pool; the gateway posts the picture to the detector service, then
the crops to the recognizer and classifier services concurrently, and answers with the
graph's JSON shape. Started as loopback subprocesses by :mod:`benchmarks.chain`:

    python -m facegraph.benchmarks.services ROLE --port PORT --settings JSON
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, AsyncIterator

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    import aiohttp

NPZ = "application/x-npz"
NPY = "application/x-npy"


def crop_spec_to_json(spec) -> dict:
    return asdict(spec)


def _crop_spec(data: dict):
    from facegraph.models.types import CropSpec

    template = tuple(tuple(p) for p in data["template"]) if data.get("template") else None
    # Every field, so the chain cuts exactly the crops the graph cuts (points, dlib's convention).
    return CropSpec(**{**data, "size": tuple(data["size"]), "template": template, "points": tuple(data["points"])})


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _load(settings: dict):
    from pathlib import Path

    from facegraph.models.registry import ModelSpec, load_model

    spec = ModelSpec.model_validate(settings["spec"])
    return load_model(spec, cpu_threads=int(settings["threads"]), cache_dir=Path(settings["cache"]), role=settings["role"]).adapter


async def _health(_: Request) -> Response:
    return JSONResponse({"ok": True})


def detector_app(settings: dict) -> Starlette:
    """POST /detect: picture bytes in; npz out (boxes, scores, landmarks, crops_<stage>, timings)."""
    from facegraph.models.pipeline import DetectRequest, detect_batch

    adapter = _load({**settings, "role": "detector"})
    crops = {stage: _crop_spec(spec) for stage, spec in settings["crops"].items()}
    max_pixels = int(settings["max_pixels"])

    def work(body: bytes) -> bytes:
        (reply,) = detect_batch(adapter, [DetectRequest(image=body, crops=crops)], max_pixels)
        if reply.error is not None:
            raise ValueError(reply.error.message)
        faces = reply.faces
        points = max((len(f.points) for f in faces), default=5)
        landmarks = np.full((len(faces), points, 2), np.nan, np.float32)
        for i, face in enumerate(faces):
            if face.landmarks is not None:
                landmarks[i] = face.landmarks
        arrays = {
            "size": np.array([reply.width, reply.height], np.int64),
            "boxes": np.array([f.bbox for f in faces], np.float32).reshape(-1, 4),
            "scores": np.array([f.score for f in faces], np.float32),
            "landmarks": landmarks,
            "timings": np.array([reply.decode_ms, reply.detect_ms], np.float64),
            **{f"crops_{stage}": array for stage, array in reply.crops.items()},
        }
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    async def detect(request: Request) -> Response:
        body = await request.body()
        try:
            return Response(await run_in_threadpool(work, body), media_type=NPZ)
        except ValueError as exc:
            return JSONResponse({"error": {"code": "invalid_image", "message": str(exc)}}, status_code=400)

    return Starlette(routes=[Route("/detect", detect, methods=["POST"]), Route("/health", _health)])


def branch_app(settings: dict, role: str) -> Starlette:
    """POST /run: an npy stack of crops in; embeddings (npy) or verdicts (JSON) out."""
    adapter = _load({**settings, "role": role})

    def embed(crops: np.ndarray) -> Response:
        return Response(_npy(adapter.embed(list(crops))), media_type=NPY)

    def classify(crops: np.ndarray) -> Response:
        return JSONResponse([v.to_json() for v in adapter.classify(list(crops))])

    work = embed if role == "recognizer" else classify

    async def run(request: Request) -> Response:
        crops = np.load(io.BytesIO(await request.body()), allow_pickle=False)
        return await run_in_threadpool(work, crops)

    async def crop_spec(_: Request) -> Response:
        return JSONResponse(crop_spec_to_json(adapter.crop_spec))

    return Starlette(routes=[Route("/run", run, methods=["POST"]), Route("/crop_spec", crop_spec), Route("/health", _health)])


class _Gateway:
    """The chain's front: the picture to the detector service, then its crops to every branch service at once.

    One aiohttp session for the app's lifetime (opened by ``lifespan``), shared by all requests.
    """

    def __init__(self, urls: dict[str, str]):
        self.urls = urls
        self.http: aiohttp.ClientSession | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        import aiohttp

        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=120))
        try:
            yield
        finally:
            await self.http.close()

    async def post(self, url: str, data: bytes, ctype: str) -> tuple[bytes, str]:
        async with self.http.post(url, data=data, headers={"content-type": ctype}) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{url}: HTTP {resp.status}")
            return body, resp.headers.get("content-type", "")

    async def branch(self, stage: str, crops: np.ndarray) -> tuple[object, float]:
        """One branch service's answer for the crops (verdicts for ``deepfake``, an array otherwise) and its ms."""
        t0 = time.perf_counter()
        raw, _ = await self.post(self.urls[stage] + "/run", _npy(crops), NPY)
        result = json.loads(raw) if stage == "deepfake" else np.load(io.BytesIO(raw), allow_pickle=False)
        return result, round((time.perf_counter() - t0) * 1000, 2)

    async def analyze(self, request: Request) -> Response:
        started = time.perf_counter()
        body = await request.body()
        try:
            raw, _ = await self.post(self.urls["detector"] + "/detect", body, "image/jpeg")
        except RuntimeError as exc:
            return JSONResponse({"error": {"code": "detector_failed", "message": str(exc)}}, status_code=400)
        detected = time.perf_counter()
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        decode_ms, detect_ms = (float(v) for v in arrays["timings"])
        timings = {"decode": round(decode_ms, 2), "detect": round(detect_ms, 2)}
        stages = [stage for stage in self.urls if stage != "detector"] if len(arrays["scores"]) else []
        answers = await asyncio.gather(*(self.branch(stage, arrays[f"crops_{stage}"]) for stage in stages))
        timings.update({stage: ms for stage, (_, ms) in zip(stages, answers)})
        results = {stage: result for stage, (result, _) in zip(stages, answers)}
        faces = _faces(arrays, results.get("deepfake"))
        timings["branches"] = round((time.perf_counter() - detected) * 1000, 2)
        timings["total"] = round((time.perf_counter() - started) * 1000, 2)
        width, height = (int(v) for v in arrays["size"])
        return JSONResponse({"width": width, "height": height, "faces": faces, "timings_ms": timings})


def _faces(arrays: dict[str, np.ndarray], deepfake: list | None) -> list[dict]:
    """The graph's face entries from the detector service's arrays, with the deepfake verdicts beside them."""
    faces = []
    for i in range(len(arrays["scores"])):
        landmarks = arrays["landmarks"][i]
        faces.append(
            {
                "bbox": [round(float(v), 2) for v in arrays["boxes"][i]],
                "score": round(float(arrays["scores"][i]), 5),
                "landmarks": None if np.isnan(landmarks).any() else [[round(float(x), 2), round(float(y), 2)] for x, y in landmarks],
                "deepfake": deepfake[i] if deepfake is not None else None,
            }
        )
    return faces


def gateway_app(settings: dict) -> Starlette:
    """POST /v1/analyze: picture in, the graph's answer shape out (embeddings left out, as by default)."""
    gateway = _Gateway(settings["urls"])
    return Starlette(
        routes=[Route("/v1/analyze", gateway.analyze, methods=["POST"]), Route("/health", _health)],
        lifespan=gateway.lifespan,
    )


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description="one service of the benchmark's service-per-model chain (loopback only)")
    parser.add_argument("role", choices=["detector", "recognizer", "deepfake", "gateway"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--settings", required=True, help="JSON: spec, cache, threads, crops, max_pixels or urls")
    args = parser.parse_args(argv)
    settings = json.loads(args.settings)
    if args.role == "detector":
        app = detector_app(settings)
    elif args.role == "gateway":
        app = gateway_app(settings)
    else:
        app = branch_app(settings, "recognizer" if args.role == "recognizer" else "classifier")
    # Always loopback: these services are a benchmark baseline, never a way in.
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
