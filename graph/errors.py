"""The one place where failures become HTTP answers: ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.errors import FacegraphError

logger = logging.getLogger(__name__)

# Client mistakes by error code; anything else from the models layer is a 400.
STATUS_BY_CODE = {
    "image_too_large": 413,
    "body_too_large": 413,
    "too_many_images": 413,
    "unsupported_media_type": 415,
    "invalid_query": 422,
    "unauthorized": 401,
    "not_found": 404,
    "not_configured": 409,
    "embedding_space_mismatch": 409,
    "overloaded": 503,
    "unavailable": 503,
    "not_ready": 503,
}


class ApiError(FacegraphError):
    """A failure with an HTTP status; also what the handle API raises."""

    def __init__(self, message: str, code: str = "bad_request", status: int | None = None):
        super().__init__(message, code)
        self.status = status or STATUS_BY_CODE.get(code, 400)

    def __reduce__(self):  # keep code and status when Ray pickles it across processes
        return (ApiError, (self.message, self.code, self.status))

    def to_json(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    try:
        from graph.metrics import ingress_metrics

        ingress_metrics().errors.inc(tags={"code": code, "status": str(status)})
    except Exception:  # metrics must never turn an answer into a failure
        logger.debug("could not count error %s", code)
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every exception into a JSON error."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError):
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        if exc.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return error_response(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(FacegraphError)
    async def _model(_: Request, exc: FacegraphError):
        return error_response(STATUS_BY_CODE.get(exc.code, 400), exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        # Name the offending fields, never echo their values.
        fields = sorted({".".join(str(p) for p in err.get("loc", ())[1:]) or "request" for err in exc.errors()})
        return error_response(422, "invalid_query", f"invalid value for: {', '.join(fields)}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(RayActorError)
    async def _replica_gone(_: Request, exc: RayActorError):
        # A replica died mid-request; Serve replaces it. Tell the client to retry.
        logger.warning("a replica was unavailable: %s", type(exc).__name__)
        return error_response(503, "unavailable", "a model replica is restarting; retry shortly", {"Retry-After": "1"})

    @app.exception_handler(BackPressureError)
    async def _backpressure(_: Request, exc: BackPressureError):
        return error_response(503, "overloaded", "the service is at capacity; retry shortly", {"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception):
        logger.error("internal error: %s", type(exc).__name__)
        return error_response(500, "internal_error", "the service failed to process this request")
