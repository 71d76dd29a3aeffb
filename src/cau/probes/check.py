"""One availability check: does any of a probe's targets answer now?

http(s): a GET on a new connection (no keep-alive, no proxy from the environment, no redirect
following) answered with a 2xx or 3xx status. tcp: a connection accepted. Several targets race and
the first answer wins. A failure is a short text a person reads in a report ("connection refused",
"HTTP 503", "timeout after 1s"), without any secret of the target URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import httpx

from cau.probes.spec import ProbeSpec, redact_target
from cau.redact import redact

_ERRNO_TEXT = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connect timed out",
    errno.EADDRNOTAVAIL: "address not available",
}


def seconds_text(seconds: float) -> str:
    """1s, 1.5s, 250ms: how a probe's timeout is named in its errors."""
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:g}s"


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    seconds: float  # from send to answer (or to the failure)
    error: str = ""
    late: bool = False  # no answer within the timeout


class TargetFailed(Exception):
    """A target did not answer; the message is already the text for people."""


def describe_error(exc: BaseException) -> str:
    """A short, secret-free text for a failed check."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, TargetFailed):
            return str(cur)
        if isinstance(cur, socket.gaierror):
            return "name not resolved"
        if isinstance(cur, ssl.SSLError):
            return "TLS error: " + redact(getattr(cur, "reason", None) or type(cur).__name__)
        if isinstance(cur, OSError) and cur.errno in _ERRNO_TEXT:
            return _ERRNO_TEXT[cur.errno]
        cur = cur.__cause__ or cur.__context__
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection closed without an answer"
    text = str(exc).strip()
    if "Connection refused" in text or "Connect call failed" in text:
        return "connection refused"
    return redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:200]


def make_client(spec: ProbeSpec) -> httpx.AsyncClient:
    """The HTTP client of one probe: it keeps no connection, so every check opens a new one and a
    floating address that moved is seen at once; proxies from the environment are not used."""
    return httpx.AsyncClient(
        limits=httpx.Limits(max_keepalive_connections=0, max_connections=None),
        headers={"Connection": "close", "User-Agent": "cau-probe"},
        timeout=httpx.Timeout(spec.timeout_seconds),
        verify=spec.tls_verify,
        trust_env=False,
        follow_redirects=False,
    )


async def check_http(client: httpx.AsyncClient, url: str) -> None:
    try:
        response = await client.get(url)
    except httpx.HTTPError as exc:
        raise TargetFailed(describe_error(exc)) from None
    if not 200 <= response.status_code < 400:
        raise TargetFailed(f"HTTP {response.status_code}")


async def check_tcp(target: str) -> None:
    parts = urlsplit(target)
    host, port = parts.hostname, parts.port
    assert host is not None and port is not None  # validated by ProbeSpec
    try:
        _reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        raise TargetFailed(describe_error(exc)) from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


class Checker:
    """Checks one probe's targets; holds the probe's HTTP client (and its TLS settings)."""

    def __init__(self, spec: ProbeSpec) -> None:
        self.spec = spec
        self._client: httpx.AsyncClient | None = None
        self._several = len(spec.targets) > 1
        # The user info of the targets (a token, a password): scrubbed from every error text.
        self._secrets = sorted(
            {p for t in spec.targets for p in (urlsplit(t).username, urlsplit(t).password) if p},
            key=len,
            reverse=True,
        )

    def _target_check(self, target: str) -> Callable[[], Awaitable[None]]:
        if target.startswith("tcp://"):
            return lambda: check_tcp(target)
        if self._client is None:
            self._client = make_client(self.spec)
        client = self._client
        return lambda: check_http(client, target)

    async def _one(self, target: str) -> None:
        try:
            await self._target_check(target)()
        except TargetFailed as exc:
            if self._several:
                raise TargetFailed(f"{redact_target(target)}: {exc}") from None
            raise
        except Exception as exc:  # never let an unexpected error escape as anything but a failure
            prefix = f"{redact_target(target)}: " if self._several else ""
            raise TargetFailed(prefix + describe_error(exc)) from None

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def check(self) -> CheckResult:
        """One check: the first target to answer wins; all failing, or none within the timeout,
        is a failure."""
        result = await self._check()
        return result if result.ok or not self._secrets else replace(result, error=self._scrub(result.error))

    async def _check(self) -> CheckResult:
        start = time.monotonic()
        timeout = self.spec.timeout_seconds
        tasks = [asyncio.ensure_future(self._one(t)) for t in self.spec.targets]
        errors: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                for next_done in asyncio.as_completed(tasks):
                    try:
                        await next_done
                    except TargetFailed as exc:
                        errors.append(str(exc))
                        continue
                    return CheckResult(True, time.monotonic() - start)
        except TimeoutError:
            return CheckResult(
                False, time.monotonic() - start, f"timeout after {seconds_text(timeout)}", late=True
            )
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        return CheckResult(False, time.monotonic() - start, "; ".join(dict.fromkeys(errors)))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
