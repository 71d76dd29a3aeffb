"""etcd v3 through its documented JSON gateway (`/v3/kv/range`, `/v3/kv/txn`), over httpx.

The gateway is part of every etcd server since 3.3 (Debian's 3.4 included), so cau needs no gRPC
client (the `etcd3` package is unmaintained and breaks with current protobuf). Keys and values
travel base64-encoded; 64-bit integers as strings. Only what the store needs is modelled.

Reaching the cluster: each call goes to the endpoint that answered last, and on to the next one
when an endpoint does not answer or has no leader, until the call's deadline. Every request asks
for a leader (gRPC metadata `hasleader`, through the gateway's `Grpc-Metadata-` headers): a member
cut off from the majority answers "no leader" at once instead of holding the call for etcd's own
request timeout, so losing quorum is reported within the deadline, never a hang.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cau.errors import CauError, StoreUnavailable

# gRPC status codes (in the gateway's error body) that another member, or a moment later, may not
# answer: UNAVAILABLE (no leader, request timed out, stopping), DEADLINE_EXCEEDED.
_RETRY_CODES = {4, 14}
_ASK_FOR_A_LEADER = {"Grpc-Metadata-hasleader": "true"}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    """The end of the range of every key starting with `prefix` (etcd's `range_end`)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# --- requests ---------------------------------------------------------------------------------


class Compare(_Message):
    key: str
    target: Literal["CREATE", "MOD"]
    result: Literal["EQUAL", "GREATER"]
    create_revision: int | None = None
    mod_revision: int | None = None

    @classmethod
    def absent(cls, key: bytes) -> Compare:
        return cls(key=b64(key), target="CREATE", result="EQUAL", create_revision=0)

    @classmethod
    def present(cls, key: bytes) -> Compare:
        return cls(key=b64(key), target="CREATE", result="GREATER", create_revision=0)

    @classmethod
    def unchanged(cls, key: bytes, mod_revision: int) -> Compare:
        """The key is as it was read (mod_revision 0: still absent)."""
        if mod_revision == 0:
            return cls.absent(key)
        return cls(key=b64(key), target="MOD", result="EQUAL", mod_revision=mod_revision)


class RangeRequest(_Message):
    key: str
    range_end: str | None = None
    limit: int | None = None
    revision: int | None = None
    sort_order: Literal["ASCEND", "DESCEND"] | None = None
    sort_target: Literal["KEY"] | None = None
    keys_only: bool | None = None

    @classmethod
    def of(
        cls,
        key: bytes,
        end: bytes | None = None,
        *,
        limit: int = 0,
        revision: int = 0,
        last: bool = False,
        keys_only: bool = False,
    ) -> RangeRequest:
        return cls(
            key=b64(key),
            range_end=None if end is None else b64(end),
            limit=limit or None,
            revision=revision or None,
            sort_order="DESCEND" if last else None,
            sort_target="KEY" if last else None,
            keys_only=keys_only or None,
        )


class PutRequest(_Message):
    key: str
    value: str


class DeleteRequest(_Message):
    key: str


class Op(_Message):
    request_range: RangeRequest | None = None
    request_put: PutRequest | None = None
    request_delete_range: DeleteRequest | None = None

    @classmethod
    def range(cls, request: RangeRequest) -> Op:
        return cls(request_range=request)

    @classmethod
    def put(cls, key: bytes, value: bytes) -> Op:
        return cls(request_put=PutRequest(key=b64(key), value=b64(value)))

    @classmethod
    def delete(cls, key: bytes) -> Op:
        return cls(request_delete_range=DeleteRequest(key=b64(key)))


class TxnRequest(_Message):
    compare: list[Compare]
    success: list[Op]
    failure: list[Op]


# --- responses --------------------------------------------------------------------------------


class Header(_Message):
    revision: int = 0


class KeyValue(_Message):
    key_b64: str = Field(alias="key")
    value_b64: str = Field(default="", alias="value")
    create_revision: int = 0
    mod_revision: int = 0

    @property
    def key(self) -> bytes:
        return base64.b64decode(self.key_b64)

    @property
    def value(self) -> bytes:
        return base64.b64decode(self.value_b64)


class RangeResponse(_Message):
    header: Header = Header()
    kvs: list[KeyValue] = []
    more: bool = False


class OpResponse(_Message):
    response_range: RangeResponse | None = None


class TxnResponse(_Message):
    header: Header = Header()
    succeeded: bool = False  # the gateway leaves `false` out
    responses: list[OpResponse] = []

    def ranges(self) -> list[RangeResponse]:
        """The answers of the branch's range requests, in order."""
        return [r.response_range for r in self.responses if r.response_range is not None]


class _GatewayError(_Message):
    code: int = 0
    message: str = ""
    error: str = ""


# --- the client -------------------------------------------------------------------------------


_NO_KEEPALIVE = httpx.Limits(max_keepalive_connections=0)


@dataclass(frozen=True)
class TlsFiles:
    """What an https:// etcd is trusted by (ca) and this client proves itself with (cert, key)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
        if self.cert is not None:
            ctx.load_cert_chain(str(self.cert), str(self.key) if self.key else None)
        return ctx


class Gateway:
    """One handle on an etcd cluster: its client endpoints, tried in turn within `timeout`."""

    def __init__(self, endpoints: Sequence[str], *, timeout: float, tls: TlsFiles | None = None) -> None:
        if not endpoints:
            raise ValueError("an etcd store needs at least one endpoint")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        # read once: a certificate that cannot be loaded is refused at once, named
        try:
            self._verify: ssl.SSLContext | bool = tls.context() if tls is not None else True
            self._no_client_cert = tls is None or tls.cert is None
        except (OSError, ssl.SSLError) as exc:
            raise CauError(
                f"the etcd store's TLS files cannot be used: {exc}",
                hint="check ca_file, cert_file and key_file under [store] options (PEM files)",
            ) from exc
        self._current = 0  # the endpoint that answered last
        # One client per event loop, and no connection kept alive between requests: the CLI runs
        # one loop per command step (asyncio.run), and a connection from an earlier, closed loop
        # cannot be used in the next one, nor closed any more. (Keep-alive saved 0.08 ms of a
        # 2.2 ms request to a local etcd, measured: not worth a connection outliving its loop.)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: httpx.AsyncClient | None = None

    @property
    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._http is None or self._loop is not loop:
            # the previous loop has ended, and with it the old client's connections
            self._http, self._loop = httpx.AsyncClient(limits=_NO_KEEPALIVE, verify=self._verify), loop
        return self._http

    async def close(self) -> None:
        if self._http is not None and self._loop is asyncio.get_running_loop():
            await self._http.aclose()
        self._http = self._loop = None

    async def range(self, request: RangeRequest) -> RangeResponse:
        return RangeResponse.model_validate(await self._post("/v3/kv/range", request))

    async def txn(self, request: TxnRequest) -> TxnResponse:
        return TxnResponse.model_validate(await self._post("/v3/kv/txn", request))

    async def _post(self, path: str, request: BaseModel) -> object:
        body = request.model_dump(mode="json", exclude_none=True)
        deadline = time.monotonic() + self.timeout
        # One endpoint that hangs (a stopped process, a dropped route) must not use up the whole
        # deadline: each try gets a share of it, so every endpoint gets its turn.
        per_try = max(1.0, self.timeout / len(self.endpoints))
        failures: dict[str, str] = {}
        while True:
            for i in range(len(self.endpoints)):
                index = (self._current + i) % len(self.endpoints)
                endpoint = self.endpoints[index]
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    response = await self._client.post(
                        endpoint + path, json=body, headers=_ASK_FOR_A_LEADER, timeout=min(left, per_try)
                    )
                except httpx.TimeoutException:
                    failures[endpoint] = "no answer in time"
                    continue
                except httpx.TransportError as exc:
                    failures[endpoint] = _describe(exc)
                    if self._no_client_cert and endpoint.startswith("https://") and _closed(exc):
                        # what an etcd with --client-cert-auth does to a client without one
                        failures[endpoint] = _TLS_REFUSED.format(f"the member closed the connection: {exc}")
                    continue
                except ssl.SSLError as exc:  # an alert after the handshake, read as such
                    failures[endpoint] = _TLS_REFUSED.format(exc)
                    continue
                if response.status_code == 200:
                    self._current = index
                    return response.json()
                error = _error_of(response)
                if error.code in _RETRY_CODES or "deadline exceeded" in error.message:
                    failures[endpoint] = error.message or error.error
                    continue
                raise CauError(
                    f"etcd at {endpoint} refused a request of the store: {error.message or error.error}"
                    f" (HTTP {response.status_code})",
                    hint="check the etcd members' logs; a value larger than etcd's --max-request-bytes "
                    "is refused",
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._unavailable(failures)
            await asyncio.sleep(min(0.1, left))  # a new leader may be elected meanwhile

    def _unavailable(self, failures: dict[str, str]) -> StoreUnavailable:
        detail = "; ".join(f"{e}: {failures.get(e, 'not tried in time')}" for e in self.endpoints)
        if any(f.startswith("TLS refused") for f in failures.values()):
            return StoreUnavailable(
                f"the etcd store refused this client's TLS ({detail})",
                hint="ca_file must be the CA that signed the members' certificates, and cert_file/"
                "key_file a client certificate signed by the CA of etcd's --trusted-ca-file",
            )
        unreachable = all(failures.get(e, "").startswith("cannot connect") for e in self.endpoints)
        if unreachable:
            return StoreUnavailable(
                f"the etcd store is unreachable: none of its endpoints answers ({detail})",
                hint="check that the etcd members run (`systemctl status etcd` on their hosts) and "
                "that this host reaches them at those addresses",
            )
        return StoreUnavailable(
            f"the etcd store has no quorum: no leader answered within {self.timeout:g} s ({detail})",
            hint="a majority of the etcd members must run and reach each other: start the members "
            "that are down and check the network between them (`etcdctl endpoint status --cluster`)",
        )


_TLS_REFUSED = "TLS refused ({}): check ca_file, cert_file and key_file"


def _closed(exc: httpx.TransportError) -> bool:
    return isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError) or "closed" in str(exc).lower()


def _describe(exc: httpx.TransportError) -> str:
    text = str(exc)
    if "CERTIFICATE" in text.upper() or "SSL" in text.upper() or "TLS" in text.upper():
        return _TLS_REFUSED.format(text)
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({exc or type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _error_of(response: httpx.Response) -> _GatewayError:
    try:
        return _GatewayError.model_validate_json(response.content)
    except ValidationError:
        return _GatewayError(message=response.text[:200] or f"HTTP {response.status_code}")
