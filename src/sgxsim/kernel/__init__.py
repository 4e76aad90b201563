"""The Linux SGX driver (arch/x86/kernel/cpu/sgx), processes, the vDSO and KVM: speaks errno.

The main classes are importable from here (``from sgxsim.kernel import Kernel``). They are
loaded on first use: importing the package, or a light module of it such as
:mod:`sgxsim.kernel.policy` (the CLI builds its choices from it), must not pull in numpy.
"""

from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sgxsim.kernel.encl import SgxEncl
    from sgxsim.kernel.kvm import Vm, VmConfig
    from sgxsim.kernel.main import Kernel, KernelConfig, validate_epc
    from sgxsim.kernel.mm import FaultLoop
    from sgxsim.kernel.policy import SvnPolicy
    from sgxsim.kernel.printk import KernelLog
    from sgxsim.kernel.sgx import EpcOwner
    from sgxsim.kernel.signals import ProcessSignal
    from sgxsim.kernel.svn import SvnConfig
    from sgxsim.kernel.syscalls import Process

__all__ = [
    "EpcOwner",
    "FaultLoop",
    "Kernel",
    "KernelConfig",
    "KernelLog",
    "Process",
    "ProcessSignal",
    "SgxEncl",
    "SvnConfig",
    "SvnPolicy",
    "Vm",
    "VmConfig",
    "validate_epc",
]

#: Export name -> the module that defines it.
_EXPORTS = MappingProxyType(
    {
        "EpcOwner": "sgx",
        "FaultLoop": "mm",
        "Kernel": "main",
        "KernelConfig": "main",
        "KernelLog": "printk",
        "Process": "syscalls",
        "ProcessSignal": "signals",
        "SgxEncl": "encl",
        "SvnConfig": "svn",
        "SvnPolicy": "policy",
        "Vm": "kvm",
        "VmConfig": "kvm",
        "validate_epc": "main",
    }
)


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # lazy: the defining module is imported on first use (PEP 562), see the module docstring.
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
