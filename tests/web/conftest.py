"""The API through its ASGI app (no server, no network): fast tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from cau.service import Service
from cau.store.access import AccessStore, Role
from cau.web.app import create_app
from tests.support import spec, write_cluster

T = TypeVar("T")

ROLES = {
    "web": {"name": "web", "kind": "live", "owner": "n1", "cpu": 2, "memory_gb": 4},
    "db": {"name": "db", "kind": "failover", "owner": "n2", "cpu": 2, "memory_gb": 4},
}


def quick_spec(speed: float) -> dict[str, Any]:
    return spec(3, roles=list(ROLES.values()), speed=speed)


@dataclass
class Api:
    """One app on a temporary store, with a token per role."""

    svc: Service
    app: Any
    tokens: dict[str, str]
    loop: asyncio.AbstractEventLoop

    def run(self, factory: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
        async def main() -> T:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://cau.test") as client:
                return await factory(client)

        return self.loop.run_until_complete(main())

    def headers(self, role: str | None) -> dict[str, str]:
        return {} if role is None else {"Authorization": f"Bearer {self.tokens[role]}"}

    def call(self, method: str, url: str, role: str | None = "admin", **kw: Any) -> httpx.Response:
        async def go(client: httpx.AsyncClient) -> httpx.Response:
            headers = {**self.headers(role), **kw.pop("headers", {})}
            return await client.request(method, url, headers=headers, **kw)

        return self.run(go)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    write_cluster(tmp_path, quick_spec(2000), name="quick")
    config = write_cluster(tmp_path, quick_spec(0.5), name="slow")
    svc = Service(tmp_path / "data", config)
    access = AccessStore(svc.store)
    tokens = {role.value: access.create_token(f"test-{role.value}", role, by="test")[1] for role in Role}
    loop = asyncio.new_event_loop()
    api = Api(svc, create_app(svc), tokens, loop)
    yield api
    loop.run_until_complete(api.app.state.ctx.worker.shutdown())
    loop.close()
    svc.close()
