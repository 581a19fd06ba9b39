"""The web console's files, served at ``/console/``: static HTML, CSS and JavaScript, no build step.

The console is one more client of the public API: the browser signs TC3 requests itself
(console/tc3.js), so it adds no way in. Its pages get a strict Content-Security-Policy (scripts
and styles from this origin only, no framing), since they hold a secret key in memory.

Besides the files, ``/console/models.json``: the models the create form offers, with what each
accepts (aspect ratios, resolutions, counts) and the deployment's default. It says no more than
the public catalogue does (no weights locations), so it needs no key, like ``/readyz``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from aigc_image.catalog import Catalog, ModelEntry

FILES = Path(str(resources.files("aigc_image") / "console"))
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css",
    ".ico": "image/x-icon",
}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob: http: https:; "
    "connect-src 'self' http: https:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def console_routes(current_catalog: Callable[[], Awaitable[Catalog]]) -> list[Route]:
    """The console's routes; ``current_catalog``: the catalogue with the deployment's default model."""

    async def redirect(request: Request) -> Response:
        return RedirectResponse("console/", status_code=308)  # relative: right behind a path prefix too

    async def page(request: Request) -> Response:
        name = request.path_params.get("name") or "index.html"
        path = FILES / name
        if "/" in name or path.suffix not in TYPES or not path.is_file():
            return Response("Not Found", status_code=404, headers=HEADERS)
        return FileResponse(path, media_type=TYPES[path.suffix], headers=HEADERS)

    async def favicon(request: Request) -> Response:  # browsers ask the root for it, whatever the page says
        return FileResponse(FILES / "favicon.ico", media_type=TYPES[".ico"], headers={"Cache-Control": "max-age=86400"})

    async def models(request: Request) -> Response:
        catalog = await current_catalog()
        entries = [_model(entry) for entry in catalog.entries.values()]
        return JSONResponse({"default": catalog.default_label or None, "models": entries}, headers=HEADERS)

    return [
        Route("/console", redirect, methods=["GET"]),
        Route("/console/", page, methods=["GET", "HEAD"]),
        Route("/console/models.json", models, methods=["GET"]),
        Route("/console/{name}", page, methods=["GET", "HEAD"]),
        Route("/favicon.ico", favicon, methods=["GET", "HEAD"]),
    ]


def _model(entry: ModelEntry) -> dict[str, Any]:
    """What the create form needs of a model to offer only what it accepts."""
    return {
        "label": entry.label,
        "name": entry.name,
        "version": entry.version,
        "description": entry.description,
        "aspect_ratios": list(entry.aspect_ratios),
        "resolutions": list(entry.resolutions),
        "max_output_images": entry.max_output_images,
        "steps": entry.steps,
        "max_steps": entry.max_steps,
        "max_reference_images": entry.max_reference_images,
        "panorama": entry.panorama,
        "negative_prompt": entry.negative_prompt,
    }
