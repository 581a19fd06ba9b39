"""The web console's files, served at ``/console/``: static HTML, CSS and JavaScript, no build step.

The console is one more client of the public API: the browser signs TC3 requests itself
(console/tc3.js), so it adds no way in. Its pages get a strict Content-Security-Policy (scripts
and styles from this origin only, no framing), since they hold a secret key in memory.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

FILES = Path(str(resources.files("aigc_image") / "console"))
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css"}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob: http: https:; "
    "connect-src 'self' http: https:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def console_routes() -> list[Route]:
    async def redirect(request: Request) -> Response:
        return RedirectResponse("console/", status_code=308)  # relative: right behind a path prefix too

    async def page(request: Request) -> Response:
        name = request.path_params.get("name") or "index.html"
        path = FILES / name
        if "/" in name or path.suffix not in TYPES or not path.is_file():
            return Response("Not Found", status_code=404, headers=HEADERS)
        return FileResponse(path, media_type=TYPES[path.suffix], headers=HEADERS)

    return [
        Route("/console", redirect, methods=["GET"]),
        Route("/console/", page, methods=["GET", "HEAD"]),
        Route("/console/{name}", page, methods=["GET", "HEAD"]),
    ]
