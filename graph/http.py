"""The HTTP surface: routes, their query models and bodies, and the guard in front of them.

Routes are thin: they read the body (``graph.bodies``), validate the query, and call the
ingress replica's handle API (Serve's replica context names it), which Python callers share.
"""

from __future__ import annotations

import hmac
import inspect
import json
import time
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field
from ray import serve

from facegraph.graph import errors, schemas, webui
from facegraph.graph.bodies import IMAGE_TYPES, VIDEO_TYPES, content_type, read_files, read_upload
from facegraph.graph.config import VIDEO_PATH
from facegraph.graph.errors import ApiError
from facegraph.graph.identity.store import MAX_OFFSET, MAX_PAGE

# The web page is public like /docs; the API calls it makes carry the key its user types in.
PUBLIC_PATHS = ("/health", "/ready", "/docs", "/openapi.json", "/docs/oauth2-redirect", *webui.PATHS)
_BINARY = {"type": "string", "format": "binary"}


def _body(form: dict, raw_image: bool, raw_types: tuple[str, ...] = ()) -> dict:
    """An OpenAPI request body: a multipart form and, when ``raw_image``, a bare image of any accepted type (or of ``raw_types``)."""
    content = {t: {"schema": _BINARY} for t in (IMAGE_TYPES if raw_image else raw_types)}
    content["multipart/form-data"] = {"schema": {"type": "object", **form}}
    return {"requestBody": {"required": True, "content": content}}


_IMAGE_BODY = _body({"properties": {"image": _BINARY}, "required": ["image"]}, raw_image=True)
_BATCH_BODY = _body({"properties": {"images": {"type": "array", "items": _BINARY}}, "required": ["images"]}, raw_image=False)
_VIDEO_BODY = _body({"properties": {"video": _BINARY}, "required": ["video"]}, raw_image=False, raw_types=VIDEO_TYPES)
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
webui.install(app)
# Error answers documented on every route; fields an answer leaves out stay out (no nulls added).
_ANSWERS: dict[str, Any] = {"responses": schemas.ERRORS, "response_model_exclude_unset": True}
SubjectId = Annotated[str, Path(min_length=1, max_length=64)]


class FaceFilter(BaseModel):
    """Which faces to keep, best scored first."""

    max_faces: int | None = Field(None, ge=1, le=1000, description="keep at most this many faces, best first")
    min_score: float | None = Field(None, ge=0.0, le=1.0, description="drop faces scored below this")


class AnalyzeQuery(FaceFilter):
    embeddings: bool = Field(False, description="include each face's embedding")
    recognize: bool = Field(True, description="run the recognizer branch")
    deepfake: bool = Field(True, description="run the deepfake branch")
    identify: bool = Field(False, description="add each face's best match in the gallery")


class FaceChoice(FaceFilter):
    face_index: int | None = Field(None, ge=0, le=999, description="use this face when the picture holds several (0 is the best)")


class IdentifyQuery(FaceFilter):
    top_k: int | None = Field(None, ge=1, le=100, description="subjects per face (default from config)")


class VerifyQuery(BaseModel):
    subject_id: str | None = Field(None, min_length=1, max_length=64, description="compare the picture with this subject")
    face_a: int | None = Field(None, ge=0, le=999, description="face of the first picture when it holds several")
    face_b: int | None = Field(None, ge=0, le=999, description="face of the second picture when it holds several")


class SubjectCreate(BaseModel):
    """A new subject: a display name and optional metadata (a JSON object)."""

    name: str = Field(..., min_length=1, max_length=200)
    metadata: dict[str, Any] = Field(default_factory=dict)


def _ingress(_: Request | None = None):
    """The ingress replica serving this request (None while it starts): Serve's own record of it."""
    try:
        return serve.get_replica_context().servable_object
    except RuntimeError:  # outside a Serve replica
        return None


def _authorized(request: Request, keys: list[str]) -> bool:
    given = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization") or ""
    if auth[:7].lower() == "bearer ":
        given = given or auth[7:].strip()
    return any(hmac.compare_digest(given.encode(), key.encode()) for key in keys)


def app_path(scope) -> str:
    """The request's path inside this app: under a Serve route prefix the path still starts with it (``root_path``)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return (path[len(root) :] or "/") if root and path.startswith(root) else path


def _refusal(ingress, request: Request) -> ApiError | None:
    """Why a request may not reach a route: the service starting, no valid API key, an announced body too large."""
    if ingress is None:  # not initialised yet: nothing can be served
        return ApiError("the service is starting", "not_ready")
    if ingress.api_keys and app_path(request.scope) not in PUBLIC_PATHS and not _authorized(request, ingress.api_keys):
        return ApiError("a valid API key is required", "unauthorized")
    length = request.headers.get("content-length")
    # Announced sizes are refused before a byte is read; unannounced ones as they stream (graph.bodies).
    limit = ingress.body_limit(app_path(request.scope))
    if length and length.isdigit() and int(length) > limit:
        return ApiError(f"the body exceeds {limit} bytes", "body_too_large")
    return None


class Guard:
    """API keys (when configured) and an announced body size, before any route runs; latency per matched route.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` runs every request through a task
    group and memory streams of its own, a cost the ingress would pay on each picture.
    """

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        ingress = _ingress()
        refused = _refusal(ingress, Request(scope))
        if refused is not None:
            return await errors.error_response(refused)(scope, receive, send)
        started = time.perf_counter()
        try:
            await self.inner(scope, receive, send)
        finally:
            # Tag by the matched route, never the raw path: clients must not mint label values.
            route = getattr(scope.get("route"), "path", "unmatched")
            ingress.metrics.request_latency.observe((time.perf_counter() - started) * 1000, tags={"route": route})


app.add_middleware(Guard)


class VideoQuery(BaseModel):
    fps: float | None = Field(None, gt=0, le=60, description="frames sampled per second of video (default from config: 2)")
    max_frames: int | None = Field(None, ge=1, le=100_000, description="sample at most this many frames (default from config)")
    identify: bool = Field(False, description="name each track from the gallery")
    deepfake: bool = Field(True, description="score each face and summarise each track")
    embeddings: bool = Field(False, description="include each track's mean embedding")
    min_score: float | None = Field(None, ge=0.0, le=1.0, description="drop faces scored below this")


def _first(files: dict[str, list[bytes]], *names: str) -> bytes | None:
    return next((files[n][0] for n in names if files.get(n)), None)


async def _image(request: Request) -> bytes:
    return await read_upload(request, _ingress(request).max_body_bytes, "image", IMAGE_TYPES)


def _picture_route(name: str, path: str, query: type[BaseModel], answer: type[BaseModel], summary: str, call, needs: str | None = None) -> None:
    """A route that takes one picture (raw or multipart) and a query: ``call(ingress, image, query)`` answers it.

    ``needs``: the model it cannot answer without, refused before the body is read.
    """

    async def route(request: Request, query: BaseModel):
        ingress = _ingress(request)
        if needs is not None:
            ingress.need(needs)
        return await call(ingress, await _image(request), query.model_dump())

    route.__name__ = name
    route.__signature__ = inspect.Signature(
        [
            inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
            inspect.Parameter("query", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Annotated[query, Query()]),
        ]
    )
    app.post(path, openapi_extra=_IMAGE_BODY, response_model=answer, **_ANSWERS, summary=summary)(route)


# The picture routes: one picture in, its faces out; each a call of the handle API.
_picture_route("analyze", "/v1/analyze", AnalyzeQuery, schemas.AnalyzeAnswer, "Detect, embed and classify every face", lambda ingress, image, q: ingress.analyze(image, **q))
_picture_route("detect", "/v1/detect", FaceFilter, schemas.AnalyzeAnswer, "Detect faces only", lambda ingress, image, q: ingress.analyze(image, recognize=False, deepfake=False, **q))
_picture_route(
    "embed", "/v1/embed", FaceFilter, schemas.AnalyzeAnswer, "Detect faces and return their embeddings",
    lambda ingress, image, q: ingress.analyze(image, embeddings=True, deepfake=False, **q), needs="recognizer",
)
_picture_route(
    "deepfake", "/v1/deepfake", FaceFilter, schemas.AnalyzeAnswer, "Detect faces and score each as deepfake",
    lambda ingress, image, q: ingress.analyze(image, recognize=False, deepfake=True, **q), needs="deepfake",
)
_picture_route("identify", "/v1/identify", IdentifyQuery, schemas.IdentifyAnswer, "Each face's closest subjects and a match decision", lambda ingress, image, q: ingress.identify(image, **q))


@app.post("/v1/analyze/batch", openapi_extra=_BATCH_BODY, response_model=schemas.BatchAnswer, **_ANSWERS, summary="Analyze several pictures; one result or error each")
async def analyze_batch(request: Request, query: Annotated[AnalyzeQuery, Query()]):
    ingress = _ingress(request)
    if content_type(request) != "multipart/form-data":
        raise ApiError("send multipart/form-data with repeated 'images' fields", "unsupported_media_type")
    files = await read_files(request, ingress.max_body_bytes, max_files=4 * ingress.max_batch_images)
    return {"results": await ingress.analyze_many(files.get("images") or [], **query.model_dump())}


@app.post("/v1/subjects", status_code=201, response_model=schemas.SubjectAnswer, **_ANSWERS, summary="Create a subject (a person to recognise)")
async def create_subject(request: Request, body: SubjectCreate):
    return await _ingress(request).create_subject(body.name, body.metadata)


@app.get("/v1/subjects", response_model=schemas.SubjectList, **_ANSWERS, summary="List subjects with their face counts")
async def list_subjects(request: Request, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100, offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0):
    return await _ingress(request).list_subjects(limit, offset)


@app.get("/v1/subjects/{subject_id}", response_model=schemas.SubjectAnswer, **_ANSWERS, summary="One subject")
async def get_subject(request: Request, subject_id: SubjectId):
    return await _ingress(request).get_subject(subject_id)


@app.delete("/v1/subjects/{subject_id}", response_model=schemas.Deleted, **_ANSWERS, summary="Erase a subject and its embeddings for good")
async def delete_subject(request: Request, subject_id: SubjectId):
    return await _ingress(request).delete_subject(subject_id)


@app.post("/v1/subjects/{subject_id}/faces", status_code=201, openapi_extra=_IMAGE_BODY, response_model=schemas.Enrolled, **_ANSWERS, summary="Enroll the face of a picture")
async def enroll(request: Request, subject_id: SubjectId, query: Annotated[FaceChoice, Query()]):
    return await _ingress(request).enroll(subject_id, await _image(request), **query.model_dump())


@app.post("/v1/verify", openapi_extra=_VERIFY_BODY, response_model=schemas.VerifyAnswer, **_ANSWERS, summary="Same person? Two pictures, or a picture and a subject")
async def verify(request: Request, query: Annotated[VerifyQuery, Query()]):
    ingress = _ingress(request)
    if content_type(request) == "multipart/form-data":
        files = await read_files(request, ingress.max_body_bytes, max_files=2)
        first = _first(files, "image", "image_a") if query.subject_id is not None else _first(files, "image_a")
        second = None if query.subject_id is not None else _first(files, "image_b")
        if first is None or (query.subject_id is None and second is None):
            raise ApiError("multipart body needs file fields 'image_a' and 'image_b', or 'image' with a subject_id", "invalid_multipart")
    elif query.subject_id is None:
        raise ApiError("send two pictures as multipart 'image_a' and 'image_b', or one picture with a subject_id", "invalid_request")
    else:
        first, second = await _image(request), None
    return await ingress.verify(first, second, subject_id=query.subject_id, face_a=query.face_a, face_b=query.face_b)


@app.post(VIDEO_PATH, openapi_extra=_VIDEO_BODY, response_model=schemas.VideoAnswer, **_ANSWERS, summary="Follow, identify and score each person in a clip")
async def analyze_video(request: Request, query: Annotated[VideoQuery, Query()]):
    ingress = _ingress(request)
    video = await read_upload(request, ingress.body_limit(VIDEO_PATH), "video", VIDEO_TYPES)
    if "application/x-ndjson" not in (request.headers.get("accept") or ""):
        return await ingress.analyze_video(video, **query.model_dump())
    events = await ingress.video_stream(video, **query.model_dump())  # a bad clip is refused with its status before the stream starts
    lines = (json.dumps(event, separators=(",", ":")) + "\n" async for event in events)
    return StreamingResponse(lines, media_type="application/x-ndjson")


@app.get("/v1/gallery", response_model=schemas.GalleryAnswer, **_ANSWERS, summary="Subjects and faces searchable with the current recognizer")
async def gallery(request: Request):
    return await _ingress(request).gallery_stats()


@app.get("/v1/models", response_model=schemas.ModelsAnswer, **_ANSWERS, summary="Each model: what it runs on, its batching, every replica")
async def models(request: Request):
    return await _ingress(request).describe_models()


@app.get("/health", response_model=schemas.HealthAnswer, summary="Liveness, models loaded, GPU memory")
async def health(request: Request):
    return await _ingress(request).status.health()


@app.get("/ready", response_model=schemas.ReadyAnswer, responses={503: {"model": schemas.ReadyAnswer}}, summary="200 only when every deployment is healthy")
async def ready(request: Request, response: Response):
    is_ready, states = await _ingress(request).status.ready()
    response.status_code = 200 if is_ready else 503
    return schemas.ReadyAnswer(ready=is_ready, deployments=states)
