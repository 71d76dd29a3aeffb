"""A real Prometheus and a real Alertmanager (Debian's `prometheus`, `prometheus-alertmanager`) on
loopback for the tests, and a tiny exporter whose metrics the test changes.

Each process gets its own temporary config and data folder and free loopback ports; it is ended
by its PID (never by name: a real Prometheus may run on this machine). Alertmanager's gossip
(HA cluster) port is turned off, so nothing listens beyond loopback.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support_etcd import free_port

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


def _need(binary: str, package: str) -> None:
    if not Path(binary).exists():
        raise RuntimeError(f"{binary} is missing: install Debian's {package} (`./dev test` does, as root)")


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _ExporterServer

    def do_GET(self) -> None:
        owner = self.server.owner
        with owner.lock:
            lines = [f'node_ok{{node="{n}"}} {v:g}' for n, v in sorted(owner.values.items())]
        body = ("# TYPE node_ok gauge\n" + "\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ExporterServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: Exporter


@dataclass
class Exporter:
    """Serves `node_ok{node="NODE"} VALUE` on /metrics, for values the test sets."""

    values: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    host: str = "127.0.0.1"
    port: int = 0
    _server: _ExporterServer | None = None

    def set(self, node: str, value: float) -> None:
        with self.lock:
            self.values[node] = value

    def start(self) -> Exporter:
        server = _ExporterServer((self.host, self.port), _Handler)
        server.owner = self
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class _Process:
    args: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        p = self.process
        if p is not None and p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()

    def wait_ready(self, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.args[0]} exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(
            f"{self.args[0]} not ready at {url}: {self.log.read_text(errors='replace')[-2000:]}"
        )


@dataclass
class Prometheus:
    root: Path
    scrape: list[str]  # host:port targets
    scrape_interval: str = "250ms"
    port: int = 0
    proc: _Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        _need(PROMETHEUS, "prometheus")
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        targets = ", ".join(f'"{t}"' for t in self.scrape)
        config = self.root / "prometheus.yml"
        config.write_text(
            f"global:\n  scrape_interval: {self.scrape_interval}\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: test\n    scrape_interval: {self.scrape_interval}\n"
            f"    scrape_timeout: {self.scrape_interval}\n    static_configs:\n      - targets: [{targets}]\n"
        )
        self.proc = _Process(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            self.root / "prometheus.log",
        )
        self.proc.start()
        self.proc.wait_ready(f"{self.url}/-/ready")
        return self

    def query(self, promql: str) -> list[Any]:
        body = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5).json()
        result: list[Any] = body["data"]["result"]
        return result

    def wait_for(self, promql: str, *, empty: bool, timeout: float = 20.0) -> None:
        """Until the query's result is (not) empty: Prometheus has scraped the change."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (not self.query(promql)) == empty:
                return
            time.sleep(0.1)
        raise AssertionError(f"{promql}: still {'non-' if empty else ''}empty after {timeout}s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


@dataclass
class Alertmanager:
    root: Path
    port: int = 0
    proc: _Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Alertmanager:
        _need(ALERTMANAGER, "prometheus-alertmanager")
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = self.root / "alertmanager.yml"
        config.write_text("route:\n  receiver: none\nreceivers:\n  - name: none\n")
        self.proc = _Process(
            [
                ALERTMANAGER,
                f"--config.file={config}",
                f"--storage.path={self.root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",  # no gossip port
                "--log.level=warn",
            ],
            self.root / "alertmanager.log",
        )
        self.proc.start()
        self.proc.wait_ready(f"{self.url}/-/ready")
        return self

    def silences(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = httpx.get(f"{self.url}/api/v2/silences", timeout=5).json()
        return found

    def active(self, created_by: str = "cau") -> dict[str, str]:
        """node -> silence id of cau's active silences (by the instance matcher NODE:9100)."""
        out: dict[str, str] = {}
        for s in self.silences():
            if s["status"]["state"] == "active" and s.get("createdBy") == created_by:
                instance = next(m["value"] for m in s["matchers"] if m["name"] == "instance")
                out[instance.split(":")[0]] = s["id"]
        return out

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def expire_all(self) -> None:
        """Expire every silence still in force (a fresh start for the next test)."""
        for s in self.silences():
            if s["status"]["state"] != "expired":
                httpx.delete(f"{self.url}/api/v2/silence/{s['id']}", timeout=5)


@dataclass
class Monitoring:
    """An exporter of `node_ok{node=...}`, a Prometheus scraping it, and an Alertmanager."""

    exporter: Exporter
    prometheus: Prometheus
    alertmanager: Alertmanager


@contextlib.contextmanager
def monitoring(root: Path, nodes: list[str]) -> Iterator[Monitoring]:
    """The three started, every node's metric good and seen so by Prometheus; stopped after."""
    exporter = Exporter().start()
    prometheus = Prometheus(root / "prometheus", [exporter.target])
    alertmanager = Alertmanager(root / "alertmanager")
    try:
        prometheus.start()
        alertmanager.start()
        for node in nodes:
            exporter.set(node, 1)
        prometheus.wait_for("node_ok == 0", empty=True)
        yield Monitoring(exporter, prometheus, alertmanager)
    finally:
        prometheus.stop()
        alertmanager.stop()
        exporter.stop()
