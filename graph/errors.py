"""The one place where failures become API errors and HTTP answers: ``{"error": {"code", "message"}}``.

:func:`as_api_error` maps any exception: our own refusals by their code, back-pressure and dead
replicas to 503 with Retry-After, a Ray-wrapped failure by what it wraps, anything else to a 500
that echoes nothing. :func:`raising_api_errors` applies it to the whole handle API; the HTTP
handlers answer with the same errors.
"""

from __future__ import annotations

import functools
import inspect
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError
from starlette.exceptions import HTTPException as StarletteHTTPException

from facegraph.models.errors import FacegraphError

logger = logging.getLogger(__name__)

# Every error code an answer may carry, with its status. A FacegraphError whose code is not here
# is the service's own failure (a model that would not load, a bug): a 500.
STATUS_BY_CODE = {
    "bad_request": 400,
    "invalid_image": 400,
    "empty_image": 400,
    "invalid_multipart": 400,
    "invalid_request": 422,
    "invalid_query": 422,
    "no_face": 422,
    "several_faces": 422,
    "face_not_found": 422,
    "low_quality": 422,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "not_configured": 409,
    "embedding_space_mismatch": 409,
    "image_too_large": 413,
    "body_too_large": 413,
    "too_many_images": 413,
    "metadata_too_large": 413,
    "unsupported_media_type": 415,
    # Clips (facegraph.models.video): refused from their headers, or as they decode.
    "invalid_video": 400,
    "empty_video": 400,
    "truncated_video": 400,
    "no_video_stream": 415,
    "unsupported_video_codec": 415,
    "video_too_large": 413,
    "frame_too_large": 413,
    "video_too_long": 413,
    "internal_error": 500,
    "detection_failed": 500,
    "overloaded": 503,
    "unavailable": 503,
    "not_ready": 503,
    # Crops cut for the model a rolling update replaced: the next try gets fresh crop sizes.
    "crop_mismatch": 503,
    "space_changed": 503,
}
INTERNAL = "the service failed to process this request"


class ApiError(FacegraphError):
    """A failure with an HTTP status; also what the handle API raises."""

    def __init__(self, message: str, code: str = "bad_request", status: int | None = None):
        super().__init__(message, code)
        self.status = status or STATUS_BY_CODE.get(code, 500)

    # An instance attribute only, never the base class's default: a handle caller gets Ray's
    # RayTaskError(ApiError), which finds class attributes on itself and the rest on the real error.
    @property
    def code(self) -> str:
        try:
            return self.__dict__["_code"]
        except KeyError:
            raise AttributeError("code") from None

    @code.setter
    def code(self, value: str) -> None:
        self.__dict__["_code"] = value

    def to_json(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}

    def headers(self) -> dict[str, str] | None:
        if self.status == 503:
            return {"Retry-After": "1"}
        if self.status == 401:
            return {"WWW-Authenticate": "Bearer"}
        return None


def as_api_error(exc: BaseException) -> ApiError:
    """The API error for any exception, by its type and code, never by its text."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RayTaskError):  # raised in another deployment: judge what it wraps
        cause = getattr(exc, "cause", None)
        return as_api_error(cause) if isinstance(cause, BaseException) and not isinstance(cause, RayTaskError) else _internal(exc)
    if isinstance(exc, BackPressureError):
        return ApiError("the service is at capacity; retry shortly", "overloaded")
    if isinstance(exc, RayActorError):
        return ApiError("a model replica is restarting; retry shortly", "unavailable")
    if isinstance(exc, FacegraphError) and exc.code in STATUS_BY_CODE:
        return ApiError(exc.message, exc.code)
    return _internal(exc)


def _internal(exc: BaseException) -> ApiError:
    cause = getattr(exc, "cause", None) if isinstance(exc, RayTaskError) else exc
    logger.error("internal error: %s", type(cause or exc).__name__)
    return ApiError(INTERNAL, "internal_error")


def raising_api_errors(cls: type) -> type:
    """The handle API's error boundary: every public coroutine of ``cls`` raises only :class:`ApiError`.

    Handle callers and the HTTP routes (which call the same methods) get codes and statuses; the
    core below raises plain ``FacegraphError``s and never learns of HTTP.
    """
    for name, method in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(method):
            setattr(cls, name, _mapping(method))
    return cls


def _mapping(method):
    @functools.wraps(method)
    async def mapped(*args, **kwargs):
        try:
            return await method(*args, **kwargs)
        except Exception as exc:
            raise as_api_error(exc) from None

    return mapped


def error_response(error: ApiError) -> JSONResponse:
    try:
        from facegraph.graph.metrics import ingress_metrics

        ingress_metrics().errors.inc(tags={"code": error.code, "status": str(error.status)})
    except Exception:  # metrics must never turn an answer into a failure
        logger.debug("could not count error %s", error.code)
    return JSONResponse(error.to_json(), status_code=error.status, headers=error.headers())


def install(app: FastAPI) -> None:
    """Register the handlers that turn every exception into a JSON error."""

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        # Name the offending fields, never echo their values.
        fields = sorted({".".join(str(p) for p in err.get("loc", ())[1:]) or "request" for err in exc.errors()})
        return error_response(ApiError(f"invalid value for: {', '.join(fields)}", "invalid_query"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return error_response(ApiError(str(exc.detail), code, exc.status_code))

    async def _mapped(_: Request, exc: Exception):
        return error_response(as_api_error(exc))

    # The known kinds are answered inside the app; ``Exception`` last, by Starlette's outermost layer.
    for kind in (FacegraphError, RayTaskError, RayActorError, BackPressureError, Exception):
        app.add_exception_handler(kind, _mapped)
