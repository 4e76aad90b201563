"""The ENCLS leaves (supervisor SGX instructions), their batch paths, and the EPCM invariant checker.

This package is the dispatch table and the public face; the leaves live by SDM leaf group, each
batch path beside the leaf it must equal: :mod:`.build` (ECREATE, EADD + ``eadd_batch``, EEXTEND,
EINIT), :mod:`.paging` (EPA, EBLOCK, ETRACK, EWB, ELDB/ELDU/ELDBC/ELDUC), :mod:`.sgx2` (EAUG +
``eaug_batch``, EMODPR, EMODT), :mod:`.remove` (EREMOVE + ``eremove_batch``), :mod:`.debug`
(EDBGRD, EDBGWR), :mod:`.svn` (EUPDATESVN); :mod:`.common` and :mod:`.batching` hold what they
share, :mod:`.invariants` the EPCM checker.

Every leaf has the signature ``leaf(m, lp, rbx, rcx, rdx) -> LeafResult`` and is dispatched by
:meth:`sgxsim.hw.machine.Machine.encls_exec` through :data:`LEAVES`. Operands are the register
values exactly as Linux ``arch/x86/kernel/cpu/sgx/encls.h`` passes them: structures (PAGEINFO,
SECINFO, SIGSTRUCT, EINITTOKEN, PCMD, source and backing pages) are addresses in
:class:`~sgxsim.hw.machine.Dram` (kernel virtual == physical in this model); EPC operands are
physical EPC addresses. A leaf checks its operands in the SDM's order and returns the first
failing check's outcome: an :class:`~sgxsim.hw.arch.SgxStatus` (RAX with ZF=1, or CF=1 for
:data:`~sgxsim.hw.arch.INFO_STATUSES`) or a :class:`~sgxsim.hw.arch.Fault` (#GP(0) / #PF).
Python exceptions mean misuse of the model (:class:`~sgxsim.errors.InvalidArgument`) or a broken
model invariant (:class:`~sgxsim.errors.ModelInvariantError`), never an architectural outcome.

Leaves run atomically (the machine's begin/exec/end split is the only preemption point), so the
SDM's concurrency conflicts (#GP or ``SGX_EPC_PAGE_CONFLICT`` when another leaf holds the same EPCM
entry, ``SGX_ENTRYEPOCH_LOCKED``) cannot arise and are not modelled; EUPDATESVN's rule about leaves
in flight on other processors is (see :func:`eupdatesvn`).

Models: Intel SDM Vol. 3D ch. 38 "Intel SGX Instruction References" (ENCLS leaves, Dec 2023);
EUPDATESVN as Intel's "Runtime Microcode Updates with Intel Software Guard Extensions" (cdrdv2
648682) and its instruction page describe it; its use in Linux 6.19 ``arch/x86/kernel/cpu/sgx/main.c``.

Differs (model-wide): #PF raised by an ENCLS EPCM check carries error code ``P | SGX`` (0x8001) and
CR2 = the operand address ([MODEL]: the SDM only writes ``#PF(operand)``); the processor always
runs in 64-bit mode (EDBGRD/EDBGWR use 8-byte accesses); CET (PT_SS_FIRST/PT_SS_REST, CET
attributes) is not supported, so those page types take the SDM's "not supported" branch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from sgxsim.hw.arch import EnclsLeaf, LeafResult, ssa_frame_bytes_needed, xsave_size
from sgxsim.hw.cpu import LogicalProcessor
from sgxsim.hw.encls.build import (
    eadd,
    eadd_batch,
    ecreate,
    eextend,
    einit,
)
from sgxsim.hw.encls.common import SGX2_LEAVES
from sgxsim.hw.encls.debug import SGX_TCS_LIMIT, edbgrd, edbgwr
from sgxsim.hw.encls.invariants import validate_epcm
from sgxsim.hw.encls.paging import eblock, eldb, eldbc, eldu, elduc, epa, etrack, ewb, mac_header
from sgxsim.hw.encls.remove import BATCH_FAULT, BATCH_UD, decode_batch_status, eremove, eremove_batch
from sgxsim.hw.encls.sgx2 import eaug, eaug_batch, emodpr, emodt
from sgxsim.hw.encls.svn import eupdatesvn

if TYPE_CHECKING:
    from sgxsim.hw.machine import Machine

__all__ = [
    "BATCH_FAULT",
    "BATCH_UD",
    "LEAVES",
    "SGX2_LEAVES",
    "SGX_TCS_LIMIT",
    "LeafFn",
    "decode_batch_status",
    "eadd",
    "eadd_batch",
    "eaug",
    "eaug_batch",
    "eblock",
    "ecreate",
    "edbgrd",
    "edbgwr",
    "eextend",
    "einit",
    "eldb",
    "eldbc",
    "eldu",
    "elduc",
    "emodpr",
    "emodt",
    "epa",
    "eremove",
    "eremove_batch",
    "etrack",
    "eupdatesvn",
    "ewb",
    "mac_header",
    "ssa_frame_bytes_needed",
    "validate_epcm",
    "xsave_size",
]


LeafFn = Callable[["Machine", LogicalProcessor, int, int, int], LeafResult]
#: ENCLS leaf number -> implementation.
LEAVES: Mapping[int, LeafFn] = MappingProxyType(
    {
        int(EnclsLeaf.ECREATE): ecreate,
        int(EnclsLeaf.EADD): eadd,
        int(EnclsLeaf.EINIT): einit,
        int(EnclsLeaf.EREMOVE): eremove,
        int(EnclsLeaf.EDBGRD): edbgrd,
        int(EnclsLeaf.EDBGWR): edbgwr,
        int(EnclsLeaf.EEXTEND): eextend,
        int(EnclsLeaf.ELDB): eldb,
        int(EnclsLeaf.ELDU): eldu,
        int(EnclsLeaf.EBLOCK): eblock,
        int(EnclsLeaf.EPA): epa,
        int(EnclsLeaf.EWB): ewb,
        int(EnclsLeaf.ETRACK): etrack,
        int(EnclsLeaf.EAUG): eaug,
        int(EnclsLeaf.EMODPR): emodpr,
        int(EnclsLeaf.EMODT): emodt,
        int(EnclsLeaf.ELDBC): eldbc,
        int(EnclsLeaf.ELDUC): elduc,
        int(EnclsLeaf.EUPDATESVN): eupdatesvn,
    }
)
