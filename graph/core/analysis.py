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

from facegraph.graph.core.wire import Embeddings, Verdicts
from facegraph.models.embedding import Decision, Match
from facegraph.models.errors import FacegraphError
from facegraph.models.pipeline import DetectReply, DetectRequest
from facegraph.models.types import Face

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
    raise FacegraphError("image must be bytes or an RGB uint8 array", "invalid_image")


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
            raise FacegraphError(reply.error.message, reply.error.code)
        return reply

    async def embed(self, reply: DetectReply) -> Embeddings:
        return await self.recognizer.embed.remote(reply.crops["recognizer"])

    async def embedded_faces(self, image: Any, max_faces=None, min_score=None) -> tuple[DetectReply, Embeddings | None]:
        """Detect, then embed every face kept (None when there is no face). Only identity operations ask, and they exist only with a recognizer."""
        reply = await self.detect(image, ("recognizer",), max_faces, min_score)
        return reply, (await self.embed(reply) if reply.faces else None)

    def stages(self, options: Options) -> tuple[str, ...]:
        """The branches ``options`` ask for that are configured."""
        recognize = (options.recognize or options.embeddings or options.identify) and self.recognizer is not None
        return tuple(s for s, on in (("recognizer", recognize), ("deepfake", options.deepfake and self.deepfake is not None)) if on)

    async def analyze(self, image: Any, options: Options, search: Search | None = None) -> dict:
        """The answer of ``POST /v1/analyze``; ``search`` identifies faces when ``options.identify``."""
        started = time.perf_counter()
        stages = self.stages(options)
        reply = await self.detect(image, stages, options.max_faces, options.min_score)
        detected = time.perf_counter()
        timings = {"decode": round(reply.decode_ms, 2), "detect": round(reply.detect_ms, 2)}
        outcome = await self.branches_of(reply, stages, timings)
        if options.identify and search is not None and isinstance(outcome.embedded, Embeddings):
            t0 = time.perf_counter()
            outcome.identities, outcome.decision = await search(outcome.embedded, reply.faces)
            timings["identify"] = _ms_since(t0)
        timings["branches"] = _ms_since(detected)
        timings["total"] = _ms_since(started)
        self._observe(len(reply.faces), (detected - started) * 1000, {s: timings[s] for s in stages if s in timings})
        return outcome.answer(reply, options, timings, embeddings=options.embeddings and self.recognizer is not None)

    async def branches_of(self, reply: DetectReply, stages: tuple[str, ...], timings: dict[str, float]) -> "Branches":
        """Run the asked branches on a picture's faces at the same time; each one's time goes into ``timings``."""
        outcome = Branches()
        if not reply.faces:
            return outcome
        calls = {"recognizer": lambda: self.embed(reply), "deepfake": lambda: self.deepfake.classify.remote(reply.crops["deepfake"])}

        async def branch(stage: str) -> None:
            t0 = time.perf_counter()
            try:
                result = await calls[stage]()
            except Exception as exc:  # a failing branch degrades the answer, never fails it
                logger.warning("%s branch failed: %s", stage, type(exc).__name__)
                result = exc
            setattr(outcome, "embedded" if stage == "recognizer" else "verdicts", result)
            timings[stage] = _ms_since(t0)

        await asyncio.gather(*(branch(stage) for stage in stages))
        return outcome

    def _observe(self, faces: int, detect_ms: float, branch_ms: dict[str, float]) -> None:
        if self.metrics is None:
            return
        self.metrics.faces.observe(faces)
        self.metrics.stage_latency.observe(detect_ms, tags={"stage": "detector"})
        for stage, ms in branch_ms.items():
            self.metrics.stage_latency.observe(ms, tags={"stage": stage})


def _ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)


@dataclass
class Branches:
    """What the branches gave one picture: each its value, or the exception that degraded it (None: not run)."""

    embedded: Embeddings | Exception | None = None
    verdicts: Verdicts | Exception | None = None
    # With identify: per face its identity (or None) and low-quality flag, and the decision used.
    identities: list[tuple[Match | None, bool]] | None = None
    decision: Decision | None = None

    @property
    def degraded(self) -> list[str]:
        return [stage for stage, value in (("deepfake", self.verdicts), ("recognizer", self.embedded)) if isinstance(value, Exception)]

    def answer(self, reply: DetectReply, options: Options, timings: dict[str, float], embeddings: bool) -> dict:
        """The analyze answer: the faces with what each branch said of them, the models that answered, the timings."""
        answer = {
            "width": reply.width,
            "height": reply.height,
            "faces": [self.face(i, face, options, embeddings) for i, face in enumerate(reply.faces)],
            "models": {
                "detector": reply.model,
                "recognizer": self.embedded.model if isinstance(self.embedded, Embeddings) else None,
                "deepfake": self.verdicts.model if isinstance(self.verdicts, Verdicts) else None,
            },
            "timings_ms": timings,
        }
        if self.decision is not None:
            answer["identification"] = self.decision.to_json()
        if self.degraded:
            answer["degraded"] = self.degraded
        return answer

    def face(self, i: int, face: Face, options: Options, embeddings: bool) -> dict:
        item = face.to_json()
        if embeddings:
            failed = isinstance(self.embedded, Exception)
            item["embedding"] = {"error": "recognizer failed"} if failed else [round(float(v), 6) for v in self.embedded.vectors[i]]
        if isinstance(self.verdicts, Exception):
            item["deepfake"] = {"error": f"deepfake classifier failed ({type(self.verdicts).__name__})"}
        else:
            item["deepfake"] = self.verdicts.rows[i].to_json() if self.verdicts is not None else None
        if options.identify:
            best, low = self.identities[i] if self.identities is not None else (None, None)
            item["identity"] = best.to_json() if best is not None else None
            if low is not None:
                item["low_quality"] = low
        return item
