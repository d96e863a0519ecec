"""GET /docs (Swagger UI) and /redoc (ReDoc), served from local files, never a CDN.

FastAPI's default pages load their JavaScript and CSS from a CDN and a favicon from its
own site: offline that is a blank page, and a browser that opens it talks to hosts other
than 127.0.0.1. The `fastapi-offline` package ships the same Swagger UI and ReDoc bundles;
they are mounted at /docs-assets and the pages point there. Google fonts and Swagger's
online validator are switched off for the same reason. ReDoc's bundle hard-codes its
footer logo on its CDN, so it is served with that one URL pointed at the local favicon
(`/docs-assets/redoc.local.js`); a Content-Security-Policy on both pages keeps anything
else a future bundle might reference from being fetched.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSETS_URL = "/docs-assets"
_REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
# Both pages start their bundle from an inline script; ReDoc runs a worker from a blob.
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:;"
    " connect-src 'self'; frame-ancestors 'self'"
)

__all__ = ["ASSETS_DIR", "install_docs"]


@cache
def _redoc_bundle() -> bytes:
    """ReDoc's standalone bundle with its one hard-coded remote URL made local."""
    bundle = (ASSETS_DIR / "redoc.standalone.js").read_bytes()
    return bundle.replace(_REDOC_LOGO, f"{ASSETS_URL}/favicon.png".encode())


def _local_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CSP
    return page


def install_docs(app: FastAPI, *, openapi_url: str = "/openapi.json") -> None:
    """Add /docs, /redoc and their assets to an app created with docs_url=redoc_url=None."""
    router = APIRouter(include_in_schema=False)
    title = app.title

    @router.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        return _local_only(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{title} — Swagger UI",
                swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    @router.get("/redoc")
    async def redoc() -> HTMLResponse:
        return _local_only(
            get_redoc_html(
                openapi_url=openapi_url,
                title=f"{title} — ReDoc",
                redoc_js_url=f"{ASSETS_URL}/redoc.local.js",
                redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
                with_google_fonts=False,
            )
        )

    @router.get(f"{ASSETS_URL}/redoc.local.js")
    async def redoc_bundle() -> Response:
        return Response(
            _redoc_bundle(),
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    app.include_router(router)  # before the mount, so redoc.local.js is this route
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
