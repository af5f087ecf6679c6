"""The ingress: HTTP API v1 and the handle API over detector -> (recognizer | deepfake)."""


import asyncio
import contextlib
import hmac
import json
import logging
import time
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from deployments.gallery import SearchRequest
from graph import errors
from graph.errors import ApiError
from graph.metrics import ingress_metrics
from models.errors import FacegraphError
from models.gallery import MAX_OFFSET, Match, compare, is_match
from models.gpu import list_gpus
from models.pipeline import DetectReply, DetectRequest

logger = logging.getLogger(__name__)

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff", "image/gif", "application/octet-stream")
PUBLIC_PATHS = ("/health", "/ready", "/docs", "/openapi.json", "/docs/oauth2-redirect")
_BINARY = {"type": "string", "format": "binary"}


def _body(form: dict, raw_image: bool) -> dict:
    """An OpenAPI request body: a multipart form and, when ``raw_image``, a bare image of any accepted type."""
    content = {t: {"schema": _BINARY} for t in IMAGE_TYPES} if raw_image else {}
    content["multipart/form-data"] = {"schema": {"type": "object", **form}}
    return {"requestBody": {"required": True, "content": content}}


_IMAGE_BODY = _body({"properties": {"image": _BINARY}, "required": ["image"]}, raw_image=True)
_BATCH_BODY = _body({"properties": {"images": {"type": "array", "items": _BINARY}}, "required": ["images"]}, raw_image=False)
_VERIFY_BODY = _body({"properties": {name: _BINARY for name in ("image", "image_a", "image_b")}}, raw_image=True)

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
    identify: bool = Field(False, description="add each face's best match in the gallery")


class SubjectCreate(BaseModel):
    """A new subject: a display name and optional metadata (a JSON object)."""

    name: str = Field(..., min_length=1, max_length=200)
    metadata: dict[str, Any] = Field(default_factory=dict)


class FaceChoice(BaseModel):
    """Which face of a picture to use when it holds several (index in detection order, best first)."""

    face_index: int | None = Field(None, ge=0, le=999, description="use this face when the picture holds several")
    max_faces: int | None = Field(None, ge=1, le=1000, description="keep at most this many faces, best first")
    min_score: float | None = Field(None, ge=0.0, le=1.0, description="drop faces scored below this")


class IdentifyQuery(BaseModel):
    top_k: int | None = Field(None, ge=1, le=100, description="subjects per face (default from config)")
    max_faces: int | None = Field(None, ge=1, le=1000, description="keep at most this many faces, best first")
    min_score: float | None = Field(None, ge=0.0, le=1.0, description="drop faces scored below this")


class VerifyQuery(BaseModel):
    subject_id: str | None = Field(None, min_length=1, max_length=64, description="compare the picture with this subject")
    face_a: int | None = Field(None, ge=0, le=999, description="face of the first picture when it holds several")
    face_b: int | None = Field(None, ge=0, le=999, description="face of the second picture when it holds several")


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


@contextlib.contextmanager
def _service_errors():
    """Turn the failures of downstream deployments into API errors with their statuses."""
    try:
        yield
    except BackPressureError:
        raise ApiError("the service is at capacity; retry shortly", "overloaded") from None
    except RayActorError:
        raise ApiError("a model replica is restarting; retry shortly", "unavailable") from None
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, FacegraphError):  # a refusal from a deployment (unknown subject...)
            raise ApiError(cause.message, cause.code) from None
        raise


def _one_face(faces: tuple, index: int | None, which: str = "the picture") -> int:
    """The face to use: the only one, or the one named by ``index``; refuses otherwise."""
    if index is not None:
        if index >= len(faces):
            raise ApiError(f"{which} has {len(faces)} face(s); face index {index} does not exist", "face_not_found", 422)
        return index
    if not faces:
        raise ApiError(f"no face was found in {which}", "no_face", 422)
    if len(faces) > 1:
        raise ApiError(f"{which} holds {len(faces)} faces; say which with a face index (0 is the best scored)", "several_faces", 422)
    return 0


@serve.deployment
@serve.ingress(app)
class Ingress:
    """Awaits the detector, then runs the recognizer and deepfake branches concurrently."""

    def __init__(
        self,
        detector: DeploymentHandle,
        recognizer: DeploymentHandle | None,
        deepfake: DeploymentHandle | None,
        settings: dict,
        gallery: DeploymentHandle | None = None,
    ):
        self.detector, self.recognizer, self.deepfake, self.gallery = detector, recognizer, deepfake, gallery
        self.settings = settings
        self.gallery_settings: dict | None = settings.get("gallery")
        self._space_info: dict | None = None
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
            # What each face's landmarks rows are, in order (the detector's own points).
            self._models["detector"]["landmarks"] = infos[0].get("landmarks")
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
        identify: bool = False,
    ) -> dict:
        """Detect faces, then embed and classify them concurrently.

        Args:
            image: encoded bytes (JPEG, PNG, WebP, BMP, TIFF, GIF) or an (H, W, 3) RGB uint8 array.
            embeddings: include each face's embedding.
            recognize, deepfake: run these branches (when configured).
            max_faces, min_score: keep the best faces only.
            identify: add each face's best gallery match as ``identity``.

        Returns:
            The same structure as ``POST /v1/analyze``. Raises ApiError for bad input.
        """
        started = time.perf_counter()
        with _service_errors():
            if identify:
                self._need_gallery()
            return await self._analyze(image, embeddings, recognize, deepfake, max_faces, min_score, identify, started)

    async def _analyze(self, image, embeddings, recognize, deepfake, max_faces, min_score, identify, started) -> dict:
        if not isinstance(image, (bytes, bytearray, np.ndarray)):
            raise ApiError("image must be bytes or an RGB uint8 array", "invalid_image")
        run_rec = (recognize or embeddings or identify) and self.recognizer is not None
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
        identities = None
        if identify and reply.faces and not isinstance(branch_results.get("recognizer"), Exception):
            t0 = time.perf_counter()
            identities = await self._search(np.asarray(branch_results["recognizer"]), top_k=1)
            timings["identify"] = round((time.perf_counter() - t0) * 1000, 2)
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
            if identify:
                best = identities[i] if identities is not None else []
                item["identity"] = best[0].to_json() if best and best[0].match else None
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

    # ---- identities: the handle API -----------------------------------------------------------

    def _need_gallery(self) -> None:
        if self.gallery is None or self.recognizer is None:
            raise ApiError("no gallery is configured (it needs a recognizer)", "not_configured")

    async def _space(self) -> dict:
        """The recognizer's embedding space, metric and the threshold that decides a match."""
        if self._space_info is None:
            info = await self.recognizer.info.remote()
            threshold = self.gallery_settings.get("threshold")
            self._space_info = {"space": info["space"], "threshold": info["match_threshold"] if threshold is None else float(threshold)}
        return self._space_info

    async def _search(self, embeddings: np.ndarray, top_k: int | None = None) -> list[list[Match]]:
        info = await self._space()
        space = info["space"]
        request = SearchRequest(embeddings, space.key, space.metric, top_k or int(self.gallery_settings["top_k"]), info["threshold"])
        return await self.gallery.search.remote(request)

    async def _embedded_faces(self, image, max_faces=None, min_score=None) -> tuple[DetectReply, np.ndarray]:
        """Detect, then embed every face kept: (reply, (F, D) embeddings)."""
        if not isinstance(image, (bytes, bytearray, np.ndarray)):
            raise ApiError("image must be bytes or an RGB uint8 array", "invalid_image")
        reply = await self._detect(bytes(image) if isinstance(image, bytearray) else image, ("recognizer",), max_faces, min_score)
        if not reply.faces:
            return reply, np.zeros((0, 0), np.float32)
        return reply, np.asarray(await self._in_chunks(self.recognizer, "embed", reply.crops["recognizer"], "recognizer"), np.float32)

    def _decision(self, info: dict) -> dict:
        return {"metric": info["space"].metric, "threshold": info["threshold"], "embedding_space": info["space"].key}

    async def create_subject(self, name: str, metadata: dict | None = None) -> dict:
        """A new subject with no faces yet."""
        self._need_gallery()
        body = SubjectCreate(name=name, metadata=metadata or {})
        size = len(json.dumps(body.metadata, separators=(",", ":")))
        if size > int(self.gallery_settings["max_metadata_bytes"]):
            raise ApiError(f"metadata is {size} bytes; the limit is {self.gallery_settings['max_metadata_bytes']}", "metadata_too_large", 413)
        with _service_errors():
            return await self.gallery.create_subject.remote(body.name, body.metadata)

    async def list_subjects(self, limit: int = 100, offset: int = 0) -> dict:
        self._need_gallery()
        if not (1 <= limit <= 1000 and 0 <= offset <= MAX_OFFSET):
            raise ApiError(f"limit must be 1 to 1000 and offset 0 to {MAX_OFFSET}", "invalid_query")
        with _service_errors():
            return await self.gallery.list_subjects.remote(limit, offset)

    async def get_subject(self, subject_id: str) -> dict:
        self._need_gallery()
        with _service_errors():
            return await self.gallery.get_subject.remote(subject_id)

    async def delete_subject(self, subject_id: str) -> dict:
        """Erase a subject and all its embeddings for good."""
        self._need_gallery()
        with _service_errors():
            erased = await self.gallery.delete_subject.remote(subject_id)
        return {"id": subject_id, "deleted": True, "faces_erased": erased}

    async def enroll(self, subject_id: str, image, face_index: int | None = None, max_faces=None, min_score=None) -> dict:
        """Add one face of a picture to a subject; refuses no face, or several without ``face_index``."""
        self._need_gallery()
        with _service_errors():
            await self.gallery.get_subject.remote(subject_id)  # refuse before spending a detection
            reply, embeddings = await self._embedded_faces(image, max_faces, min_score)
            chosen = _one_face(reply.faces, face_index)
            info = await self._space()
            face_id = await self.gallery.add_face.remote(subject_id, embeddings[chosen], info["space"].key)
        return {"subject_id": subject_id, "face_id": face_id, "face": reply.faces[chosen].to_json(), "embedding_space": info["space"].key}

    async def identify(self, image, top_k: int | None = None, max_faces=None, min_score=None) -> dict:
        """Every face of a picture with its top-k subjects, closest first, and a match decision."""
        self._need_gallery()
        with _service_errors():
            started = time.perf_counter()
            reply, embeddings = await self._embedded_faces(image, max_faces, min_score)
            found = await self._search(embeddings, top_k) if len(reply.faces) else []
            info = await self._space()
        faces = []
        for face, matches in zip(reply.faces, found):
            best = next((m for m in matches if m.match), None)
            faces.append({**face.to_json(), "matches": [m.to_json() for m in matches], "identity": best.to_json() if best else None})
        return {
            "width": reply.width,
            "height": reply.height,
            "faces": faces,
            **self._decision(info),
            "timings_ms": {"total": round((time.perf_counter() - started) * 1000, 2)},
        }

    async def verify(self, image_a, image_b=None, *, subject_id: str | None = None, face_a: int | None = None, face_b: int | None = None) -> dict:
        """Whether two pictures (or a picture and a subject) show the same person, with the score."""
        self._need_gallery()
        if (image_b is None) == (subject_id is None):
            raise ApiError("give either a second picture or a subject id", "invalid_request", 422)
        with _service_errors():
            info = await self._space()
            space, threshold = info["space"], info["threshold"]
            if subject_id is not None:
                await self.gallery.get_subject.remote(subject_id)
                reply, embeddings = await self._embedded_faces(image_a)
                chosen = _one_face(reply.faces, face_a)
                match = await self.gallery.compare_subject.remote(embeddings[chosen], subject_id, space.key, space.metric, threshold)
                other = {"subject_id": subject_id, "name": match.name}
                distance, similarity = match.distance, match.similarity
            else:
                (reply, embeddings), (reply_b, embeddings_b) = await asyncio.gather(
                    self._embedded_faces(image_a), self._embedded_faces(image_b)
                )
                chosen = _one_face(reply.faces, face_a, "the first picture")
                chosen_b = _one_face(reply_b.faces, face_b, "the second picture")
                distance, similarity = compare(embeddings[chosen], embeddings_b[chosen_b], space.metric)
                other = {"face": reply_b.faces[chosen_b].to_json()}
        return {
            "same": is_match(distance, space.metric, threshold),
            "distance": round(distance, 6),
            "similarity": round(similarity, 6),
            **self._decision(info),
            "a": {"face": reply.faces[chosen].to_json()},
            "b": other,
        }

    async def gallery_stats(self) -> dict:
        """Subjects, faces searchable with the current recognizer and faces made by others."""
        self._need_gallery()
        with _service_errors():
            info = await self._space()
            stats = await self.gallery.stats.remote(info["space"].key, info["space"].metric)
        return {**stats, **self._decision(info)}

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

    @app.post("/v1/subjects", status_code=201, summary="Create a subject (a person to recognise)")
    async def http_create_subject(self, body: SubjectCreate):
        return await self.create_subject(body.name, body.metadata)

    @app.get("/v1/subjects", summary="List subjects with their face counts")
    async def http_list_subjects(self, limit: Annotated[int, Query(ge=1, le=1000)] = 100, offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0):
        return await self.list_subjects(limit, offset)

    @app.get("/v1/subjects/{subject_id}", summary="One subject")
    async def http_get_subject(self, subject_id: Annotated[str, Path(min_length=1, max_length=64)]):
        return await self.get_subject(subject_id)

    @app.delete("/v1/subjects/{subject_id}", summary="Erase a subject and its embeddings for good")
    async def http_delete_subject(self, subject_id: Annotated[str, Path(min_length=1, max_length=64)]):
        return await self.delete_subject(subject_id)

    @app.post("/v1/subjects/{subject_id}/faces", status_code=201, openapi_extra=_IMAGE_BODY, summary="Enroll the face of a picture")
    async def http_enroll(self, request: Request, subject_id: Annotated[str, Path(min_length=1, max_length=64)], query: Annotated[FaceChoice, Query()]):
        self._need_gallery()
        image = await self._image_from(request)
        return await self.enroll(subject_id, image, **query.model_dump())

    @app.post("/v1/identify", openapi_extra=_IMAGE_BODY, summary="Each face's closest subjects and a match decision")
    async def http_identify(self, request: Request, query: Annotated[IdentifyQuery, Query()]):
        self._need_gallery()
        image = await self._image_from(request)
        return await self.identify(image, **query.model_dump())

    @app.post("/v1/verify", openapi_extra=_VERIFY_BODY, summary="Same person? Two pictures, or a picture and a subject")
    async def http_verify(self, request: Request, query: Annotated[VerifyQuery, Query()]):
        self._need_gallery()
        if _content_type(request) == "multipart/form-data":
            form = await _form(request, max_files=2)
            files = {k: v for k, v in form.multi_items() if not isinstance(v, str)}
            if query.subject_id is not None:
                first, second = files.get("image") or files.get("image_a"), None
            else:
                first, second = files.get("image_a"), files.get("image_b")
                if second is None:
                    raise ApiError("multipart body needs file fields 'image_a' and 'image_b', or a subject_id", "invalid_multipart", 400)
            if first is None:
                raise ApiError("multipart body needs a file field 'image' (or 'image_a')", "invalid_multipart", 400)
            image_a = await first.read()
            image_b = await second.read() if second is not None else None
        else:
            if query.subject_id is None:
                raise ApiError("send two pictures as multipart 'image_a' and 'image_b', or one picture with a subject_id", "invalid_request", 422)
            image_a, image_b = await self._image_from(request), None
        return await self.verify(image_a, image_b, subject_id=query.subject_id, face_a=query.face_a, face_b=query.face_b)

    @app.get("/v1/gallery", summary="Subjects and faces searchable with the current recognizer")
    async def http_gallery(self):
        return await self.gallery_stats()

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
