"""Sign-in throttling through the real app, on both sign-in paths (the API's POST /api/v1/session and
the form's POST /login): it stops password guessing against one account from many addresses and
against many accounts from one address, yet a guesser behind a shared proxy address locks out no
user who has signed in from their browser before, and failures others cause never refuse a
correct credential proven by such a browser or by an API token. The rule: docs/security.md."""

from __future__ import annotations

import asyncio
import re
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from typer.testing import CliRunner

from cau.cli.app import app as cli_app
from cau.domain.access import Role
from cau.service import Service
from cau.web.app import create_app
from cau.web.client_address import client_address, parse_trusted_proxies
from cau.web.context import Settings
from cau.web.throttle import (
    _SWEEP_AT,
    ACCOUNT_LIMIT,
    ADDRESS_LIMIT,
    PAIR_LIMIT,
    WINDOW,
    Attempt,
    SignInThrottle,
)
from tests.support import write_cluster
from tests.web.conftest import quick_spec

PASSWORDS = {"alice": "alice's long password", "bob": "bob's long password", "carol": "carol's password!"}
PROXY = "10.9.0.1"  # a shared address: many users and one guesser behind it


class ManualClock:
    """The service's clock, moved by the test: the throttle's windows and the device cookies' age."""

    def __init__(self) -> None:
        self.seconds = 1000.0

    def monotonic(self) -> float:
        return self.seconds

    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.seconds)

    async def sleep(self, seconds: float) -> None:
        self.seconds += seconds

    def advance(self, seconds: float) -> None:
        self.seconds += seconds


@dataclass
class Site:
    svc: Service
    app: Any
    clock: ManualClock
    loop: asyncio.AbstractEventLoop
    token: str  # an admin API token
    browsers: list[Browser] = field(default_factory=list)

    def browser(self, address: str, *, forwarded_for: str | None = None) -> Browser:
        """A client with its own cookie jar, connecting from `address`."""
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
        client = httpx.AsyncClient(transport=transport, base_url="http://cau.test", headers=headers)
        browser = Browser(self, client)
        self.browsers.append(browser)
        return browser

    def audit(self, action: str) -> list[dict[str, Any]]:
        got = self.loop.run_until_complete(
            self.browsers[0].client.get(
                f"/api/v1/audit?action={action}", headers={"Authorization": f"Bearer {self.token}"}
            )
        )
        assert got.status_code == 200, got.text
        entries: list[dict[str, Any]] = got.json()
        return entries


@dataclass
class Browser:
    site: Site
    client: httpx.AsyncClient

    def _run(self, coro: Any) -> httpx.Response:
        response: httpx.Response = self.site.loop.run_until_complete(coro)
        return response

    def api(self, name: str, password: str) -> httpx.Response:
        """Sign in through the API: 200, 401 or 429."""
        return self._run(self.client.post("/api/v1/session", json={"name": name, "password": password}))

    def form(self, name: str, password: str) -> httpx.Response:
        """Sign in through the sign-in page: 303 to the dashboard, or the page again with 401 or 429."""

        async def go() -> httpx.Response:
            page = await self.client.get("/login")
            match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            assert match, page.text
            form = {"csrf_token": match.group(1), "next": "/clusters", "name": name, "password": password}
            return await self.client.post("/login", data=form)

        return self._run(go())

    def token(self, token: str) -> httpx.Response:
        return self._run(self.client.post("/api/v1/session", json={"token": token}))

    def sign_in(self, name: str, password: str, path: str) -> int:
        return (self.api if path == "api" else self.form)(name, password).status_code


OK = {"api": 200, "form": 303}


def make_site(tmp_path: Path, settings: Settings | None = None) -> Iterator[Site]:
    config = write_cluster(tmp_path, quick_spec(2000), name="quick")
    clock = ManualClock()
    svc = Service(tmp_path / "data", config, clock=clock)
    for name, password in PASSWORDS.items():
        svc.access.set_password(name, Role.VIEWER, password)
    token = svc.access.create_token("admin", Role.ADMIN, by="test")[1]
    loop = asyncio.new_event_loop()
    site = Site(svc, create_app(svc, settings), clock, loop, token)
    site.browser("127.0.0.1")  # the admin's, for reading the audit trail
    yield site
    for browser in site.browsers:
        loop.run_until_complete(browser.client.aclose())
    loop.run_until_complete(site.app.state.ctx.worker.shutdown())
    loop.close()
    svc.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    yield from make_site(tmp_path)


@pytest.mark.parametrize("path", ["api", "form"])
def test_guessing_one_account_from_many_addresses_is_stopped_for_them_all(site: Site, path: str) -> None:
    # A botnet: each address guesses alice's password a couple of times, under the per-pair and
    # per-address limits, until her account has had ACCOUNT_LIMIT failures.
    for i in range(ACCOUNT_LIMIT):
        assert site.browser(f"10.1.0.{i}").sign_in("alice", f"guess {i}", path) == 401
    # The next guess, from yet another address, is refused before the password is checked: even
    # the right password gets 429, so the guessers cannot tell a right guess from a wrong one.
    fresh = site.browser("10.1.1.1")
    refused = fresh.api("alice", PASSWORDS["alice"])
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_attempts"
    assert "'alice'" in refused.json()["error"]["message"]
    assert 0 < int(refused.headers["retry-after"]) <= WINDOW
    page = fresh.form("alice", PASSWORDS["alice"])
    assert page.status_code == 429 and 0 < int(page.headers["retry-after"]) <= WINDOW
    assert "too many failed sign-ins as &#39;alice&#39;" in page.text
    # Other accounts are not affected, and the account is audited once as throttled.
    assert site.browser("10.1.1.2").sign_in("bob", PASSWORDS["bob"], path) == OK[path]
    throttled = site.audit("signin.throttled")
    assert [(e["actor"], e["detail"]["limit"]) for e in throttled] == [("alice", "account")]
    # Once the failures leave the window, the account opens again.
    site.clock.advance(WINDOW)
    assert site.browser("10.1.1.3").sign_in("alice", PASSWORDS["alice"], path) == OK[path]


@pytest.mark.parametrize("path", ["api", "form"])
def test_guessing_many_accounts_from_one_address_is_stopped(site: Site, path: str) -> None:
    guesser = site.browser("10.2.0.1")
    # One wrong guess per account (names that exist or not alike), under every per-account limit.
    for i in range(ADDRESS_LIMIT):
        assert guesser.sign_in(f"user{i}", "password1", path) == 401
    for name, password in PASSWORDS.items():  # right or wrong, no more guesses from there
        assert guesser.sign_in(name, password, path) == 429
    refused = guesser.api("dave", "password1")
    assert "your address (10.2.0.1)" in refused.json()["error"]["message"]
    # The same accounts from another address are unaffected.
    assert site.browser("10.2.0.2").sign_in("alice", PASSWORDS["alice"], path) == OK[path]


@pytest.mark.parametrize("path", ["api", "form"])
def test_a_guesser_behind_a_shared_proxy_locks_out_no_user_who_signed_in_there_before(
    site: Site, path: str
) -> None:
    alice, bob = site.browser(PROXY), site.browser(PROXY)
    assert alice.sign_in("alice", PASSWORDS["alice"], path) == OK[path]
    assert bob.sign_in("bob", PASSWORDS["bob"], path) == OK[path]
    # The guesser, at the same address, fills every limit it can: the address's, and alice's and
    # bob's (their accounts' and their accounts' from this address).
    guesser = site.browser(PROXY)
    names = ["alice", "bob", *(f"user{i}" for i in range(ADDRESS_LIMIT))]
    for i in range(ADDRESS_LIMIT):  # PAIR_LIMIT guesses at alice, then at bob, then at others
        assert guesser.sign_in(names[i // PAIR_LIMIT], f"guess {i}", path) == 401
    for i in range(ACCOUNT_LIMIT - PAIR_LIMIT):
        assert site.browser(f"10.3.0.{i}").sign_in("alice", f"guess {i}", path) == 401
    assert site.browser("10.3.0.99").sign_in("alice", PASSWORDS["alice"], path) == 429
    assert guesser.sign_in("alice", PASSWORDS["alice"], path) == 429
    assert guesser.sign_in("carol", PASSWORDS["carol"], path) == 429
    # alice and bob, whose browsers have signed in before, still sign in from the shared address.
    assert alice.sign_in("alice", PASSWORDS["alice"], path) == OK[path]
    assert bob.sign_in("bob", PASSWORDS["bob"], path) == OK[path]
    # So does carol from her own address: the guesser's address is not hers.
    assert site.browser("10.3.1.1").sign_in("carol", PASSWORDS["carol"], path) == OK[path]


@pytest.mark.parametrize("path", ["api", "form"])
def test_a_browser_s_own_failures_are_limited_and_nobody_else_s(site: Site, path: str) -> None:
    alice = site.browser("10.4.0.1")
    assert alice.sign_in("alice", PASSWORDS["alice"], path) == OK[path]
    for i in range(ACCOUNT_LIMIT):  # others fail as alice: not counted against her browser
        assert site.browser(f"10.4.1.{i}").sign_in("alice", f"guess {i}", path) == 401
    for _ in range(PAIR_LIMIT - 1):  # her own typos are
        assert alice.sign_in("alice", "a typo", path) == 401
    assert alice.sign_in("alice", PASSWORDS["alice"], path) == OK[path]
    assert alice.sign_in("alice", "a typo", path) == 401
    # PAIR_LIMIT failures from her browser: it waits too (a stolen device cookie guesses no faster)
    assert alice.sign_in("alice", PASSWORDS["alice"], path) == 429
    site.clock.advance(WINDOW)
    assert alice.sign_in("alice", PASSWORDS["alice"], path) == OK[path]


def test_a_device_cookie_counts_only_for_its_account_and_only_when_genuine(site: Site) -> None:
    alice = site.browser("10.5.0.1")
    assert alice.api("alice", PASSWORDS["alice"]).status_code == 200
    devices = site.app.state.ctx.devices
    value = alice.client.cookies[devices.name("alice")]
    for i in range(ACCOUNT_LIMIT):
        assert site.browser(f"10.5.1.{i}").api("bob", f"guess {i}").status_code == 401
    # alice's cookie, moved to bob's name, or altered, proves nothing about bob.
    stolen = site.browser("10.5.0.2")
    stolen.client.cookies.set(devices.name("bob"), value)
    assert stolen.api("bob", PASSWORDS["bob"]).status_code == 429
    forged = site.browser("10.5.0.3")
    issued, device, mac = value.split(".")
    forged.client.cookies.set(devices.name("bob"), f"{issued}.{device}.{'0' * len(mac)}")
    assert forged.api("bob", PASSWORDS["bob"]).status_code == 429
    # And it expires: after its lifetime, alice's browser is a stranger again.
    for i in range(ACCOUNT_LIMIT):
        assert site.browser(f"10.5.2.{i}").api("alice", f"guess {i}").status_code == 401
    assert alice.api("alice", PASSWORDS["alice"]).status_code == 200
    site.clock.advance(timedelta(days=91).total_seconds())
    for i in range(ACCOUNT_LIMIT):
        assert site.browser(f"10.5.3.{i}").api("alice", f"guess {i}").status_code == 401
    assert alice.api("alice", PASSWORDS["alice"]).status_code == 429


def test_a_valid_api_token_always_signs_in(site: Site) -> None:
    guesser = site.browser("10.6.0.1")
    for i in range(ADDRESS_LIMIT):
        assert guesser.api(f"user{i}", "password1").status_code == 401
    assert guesser.api("alice", PASSWORDS["alice"]).status_code == 429
    # Wrong tokens are answered, never throttled (256 random bits cannot be guessed) ...
    for _ in range(ADDRESS_LIMIT + 5):
        assert guesser.token("cau_nope_nope").status_code == 401
    # ... and a valid one signs in from the throttled address.
    assert guesser.token(site.token).status_code == 200
    # A flood of wrong tokens fills no more of the audit trail than ADDRESS_LIMIT records.
    assert len([e for e in site.audit("signin.failed") if e["actor"] == "token"]) == ADDRESS_LIMIT


def test_x_forwarded_for_is_ignored_unless_its_proxy_is_trusted(site: Site) -> None:
    # Without --trusted-proxy, a client cannot pose as many by writing the header.
    for i in range(ADDRESS_LIMIT):
        assert site.browser("10.7.0.1", forwarded_for=f"192.0.2.{i}").api(f"u{i}", "x").status_code == 401
    blocked = site.browser("10.7.0.1", forwarded_for="192.0.2.200").api("alice", "x")
    assert blocked.status_code == 429 and "(10.7.0.1)" in blocked.json()["error"]["message"]


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[Site]:
    yield from make_site(tmp_path, Settings(trusted_proxies=parse_trusted_proxies(["10.8.0.0/24"])))


def test_behind_a_trusted_proxy_each_client_is_its_forwarded_address(proxied: Site) -> None:
    # Clients behind the proxy; what they wrote themselves (left of what the proxy added) is ignored.
    for i in range(ADDRESS_LIMIT):
        guess = proxied.browser("10.8.0.5", forwarded_for=f"203.0.113.{i}, 198.51.100.7")
        assert guess.api(f"u{i}", "x").status_code == 401
    guesser = proxied.browser("10.8.0.5", forwarded_for="198.51.100.7")
    refused = guesser.api("alice", PASSWORDS["alice"])
    assert refused.status_code == 429 and "(198.51.100.7)" in refused.json()["error"]["message"]
    # Another client of the same proxy (and of a second proxy in the chain) is not that guesser.
    other = proxied.browser("10.8.0.5", forwarded_for="198.51.100.8, 10.8.0.9")
    assert other.api("alice", PASSWORDS["alice"]).status_code == 200
    # A peer that is not a trusted proxy is itself the client, whatever it forwards.
    direct = proxied.browser("192.0.2.50", forwarded_for="198.51.100.7")
    assert direct.api("alice", PASSWORDS["alice"]).status_code == 200
    failed = proxied.audit("signin.failed")
    assert {e["detail"]["client"] for e in failed} == {"198.51.100.7"}


def test_serve_refuses_a_trusted_proxy_that_is_not_an_address() -> None:
    result = CliRunner().invoke(cli_app, ["serve", "--trusted-proxy", "proxy.example"])
    assert result.exit_code == 2
    assert "'proxy.example' is not an IP address or network" in result.output


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("10.8.0.5", ["198.51.100.7"], "198.51.100.7"),
        ("10.8.0.5", ["203.0.113.1, 198.51.100.7", "10.8.0.9"], "198.51.100.7"),  # split across headers
        ("10.8.0.5", ["203.0.113.1, unknown"], "10.8.0.5"),  # not an address: the proxy, not a name
        ("10.8.0.5", ["10.8.0.6"], "10.8.0.5"),  # only proxies: the nearest one
        ("10.8.0.5", [], "10.8.0.5"),
        ("192.0.2.1", ["198.51.100.7"], "192.0.2.1"),  # not from a trusted proxy: the header is a claim
    ],
)
def test_the_client_behind_trusted_proxies(peer: str, forwarded: list[str], client: str) -> None:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    request = Request({"type": "http", "client": (peer, 1), "headers": headers})
    assert client_address(request, parse_trusted_proxies(["10.8.0.0/24"])) == client


def test_what_the_throttle_keeps_is_bounded_whatever_strangers_send() -> None:
    # Long names from many addresses, then, long after, more: memory neither holds the names nor
    # the failures that have left the window.
    clock = ManualClock()
    throttle = SignInThrottle(clock)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(200):
            throttle.failed(Attempt(f"{i}" + "x" * 100_000, f"10.{i // 250}.{i % 250}.1"))
        held = tracemalloc.get_traced_memory()[0] - before
        assert held < 1_000_000, held  # not the 20 MB of names
        clock.advance(WINDOW)
        for i in range(_SWEEP_AT + 1):
            throttle.failed(Attempt(f"user{i}", f"10.200.{i // 250}.{i % 250}"))
        clock.advance(WINDOW)
        before = tracemalloc.get_traced_memory()[0]
        throttle.failed(Attempt("one more", "10.250.0.1"))  # sweeps what expired
        assert tracemalloc.get_traced_memory()[0] < before
    finally:
        tracemalloc.stop()
