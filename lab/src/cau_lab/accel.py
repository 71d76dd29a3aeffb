"""Which accelerator a VM-host lab's guests use: KVM where this machine can run a guest with it,
QEMU's software emulation (TCG) otherwise.

KVM needs hardware virtualization (the CPU's `vmx` or `svm` flag) and /dev/kvm. A /dev/kvm alone
is not enough: on some cloud machines it is `kvm_pvm`, a software nested KVM without those flags,
under which a stock Debian guest kernel runs 30-50 times slower than under TCG and then hangs
(see ../shared/lab/vm-hosts.md). Where the flags are there, `cau lab up` still checks that a
guest really answers under KVM, and falls back to TCG when it does not (vmhosts.setup).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Accelerator = Literal["kvm", "qemu"]  # a libvirt <domain type=...>


def hardware_virtualization(cpuinfo: str) -> bool:
    """Whether /proc/cpuinfo's flags name Intel VT-x (vmx) or AMD-V (svm)."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags" and {"vmx", "svm"} & set(value.split()):
            return True
    return False


def accelerator(cpuinfo: Path = Path("/proc/cpuinfo"), dev_kvm: Path = Path("/dev/kvm")) -> Accelerator:
    """ "kvm" when this machine has hardware virtualization and /dev/kvm, else "qemu" (TCG)."""
    try:
        flags = hardware_virtualization(cpuinfo.read_text())
    except OSError:
        flags = False
    return "kvm" if flags and dev_kvm.exists() else "qemu"
