"""GET /dashboard (and its old name /dashboard_realtime.html): the real-time page (open)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["dashboard"], include_in_schema=False)


@router.get("/dashboard")
@router.get("/dashboard_realtime.html")
async def dashboard() -> FileResponse:
    """The dashboard page; its script reads an optional `?token=` from the URL."""
    return FileResponse(STATIC_DIR / "dashboard.html", media_type="text/html")
