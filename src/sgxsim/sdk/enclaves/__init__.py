"""The code that runs inside the simulation's enclaves, as real modules ruff and mypy check.

Each module here (except this loader and :mod:`._link`) is the source of an enclave program, or
a part linked into one: :mod:`.runtime` (the sdk runtime helpers), :mod:`.kdf` (the PCE/QE key
derivations), :mod:`.ae_common` (the call interface of the quoting/application enclaves),
:mod:`.pce`, :mod:`.qe`, :mod:`.app`, :mod:`.test_encl` (the kernel selftest enclave) and
:mod:`.svn_kit` (the SVN-update exploration's enclave).
Builders read a module's bytes with :func:`enclave_source`, and those bytes, after the linker's
constants, are what the image holds and MRENCLAVE measures.

The modules are written for the enclave engine (:mod:`sgxsim.hw.enclu`): a program is one flat
namespace, named ``"enclave"``, built by concatenating its parts. A module imports what an
earlier part or the linker defines under ``if __name__ != "enclave":``: the block runs on the
host (so mypy sees real imports and the module can be imported for tests) and never inside an
enclave, whose code imports nothing but ``hashlib`` and ``cryptography``. Annotations naming host
types are quoted, since they are evaluated inside the enclave.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from sgxsim.errors import InvalidArgument

if TYPE_CHECKING:
    from sgxsim.hw.machine import Machine

__all__ = ["ENCLAVE_MODULES", "enclave_source", "register_enclave_sources"]

#: The modules that hold enclave code.
ENCLAVE_MODULES = frozenset({"runtime", "kdf", "ae_common", "pce", "qe", "app", "test_encl", "svn_kit"})


def enclave_source(name: str) -> str:
    """The exact text of enclave module ``name`` (its file's bytes, UTF-8; no newline translation)."""
    if name not in ENCLAVE_MODULES:
        raise InvalidArgument(f"unknown enclave module {name!r}; known: {', '.join(sorted(ENCLAVE_MODULES))}")
    return resources.files(__name__).joinpath(f"{name}.py").read_bytes().decode("utf-8")


def register_enclave_sources(machine: Machine) -> None:
    """Tell ``machine``'s enclave engine which file each enclave module's text comes from.

    The debug information a loader hands over (the SGX uRTS tells sgx-gdb which file an enclave
    came from): enclave code holding a module's text then runs compiled under the module's path,
    so tracebacks and coverage name ``sdk/enclaves/*.py``. Changes no enclave's bytes or behaviour.
    """
    files = machine.enclave_source_files
    known = set(files.values())
    root = resources.files(__name__)
    for name in sorted(ENCLAVE_MODULES):
        path = root.joinpath(f"{name}.py")
        if str(path) not in known:
            files.setdefault(path.read_bytes().decode("utf-8"), str(path))
