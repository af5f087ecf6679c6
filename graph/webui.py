"""The web page at ``/ui``: three files of ``graph/ui/`` served as they are, under a strict CSP.

The page is public, like ``/docs``; every API call it makes carries the key its user types in.
Only these fixed files are served (no directory lookup, so no path can reach anything else), read
once from the installed package.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from fastapi import FastAPI
from fastapi.responses import Response

# Its own scripts and styles only, nothing inline, nothing from elsewhere; pictures and clips the
# user picks are shown from blob: URLs; no framing, no plugins, no form posts, no <base> rewrites.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; media-src blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# URL path -> (file in graph/ui, media type)
FILES = {
    "/ui": ("index.html", "text/html; charset=utf-8"),
    "/ui/ui.js": ("ui.js", "text/javascript; charset=utf-8"),
    "/ui/ui.css": ("ui.css", "text/css; charset=utf-8"),
}
PATHS = tuple(FILES)


@lru_cache(maxsize=None)
def read(name: str) -> bytes:
    """A file of the page, from the installed package."""
    return resources.files("facegraph.graph").joinpath("ui", name).read_bytes()


def _page(name: str, media_type: str):
    # A closure, not default arguments: FastAPI would read those from the query string.
    async def page() -> Response:
        return Response(read(name), media_type=media_type, headers=HEADERS)

    return page


def install(app: FastAPI) -> None:
    """Add the page's routes (left out of the OpenAPI document: they are not API)."""
    for path, (name, media_type) in FILES.items():
        app.add_api_route(path, _page(name, media_type), methods=["GET"], include_in_schema=False, name=f"ui:{name}")
