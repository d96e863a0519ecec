"""/docs and /redoc render the API's operations in headless Chromium from local assets only."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.api.server import ApiServer
from tests.api.test_dashboard_browser import browser  # noqa: F401  (the shared fixture)

pytestmark = pytest.mark.browser


def _open(browser: Any, url: str) -> tuple[Any, list[str]]:  # noqa: F811
    """A page at `url`, recording every request it makes (blocking none)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(url)
    return page, requested


def _hosts(urls: list[str]) -> set[str]:
    return {urlsplit(u).hostname or "" for u in urls if urlsplit(u).scheme in ("http", "https")}


def test_swagger_ui_renders_operations_without_leaving_127_0_0_1(
    api: ApiServer,
    browser: Any,  # noqa: F811
) -> None:
    page, requested = _open(browser, f"{api.url}/docs")
    try:
        page.wait_for_selector(".opblock-summary-path", timeout=15_000)
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert "/signals" in paths and "/health" in paths
        assert len(paths) >= 10
        page.wait_for_load_state("networkidle")
    finally:
        page.close()
    assert _hosts(requested) == {"127.0.0.1"}, sorted(requested)
    assert any(u.endswith("/docs-assets/swagger-ui-bundle.js") for u in requested)


def test_redoc_renders_operations_without_leaving_127_0_0_1(
    api: ApiServer,
    browser: Any,  # noqa: F811
) -> None:
    page, requested = _open(browser, f"{api.url}/redoc")
    try:
        page.wait_for_selector("[data-section-id*='operation/']", timeout=15_000)
        assert page.locator("[data-section-id*='operation/']").count() >= 10
        # ReDoc's footer logo is served from here, not from its CDN
        page.wait_for_selector("img[alt='redocly logo']", state="attached", timeout=5_000)
        page.wait_for_load_state("networkidle")
    finally:
        page.close()
    assert _hosts(requested) == {"127.0.0.1"}, sorted(requested)
    assert any(u.endswith("/docs-assets/redoc.local.js") for u in requested)


def test_docs_pages_name_no_other_host(api: ApiServer) -> None:
    for path in ("/docs", "/redoc"):
        html = httpx.get(f"{api.url}{path}").text
        assert "http://" not in html.replace(api.url, "") and "https://" not in html, path
