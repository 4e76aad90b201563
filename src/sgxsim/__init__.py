"""sgxsim: a faithful, deterministic executable model of Intel SGX under Linux.

The public API is deliberately small; everything else lives in the layer packages
(:mod:`sgxsim.hw`, :mod:`sgxsim.kernel`, :mod:`sgxsim.sdk`, :mod:`sgxsim.attest`,
:mod:`sgxsim.sim`). Names are imported lazily so that ``import sgxsim.hw.arch`` does
not pull in the whole simulator.
"""

from __future__ import annotations

import importlib

#: ``typing.TYPE_CHECKING`` without importing typing: ``python -m sgxsim`` reaches its SIGINT
#: handler (``sgxsim.__main__``) sooner.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

    from sgxsim.errors import (
        InvalidArgument,
        ModelInvariantError,
        ScenarioError,
        SgxSimError,
        VerificationError,
    )
    from sgxsim.hw.cpu import MicrocodePatch
    from sgxsim.hw.epc import EpcSectionConfig
    from sgxsim.hw.machine import LatencyTable, Machine, MachineConfig
    from sgxsim.rand import EntropySource, Rng

#: The installed distribution's version (``pip show sgxsim``); "0+unknown" when not installed.
__version__: str

_EXPORTS = {
    "EntropySource": "sgxsim.rand",
    "EpcSectionConfig": "sgxsim.hw.epc",
    "InvalidArgument": "sgxsim.errors",
    "LatencyTable": "sgxsim.hw.machine",
    "Machine": "sgxsim.hw.machine",
    "MachineConfig": "sgxsim.hw.machine",
    "MicrocodePatch": "sgxsim.hw.cpu",
    "ModelInvariantError": "sgxsim.errors",
    "Rng": "sgxsim.rand",
    "ScenarioError": "sgxsim.errors",
    "SgxSimError": "sgxsim.errors",
    "VerificationError": "sgxsim.errors",
}

__all__ = [
    "EntropySource",
    "EpcSectionConfig",
    "InvalidArgument",
    "LatencyTable",
    "Machine",
    "MachineConfig",
    "MicrocodePatch",
    "ModelInvariantError",
    "Rng",
    "ScenarioError",
    "SgxSimError",
    "VerificationError",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("sgxsim")
        except PackageNotFoundError:  # pragma: no cover - run from a source tree
            return "0+unknown"
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sgxsim' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    """The exports, the layer packages and ``__version__`` (not the lazy-import machinery)."""
    return sorted({*__all__, "__version__", "attest", "cli", "errors", "hw", "kernel", "rand", "sdk", "sim"})
