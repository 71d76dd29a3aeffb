"""Sign-in throttling: bounds password guessing, yet lets no one lock a user out by failing.

Two attacks must be slowed: many clients guessing one account's password, and one client guessing
many accounts'. Counting failures per address alone fails the users behind a shared proxy (one
guesser there locks everyone out); counting them per account alone lets anyone lock a user out by
failing on purpose. So the rule tells clients apart by what they have proven, not only where they
come from:

- A browser that signs in to an account gets a *device cookie* for that account (see
  `cau.web.device_cookie`). With it, its password attempts for that account are counted for that
  device alone (PAIR_LIMIT per WINDOW): failures anyone else causes never refuse it.
- Without one, an attempt is counted for its (account, address) pair (PAIR_LIMIT), its account
  (ACCOUNT_LIMIT: many clients guessing one account) and its address (ADDRESS_LIMIT: one client
  guessing many accounts), and refused while any of the three is full.
- Refused means 429 *before* the password is checked: answering a right guess differently from a
  wrong one while throttled would let guessing go on at full speed.
- API tokens are never throttled: 256 random bits cannot be guessed online, and a valid token
  always signs in.

The counts live in memory (one `cau serve` process), in sliding windows on a monotonic clock the
tests control. docs/security.md states the rule for operators.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from enum import StrEnum

from cau.ports import Clock

WINDOW = 900.0  # seconds a failure counts for
PAIR_LIMIT = 5  # failures of one device, or one account from one address
ACCOUNT_LIMIT = 10  # failures of one account from clients without its device cookie
ADDRESS_LIMIT = 20  # failures from one address without a device cookie, whatever the accounts
_SWEEP_AT = 10_000  # keys kept before expired ones are dropped (bounds memory under attack)


class Limit(StrEnum):
    DEVICE = "device"  # this browser's failures for this account
    PAIR = "pair"  # this account's failures from this address
    ACCOUNT = "account"  # this account's failures from clients it has not signed in from
    ADDRESS = "address"  # this address's failures, whatever the accounts


@dataclass(frozen=True)
class Attempt:
    """A password sign-in: the account named, where it comes from, and the id of the device cookie
    for that account it carries, if a valid one."""

    account: str
    address: str
    device: str | None = None


@dataclass(frozen=True)
class Refusal:
    limit: Limit
    retry_after: float  # seconds until the oldest counted failure leaves the window


class _Window:
    """Failure times per key, at most `limit` kept: enough to tell whether the key is full."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: dict[Hashable, deque[float]] = {}

    def retry_after(self, key: Hashable, now: float) -> float | None:
        times = self._times.get(key)
        if times is None or len(times) < self.limit:
            return None
        left = self.window - (now - times[0])
        return left if left > 0 else None

    def add(self, key: Hashable, now: float) -> bool:
        """Count a failure; True when it is the one that fills the key."""
        if len(self._times) >= _SWEEP_AT:
            self._sweep(now)
        times = self._times.setdefault(key, deque(maxlen=self.limit))
        was_full = self.retry_after(key, now) is not None
        times.append(now)
        return not was_full and self.retry_after(key, now) is not None

    def _sweep(self, now: float) -> None:
        for key in [k for k, t in self._times.items() if now - t[-1] >= self.window]:
            del self._times[key]


class SignInThrottle:
    def __init__(
        self,
        clock: Clock,
        *,
        window: float = WINDOW,
        pair_limit: int = PAIR_LIMIT,
        account_limit: int = ACCOUNT_LIMIT,
        address_limit: int = ADDRESS_LIMIT,
    ) -> None:
        self.clock = clock
        self._pairs = _Window(pair_limit, window)
        self._accounts = _Window(account_limit, window)
        self._addresses = _Window(address_limit, window)
        self._token_failures = _Window(address_limit, window)

    def _keys(self, attempt: Attempt) -> list[tuple[Limit, _Window, Hashable]]:
        # The account as a digest: a name is whatever a stranger sends, of any length.
        account = hashlib.sha256(attempt.account.encode()).digest()
        if attempt.device is not None:
            return [(Limit.DEVICE, self._pairs, ("device", account, attempt.device))]
        return [
            (Limit.PAIR, self._pairs, ("address", account, attempt.address)),
            (Limit.ACCOUNT, self._accounts, account),
            (Limit.ADDRESS, self._addresses, attempt.address),
        ]

    def refusal(self, attempt: Attempt) -> Refusal | None:
        """Why this attempt must not be checked now, or None: it may be."""
        now = self.clock.monotonic()
        for limit, window, key in self._keys(attempt):
            left = window.retry_after(key, now)
            if left is not None:
                return Refusal(limit, left)
        return None

    def failed(self, attempt: Attempt) -> list[Limit]:
        """Count a wrong password; returns the limits this failure filled (each worth one audit
        record when it starts, rather than one per refused attempt)."""
        now = self.clock.monotonic()
        return [limit for limit, window, key in self._keys(attempt) if window.add(key, now)]

    def token_failed(self, address: str) -> bool:
        """Count a wrong API token (never refused: it cannot be guessed); True while the address's
        wrong tokens are few enough to audit each one, so a flood cannot fill the audit trail."""
        now = self.clock.monotonic()
        if self._token_failures.retry_after(address, now) is not None:
            return False
        self._token_failures.add(address, now)
        return True
