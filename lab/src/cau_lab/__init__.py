"""`cau lab`: a lab of real Linux hosts on one machine, for testing cau end to end.

Each host has its own network namespace on a private bridge (nothing leaves the subnet), its
own PID, UTS, IPC, mount and time namespaces, an overlay root filesystem over a Debian image
built once with debootstrap, sshd, in-host reboot that really restarts the host, and a local
apt repository with test packages at an OLD and a NEW version. See control.Lab.
"""

from cau_lab.config import LabConfig, LabError
from cau_lab.control import Lab
from cau_lab.repo import PackageSpec, Repo

__all__ = ["Lab", "LabConfig", "LabError", "PackageSpec", "Repo"]
