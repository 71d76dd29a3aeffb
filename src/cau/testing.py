"""Test doubles of cau's ports, for the tests of providers and plug-ins (cau's own and others').

A node is a handler: a function from the command it is asked to run to what it answers, in the
spirit of httpx's `MockTransport(handler)`. Nothing here needs root, a network or a test framework.

    from cau.testing import Reply, Rules, ScriptedCluster, ScriptedTransport, Session

    node = ScriptedTransport(Rules({
        "cat /proc/sys/kernel/random/boot_id": "boot-1\\n",     # a command prefix: stdout
        re.compile(r"apt-get -s .* upgrade$"): Reply(SIMULATION),  # a regex: a Reply
        "apt-get update": [Reply("", 100, "E: lock"), ""],       # one per call, the last repeats
        "systemctl reboot": NodeUnreachable("connection lost"),  # raised by run()
    }))
    updater = AptPlugin().create_updater(Session("web1", node), AptArgs(), ctx)
    ...
    assert node.commands == [...]                                # every command, in order

    cluster = ScriptedCluster(lambda node, command: ...)       # node name -> ScriptedTransport
    provider = SshProvider.create(options, ProviderContext("c", clock, tmp, transports=cluster))

A handler returns stdout (a str), a `Reply` or a `CommandResult`, or raises what a transport
raises (NodeUnreachable: the node is down; CommandTimeout...). A `Reply` with a `delay` takes that
long on the event loop's clock (virtual time under `cau.clock.run_virtual`), and raises
CommandTimeout as a real transport does when the caller's timeout is shorter.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from cau.errors import CommandTimeout
from cau.ports import CommandResult, Transport

__all__ = [
    "Answer",
    "Call",
    "Handler",
    "NodeHandler",
    "Put",
    "Reply",
    "Result",
    "Rules",
    "ScriptedCluster",
    "ScriptedTransport",
    "Session",
    "UnexpectedCommand",
]


@dataclass(frozen=True)
class Reply:
    """What a scripted command prints and how it exits; `delay`: seconds it takes."""

    stdout: str = ""
    exit_status: int = 0
    stderr: str = ""
    delay: float = 0.0


Result: TypeAlias = Reply | CommandResult | str
Handler: TypeAlias = Callable[[str], Result]
NodeHandler: TypeAlias = Callable[[str, str], Result]  # (node, command)
Answer: TypeAlias = Result | BaseException | Handler


class UnexpectedCommand(AssertionError):
    """A scripted node was asked to run something its script does not answer."""


@dataclass(frozen=True)
class Call:
    command: str
    timeout: float | None
    env: dict[str, str]


@dataclass(frozen=True)
class Put:
    local: Path
    remote: str
    mode: int | None
    data: bytes


def _reply(result: Result) -> Reply:
    if isinstance(result, Reply):
        return result
    if isinstance(result, CommandResult):
        return Reply(result.stdout, result.exit_status, result.stderr)
    if isinstance(result, str):
        return Reply(result)
    raise TypeError(f"a handler returns stdout, a Reply or a CommandResult, not {result!r}")


class ScriptedTransport:
    """A `Transport` whose commands are answered by `handler`. Records every call (`calls`,
    `commands`) and every file put (`puts`, with the file's bytes at the time); a closed transport
    may run again (as SshTransport reconnects), `closed` tells whether it was closed since."""

    def __init__(self, handler: Handler, *, name: str = "node") -> None:
        self.handler = handler
        self.name = name
        self.calls: list[Call] = []
        self.puts: list[Put] = []
        self.closes = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"ScriptedTransport({self.name!r})"

    @property
    def commands(self) -> list[str]:
        return [c.command for c in self.calls]

    @property
    def closed(self) -> bool:
        return self._closed

    async def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        self._closed = False
        self.calls.append(Call(command, timeout, dict(env or {})))
        reply = _reply(self.handler(command))
        if reply.delay > 0:
            if timeout is not None and reply.delay > timeout:
                await asyncio.sleep(timeout)
                raise CommandTimeout(f"'{command}' on {self.name} did not finish within {timeout:g}s")
            await asyncio.sleep(reply.delay)
        return CommandResult(command, reply.exit_status, reply.stdout, reply.stderr)

    async def put(self, local: Path, remote: str, *, mode: int | None = None) -> None:
        data = local.read_bytes()  # noqa: ASYNC240 - a test's small local file
        self.puts.append(Put(local, remote, mode, data))

    async def close(self) -> None:
        self.closes += 1
        self._closed = True


def _matches(pattern: str | re.Pattern[str], command: str) -> bool:
    if isinstance(pattern, str):
        return command.startswith(pattern)
    return pattern.search(command) is not None


class Rules:
    """A handler made of rules: the first whose pattern matches the command answers. A str pattern
    is a command prefix; a compiled regex is searched in the command. An answer is stdout, a
    `Reply`, a `CommandResult`, an exception (raised) or a handler (called with the command); a
    list or tuple of answers gives one per call, its last one repeating. A command no rule answers
    goes to `otherwise`, or raises UnexpectedCommand."""

    def __init__(
        self,
        rules: Mapping[str | re.Pattern[str], Answer | Sequence[Answer]] | None = None,
        *,
        otherwise: Handler | None = None,
    ) -> None:
        self._rules: list[tuple[str | re.Pattern[str], list[Answer]]] = []
        for pattern, answers in (rules or {}).items():
            listed = list(answers) if isinstance(answers, list | tuple) else [answers]
            self._rules.append((pattern, listed))  # type: ignore[arg-type]
        self.otherwise = otherwise

    def on(self, pattern: str | re.Pattern[str], *answers: Answer) -> Rules:
        """Answer `pattern` with `answers` from now on, before every other rule (replacing an
        earlier rule of the same pattern): how a test changes what a node says mid-run."""
        if not answers:
            raise ValueError("Rules.on needs at least one answer")
        self._rules = [(p, a) for p, a in self._rules if p != pattern]
        self._rules.insert(0, (pattern, list(answers)))
        return self

    def __call__(self, command: str) -> Result:
        for pattern, answers in self._rules:
            if _matches(pattern, command):
                answer = answers.pop(0) if len(answers) > 1 else answers[0]
                if isinstance(answer, BaseException):
                    raise answer
                if isinstance(answer, Reply | CommandResult | str):
                    return answer
                return answer(command)
        if self.otherwise is not None:
            return self.otherwise(command)
        raise UnexpectedCommand(f"no rule answers {command!r}")


class ScriptedCluster:
    """A transport factory (`ProviderContext.transports`): one ScriptedTransport per name, made on
    first use and kept. `handler` is told the node: `handler(node, command)`, or a mapping of
    node name to handler. `log` holds every (node, command) in the order run, across nodes."""

    def __init__(self, handler: NodeHandler | Mapping[str, Handler]) -> None:
        self._handler = handler
        self.transports: dict[str, ScriptedTransport] = {}
        self.log: list[tuple[str, str]] = []

    def __call__(self, name: str) -> ScriptedTransport:
        if name not in self.transports:
            self.transports[name] = ScriptedTransport(self._node_handler(name), name=name)
        return self.transports[name]

    def _node_handler(self, name: str) -> Handler:
        def handle(command: str) -> Result:
            self.log.append((name, command))
            if not isinstance(self._handler, Mapping):
                return self._handler(name, command)
            if name not in self._handler:
                raise UnexpectedCommand(f"{name} is not in the script (asked to run {command!r})")
            return self._handler[name](command)

        return handle

    def commands(self, node: str | None = None) -> list[str]:
        """The commands run (on `node`, or anywhere), in order."""
        return [c for n, c in self.log if node is None or n == node]


@dataclass(frozen=True)
class Session:
    """A `NodeSession`: what a plug-in is given to work on one node."""

    node: str
    transport: Transport
