"""The API through its ASGI app (no server, no network): fast tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from cau.domain.access import Role
from cau.service import Service
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
    config = write_cluster(tmp_path, quick_spec(60), name="slow")
    svc = Service(tmp_path / "data", config)
    access = svc.access
    tokens = {role.value: access.create_token(f"test-{role.value}", role, by="test")[1] for role in Role}
    loop = asyncio.new_event_loop()
    api = Api(svc, create_app(svc), tokens, loop)
    yield api
    loop.run_until_complete(api.app.state.ctx.worker.shutdown())
    loop.close()
    svc.close()


# --- a real `cau serve` process on loopback (slow tests) ---------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    token: str  # an admin token
    proc: subprocess.Popen[str]
    env: dict[str, str]
    log: Path

    def cau(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cau", *args], env=self.env, capture_output=True, text=True, timeout=300
        )

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def stop(self) -> str:
        """SIGTERM, as systemd or Ctrl-C would; returns the server's log."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        log = self.log.read_text()
        # uvicorn re-raises the signal once its graceful shutdown is complete
        assert code in (0, -signal.SIGTERM), log
        assert "Traceback" not in log, log
        assert "cau serve stopped" in log, log
        return log


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start `cau serve` with its own CAU_HOME and a clusters config (and any more options of
    `cau serve`); an admin token is made first."""
    procs: list[subprocess.Popen[str]] = []

    def start(config: str, *options: str) -> Server:
        (tmp_path / "clusters.toml").write_text(config)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAU_")}
        env.update(CAU_HOME=str(tmp_path / "data"), CAU_CONFIG=str(tmp_path / "clusters.toml"))
        made = subprocess.run(
            [
                *(sys.executable, "-m", "cau", "token", "create"),
                *("--role", "admin", "--name", f"e2e-{len(procs)}", "--output", "json"),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        token = json.loads(made.stdout)["token"]
        port = _free_port()
        log = tmp_path / f"serve-{len(procs)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cau",
                    "serve",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                    *options,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        for _ in range(150):
            try:
                with urllib.request.urlopen(f"{url}/api/v1/health", timeout=1) as r:
                    if r.status == 200:
                        return Server(url, token, proc, env, log)
            except OSError:
                time.sleep(0.1)
        proc.kill()
        pytest.fail(f"cau serve did not start: {log.read_text()}")

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
