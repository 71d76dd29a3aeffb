"""Tokens, users, browser sessions and stored profiles, changed one way for the CLI and the API:
every change is checked the same and audited with who made it."""

from __future__ import annotations

import re
from typing import Any

from cau.domain.access import Role
from cau.errors import ConfigError, NotFound
from cau.redact import mask_data
from cau.store.access import AccessStore, TokenInfo
from cau.views import SessionView

# Names of tokens and users: no spaces, colons or brackets, so that none can pass for another kind
# of principal in the audit trail ("token:NAME" is a token, "user@host (cli)" the command line).
ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def check_account_name(kind: str, name: str) -> None:
    if not ACCOUNT_NAME.fullmatch(name):
        raise ConfigError(
            f"{kind} name '{name}' is not allowed",
            hint="use 1 to 64 letters, digits and . _ @ - (starting with a letter or digit); names like "
            "'token:...' or '... (cli)' would pass for another kind of principal",
        )


class Administration:
    def __init__(self, access: AccessStore) -> None:
        self._access = access

    # tokens
    def create_token(self, name: str, role: Role, *, by: str) -> tuple[TokenInfo, str]:
        """A new token and its secret (shown once; only a hash of it is kept)."""
        check_account_name("token", name)
        info, secret = self._access.create_token(name, role, by=by)
        self._access.audit(by, "token.create", info.token_id, {"name": info.name, "role": role.value})
        return info, secret

    def list_tokens(self) -> list[TokenInfo]:
        return self._access.list_tokens()

    def revoke_token(self, token_id: str, *, by: str) -> None:
        if not self._access.revoke_token(token_id):
            raise NotFound(f"no active token '{token_id}'", hint="`cau token list` shows the tokens")
        self._access.audit(by, "token.revoke", token_id, {})

    # users (browser sign-in)
    def set_password(self, name: str, role: Role, password: str, *, by: str) -> None:
        check_account_name("user", name)
        self._access.set_password(name, role, password)
        self._access.audit(by, "user.password", name, {"role": role.value})

    def list_users(self) -> list[tuple[str, Role, Any]]:
        return self._access.list_users()

    def delete_user(self, name: str, *, by: str) -> None:
        if not self._access.delete_user(name):
            raise NotFound(f"no user '{name}'")
        self._access.audit(by, "user.delete", name, {})

    # browser sessions (signed in to the dashboard)
    def list_sessions(self) -> list[SessionView]:
        return self._access.list_sessions()

    def end_session(self, handle: str, *, by: str, client: str | None = None) -> SessionView:
        """End anyone's session by its handle; `client` is the address the request came from (the
        API's; the CLI's principal names its host)."""
        ended = self._access.end_session_by_handle(handle)
        if ended is None:
            raise NotFound(
                f"no active browser session '{handle}'",
                hint="`cau session list` (or GET /api/v1/sessions) shows the sessions and their handles",
            )
        detail = {"name": ended.name, "role": ended.role.value, "via": ended.via}
        if client:
            detail["client"] = client
        self._access.audit(by, "session.end", handle, detail)
        return ended

    # stored profiles (checked by the caller against RunProfile first)
    def put_profile(self, name: str, description: str, options: dict[str, Any], *, by: str) -> bool:
        """Create or replace; True when it was created. A secret's value written into a profile
        would be masked wherever the profile is shown (and an edit would save the mask back):
        refused, with what to write instead."""
        holding = sorted(k for k, v in options.items() if mask_data(v) != v)
        if holding:
            raise ConfigError(
                f"profile '{name}': option(s) {', '.join(holding)} hold the value of a declared secret",
                hint="write {{secret:NAME}} in plug-in arguments, or use $NAME in scripts (scripts get"
                " every secret of their cluster as an environment variable)",
            )
        created = self._access.put_profile(name, description, options, by=by)
        self._access.audit(by, "profile.create" if created else "profile.update", name, {"options": options})
        return created

    def delete_profile(self, name: str, *, by: str) -> None:
        if not self._access.delete_profile(name):
            raise NotFound(f"no stored profile '{name}'")
        self._access.audit(by, "profile.delete", name, {})
