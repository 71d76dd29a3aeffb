"""The resident coordinator's loop (cau.daemon.resident), with passes scripted: a stop ends it
promptly even when the pass in hand absorbs its cancellation (found on the lab: a daemon that
went on after SIGTERM held Pacemaker's stop of the role for 110 s, until SIGKILL), and after a
hand-over it does not look again while the cluster still shows the role on its node."""

from __future__ import annotations

import asyncio
import contextlib

from cau.clock import run_virtual
from cau.daemon import STOP_GRACE, STOPPED, resident
from cau.selfupdating import Pass, PassResult


def test_a_stop_ends_the_loop_even_when_the_pass_in_hand_absorbs_the_cancellation() -> None:
    said: list[str] = []
    passes: list[float] = []

    async def absorbing_pass() -> Pass:
        passes.append(asyncio.get_running_loop().time())
        # like a `finally: with suppress(CancelledError): await task` deep in a run
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        return Pass(PassResult.HANDED_OVER, "r1", "handed over")

    async def main() -> float:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        async def owner() -> str | None:
            return "node1"  # the cluster has not moved the role yet

        daemon = asyncio.ensure_future(
            resident(node="node1", do_pass=absorbing_pass, owner=owner, poll=5, say=said.append, stop=stop)
        )
        await asyncio.sleep(1)
        stop.set()  # SIGTERM: the flag, then (after the grace) the cancellation
        loop.call_later(STOP_GRACE, daemon.cancel)
        await daemon
        return loop.time()

    ended = run_virtual(main())
    assert len(passes) == 1  # no pass after the stop
    assert ended < 1 + STOP_GRACE + 0.5  # after the grace, not after the pass's 30 s nor a poll
    assert said[-1] == STOPPED


def test_after_a_hand_over_it_waits_for_the_role_to_move_and_then_looks_again() -> None:
    said: list[str] = []
    results = [
        Pass(PassResult.HANDED_OVER, "r1", "handed over"),
        Pass(PassResult.NOT_OWNER, message="elsewhere"),
    ]
    owners = ["node1", "node1", "node2"]
    asked: list[str] = []

    async def do_pass() -> Pass:
        return results.pop(0) if results else Pass(PassResult.IDLE)

    async def owner() -> str | None:
        asked.append("owner")
        return owners.pop(0) if owners else "node2"

    async def main() -> None:
        stop = asyncio.Event()
        daemon = asyncio.ensure_future(
            resident(node="node1", do_pass=do_pass, owner=owner, poll=1, say=said.append, stop=stop)
        )
        await asyncio.sleep(10)
        stop.set()
        await daemon

    run_virtual(main())
    # the hand-over, then three looks at the owner (node1, node1, node2) before the next pass
    assert said[0] == "handed-over: handed over"
    assert said[1] == "not-owner: elsewhere"
    assert asked[:3] == ["owner"] * 3
    assert said[-1] == STOPPED


def test_a_pass_ending_within_the_grace_ends_whole() -> None:
    """SIGTERM right after a hand-over's ban (Pacemaker stops the agent at once): the pass's last
    journal entry and the lock's release still happen, and its result is said."""
    said: list[str] = []
    released: list[bool] = []

    async def handing_over() -> Pass:
        await asyncio.sleep(0.2)  # the last journal entry, the lock's release
        released.append(True)
        return Pass(PassResult.HANDED_OVER, "r1", "handed over")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        async def owner() -> str | None:
            return "node1"

        daemon = asyncio.ensure_future(
            resident(node="node1", do_pass=handing_over, owner=owner, poll=5, say=said.append, stop=stop)
        )
        await asyncio.sleep(0.1)
        stop.set()
        loop.call_later(STOP_GRACE, daemon.cancel)
        await daemon

    run_virtual(main())
    assert released == [True]
    assert said == ["handed-over: handed over", STOPPED]
