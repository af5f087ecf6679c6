"""The analyze orchestration as plain async code over deployment handles (no Ray needed to test it).

Detect first, then the recognizer and deepfake branches concurrently; a failing branch degrades
the answer (``degraded``), never fails it. Each downstream replica takes any number of one
picture's faces and splits them by its own live batch size, so nothing here knows batch sizes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import numpy as np

from deployments.wire import Embeddings, Verdicts
from graph.errors import ApiError
from models.embedding import Decision, Match
from models.pipeline import DetectReply, DetectRequest

logger = logging.getLogger(__name__)

# Crop sizes are asked of the branches at most this often: a rolling update that changes a
# model's crop size is followed within this time (the replica refuses stale crops meanwhile).
SPEC_TTL_S = 10.0
# Per face its identity (or None) and low-quality flag, and the decision: ``Identities.best_matches``.
Search = Callable[[Embeddings, tuple], Awaitable[tuple[list[tuple[Match | None, bool]], Decision]]]


@dataclass
class Options:
    """What one analyze call asks for (the query of ``POST /v1/analyze``)."""

    embeddings: bool = False
    recognize: bool = True
    deepfake: bool = True
    max_faces: int | None = None
    min_score: float | None = None
    identify: bool = False


def as_picture(image: Any) -> bytes | np.ndarray:
    if isinstance(image, (bytes, np.ndarray)):
        return image
    if isinstance(image, (bytearray, memoryview)):
        return bytes(image)
    raise ApiError("image must be bytes or an RGB uint8 array", "invalid_image")


class Analysis:
    """Detector -> (recognizer | deepfake) over handles (``DeploymentHandle`` or anything with ``.method.remote``)."""

    def __init__(self, detector, recognizer=None, deepfake=None, metrics=None, clock=time.monotonic):
        self.detector, self.recognizer, self.deepfake = detector, recognizer, deepfake
        self.metrics = metrics
        self._clock = clock
        self._specs: tuple[float, dict[str, Any]] | None = None

    def branches(self) -> dict[str, Any]:
        return {k: h for k, h in (("recognizer", self.recognizer), ("deepfake", self.deepfake)) if h is not None}

    async def crop_specs(self) -> dict[str, Any]:
        now = self._clock()
        if self._specs is None or now - self._specs[0] > SPEC_TTL_S:
            branches = self.branches()
            specs = await asyncio.gather(*(h.crop_spec.remote() for h in branches.values()))
            self._specs = (now, dict(zip(branches, specs)))
        return self._specs[1]

    async def detect(self, image: Any, stages: tuple[str, ...], max_faces=None, min_score=None) -> DetectReply:
        specs = await self.crop_specs()
        request = DetectRequest(image=as_picture(image), crops={s: specs[s] for s in stages}, max_faces=max_faces, min_score=min_score)
        reply: DetectReply = await self.detector.detect.remote(request)
        if reply.error is not None:
            raise ApiError(reply.error.message, reply.error.code)
        return reply

    async def embed(self, reply: DetectReply) -> Embeddings:
        return await self.recognizer.embed.remote(reply.crops["recognizer"])

    async def embedded_faces(self, image: Any, max_faces=None, min_score=None) -> tuple[DetectReply, Embeddings | None]:
        """Detect, then embed every face kept (None when there is no face)."""
        if self.recognizer is None:
            raise ApiError("no recognizer is configured", "not_configured")
        reply = await self.detect(image, ("recognizer",), max_faces, min_score)
        return reply, (await self.embed(reply) if reply.faces else None)

    async def analyze(self, image: Any, options: Options, search: Search | None = None) -> dict:
        """The answer of ``POST /v1/analyze``; ``search`` identifies faces when ``options.identify``."""
        started = time.perf_counter()
        run_rec = (options.recognize or options.embeddings or options.identify) and self.recognizer is not None
        run_df = options.deepfake and self.deepfake is not None
        stages = tuple(s for s, on in (("recognizer", run_rec), ("deepfake", run_df)) if on)
        reply = await self.detect(image, stages, options.max_faces, options.min_score)
        detected = time.perf_counter()
        timings = {"decode": round(reply.decode_ms, 2), "detect": round(reply.detect_ms, 2)}
        results: dict[str, Any] = {}

        async def branch(stage: str, call: Callable[[], Awaitable[Any]]):
            t0 = time.perf_counter()
            try:
                results[stage] = await call()
            except Exception as exc:  # a failing branch degrades the answer, never fails it
                logger.warning("%s branch failed: %s", stage, type(exc).__name__)
                results[stage] = exc
            timings[stage] = round((time.perf_counter() - t0) * 1000, 2)

        jobs = []
        if reply.faces and run_rec:
            jobs.append(branch("recognizer", lambda: self.embed(reply)))
        if reply.faces and run_df:
            jobs.append(branch("deepfake", lambda: self.deepfake.classify.remote(reply.crops["deepfake"])))
        await asyncio.gather(*jobs)
        embedded, verdicts = results.get("recognizer"), results.get("deepfake")
        identities, decision = None, None
        if options.identify and search is not None and isinstance(embedded, Embeddings):
            t0 = time.perf_counter()
            identities, decision = await search(embedded, reply.faces)
            timings["identify"] = round((time.perf_counter() - t0) * 1000, 2)
        faces = [self._face(i, face, options, embedded, verdicts, identities) for i, face in enumerate(reply.faces)]
        timings["branches"] = round((time.perf_counter() - detected) * 1000, 2)
        timings["total"] = round((time.perf_counter() - started) * 1000, 2)
        self._observe(len(faces), (detected - started) * 1000, {s: timings[s] for s in stages if s in timings})
        answer = {
            "width": reply.width,
            "height": reply.height,
            "faces": faces,
            "models": {
                "detector": reply.model,
                "recognizer": embedded.model if isinstance(embedded, Embeddings) else None,
                "deepfake": verdicts.model if isinstance(verdicts, Verdicts) else None,
            },
            "timings_ms": timings,
        }
        if decision is not None:
            answer["identification"] = decision.to_json()
        degraded = sorted(s for s, r in results.items() if isinstance(r, Exception))
        if degraded:
            answer["degraded"] = degraded
        return answer

    def _face(self, i: int, face, options: Options, embedded, verdicts, identities) -> dict:
        item = face.to_json()
        if options.embeddings and self.recognizer is not None:
            failed = isinstance(embedded, Exception)
            item["embedding"] = {"error": "recognizer failed"} if failed else [round(float(v), 6) for v in embedded.vectors[i]]
        if isinstance(verdicts, Exception):
            item["deepfake"] = {"error": f"deepfake classifier failed ({type(verdicts).__name__})"}
        else:
            item["deepfake"] = verdicts.rows[i].to_json() if verdicts is not None else None
        if options.identify:
            best, low = identities[i] if identities is not None else (None, None)
            item["identity"] = best.to_json() if best is not None else None
            if low is not None:
                item["low_quality"] = low
        return item

    def _observe(self, faces: int, detect_ms: float, branch_ms: dict[str, float]) -> None:
        if self.metrics is None:
            return
        self.metrics.faces.observe(faces)
        self.metrics.stage_latency.observe(detect_ms, tags={"stage": "detector"})
        for stage, ms in branch_ms.items():
            self.metrics.stage_latency.observe(ms, tags={"stage": stage})
