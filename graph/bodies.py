"""Request bodies, counted while they stream in and kept in memory only.

Every body, raw or multipart, with or without a Content-Length, is refused with 413 as soon as
its bytes pass the limit: a chunked upload of any size costs the ingress at most the limit.
Multipart parts never reach a temporary file (Starlette spools parts over 1 MiB to disk).
"""

from __future__ import annotations

import sys
from typing import AsyncIterator

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from facegraph.graph.errors import ApiError

VIDEO_TYPES = ("video/mp4", "video/webm", "video/quicktime", "video/x-matroska", "application/octet-stream")
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff", "image/gif", "application/octet-stream")
# Text fields a form may carry besides its files (none are read; a few are tolerated).
MAX_TEXT_FIELDS = 8


class _InMemoryParser(MultiPartParser):
    # A spooled file with no size limit never rolls over to disk: parts stay in memory,
    # bounded by the body limit that feeds the parser.
    spool_max_size = sys.maxsize


def content_type(request: Request) -> str:
    return (request.headers.get("content-type") or "").split(";")[0].strip().lower()


def too_large(limit: int) -> ApiError:
    return ApiError(f"the body exceeds {limit} bytes", "body_too_large")


async def counted(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive; raises 413 on the chunk that passes ``limit``."""
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise too_large(limit)
        yield chunk


async def read_body(request: Request, limit: int) -> bytes:
    return b"".join([chunk async for chunk in counted(request, limit)])


async def read_files(request: Request, limit: int, max_files: int) -> dict[str, list[bytes]]:
    """The file fields of a multipart body: name -> contents in order.

    Parsing stops at ``max_files`` files (the caller counts them against its own limit, so it can
    say how many are allowed) and at :data:`MAX_TEXT_FIELDS` text fields.
    """
    parser = _InMemoryParser(request.headers, counted(request, limit), max_files=max_files, max_fields=MAX_TEXT_FIELDS, max_part_size=limit)
    try:
        form = await parser.parse()
    except MultiPartException:
        raise ApiError("malformed multipart body, or more parts than this route takes", "invalid_multipart") from None
    files: dict[str, list[bytes]] = {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.setdefault(name, []).append(await value.read())
    finally:
        await form.close()
    return files


async def read_upload(request: Request, limit: int, field: str, types: tuple[str, ...]) -> bytes:
    """One upload: a raw body of one of ``types``, or the multipart file field ``field``."""
    ctype = content_type(request)
    if ctype == "multipart/form-data":
        upload = (await read_files(request, limit, max_files=1)).get(field)
        if not upload:
            raise ApiError(f"multipart body needs a file field named '{field}'", "invalid_multipart")
        return upload[0]
    if ctype not in types:
        kind = "a video" if field == "video" else "an image"
        raise ApiError(f"unsupported content type '{ctype[:60]}'; send {kind} or multipart/form-data", "unsupported_media_type")
    return await read_body(request, limit)
