"""/api/docs (issue 11 #4): only for those signed in, under the dashboard's Content-Security-Policy,
with Swagger UI served by cau itself (nothing from another host)."""

from __future__ import annotations

import re

import httpx

from tests.web.conftest import Api


async def sign_in(client: httpx.AsyncClient, token: str) -> None:
    page = await client.get("/login")
    csrf = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    signed = await client.post("/login", data={"token": token, "csrf_token": csrf})
    assert signed.status_code == 303 and "cau_session" in client.cookies


def test_the_api_docs_and_the_openapi_document_need_sign_in(api: Api) -> None:
    docs = api.call("GET", "/api/docs", role=None)
    assert docs.status_code == 303 and docs.headers["location"] == "/login?next=%2Fapi%2Fdocs"
    document = api.call("GET", "/api/v1/openapi.json", role=None)
    assert document.status_code == 401 and document.json()["error"]["code"] == "unauthenticated"
    # An API client with a token reads the document; so does a viewer's browser session.
    assert (
        "/api/v1/clusters/{cluster}/runs"
        in api.call("GET", "/api/v1/openapi.json", role="viewer").json()["paths"]
    )

    async def go(client: httpx.AsyncClient) -> None:
        await sign_in(client, api.tokens["viewer"])
        assert (await client.get("/api/v1/openapi.json")).json()["openapi"].startswith("3.")

    api.run(go)


def test_the_api_docs_load_nothing_from_another_host_under_the_dashboard_policy(api: Api) -> None:
    async def go(client: httpx.AsyncClient) -> None:
        await sign_in(client, api.tokens["viewer"])
        dashboard = await client.get("/clusters")
        page = await client.get("/api/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert policy == dashboard.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "unsafe-inline" not in policy.split("style-src")[0]
        assert re.findall(r"https?://", page.text) == []  # no CDN, no other origin
        assert re.findall(r"<script(?![^>]*\bsrc=)", page.text) == []  # no inline script
        scripts = re.findall(r'<script src="([^"]+)"', page.text)
        styles = re.findall(r'<link rel="stylesheet" href="([^"]+)"', page.text)
        assert any(s.endswith("swagger-ui-bundle.js") for s in scripts), scripts
        assert any(s.endswith("swagger-ui.css") for s in styles), styles
        for url in scripts + styles:
            assert url.startswith("/static/"), url
            asset = await client.get(url)
            assert asset.status_code == 200 and len(asset.content) > 100, url
        bundle = await client.get(next(s for s in scripts if s.endswith("swagger-ui-bundle.js")))
        assert "SwaggerUIBundle" in bundle.text
        assert bundle.headers["content-type"].startswith(("application/javascript", "text/javascript"))
        # the page points Swagger UI at the document it may read
        assert 'data-openapi-url="/api/v1/openapi.json"' in page.text

    api.run(go)
