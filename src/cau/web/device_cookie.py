"""Device cookies: proof that a browser has signed in to an account before.

A browser that signs in with an account's password gets one cookie for that account (its name is
derived from the account's, so one browser can hold several). The sign-in throttle counts that
browser's failures apart from everyone else's (`cau.web.throttle`), so failures an attacker
causes never lock it out. The value is `issued.device.mac`: `device` is a random id, and `mac` an
HMAC-SHA256 over the account, the time and the id with a key kept in the store; a cookie cannot
be forged without the key, nor moved to another account. It grants nothing but that exemption:
the password is still checked, and the cookie's own failures are still limited.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

COOKIE_PREFIX = "cau_device_"
LIFETIME = timedelta(days=90)  # renewed at every sign-in


class DeviceCookies:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @staticmethod
    def name(account: str) -> str:
        return COOKIE_PREFIX + hashlib.sha256(account.encode()).hexdigest()[:16]

    def _mac(self, account: str, issued: int, device: str) -> str:
        message = f"{account}\n{issued}\n{device}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def issue(self, account: str, now: datetime, device: str | None = None) -> str:
        """A cookie value for `account`; `device` keeps a known browser's id across renewals."""
        device = device or secrets.token_urlsafe(12)
        issued = int(now.timestamp())
        return f"{issued}.{device}.{self._mac(account, issued, device)}"

    def verify(self, account: str, value: str | None, now: datetime) -> str | None:
        """The device id of a genuine, unexpired cookie for `account`; None for anything else."""
        if not value:
            return None
        parts = value.split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            return None
        issued, device, mac = int(parts[0]), parts[1], parts[2]
        if not hmac.compare_digest(mac, self._mac(account, issued, device)):
            return None
        age = now.timestamp() - issued
        return device if 0 <= age < LIFETIME.total_seconds() else None
