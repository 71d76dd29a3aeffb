"""Health gates during a run (cau.domain.gates declares them).

check    one evaluation of one gate: command (node or coordinator), HTTP, Prometheus, cluster health
monitor  the waits at a node's admission and return, the watch in between, the journal's transitions
"""

from cau.gates.check import Answer, GateChecks
from cau.gates.monitor import GateMonitor, GateTimeout, WaitStopped

__all__ = ["Answer", "GateChecks", "GateMonitor", "GateTimeout", "WaitStopped"]
