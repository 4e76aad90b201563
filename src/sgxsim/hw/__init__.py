"""The silicon: SGX leaves, EPC/EPCM and processor state; outcomes are values (SgxStatus | Fault).

The main classes are importable from here; names are resolved lazily so that
``import sgxsim.hw.arch`` stays cheap (no numpy, no greenlet).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sgxsim.hw.arch import EnclsLeaf, EncluLeaf, Fault, LeafResult, PageType, SgxStatus
    from sgxsim.hw.cpu import LogicalProcessor, MicrocodePatch
    from sgxsim.hw.enclu import EnclaveContext, EnclaveExit
    from sgxsim.hw.epc import Epc, EpcSectionConfig, SecsState
    from sgxsim.hw.machine import Dram, LatencyTable, Machine, MachineConfig

_EXPORTS = {
    "Dram": "sgxsim.hw.machine",
    "EnclaveContext": "sgxsim.hw.enclu",
    "EnclaveExit": "sgxsim.hw.enclu",
    "EnclsLeaf": "sgxsim.hw.arch",
    "EncluLeaf": "sgxsim.hw.arch",
    "Epc": "sgxsim.hw.epc",
    "EpcSectionConfig": "sgxsim.hw.epc",
    "Fault": "sgxsim.hw.arch",
    "LatencyTable": "sgxsim.hw.machine",
    "LeafResult": "sgxsim.hw.arch",
    "LogicalProcessor": "sgxsim.hw.cpu",
    "Machine": "sgxsim.hw.machine",
    "MachineConfig": "sgxsim.hw.machine",
    "MicrocodePatch": "sgxsim.hw.cpu",
    "PageType": "sgxsim.hw.arch",
    "SecsState": "sgxsim.hw.epc",
    "SgxStatus": "sgxsim.hw.arch",
}

__all__ = [
    "Dram",
    "EnclaveContext",
    "EnclaveExit",
    "EnclsLeaf",
    "EncluLeaf",
    "Epc",
    "EpcSectionConfig",
    "Fault",
    "LatencyTable",
    "LeafResult",
    "LogicalProcessor",
    "Machine",
    "MachineConfig",
    "MicrocodePatch",
    "PageType",
    "SecsState",
    "SgxStatus",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sgxsim.hw' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
