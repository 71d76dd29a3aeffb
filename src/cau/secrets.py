"""Secrets a cluster's scripts and plug-ins need (database passwords, API tokens...), declared
once in the cluster's configuration, never written into a profile:

    [clusters.prod-db.secrets]
    file = "prod-db.secrets"      # KEY=VALUE lines; readable by its owner only (chmod 600)
    env = ["PROBE_PASSWORD"]      # or taken from the coordinator's own environment

Each secret reaches the pre/post-update scripts and the `command` and `hotfix` plug-ins as an
environment variable of that name (on an SSH node through the command's standard input, never
its command line, so no process listing or sudo log shows it). Every value is registered with
cau.redact, which masks it wherever cau writes or shows text: journal, reports, events, logs,
API answers and error messages.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cau.domain.profile import RunProfile
from cau.errors import ConfigError
from cau.redact import MIN_SECRET_LENGTH, register_secrets

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Names cau itself sets for scripts: a secret may not shadow them.
_RESERVED = frozenset({"CAU_RUN_ID", "CAU_PHASE", "CAU_NODE", "PATH", "HOME", "USER", "SHELL"})


class SecretsSpec(BaseModel):
    """Where a cluster's secrets come from (the `secrets` table of its configuration)."""

    model_config = ConfigDict(extra="forbid")

    file: Path | None = Field(None, description="A KEY=VALUE file readable by its owner only.")
    env: list[str] = Field([], description="Names of the coordinator's environment variables.")

    @field_validator("env")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for name in names:
            _check_name(name, "secrets.env")
        return names


def _check_name(name: str, where: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"{name!r} in {where} is not an environment variable name")
    if name in _RESERVED:
        raise ValueError(f"{name!r} in {where} is reserved (cau sets it, or the shell needs it)")


def _private(path: Path) -> None:
    """Refuse a secrets file another user could read or change: it would not be a secret."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            f"secrets file {path} does not exist",
            hint="create it with KEY=VALUE lines and `chmod 600` it, or remove `secrets.file`",
        ) from None
    except OSError as exc:
        raise ConfigError(f"secrets file {path}: cannot read: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"secrets file {path} is not a regular file")
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"secrets file {path} belongs to uid {info.st_uid}, not to the user running cau ({os.geteuid()})",
            hint=f"chown it to the user that runs cau: chown $(id -u) {path}",
        )
    if info.st_mode & 0o077:
        raise ConfigError(
            f"secrets file {path} is readable or writable by others (mode {stat.S_IMODE(info.st_mode):o})",
            hint=f"chmod 600 {path}",
        )


def load_secrets(spec: SecretsSpec | None, base_dir: Path | None, cluster: str) -> dict[str, str]:
    """The cluster's secrets by name, each value registered for masking. Nothing is read when the
    cluster declares none. Errors name the file or variable and never show a value."""
    if spec is None:
        return {}
    values: dict[str, str] = {}
    if spec.file is not None:
        path = spec.file if spec.file.is_absolute() or base_dir is None else base_dir / spec.file
        _private(path)
        try:
            parsed = dotenv_values(path, interpolate=False)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"secrets file {path}: cannot read: {exc}") from exc
        for name, value in parsed.items():
            try:
                _check_name(name, str(path))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            if value is None:
                raise ConfigError(f"secrets file {path}: {name} has no value (write {name}=VALUE)")
            values[name] = value
    for name in spec.env:
        value = os.environ.get(name)
        if value is None:
            raise ConfigError(
                f"cluster {cluster}: secret {name} is declared in secrets.env but not set in"
                " cau's environment",
                hint=f"export {name}=... before starting cau, or remove it from secrets.env",
            )
        values[name] = value
    short = sorted(name for name, value in values.items() if len(value) < MIN_SECRET_LENGTH)
    if short:
        raise ConfigError(
            f"cluster {cluster}: secret(s) {', '.join(short)} shorter than {MIN_SECRET_LENGTH} characters",
            hint="cau masks secrets by value everywhere it writes text; a value that short would mask"
            " ordinary words (and is too weak to be a secret)",
        )
    register_secrets(values.values())
    return values


# A reference to a secret in a profile's text (a plug-in argument, a script): `{{secret:NAME}}`.
# The run record stores profiles with every secret value replaced by its reference (sealed), so
# a resumed run finds the values again from the configuration, not from the store.
SECRET_REFERENCE = re.compile(r"\{\{\s*secret:([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return value


def seal(profile: RunProfile, secrets: Mapping[str, str]) -> RunProfile:
    """The profile with each secret's value replaced by its `{{secret:NAME}}` reference."""
    if not secrets:
        return profile
    ordered = sorted(secrets.items(), key=lambda kv: len(kv[1]), reverse=True)

    def one(text: str) -> str:
        for name, value in ordered:
            text = text.replace(value, "{{secret:" + name + "}}")
        return text

    return RunProfile.model_validate(_map_strings(profile.model_dump(mode="json"), one))


def unseal(profile: RunProfile, secrets: Mapping[str, str], cluster: str) -> RunProfile:
    """The profile with every `{{secret:NAME}}` replaced by the secret's value. A reference to a
    secret the cluster does not declare is an error naming it (nothing runs with a hole in it)."""
    data = profile.model_dump(mode="json")
    missing: set[str] = set()

    def one(text: str) -> str:
        def value(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in secrets:
                missing.add(name)
                return m.group(0)
            return secrets[name]

        return SECRET_REFERENCE.sub(value, text)

    resolved = _map_strings(data, one)
    if missing:
        declared = ", ".join(sorted(secrets)) or "none"
        raise ConfigError(
            f"the profile refers to secret(s) {', '.join(sorted(missing))}, which cluster {cluster} "
            f"does not declare (declared: {declared})",
            hint=f"add them to the secrets file or secrets.env of [clusters.{cluster}.secrets]",
        )
    return RunProfile.model_validate(resolved) if data != resolved else profile
