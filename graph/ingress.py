"""The ingress: HTTP API v1 and the handle API over detector -> (recognizer | deepfake)."""


import asyncio
import hmac
import logging
import time
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from graph import errors
from graph.errors import ApiError
from graph.metrics import ingress_metrics
from models.gpu import list_gpus
from models.pipeline import DetectReply, DetectRequest

logger = logging.getLogger(__name__)

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff", "image/gif", "application/octet-stream")
PUBLIC_PATHS = ("/health", "/ready", "/docs", "/openapi.json", "/docs/oauth2-redirect")
_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            **{t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}, "required": ["image"]}
            },
        },
    }
}
_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"images": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                    "required": ["images"],
                }
            }
        },
    }
}

app = FastAPI(
    title="facegraph",
    version="1",
    description="Face detection, recognition and deepfake scoring served as a Ray Serve graph.",
    docs_url="/docs",
    openapi_url="/openapi.json",
    redoc_url=None,
)
errors.install(app)

MaxFaces = Annotated[int | None, Query(ge=1, le=1000, description="keep at most this many faces, best first")]
MinScore = Annotated[float | None, Query(ge=0.0, le=1.0, description="drop faces scored below this")]


class AnalyzeQuery(BaseModel):
    """Query options of the analyze routes."""

    embeddings: bool = Field(False, description="include each face's embedding")
    recognize: bool = Field(True, description="run the recognizer branch")
    deepfake: bool = Field(True, description="run the deepfake branch")
    max_faces: int | None = Field(None, ge=1, le=1000, description="keep at most this many faces, best first")
    min_score: float | None = Field(None, ge=0.0, le=1.0, description="drop faces scored below this")


def _content_type(request: Request) -> str:
    return (request.headers.get("content-type") or "").split(";")[0].strip().lower()


@app.middleware("http")
async def _guard(request: Request, call_next):
    """API keys (when configured) and the body size limit, before any route runs."""
    ingress = getattr(request.app.state, "ingress", None)
    if ingress is None:  # not initialised yet: nothing can be served
        return errors.error_response(503, "not_ready", "the service is starting", {"Retry-After": "1"})
    if ingress.api_keys and request.url.path not in PUBLIC_PATHS:
        given = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization") or ""
        if auth[:7].lower() == "bearer ":
            given = given or auth[7:].strip()
        if not any(hmac.compare_digest(given.encode(), key.encode()) for key in ingress.api_keys):
            return errors.error_response(401, "unauthorized", "a valid API key is required", {"WWW-Authenticate": "Bearer"})
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > ingress.max_body_bytes:
        return errors.error_response(413, "body_too_large", f"the body exceeds {ingress.max_body_bytes} bytes")
    started = time.perf_counter()
    response = await call_next(request)
    # Tag by the matched route, never the raw path: clients must not mint label values.
    route = getattr(request.scope.get("route"), "path", "unmatched")
    ingress.metrics.request_latency.observe((time.perf_counter() - started) * 1000, tags={"route": route})
    return response


async def _form(request: Request, max_files: int):
    try:
        return await request.form(max_files=max_files, max_fields=max_files + 8)
    except Exception as exc:  # malformed multipart: a client mistake
        raise ApiError(f"malformed multipart body ({type(exc).__name__})", "invalid_multipart", 400 if "Too many" not in str(exc) else 413) from None


def _serve_status():
    try:
        return serve.status()
    except Exception:
        return None


def _deployment_states(app_name: str) -> dict[str, str]:
    status = _serve_status()
    application = status.applications.get(app_name) if status else None
    if application is None:
        return {}
    return {name: str(getattr(d.status, "value", d.status)) for name, d in application.deployments.items()}


def _replica_counts(app_name: str) -> dict[str, dict]:
    status = _serve_status()
    application = status.applications.get(app_name) if status else None
    if application is None:
        return {}
    return {name: {str(getattr(k, "value", k)): v for k, v in d.replica_states.items()} for name, d in application.deployments.items()}


@serve.deployment
@serve.ingress(app)
class Ingress:
    """Awaits the detector, then runs the recognizer and deepfake branches concurrently."""

    def __init__(self, detector: DeploymentHandle, recognizer: DeploymentHandle | None, deepfake: DeploymentHandle | None, settings: dict):
        self.detector, self.recognizer, self.deepfake = detector, recognizer, deepfake
        self.settings = settings
        self.max_body_bytes = int(settings["max_body_bytes"])
        self.max_batch_images = int(settings["max_batch_images"])
        self.api_keys: list[str] = list(settings.get("api_keys") or [])
        self.chunk = {k: int(v) for k, v in settings["chunk_sizes"].items()}
        self._specs: dict[str, Any] | None = None
        self._models: dict[str, Any] | None = None
        self.metrics = ingress_metrics()
        # The app object this replica serves (Serve ships the class by value, so a module
        # global would be a different copy from the one the middleware sees).
        app.state.ingress = self

    # ---- stage plumbing -------------------------------------------------------------------

    def _branches(self) -> dict[str, DeploymentHandle]:
        return {k: h for k, h in (("recognizer", self.recognizer), ("deepfake", self.deepfake)) if h is not None}

    async def _crop_specs(self) -> dict[str, Any]:
        if self._specs is None:
            branches = self._branches()
            specs = await asyncio.gather(*(h.crop_spec.remote() for h in branches.values()))
            self._specs = dict(zip(branches, specs))
        return self._specs

    async def _model_summaries(self) -> dict[str, Any]:
        if self._models is None:
            stages = {"detector": self.detector, **self._branches()}
            infos = await asyncio.gather(*(h.describe.remote() for h in stages.values()))
            self._models = {
                stage: {k: info[k] for k in ("family", "source", "variant", "provider", "device")} for stage, info in zip(stages, infos)
            }
            for stage in ("recognizer", "deepfake"):
                self._models.setdefault(stage, None)
        return self._models

    async def _in_chunks(self, handle: DeploymentHandle, method: str, crops: np.ndarray, stage: str) -> list:
        """Send one request's crops in pieces no larger than the stage's batch size."""
        size = self.chunk[stage]
        if len(crops) <= size:
            return list(await getattr(handle, method).remote(crops))
        parts = await asyncio.gather(*(getattr(handle, method).remote(crops[i : i + size]) for i in range(0, len(crops), size)))
        return [row for part in parts for row in part]

    async def _detect(self, image: bytes | np.ndarray, stages: tuple[str, ...], max_faces, min_score) -> DetectReply:
        specs = await self._crop_specs()
        request = DetectRequest(image=image, crops={s: specs[s] for s in stages}, max_faces=max_faces, min_score=min_score)
        reply: DetectReply = await self.detector.detect.remote(request)
        if reply.error is not None:
            raise ApiError(reply.error.message, reply.error.code)
        return reply

    # ---- the handle API ---------------------------------------------------------------------

    async def analyze(
        self,
        image: bytes | np.ndarray,
        *,
        embeddings: bool = False,
        recognize: bool = True,
        deepfake: bool = True,
        max_faces: int | None = None,
        min_score: float | None = None,
    ) -> dict:
        """Detect faces, then embed and classify them concurrently.

        Args:
            image: encoded bytes (JPEG, PNG, WebP, BMP, TIFF, GIF) or an (H, W, 3) RGB uint8 array.
            embeddings: include each face's embedding.
            recognize, deepfake: run these branches (when configured).
            max_faces, min_score: keep the best faces only.

        Returns:
            The same structure as ``POST /v1/analyze``. Raises ApiError for bad input.
        """
        started = time.perf_counter()
        try:
            return await self._analyze(image, embeddings, recognize, deepfake, max_faces, min_score, started)
        except BackPressureError:
            raise ApiError("the service is at capacity; retry shortly", "overloaded") from None
        except RayActorError:
            raise ApiError("a model replica is restarting; retry shortly", "unavailable") from None

    async def _analyze(self, image, embeddings, recognize, deepfake, max_faces, min_score, started) -> dict:
        if not isinstance(image, (bytes, bytearray, np.ndarray)):
            raise ApiError("image must be bytes or an RGB uint8 array", "invalid_image")
        run_rec = (recognize or embeddings) and self.recognizer is not None
        run_df = deepfake and self.deepfake is not None
        stages = tuple(s for s, on in (("recognizer", run_rec), ("deepfake", run_df)) if on)
        reply = await self._detect(bytes(image) if isinstance(image, bytearray) else image, stages, max_faces, min_score)
        detected = time.perf_counter()
        timings = {"decode": round(reply.decode_ms, 2), "detect": round(reply.detect_ms, 2)}
        branch_results: dict[str, Any] = {}
        degraded: list[str] = []

        async def branch(stage: str, handle: DeploymentHandle, method: str):
            t0 = time.perf_counter()
            try:
                branch_results[stage] = await self._in_chunks(handle, method, reply.crops[stage], stage)
            except Exception as exc:  # a failing branch degrades the answer, never fails it
                logger.warning("%s branch failed: %s", stage, type(exc).__name__)
                branch_results[stage] = exc
                degraded.append(stage)
            timings[stage] = round((time.perf_counter() - t0) * 1000, 2)

        jobs = []
        if reply.faces and run_rec:
            jobs.append(branch("recognizer", self.recognizer, "embed"))
        if reply.faces and run_df:
            jobs.append(branch("deepfake", self.deepfake, "classify"))
        await asyncio.gather(*jobs)
        faces = []
        for i, face in enumerate(reply.faces):
            item = face.to_json()
            emb = branch_results.get("recognizer")
            if embeddings and self.recognizer is not None:
                item["embedding"] = {"error": "recognizer failed"} if isinstance(emb, Exception) else [round(float(v), 6) for v in emb[i]]
            verdicts = branch_results.get("deepfake")
            if isinstance(verdicts, Exception):
                item["deepfake"] = {"error": f"deepfake classifier failed ({type(verdicts).__name__})"}
            else:
                item["deepfake"] = verdicts[i].to_json() if verdicts is not None else None
            faces.append(item)
        timings["branches"] = round((time.perf_counter() - detected) * 1000, 2)
        timings["total"] = round((time.perf_counter() - started) * 1000, 2)
        self.metrics.faces.observe(len(faces))
        self.metrics.stage_latency.observe((detected - started) * 1000, tags={"stage": "detector"})
        for stage in stages:
            if stage in timings:
                self.metrics.stage_latency.observe(timings[stage], tags={"stage": stage})
        answer = {
            "width": reply.width,
            "height": reply.height,
            "faces": faces,
            "models": await self._model_summaries(),
            "timings_ms": timings,
        }
        if degraded:
            answer["degraded"] = sorted(degraded)
        return answer

    async def describe_models(self) -> dict:
        """Per model: family, file, variant, provider, fallbacks, batching, GPU share, replicas."""
        stages = {"detector": self.detector, **self._branches()}
        infos = await asyncio.gather(*(h.describe.remote() for h in stages.values()))
        replicas = _replica_counts(self.settings["app_name"])
        out: dict[str, Any] = {}
        for stage, info in zip(stages, infos):
            out[stage] = {**info, "configured": True, "replicas": replicas.get(self.settings["deployments"][stage])}
        for stage in ("recognizer", "deepfake"):
            out.setdefault(stage, {"configured": False})
        return out

    # ---- HTTP -------------------------------------------------------------------------------

    async def _image_from(self, request: Request) -> bytes:
        ctype = _content_type(request)
        if ctype == "multipart/form-data":
            form = await _form(request, max_files=1)
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise ApiError("multipart body needs a file field named 'image'", "invalid_multipart", 400)
            return await upload.read()
        if ctype not in IMAGE_TYPES:
            raise ApiError(f"unsupported content type '{ctype[:60]}'; send an image or multipart/form-data", "unsupported_media_type")
        body = await request.body()
        if len(body) > self.max_body_bytes:
            raise ApiError(f"the body exceeds {self.max_body_bytes} bytes", "body_too_large")
        return body

    @app.post("/v1/analyze", openapi_extra=_IMAGE_BODY, summary="Detect, embed and classify every face")
    async def http_analyze(self, request: Request, query: Annotated[AnalyzeQuery, Query()]):
        image = await self._image_from(request)
        return await self.analyze(image, **query.model_dump())

    @app.post("/v1/analyze/batch", openapi_extra=_BATCH_BODY, summary="Analyze several pictures; one result or error each")
    async def http_analyze_batch(self, request: Request, query: Annotated[AnalyzeQuery, Query()]):
        if _content_type(request) != "multipart/form-data":
            raise ApiError("send multipart/form-data with repeated 'images' fields", "unsupported_media_type")
        form = await _form(request, max_files=self.max_batch_images + 1)
        uploads = [u for u in form.getlist("images") if not isinstance(u, str)]
        if not uploads:
            raise ApiError("multipart body needs one or more file fields named 'images'", "invalid_multipart", 400)
        if len(uploads) > self.max_batch_images:
            raise ApiError(f"at most {self.max_batch_images} images per batch", "too_many_images")
        datas = [await u.read() for u in uploads]
        results = await asyncio.gather(*(self.analyze(d, **query.model_dump()) for d in datas), return_exceptions=True)
        out = []
        for result in results:
            if isinstance(result, ApiError):
                out.append({"error": {"code": result.code, "message": result.message}})
            elif isinstance(result, BaseException):
                raise result
            else:
                out.append(result)
        return {"results": out}

    @app.post("/v1/detect", openapi_extra=_IMAGE_BODY, summary="Detect faces only")
    async def http_detect(self, request: Request, max_faces: MaxFaces = None, min_score: MinScore = None):
        image = await self._image_from(request)
        return await self.analyze(image, recognize=False, deepfake=False, max_faces=max_faces, min_score=min_score)

    @app.post("/v1/embed", openapi_extra=_IMAGE_BODY, summary="Detect faces and return their embeddings")
    async def http_embed(self, request: Request, max_faces: MaxFaces = None, min_score: MinScore = None):
        if self.recognizer is None:
            raise ApiError("no recognizer is configured", "not_configured")
        image = await self._image_from(request)
        return await self.analyze(image, embeddings=True, deepfake=False, max_faces=max_faces, min_score=min_score)

    @app.post("/v1/deepfake", openapi_extra=_IMAGE_BODY, summary="Detect faces and score each as deepfake")
    async def http_deepfake(self, request: Request, max_faces: MaxFaces = None, min_score: MinScore = None):
        if self.deepfake is None:
            raise ApiError("no deepfake classifier is configured", "not_configured")
        image = await self._image_from(request)
        return await self.analyze(image, recognize=False, deepfake=True, max_faces=max_faces, min_score=min_score)

    @app.get("/v1/models", summary="What each model runs on, its batching and replicas")
    async def http_models(self):
        return await self.describe_models()

    @app.get("/health", summary="Liveness, models loaded, GPU memory")
    async def http_health(self):
        try:
            await asyncio.wait_for(self._model_summaries(), timeout=5)
            loaded = True
        except Exception:
            loaded = False
        gpus = [
            {"index": g.index, "name": g.name, "memory_used_mb": g.memory_used_mb, "memory_total_mb": g.memory_total_mb, "memory_percent": g.memory_percent}
            for g in list_gpus()
        ]
        return {"status": "ok", "models_loaded": loaded, "gpu_available": bool(gpus), "gpus": gpus}

    @app.get("/ready", summary="200 only when every deployment is healthy")
    async def http_ready(self):
        states = _deployment_states(self.settings["app_name"])
        ready = bool(states) and all(s == "HEALTHY" for s in states.values())
        return JSONResponse({"ready": ready, "deployments": states}, status_code=200 if ready else 503)
