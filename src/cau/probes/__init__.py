"""Availability probes: measure a workload's availability (HTTP or TCP checks) during a run.

spec     the configuration of one probe (a role, its targets, an interval, a timeout)
check    one check: HTTP(S) or TCP, any-of several targets, errors as short text
stats    pure bookkeeping: counts, response times, outages in send order
monitor  the asyncio task per probe on a monotonic grid; reports to the run's journal
"""

from cau.probes.monitor import ProbeMonitor
from cau.probes.spec import ProbeSpec

__all__ = ["ProbeMonitor", "ProbeSpec"]
