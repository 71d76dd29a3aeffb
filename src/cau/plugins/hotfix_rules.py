"""The hotfix plug-in's rules (CAU's Microsoft.HotfixPlugin, for Linux): pure planning, no I/O.

The hotfix root folder, reachable by every node and the coordinator:

    <root>/
       hotfix.toml              the rules (required)
       SHA256SUMS               `sha256sum` manifest of every file (checked before anything runs)
       _all/                    applied to every node
          fix-1.deb  fix-2.sh
          firmware/             a folder rule's folder (may also be under a node's folder)
             bios.cap
       node1/                   applied only to node1 (its name or short name, any case)
          node1-only.deb

Files elsewhere are not installed (they are reported as skipped, with the reason).

hotfix.toml:

    installer_timeout = "30m"          # default for every rule

    [[rules]]
    match = "*.deb"                    # glob on the file name (or a list of globs)
    command = "dpkg -i $update$"       # run by sh on the node; $update$ = the file's path, quoted
    success = [0]                      # exit-code classes: success, success_restart_needed,
    already_installed = []             #   failed_restart_needed, already_installed, not_applicable
                                       # any other exit code: failed, no restart
    [[rules]]
    folder = "firmware"                # files directly in a folder named firmware
    match = "*.cap"
    command = "fwupdtool install $update$"
    success_restart_needed = [0]       # `success` then defaults to [] (else it is [0])
    always_restart = false             # CAU's alwaysReboot: every success needs a restart
    timeout = "1h"

A top-level file (directly in _all/ or the node's folder) takes the first rule without `folder`
whose `match` fits its name; a file in a sub-folder takes the first rule for that folder. Exit
codes are 0..255 on Linux: Windows installer codes such as 3010 cannot occur.
"""

from __future__ import annotations

import re
import shlex
import stat
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cau.domain.durations import Duration
from cau.domain.validation import describe_errors
from cau.errors import ConfigError
from cau.plugins.command import PLACEHOLDER
from cau.plugins.exitcodes import ExitClass, ExitCodes

CONFIG_NAME = "hotfix.toml"
MANIFEST_NAME = "SHA256SUMS"
ALL_FOLDER = "_all"
DEFAULT_TIMEOUT = timedelta(minutes=30)

_EXIT_CLASSES = (
    "success",
    "success_restart_needed",
    "failed_restart_needed",
    "already_installed",
    "not_applicable",
)


class HotfixRule(ExitCodes):
    """How to install one kind of file, and what its installer's exit codes mean."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None  # shown in reports; defaults to the match/folder
    match: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    folder: str | None = None
    command: str
    always_restart: bool = False
    timeout: Duration | None = None

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("match"), str):
            data["match"] = [data["match"]]
        if "match" not in data and data.get("folder") is None:
            raise ValueError('a rule without `folder` needs `match` (e.g. match = "*.deb")')
        if "success" not in data:
            # success defaults to [0], unless 0 is given another meaning
            taken = {c for k in _EXIT_CLASSES[1:] for c in data.get(k) or [] if isinstance(c, int)}
            data["success"] = [] if 0 in taken else [0]
        return data

    @field_validator("match")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            if not pattern or "/" in pattern:
                raise ValueError(f"{pattern!r}: a match is a glob on the file name (no '/')")
        return patterns

    @field_validator("folder")
    @classmethod
    def _folder(cls, folder: str | None) -> str | None:
        if folder is not None and (
            not folder or "/" in folder or folder in (".", "..") or folder.lower() == ALL_FOLDER
        ):
            raise ValueError(f"{folder!r}: a folder rule names one folder (not '/', '.', '..' or _all)")
        return folder

    @field_validator("command")
    @classmethod
    def _command(cls, command: str) -> str:
        check_template(command)
        return command

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("the timeout must be positive")
        return value

    @model_validator(mode="after")
    def _can_succeed(self) -> HotfixRule:
        if not self.success and not self.success_restart_needed:
            raise ValueError("no exit code means success (set success or success_restart_needed)")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        globs = ", ".join(self.match)
        return f"{self.folder}/{globs}" if self.folder else globs


class HotfixConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    installer_timeout: Duration = DEFAULT_TIMEOUT
    rules: list[HotfixRule] = Field(min_length=1)

    @field_validator("installer_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("the timeout must be positive")
        return value

    def timeout_for(self, rule: HotfixRule) -> timedelta:
        return rule.timeout or self.installer_timeout


def parse_hotfix_config(text: str, source: str = CONFIG_NAME) -> HotfixConfig:
    """Validate hotfix.toml's text. Errors name the file and the key ("rules.1.command: ...";
    rules count from 0)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    try:
        return HotfixConfig.model_validate(data)
    except ValidationError as exc:
        problems = describe_errors(exc, unknown="unknown key", whole="(hotfix config)")
        raise ConfigError(
            f"{source}: invalid hotfix config: " + "; ".join(problems),
            hint="see the hotfix plug-in's documentation for the keys a rule takes",
        ) from exc


# ---------------------------------------------------------------------------------------------
# Commands


def check_template(template: str) -> None:
    """A command must use $update$, and not inside quotes: cau quotes the path itself, so
    `"$update$"` would pass literal quote characters to the installer."""
    if PLACEHOLDER not in template:
        raise ValueError(f"the command must contain {PLACEHOLDER} (the update file's path)")
    quote: str | None = None
    i = 0
    while i < len(template):
        char = template[i]
        if template.startswith(PLACEHOLDER, i):
            if quote:
                raise ValueError(
                    f"{PLACEHOLDER} must not be inside quotes (cau shell-quotes the path itself)"
                )
            i += len(PLACEHOLDER)
            continue
        if char == "\\" and quote != "'":
            i += 2
            continue
        if quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None
        i += 1
    if quote:
        raise ValueError("the command has an unterminated quote")


def render_command(template: str, update_path: str) -> str:
    """The shell command for one file: $update$ replaced by the shell-quoted path."""
    try:
        check_template(template)
    except ValueError as exc:
        raise ConfigError(f"command {template!r}: {exc}") from exc
    return template.replace(PLACEHOLDER, shlex.quote(update_path))


def classify_exit(code: int, rule: HotfixRule) -> ExitClass:
    """The class of an installer's exit code under `rule` (any unlisted code: failed, no restart)."""
    cls = rule.classify(code)
    if rule.always_restart and cls is ExitClass.SUCCESS:
        return ExitClass.SUCCESS_RESTART_NEEDED
    return cls


# ---------------------------------------------------------------------------------------------
# Planning


@dataclass(frozen=True)
class HotfixItem:
    """One file of the hotfix root as seen from one node: the rule that installs it, or why not."""

    path: str  # relative to the root, '/'-separated
    scope: str | None  # "_all", the node's folder as spelled on disk, or None (outside the structure)
    folder: str | None = None  # the folder-rule folder the file is in
    rule: HotfixRule | None = None
    rule_index: int | None = None  # position in the config's rules (from 0)
    timeout: timedelta | None = None
    skipped: str | None = None  # why the file is not installed

    @property
    def applies(self) -> bool:
        return self.rule is not None and self.skipped is None


def plan_hotfixes(files: Sequence[str], node: str, config: HotfixConfig) -> list[HotfixItem]:
    """Which files of the root (paths relative to it) apply to `node`, with which rule. Order:
    `_all/` first, then the node's folder, each in lexical order of the path; then files outside
    the structure (skipped). The node's folder is its name or its short name (before the first
    '.'), in any case. Files of other nodes' folders are not listed."""
    own = {node.lower()}
    if not node.replace(".", "").isdigit():  # "node1.example.com" also reads node1/ (not so an IP)
        own.add(node.split(".", 1)[0].lower())
    groups: dict[int, list[HotfixItem]] = {0: [], 1: [], 2: []}
    for raw in files:
        path = raw.replace("\\", "/")
        parts = [p for p in path.split("/") if p not in ("", ".")]
        rel = "/".join(parts)
        if not parts or path.startswith("/") or ".." in parts:
            groups[2].append(HotfixItem(raw, None, skipped="not a path inside the hotfix root"))
            continue
        if len(parts) == 1:
            if parts[0] in (CONFIG_NAME, MANIFEST_NAME):
                continue
            groups[2].append(
                HotfixItem(rel, None, skipped=f"outside {ALL_FOLDER}/ and the node folders: ignored")
            )
            continue
        top = parts[0]
        if top.lower() == ALL_FOLDER:
            group = 0
        elif top.lower() in own:
            group = 1
        else:
            continue  # another node's folder
        groups[group].append(_plan_file(rel, top, parts[1:], config))
    ordered: list[HotfixItem] = []
    for group in (0, 1, 2):
        ordered.extend(sorted(groups[group], key=lambda item: item.path))
    return ordered


def _plan_file(path: str, scope: str, inner: list[str], config: HotfixConfig) -> HotfixItem:
    name = inner[-1]
    if name.startswith("."):
        return HotfixItem(path, scope, skipped="hidden file")
    if len(inner) > 2:
        return HotfixItem(
            path, scope, folder=inner[0], skipped="nested deeper than one folder below the scope"
        )
    folder = inner[0] if len(inner) == 2 else None
    for index, rule in enumerate(config.rules):
        if rule.folder != folder:
            continue
        if any(fnmatchcase(name, pattern) for pattern in rule.match):
            return HotfixItem(path, scope, folder, rule, index, config.timeout_for(rule))
    if folder is None:
        reason = f"no rule matches {name!r}"
    elif any(rule.folder == folder for rule in config.rules):
        reason = f"no rule for folder {folder!r} matches {name!r}"
    else:
        reason = f"no folder rule for {folder!r}"
    return HotfixItem(path, scope, folder, skipped=reason)


# ---------------------------------------------------------------------------------------------
# Integrity and permissions

_MANIFEST_LINE = re.compile(r"^(?P<esc>\\)?(?P<hex>[0-9A-Fa-f]{64}) (?P<mode>[ *])(?P<path>.+)$")


def parse_manifest(text: str, source: str = MANIFEST_NAME) -> dict[str, str]:
    """`sha256sum` output: `<64 hex>  <path>` (or ` *<path>`, binary mode). Paths are relative to
    the root; GNU's escaped form (a line starting with '\\') is understood. Blank lines and `#`
    comments are skipped. Returns path -> lowercase hex digest."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _MANIFEST_LINE.match(line)
        if not match:
            raise ConfigError(f"{source}:{number}: not a sha256sum line ('<64 hex digits>  <path>')")
        path = match.group("path")
        if match.group("esc"):
            path = _unescape(path)
        path = _normalize(path)
        if path is None:
            raise ConfigError(f"{source}:{number}: {match.group('path')!r} is not a path inside the root")
        if path in out:
            raise ConfigError(f"{source}:{number}: {path!r} is listed twice")
        out[path] = match.group("hex").lower()
    return out


def _unescape(path: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r", "\\": "\\"}.get(m.group(1), m.group(0)), path)


def _normalize(path: str) -> str | None:
    if path.startswith("/"):
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def verify_manifest(manifest: Mapping[str, str], digests: Mapping[str, str]) -> list[str]:
    """Problems between the manifest and the files' actual digests (path -> sha256 hex, every file
    of the root; the manifest's own entry is ignored): files not in the manifest, digests that
    differ, and listed files that are absent. Sorted by path. hotfix.toml decides what runs: list
    it in the manifest too."""
    problems: list[tuple[str, str]] = []
    for path, digest in digests.items():
        key = _normalize(path) or path
        if key == MANIFEST_NAME:
            continue  # a manifest cannot list its own digest
        expected = manifest.get(key)
        if expected is None:
            problems.append((key, f"{key}: not listed in the manifest"))
        elif expected.lower() != digest.lower():
            problems.append(
                (key, f"{key}: sha256 mismatch (manifest {expected[:12]}…, file {digest.lower()[:12]}…)")
            )
    present = {_normalize(p) or p for p in digests}
    for path in manifest:
        if path not in present:
            problems.append((path, f"{path}: listed in the manifest but missing"))
    return [message for _, message in sorted(problems)]


def writable_by_others(mode: int) -> bool:
    """Group or others may write (st_mode bits): the hotfix root, its folders, hotfix.toml and
    the manifest must be writable by their (administrative) owner only."""
    return bool(mode & (stat.S_IWGRP | stat.S_IWOTH))
