"""Who may use the API and dashboard, what they did, and the run profiles kept in the store.

Kept in the same SQLite file as runs and journals (schema 2), through the `SqliteStore`'s
connection, so one backup holds everything. Secrets are never stored: API tokens and browser
sessions as SHA-256 of a 256-bit random secret (a fast hash is enough for secrets that cannot be
guessed), passwords with scrypt and a random salt. The one secret kept is the server's key for
signing device cookies (`server_key`), which grants no access.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from cau.domain.access import Role
from cau.errors import NameTaken
from cau.redact import redact_data
from cau.store.sqlite import SqliteFile
from cau.views import SessionView

TOKEN_PREFIX = "cau_"
# scrypt cost: 2**14 x 8 x 1 takes about 50 ms and 16 MB; enough for a sign-in form.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(got.hex(), digest)


@dataclass(frozen=True)
class Principal:
    """Who is asking: a token's or a user's name and role."""

    name: str
    role: Role
    via: str  # "token" | "session"
    csrf: str | None = None  # browser sessions only
    token_id: str | None = None  # the API token it signed in with, if it did
    session: str | None = None  # a browser session's public handle (SessionView.handle)


class TokenInfo(BaseModel):
    """An API token as anyone may see it (never its secret): the API's view of it too."""

    model_config = ConfigDict(frozen=True)

    token_id: str
    name: str
    role: Role
    created: datetime
    created_by: str
    last_used: datetime | None
    revoked: datetime | None


@dataclass(frozen=True)
class AuditEntry:
    id: int
    ts: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class StoredProfile:
    name: str
    description: str
    options: dict[str, Any]
    created: datetime
    updated: datetime
    updated_by: str


class AccessStore:
    """Synchronous (the web's authentication calls it on every request; each call is a few
    milliseconds on its own connection to the store's file)."""

    def __init__(self, store: SqliteFile) -> None:
        self._store = store
        self._db = store.connection

    def close(self) -> None:
        self._store.close()

    # --- API tokens ------------------------------------------------------------------------------

    def create_token(self, name: str, role: Role, *, by: str) -> tuple[TokenInfo, str]:
        """A new token; returns its record and the secret, which is shown once and never again."""
        token_id = secrets.token_hex(4)
        secret = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        now = _now()
        with self._store.transaction():
            taken = self._db.execute(
                "SELECT token_id FROM api_tokens WHERE name=? AND revoked IS NULL", (name,)
            ).fetchone()
            if taken is not None:  # checked in the transaction that inserts: no race
                raise NameTaken(
                    f"an active API token is named '{name}' already ({taken['token_id']})",
                    hint="choose another --name, or revoke that token first",
                )
            self._db.execute(
                "INSERT INTO api_tokens (token_id, name, role, secret_hash, created, created_by)"
                " VALUES (?,?,?,?,?,?)",
                (token_id, name, role.value, secret_hash(secret), _ts(now), by),
            )
        info = TokenInfo(
            token_id=token_id, name=name, role=role, created=now, created_by=by, last_used=None, revoked=None
        )
        return info, secret

    @staticmethod
    def _token(row: Any) -> TokenInfo:
        return TokenInfo(
            token_id=row["token_id"],
            name=row["name"],
            role=Role(row["role"]),
            created=datetime.fromisoformat(row["created"]),
            created_by=row["created_by"],
            last_used=datetime.fromisoformat(row["last_used"]) if row["last_used"] else None,
            revoked=datetime.fromisoformat(row["revoked"]) if row["revoked"] else None,
        )

    def list_tokens(self) -> list[TokenInfo]:
        rows = self._db.execute("SELECT * FROM api_tokens ORDER BY created").fetchall()
        return [self._token(r) for r in rows]

    def revoke_token(self, token_id: str) -> bool:
        with self._store.transaction():
            cur = self._db.execute(
                "UPDATE api_tokens SET revoked=? WHERE token_id=? AND revoked IS NULL",
                (_ts(_now()), token_id),
            )
        return cur.rowcount == 1

    def check_token(self, secret: str) -> Principal | None:
        if not secret.startswith(TOKEN_PREFIX):
            return None
        row = self._db.execute(
            "SELECT * FROM api_tokens WHERE secret_hash=? AND revoked IS NULL", (secret_hash(secret),)
        ).fetchone()
        if row is None:
            return None
        with self._store.transaction():
            self._db.execute(
                "UPDATE api_tokens SET last_used=? WHERE token_id=?", (_ts(_now()), row["token_id"])
            )
        return Principal(f"token:{row['name']}", Role(row["role"]), "token", token_id=row["token_id"])

    # --- users with a password (browser sign-in) -------------------------------------------------

    def set_password(self, name: str, role: Role, password: str) -> None:
        with self._store.transaction():
            self._db.execute(
                "INSERT INTO users (name, role, password_hash, updated) VALUES (?,?,?,?)"
                " ON CONFLICT (name) DO UPDATE SET role=excluded.role,"
                " password_hash=excluded.password_hash, updated=excluded.updated",
                (name, role.value, hash_password(password), _ts(_now())),
            )

    def check_password(self, name: str, password: str) -> Principal | None:
        row = self._db.execute("SELECT * FROM users WHERE name=?", (name,)).fetchone()
        if row is None:
            hash_password(password)  # same cost whether the user exists or not
            return None
        if not check_password(password, row["password_hash"]):
            return None
        return Principal(name, Role(row["role"]), "session")

    def list_users(self) -> list[tuple[str, Role, datetime]]:
        rows = self._db.execute("SELECT name, role, updated FROM users ORDER BY name").fetchall()
        return [(r["name"], Role(r["role"]), datetime.fromisoformat(r["updated"])) for r in rows]

    def delete_user(self, name: str) -> bool:
        with self._store.transaction():
            cur = self._db.execute("DELETE FROM users WHERE name=?", (name,))
            self._db.execute("DELETE FROM web_sessions WHERE principal=?", (name,))
        return cur.rowcount == 1

    # --- browser sessions ------------------------------------------------------------------------

    def create_session(
        self, who: Principal, *, hours: float = 12.0, client: str | None = None
    ) -> tuple[str, Principal]:
        """A session for a signed-in browser (from `client`, its address); returns the cookie
        value (only its hash is kept) and the session's principal."""
        cookie = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        # Random, not derived from the cookie: knowing a handle tells nothing about the secret.
        handle = secrets.token_hex(6)
        now = _now()
        with self._store.transaction():
            self._db.execute("DELETE FROM web_sessions WHERE expires < ?", (_ts(now),))
            self._db.execute(
                "INSERT INTO web_sessions (session_hash, principal, role, csrf, created, expires, token_id,"
                " handle, client) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    secret_hash(cookie),
                    who.name,
                    who.role.value,
                    csrf,
                    _ts(now),
                    _ts(now + timedelta(hours=hours)),
                    who.token_id,
                    handle,
                    client,
                ),
            )
        return cookie, Principal(who.name, who.role, "session", csrf, who.token_id, handle)

    def _held_role(self, row: Any) -> Role | None:
        """The role a session's credential gives it now; None when the session has ended: the
        token it signed in with is revoked, or its user is deleted or has a new password or role
        since. A session never holds more than its credential."""
        if row["token_id"] is not None:
            source = self._db.execute(
                "SELECT role FROM api_tokens WHERE token_id=? AND revoked IS NULL", (row["token_id"],)
            ).fetchone()
        elif row["principal"].startswith("token:"):
            source = None  # a token's session from before sessions knew their token: unverifiable
        else:
            source = self._db.execute(
                "SELECT role FROM users WHERE name=? AND updated <= ?", (row["principal"], row["created"])
            ).fetchone()
        return None if source is None else Role(source["role"])

    def check_session(self, cookie: str) -> Principal | None:
        """The session's principal with the rights its credential has now (see `_held_role`)."""
        row = self._db.execute(
            "SELECT * FROM web_sessions WHERE session_hash=? AND expires > ?",
            (secret_hash(cookie), _ts(_now())),
        ).fetchone()
        if row is None:
            return None
        role = self._held_role(row)
        if role is None:
            self.end_session(cookie)
            return None
        return Principal(row["principal"], role, "session", row["csrf"], row["token_id"], row["handle"])

    def end_session(self, cookie: str) -> None:
        with self._store.transaction():
            self._db.execute("DELETE FROM web_sessions WHERE session_hash=?", (secret_hash(cookie),))

    def _session_view(self, row: Any, role: Role) -> SessionView:
        token = row["token_id"] is not None or row["principal"].startswith("token:")
        return SessionView(
            handle=row["handle"],
            name=row["principal"],
            role=role,
            via="token" if token else "password",
            token_id=row["token_id"],
            signed_in=datetime.fromisoformat(row["created"]),
            expires=datetime.fromisoformat(row["expires"]),
            client=row["client"],
        )

    def list_sessions(self) -> list[SessionView]:
        """The sessions still in force (not expired, their credential still good), oldest first."""
        rows = self._db.execute(
            "SELECT * FROM web_sessions WHERE expires > ? ORDER BY created", (_ts(_now()),)
        ).fetchall()
        held = ((row, self._held_role(row)) for row in rows)
        return [self._session_view(row, role) for row, role in held if role is not None]

    def end_session_by_handle(self, handle: str) -> SessionView | None:
        """End a session in force by its public handle; returns what it was, or None if no
        session in force has that handle."""
        with self._store.transaction():
            row = self._db.execute(
                "SELECT * FROM web_sessions WHERE handle=? AND expires > ?", (handle, _ts(_now()))
            ).fetchone()
            role = None if row is None else self._held_role(row)
            if row is not None:  # ended already in effect (expired credential) or now: gone either way
                self._db.execute("DELETE FROM web_sessions WHERE handle=?", (handle,))
        return None if row is None or role is None else self._session_view(row, role)

    # --- server keys ---------------------------------------------------------------------------

    def server_key(self, purpose: str) -> bytes:
        """A random 256-bit key for `purpose`, made once and kept in the store's meta table, so
        what it signs (device cookies) outlives a restart of `cau serve`. Whoever reads the store
        could forge with it, but could read the password hashes too."""
        name = f"key:{purpose}"
        with self._store.transaction():
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (name, secrets.token_hex(32)),
            )
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (name,)).fetchone()
        return bytes.fromhex(row["value"])

    # --- audit trail -----------------------------------------------------------------------------

    def audit(self, actor: str, action: str, target: str, detail: dict[str, Any] | None = None) -> None:
        with self._store.transaction():
            self._db.execute(
                "INSERT INTO audit (ts, actor, action, target, detail) VALUES (?,?,?,?,?)",
                # redacted here, whatever the caller passes: a profile's script may carry a secret
                (_ts(_now()), actor, action, target, json.dumps(redact_data(detail or {}), default=str)),
            )

    def audit_entries(self, *, limit: int = 200, action: str | None = None) -> list[AuditEntry]:
        sql, args = "SELECT * FROM audit", []
        if action:
            sql += " WHERE action=?"
            args.append(action)
        rows = self._db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [
            AuditEntry(
                id=r["id"],
                ts=datetime.fromisoformat(r["ts"]),
                actor=r["actor"],
                action=r["action"],
                target=r["target"],
                detail=json.loads(r["detail"]),
            )
            for r in rows
        ]

    # --- stored run profiles ---------------------------------------------------------------------

    @staticmethod
    def _profile(row: Any) -> StoredProfile:
        return StoredProfile(
            name=row["name"],
            description=row["description"],
            options=json.loads(row["options"]),
            created=datetime.fromisoformat(row["created"]),
            updated=datetime.fromisoformat(row["updated"]),
            updated_by=row["updated_by"],
        )

    def list_profiles(self) -> list[StoredProfile]:
        return [self._profile(r) for r in self._db.execute("SELECT * FROM profiles ORDER BY name")]

    def get_profile(self, name: str) -> StoredProfile | None:
        row = self._db.execute("SELECT * FROM profiles WHERE name=?", (name,)).fetchone()
        return None if row is None else self._profile(row)

    def put_profile(self, name: str, description: str, options: dict[str, Any], *, by: str) -> bool:
        """Create or replace; returns True when it was created."""
        now = _ts(_now())
        with self._store.transaction():
            existed = self._db.execute("SELECT 1 FROM profiles WHERE name=?", (name,)).fetchone() is not None
            self._db.execute(
                "INSERT INTO profiles (name, description, options, created, updated, updated_by)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT (name) DO UPDATE SET description=excluded.description,"
                " options=excluded.options, updated=excluded.updated, updated_by=excluded.updated_by",
                (name, description, json.dumps(options), now, now, by),
            )
        return not existed

    def delete_profile(self, name: str) -> bool:
        with self._store.transaction():
            cur = self._db.execute("DELETE FROM profiles WHERE name=?", (name,))
        return cur.rowcount == 1
