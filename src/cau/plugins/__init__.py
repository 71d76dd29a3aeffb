"""Update plug-ins shipped with cau (registered through the `cau.plugins` entry point)."""

from cau.errors import PluginError
from cau.ports import NodeSession


def refuse_this_machine(session: NodeSession, plugin: str) -> None:
    """Package managers never run through a local transport: that is the coordinator itself."""
    refuse_simulated(session, plugin)
    from cau.transport.local import LocalTransport

    if isinstance(session.transport, LocalTransport):
        raise PluginError(
            f"the {plugin} plug-in does not update the coordinator's own machine ({session.node} is reached "
            "through a local transport); cau updates other hosts, over SSH"
        )


def refuse_simulated(session: NodeSession, plugin: str) -> None:
    """Plug-ins that change a real system refuse a simulated node: a sandbox node's commands run
    on the coordinator itself, so `apt-get upgrade` there would upgrade this machine."""
    if getattr(session, "simulated", False):
        raise PluginError(
            f"the {plugin} plug-in updates real hosts; {session.node} is a simulated (sandbox) node "
            "whose commands would run on this machine (use the sandbox plug-in there)"
        )
